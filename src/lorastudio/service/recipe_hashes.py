"""Weights that changed since a recipe's image was made, found again by the hashes the image recorded.

A LoRA retrained (or replaced) under the same name, an embedding, model or VAE file swapped for
another, silently makes another picture. A recipe records each one's hash (our YAML's `loras:`,
`embeddings:` and `model:`, an infotext's `Lora hashes`, `TI hashes`, `Model hash`, `VAE hash`); when the
file a name finds now has another hash, the workspace is searched for a file that still has the recorded
one (loras/ and embeddings/ with their subfolders, each run's files and checkpoints, exports/; models/
and the library for a model or VAE) and that file is used, with a note saying so; without one the image
is made with what there is, and a note says the picture will differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lorastudio.errors import LorastudioError
from lorastudio.service.names import LENIENT, STRICT, NamePolicy
from lorastudio.service.recipe_notes import RecipeNote
from lorastudio.service.workspace import Workspace, list_weight_files

__all__ = ["Pins", "WeightChange", "change_note", "changed_weights", "check_networks", "model_change", "vae_change"]

# what each kind is called in a note (the web UI words it with its `generate.<kind>` label)
_WHAT = {"model": "model", "vae": "VAE", "lora": "LoRA", "embedding": "embedding"}
# candidate files larger than this are not hashed while searching (a whole model is not a LoRA, an embedding or a VAE)
_MAX_BYTES = {"lora": 2 << 30, "embedding": 64 << 20, "vae": 1 << 30}


@dataclass(frozen=True)
class WeightChange:
    kind: str  # model, vae, lora, embedding
    name: str  # as the request names it
    recorded: str  # the short hash the image recorded
    current: str  # the short hash of the file the name finds now
    found: Path | None = None  # a workspace file with the recorded hash
    use: str | None = None  # how the request names that file, where it is in the library (else pinned)


def change_note(change: WeightChange) -> RecipeNote:
    """One line: the weight changed, and what is used instead (or that the picture will differ)."""
    what = _WHAT[change.kind]
    params = {"kind": change.kind, "what": what, "name": change.name, "old": change.recorded, "new": change.current}
    said = f"{what} {change.name} has changed since the image was made (hash {change.recorded} → {change.current})"
    if change.found is None:
        return RecipeNote("weights_changed", params, f"{said}; the picture will differ.")
    params["file"] = change.use or str(change.found)
    return RecipeNote("weights_found", params, f"{said}; using {params['file']}, which has the image's hash.")


def _same_hash(a: str, b: str) -> bool:
    """Hashes of different lengths (A1111 writes 10 or 12 hex) compare by the shorter one."""
    n = min(len(a), len(b))
    return n >= 8 and a[:n].lower() == b[:n].lower()


def _short_hash(ws: Workspace, kind: str, path: Path) -> str | None:
    """The hash an image records for a file of `kind` (None for one that cannot be read), cached per file version."""
    from lorastudio.adapters.hashing import lora_short_hash
    from lorastudio.models.checkpoint import cached_file_hash
    from lorastudio.models.loading import model_hash

    try:
        if kind == "lora":
            if path.suffix.lower() != ".safetensors":
                return None
            return cached_file_hash(path, ws.cache, lora_short_hash, kind="lora-short")
        if kind == "embedding":
            return cached_file_hash(path, ws.cache)[:12]  # A1111's TI hash: the whole file's SHA-256
        return model_hash(path, ws.cache)[:10]  # a VAE: A1111's `VAE hash`
    except Exception:  # safetensors' own errors too: a file that cannot be read is one not matched
        return None


def _run_files(ws: Workspace, kind: str) -> Iterator[Path]:
    """A run's published files and its checkpoints' (never the trainer's resumable state)."""
    if kind == "lora":
        patterns = ("*/*.safetensors", "*/checkpoints/step-*/*.safetensors")
    else:
        patterns = ("*/embeddings/*", "*/checkpoints/step-*/embeddings/*")
    for pattern in patterns:
        yield from sorted(ws.runs.glob(pattern))


def _candidates(ws: Workspace, kind: str) -> Iterator[Path]:
    """Where a file with a recorded hash may still be: the library folder, the runs, exports/."""
    if kind == "vae":
        yield from (p for p in sorted(ws.models.iterdir()) if p.is_file()) if ws.models.is_dir() else ()
        return
    folder = ws.loras if kind == "lora" else ws.embeddings
    yield from list_weight_files(folder, kind)
    yield from _run_files(ws, kind)
    if ws.exports.is_dir():
        yield from sorted(p for p in ws.exports.rglob("*") if p.suffix.lower() in {".safetensors", ".pt", ".bin"})


def find_by_hash(ws: Workspace, kind: str, short: str, skip: Path | None = None) -> Path | None:
    """The first workspace file of `kind` whose hash is `short` (`_candidates` order), or None."""
    for path in _candidates(ws, kind):
        try:
            if not path.is_file() or path.stat().st_size > _MAX_BYTES[kind] or (skip and path.samefile(skip)):
                continue
        except OSError:
            continue
        found = _short_hash(ws, kind, path)
        if found and _same_hash(found, short):
            return path
    return None


def _library_name(ws: Workspace, kind: str, path: Path) -> str | None:
    """The plain name a `<lora:…>` tag finds `path` by (None where it has none: a run's or export's file)."""
    from lorastudio.service.names import find_lora

    if kind != "lora":
        return None
    for name in (path.stem, path.name):
        try:
            if find_lora(ws, name).resolve() == path.resolve():
                return name
        except (LorastudioError, OSError):
            continue
    return None


def changed_weights(ws: Workspace, kind: str, recorded: dict[str, str], files: dict[str, Path]) -> list[WeightChange]:
    """Each of the `recorded` {name: hash} whose file now (`files`, name: path) has another hash, with a
    file that has the recorded one where the workspace holds one."""
    changes = []
    for name, short in recorded.items():
        path = files.get(name)
        current = _short_hash(ws, kind, path) if path is not None else None
        if not current or not short or _same_hash(current, short):
            continue
        found = find_by_hash(ws, kind, short, skip=path)
        use = _library_name(ws, kind, found) if found is not None else None
        changes.append(WeightChange(kind, name, short[:12], current[:12], found, use))
    return changes


def lora_files_of(ws: Workspace, names: Iterable[str], policy: NamePolicy = STRICT) -> dict[str, Path]:
    """{name: the file a `<lora:NAME>` tag finds now} for the names that find one."""
    from lorastudio.service.names import find_lora

    files = {}
    for name in names:
        try:
            files[name] = find_lora(ws, name, policy)
        except LorastudioError:
            continue
    return files


def embedding_files_of(ws: Workspace, names: Iterable[str]) -> dict[str, Path]:
    """{word: the file in embeddings/ answering to it now} for the words one answers to."""
    from lorastudio.service.embedding_files import named_embedding_files

    wanted = set(names)
    return {e.name: e.path for e in named_embedding_files(ws.embeddings) if e.shadowed_by is None and e.name in wanted}


def model_change(ws: Workspace, name: str, recorded: str, policy: NamePolicy = STRICT) -> WeightChange | None:
    """The model `name` finds now (read by `policy`: a server's never reads a path an image names),
    where its hash is not the `recorded` one (10+ hex; A1111's old 8-hex hashes cannot be compared);
    the library model with the recorded hash, where there is one."""
    from lorastudio.models.loading import model_hash, single_file_sha256
    from lorastudio.models.tiny import is_tiny_name
    from lorastudio.service.library import Library
    from lorastudio.service.names import find_model

    if not name or len(recorded or "") < 10 or is_tiny_name(name):
        return None
    try:
        where = find_model(ws, name, policy, build=False)
        if where.path is None:  # a hub id: its hash is its name's
            return None
        current = single_file_sha256(where.path, ws.cache) if where.kind == "single_file" else model_hash(where.path, ws.cache)
    except (LorastudioError, OSError):
        return None
    if _same_hash(current, recorded):
        return None
    for row in Library(ws).models():
        path = Path(row["path"])
        if row["name"] == name or not (row["sha256"] or "").startswith(recorded[:10].lower()) or not path.exists():
            continue
        try:  # the row's hash is what the file had when it was added: check the file still has it
            now = single_file_sha256(path, ws.cache) if path.is_file() else model_hash(path, ws.cache)
        except (LorastudioError, OSError):
            continue
        if _same_hash(now, recorded):
            return WeightChange("model", name, recorded[:10], current[:10], path, row["name"])
    return WeightChange("model", name, recorded[:10], current[:10])


def vae_change(ws: Workspace, name: str, recorded: str, policy: NamePolicy = STRICT) -> WeightChange | None:
    """The VAE `name` finds now, where its hash is not the `recorded` one; a VAE file in models/ with it."""
    from lorastudio.service.names import find_vae

    if not name or len(recorded or "") < 10:
        return None
    try:
        path = find_vae(ws, name, policy)
    except LorastudioError:
        return None
    changes = changed_weights(ws, "vae", {name: recorded}, {name: path})
    if not changes or changes[0].found is None:
        return changes[0] if changes else None
    found = changes[0].found
    use = found.name if found.parent.resolve() == ws.models.resolve() else str(found.absolute())
    return WeightChange("vae", name, changes[0].recorded, changes[0].current, found, use)


@dataclass
class Pins:
    """Files with a recipe's recorded hashes the request is made with (`Replay.lora_files`, `.embedding_files`)."""

    loras: dict[str, Path]
    embeddings: dict[str, Path]


def check_networks(
    ws: Workspace,
    request: dict,
    loras: dict[str, str],
    embeddings: dict[str, str],
    notes: list[RecipeNote],
    form: bool = False,
) -> Pins:
    """Check the recorded {name: hash} of the request's LoRAs and embeddings against the files their names
    find now. A LoRA whose recorded file is in loras/ under another name gets its tags renamed; one found
    elsewhere (a run's checkpoint, exports/), and an embedding, is pinned for `run_generation(replay=)`.
    `form` (the web form takes only the request, on a server): names are read strictly, and a file it
    cannot pin is a "will differ" note."""
    from lorastudio.service.recipe_loras import rename_lora_tags

    pins = Pins({}, {})
    renames = {}
    policy = STRICT if form else LENIENT
    for change in changed_weights(ws, "lora", loras, lora_files_of(ws, loras, policy)) + changed_weights(
        ws, "embedding", embeddings, embedding_files_of(ws, embeddings)
    ):
        if change.found is not None and change.use:
            renames[change.name] = change.use
        elif change.found is not None and not form:
            (pins.loras if change.kind == "lora" else pins.embeddings)[change.name] = change.found
        else:
            change = WeightChange(change.kind, change.name, change.recorded, change.current)
        notes.append(change_note(change))
    rename_lora_tags(request, renames)
    return pins
