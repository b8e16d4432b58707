"""Which word each file in embeddings/ answers to, and which file answers when several claim one.

As A1111 names them: a `.safetensors`/`.pt`/`.bin` by its file stem, an embedding picture (.png,
.webp, .jxl, .avif) by the `name` stored inside it (`data.get('name', stem)`), so a renamed civitai
picture keeps its word. A1111 keeps one embedding per word: the file it reads last replaces the
others (in the order its folder walk meets them, which the file system decides). Here one rule picks
it, the one every lookup of a weight name uses (`service.workspace.find_with_suffix`): the folder's
own file before a subfolder's (the first subfolder in path order), then `.safetensors`, `.pt`, `.bin`,
`.png`..., a lower-case suffix, the file name. The others are listed with a note naming the file
that answers instead, never applied.

The listing (`service.embeddings.list_embeddings`, REST, `/sdapi/v1/embeddings`), name lookups
(delete, rename, an import's clash check) and the prompt's words (`prompt_embedding_files`) all read
`named_embedding_files`, so what is listed is what a prompt uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lorastudio.service.workspace import EMBEDDING_SUFFIXES, list_weight_files

__all__ = [
    "NamedEmbedding",
    "embedding_name",
    "named_embedding_files",
    "find_embedding",
    "prompt_embedding_files",
    "shadowed_note",
    "word_from_stored_name",
]


@dataclass(frozen=True)
class NamedEmbedding:
    """A listed embedding file, the word it claims, and the file answering to that word instead
    (None: this one answers)."""

    name: str
    path: Path
    shadowed_by: Path | None = None


def embedding_name(path: Path) -> str:
    """The word a file in embeddings/ answers to: a picture's stored name, else the file stem."""
    from lorastudio.adapters.embedding_png import EMBEDDING_IMAGE_SUFFIXES, stored_name

    if path.suffix.lower() in EMBEDDING_IMAGE_SUFFIXES:
        return stored_name(path) or path.stem
    return path.stem


def _answering(folder: Path, claimants: list[Path]) -> Path:
    """The file that answers to a word several files claim (listing order in, see the module doc)."""
    nearest = [p for p in claimants if p.parent == folder]
    nearest = nearest or [p for p in claimants if p.parent == claimants[0].parent]

    def rank(path: Path) -> tuple[int, bool, str]:
        return EMBEDDING_SUFFIXES.index(path.suffix.lower()), path.suffix != path.suffix.lower(), path.name

    return min(nearest, key=rank)


def named_embedding_files(folder: Path) -> list[NamedEmbedding]:
    """Every embedding file in `folder` (and its subfolders) in listing order, with its word."""
    named = [(embedding_name(path), path) for path in list_weight_files(folder, "embedding")]
    claims: dict[str, list[Path]] = {}
    for name, path in named:
        claims.setdefault(name, []).append(path)
    answering = {name: _answering(folder, paths) for name, paths in claims.items()}
    return [NamedEmbedding(name, path, None if answering[name] == path else answering[name]) for name, path in named]


def find_embedding(folder: Path, name: str) -> Path | None:
    """The file a prompt's `name` uses (the one listed without a note), or None."""
    answering = (e.path for e in named_embedding_files(folder) if e.name == name and e.shadowed_by is None)
    return next(answering, None)


def prompt_embedding_files(folder: Path, texts: list[str]) -> dict[str, Path]:
    """The embeddings whose word appears as a word in any of the texts: word -> file."""

    def said(word: str) -> bool:
        return any(re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", text) for text in texts)

    return {e.name: e.path for e in named_embedding_files(folder) if e.shadowed_by is None and said(e.name)}


def word_from_stored_name(path: Path) -> bool:
    """Whether a file's word is the name stored in it (a picture), so renaming the file keeps it."""
    from lorastudio.adapters.embedding_png import EMBEDDING_IMAGE_SUFFIXES, stored_name

    return path.suffix.lower() in EMBEDDING_IMAGE_SUFFIXES and stored_name(path) is not None


def shadowed_note(entry: NamedEmbedding, folder: Path) -> str:
    """The listing's one line for a file whose word another file answers to."""
    winner = entry.shadowed_by.relative_to(folder).as_posix() if entry.shadowed_by else "?"
    fix = (
        "import it with `--name` to give it another word, or delete one of them"
        if word_from_stored_name(entry.path)
        else "rename or delete one of them"
    )
    return (
        f"{entry.path.name}: answers to {entry.name!r}, as {winner} does, which prompts use instead "
        f"(A1111 keeps one embedding per word); {fix}."
    )
