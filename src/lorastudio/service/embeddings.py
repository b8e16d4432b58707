"""Textual-inversion embeddings in the workspace: list, import, delete.

A file's stem is its prompt word, a picture's the name stored in it (as in A1111:
`service.embedding_files`, which also decides the file that answers when two claim one word).
The files listed here are the files a prompt can use: `service.workspace.EMBEDDING_SUFFIXES` is
the one table for both. Imports take what civitai and A1111 hand out (.safetensors, pickled
.pt/.bin, A1111's pictures: .png, .webp, .jxl, .avif) and store pickles and pictures as
.safetensors, which A1111, ComfyUI and this studio all read.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.service.embedding_files import (
    find_embedding,
    named_embedding_files,
    shadowed_note,
    word_from_stored_name,
)
from lorastudio.service.names import LIST_EMBEDDINGS, is_plain_name, unknown_name
from lorastudio.service.workspace import (
    EMBEDDING_SUFFIXES,
    Workspace,
    new_entry_name,
    rename_without_clobbering,
    safe_name,
    weight_file_row_and_header,
)

__all__ = [
    "EMBEDDING_IMPORT_SUFFIXES",
    "list_embeddings",
    "import_embedding",
    "delete_embedding",
    "rename_embedding",
]

# What an import takes: safetensors are copied as they are, the others converted to safetensors.
EMBEDDING_IMPORT_SUFFIXES = EMBEDDING_SUFFIXES
# An embedding is kilobytes (SDXL's 75 vectors: 600 KB); a larger file in embeddings/ is not read to be
# listed, nor read to be imported (a model given by mistake would be loaded whole first).
MAX_LISTED_READ_BYTES = 64 * 1024 * 1024


def _check_embedding_size(path: Path) -> None:
    size = path.stat().st_size
    if size > MAX_LISTED_READ_BYTES:
        raise LorastudioError(f"{path.name}: {size >> 20} MB is far too large for an embedding; is it a model?")


def _vectors_shape(shapes: dict[str, list[int]]) -> list[int]:
    """The shape of the tensor that holds the vectors: `emb_params`, SDXL's `clip_l` (the first
    encoder's, as for SD1), an A1111 file's `string_to_param` (not its `string_to_token`), else
    the one tensor a diffusers concept file has."""
    for name in ("emb_params", "clip_l", "string_to_param.*"):
        if name in shapes:
            return shapes[name]
    params = [shape for name, shape in shapes.items() if name.split(".", 1)[0] == "string_to_param"]
    return params[0] if params else next(iter(shapes.values()), [0, 0])


def _vectors_and_width(header: dict[str, Any], source: str) -> tuple[int | None, int | None]:
    """(vectors, width) of a .safetensors embedding, from its header, as A1111 shows them; a
    diffusers concept file with several tokens is refused as loading it is."""
    from lorastudio.adapters.embeddings import has_embedding_layout, refuse_several_concept_terms

    shapes = {k: v["shape"] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    if not has_embedding_layout(shapes):
        refuse_several_concept_terms({k: tuple(v) for k, v in shapes.items()}, source)
    shape = _vectors_shape(shapes)
    return (shape[0] if len(shape) > 1 else 1), (_first_encoder_width(shapes, shape[-1]) if shape else None)


def _first_encoder_width(shapes: dict[str, list[int]], width: int) -> int:
    """A1111 lists an SDXL embedding by its CLIP-L width: one matrix of CLIP-L and CLIP-G side by side
    (HCP-Diffusion's SDXL files, `split_joined_vectors`) is shown so too, not as another family's 2048."""
    from lorastudio.adapters.embeddings import JOINED_WIDTHS

    joined = len(shapes) == 1 and len(next(iter(shapes.values()))) == 2
    return JOINED_WIDTHS[width][0] if joined and width in JOINED_WIDTHS else width


def embedding_owner(path: Path) -> str | None:
    """The training run (output name) that published a library embedding; None for a file put
    there by hand (or one that cannot be read)."""
    from lorastudio.models.checkpoint import read_safetensors_metadata

    try:
        return read_safetensors_metadata(path).get("ss_output_name") or None
    except (LorastudioError, OSError):
        return None


def _read_for_listing(path: Path) -> tuple[int, int, dict[str, str]]:
    """(vectors, width, A1111 facts) of a pickled or picture embedding, read weights-only."""
    from lorastudio.adapters import load_embedding
    from lorastudio.adapters.embeddings import JOINED_WIDTHS, split_joined_vectors

    _check_embedding_size(path)
    embedding = load_embedding(path)
    width = int(embedding.vectors[0].shape[-1])
    embedding = split_joined_vectors(embedding, JOINED_WIDTHS.get(width, []))  # HCP's SDXL: CLIP-L's width
    return embedding.num_vectors, int(embedding.vectors[0].shape[-1]), embedding.info


def list_embeddings(ws: Workspace) -> list[dict[str, Any]]:
    """Every embedding in embeddings/: name (its prompt word), file, size, metadata, `vectors` and
    `shape` (width), `shadowed_by`.

    A .pt/.bin or picture is read (weights-only, as JSON) for its shape, its A1111 facts as metadata.
    A file that cannot be read is listed with an `error` and no shape; one whose word another file
    answers to (`shadowed_by`, that file) with a note as its `error`: prompts never use it.
    """
    rows = []
    for entry in named_embedding_files(ws.embeddings):
        path = entry.path
        row, header = weight_file_row_and_header(path)
        row["name"] = entry.name
        vectors = width = None
        if row["error"] is None:
            try:
                if header is None:
                    vectors, width, row["metadata"] = _read_for_listing(path)
                else:
                    vectors, width = _vectors_and_width(header, path.name)
            except (LorastudioError, KeyError, TypeError, OSError) as exc:
                row["error"] = str(exc) if isinstance(exc, LorastudioError) else f"{path.name}: bad header"
        if entry.shadowed_by is not None:
            row["error"] = shadowed_note(entry, ws.embeddings)
        shadowed_by = entry.shadowed_by.relative_to(ws.embeddings).as_posix() if entry.shadowed_by else None
        rows.append({**row, "vectors": vectors, "shape": width, "shadowed_by": shadowed_by})
    return rows


def _embedding_path(ws: Workspace, name: str) -> Path:
    """The file the listing shows answering to `name`; anything else is "not found"."""
    path = find_embedding(ws.embeddings, name) if is_plain_name(name) else None
    if path is None:
        raise unknown_name("embedding", name, ws.embeddings, LIST_EMBEDDINGS)
    return path


def delete_embedding(ws: Workspace, name: str) -> dict[str, Any]:
    """Remove an embedding file from embeddings/ (its prompt word stops being replaced)."""
    _embedding_path(ws, name).unlink()
    return {"name": name, "deleted": True}


def rename_embedding(ws: Workspace, name: str, new_name: str) -> dict[str, Any]:
    """Give an embedding a new name: its file stem is the word prompts use, so that word changes.

    A picture whose word is the name stored in it is refused (its word would stay): importing it
    under the new name stores it as `NEW.safetensors`.
    """
    path = _embedding_path(ws, name)
    new_name = safe_name(new_name, "new embedding name")
    if word_from_stored_name(path):
        raise LorastudioError(
            f"{path.name}: a picture embedding answers to the name stored in it ({name!r}), not to its file "
            f"name; import it under the new name instead (`lorastudio embeddings import {path.name} --name "
            f"{new_name}`, or the REST upload with `name`), then delete {name!r}."
        )
    target = path.with_name(f"{new_name}{path.suffix}")  # in its own (sub)folder of embeddings/
    taken = find_embedding(ws.embeddings, new_name)
    if taken is not None:
        raise LorastudioError(
            f"embedding {new_name!r}: already exists in {taken.parent}; choose another name.",
            key="name_taken",
            params={"what": "embedding", "name": new_name},
        )
    rename_without_clobbering(path, target, "embedding")
    return {"name": new_name, "renamed_from": name, "file": target.name}


def import_embedding(
    ws: Workspace, source: Path, name: str | None = None, *, shown_as: str | None = None
) -> dict[str, Any]:
    """Add a textual-inversion embedding to `embeddings/` under `name` (its prompt word; default, as
    A1111 names them: a picture's stored name, else the file's stem — `shown_as`'s — made safe).

    A .safetensors is copied as it is. A pickled .pt/.bin (read weights-only) or an A1111 picture
    (.png, .webp, .jxl, .avif: its JSON) is checked and written as `NAME.safetensors` in the layout A1111 and ComfyUI read
    (`emb_params`; SDXL `clip_l`/`clip_g`), its A1111 facts (name, step, sd_checkpoint...) kept
    as metadata. A picture without embedding data, or a damaged file, is refused in one line
    naming the file: `shown_as`, the client's file name, for an upload stored under another name.
    """
    source = Path(source)
    try:
        return _import(ws, source, name, Path(shown_as or source.name).stem)
    except LorastudioError as exc:
        if not shown_as or shown_as == source.name:
            raise
        named = type(exc).wrap(str(exc).replace(source.name, shown_as), exc)
        named.params = {k: v.replace(source.name, shown_as) if isinstance(v, str) else v for k, v in named.params.items()}
        raise named from None


def _import(ws: Workspace, source: Path, name: str | None, stem: str) -> dict[str, Any]:
    from lorastudio.adapters import load_embedding
    from lorastudio.adapters.embedding_png import EMBEDDING_IMAGE_SUFFIXES

    suffix = source.suffix.lower()
    if suffix not in EMBEDDING_IMPORT_SUFFIXES:
        raise LorastudioError(
            f"{source.name}: type {suffix or '(none)'} is not an embedding file; "
            f"use one of {', '.join(EMBEDDING_IMPORT_SUFFIXES)}."
        )
    _check_embedding_size(source)
    embedding = load_embedding(source)  # refuses what no prompt could use, before anything is written
    # A1111 names a picture embedding by the name it holds (a renamed civitai picture keeps its word),
    # any other file by its stem.
    stored = str(embedding.info.get("name") or "").strip() if suffix in EMBEDDING_IMAGE_SUFFIXES else ""
    name = new_entry_name(name, stored or stem, "embedding", "embedding")
    target = ws.safe_child(ws.embeddings, f"{name}.safetensors", "embedding name")
    if target.exists() or find_embedding(ws.embeddings, name) is not None:
        raise LorastudioError(f"embedding {name!r}: already in the library; choose another name.")
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        if suffix == ".safetensors":
            shutil.copyfile(source, tmp)
        else:
            _save_converted(embedding, tmp)
        rename_without_clobbering(tmp, target, "embedding")  # one written meanwhile is never replaced
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "name": name,
        "vectors": [int(v.shape[0]) for v in embedding.vectors],
        "width": [int(v.shape[-1]) for v in embedding.vectors],
        "path": target.name,
        "converted_from": None if suffix == ".safetensors" else suffix[1:],
        "metadata": embedding.info,
    }


def _save_converted(embedding, path: Path) -> None:
    """A converted embedding as safetensors: its vectors in their own dtype, its A1111 facts kept."""
    from lorastudio.adapters import save_embedding

    save_embedding(embedding, path, metadata=embedding.info)
