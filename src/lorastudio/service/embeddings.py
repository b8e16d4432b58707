"""Textual-inversion embeddings in the workspace: list, import, delete.

A file's stem is its prompt word (as in A1111). The files listed here are the files a
prompt can use: `service.workspace.EMBEDDING_SUFFIXES` is the one table for both.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.service.names import LIST_EMBEDDINGS, find_listed_weight
from lorastudio.service.workspace import (
    Workspace,
    find_weight,
    list_weight_files,
    rename_without_clobbering,
    safe_name,
    weight_file_row_and_header,
)

__all__ = ["list_embeddings", "import_embedding", "delete_embedding", "rename_embedding"]


def _vectors_shape(shapes: dict[str, list[int]]) -> list[int]:
    """The shape of the tensor that holds the vectors: `emb_params`, SDXL's `clip_l` (the first
    encoder's, as for SD1), an A1111 file's `string_to_param` (not its `string_to_token`), else
    the one tensor a diffusers concept file has."""
    for name in ("emb_params", "clip_l", "string_to_param.*"):
        if name in shapes:
            return shapes[name]
    params = [shape for name, shape in shapes.items() if name.split(".", 1)[0] == "string_to_param"]
    return params[0] if params else next(iter(shapes.values()), [0, 0])


def _vectors_and_width(header: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(vectors, width) of a .safetensors embedding, from its header, as A1111 shows them.

    Pickled embeddings are not opened to be listed (no header): (0, 0), as before.
    """
    if header is None:
        return 0, 0
    shapes = {k: v["shape"] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    shape = _vectors_shape(shapes)
    return (shape[0] if len(shape) > 1 else 1), (shape[-1] if shape else None)


def embedding_owner(path: Path) -> str | None:
    """The training run (output name) that published a library embedding; None for a file put
    there by hand (or one that cannot be read)."""
    from lorastudio.models.checkpoint import read_safetensors_metadata

    try:
        return read_safetensors_metadata(path).get("ss_output_name") or None
    except (LorastudioError, OSError):
        return None


def list_embeddings(ws: Workspace) -> list[dict[str, Any]]:
    """Every embedding in embeddings/: name, file, size, metadata, `vectors` and `shape` (width).

    A file that cannot be read is listed with an `error` and no shape.
    """
    rows = []
    for path in list_weight_files(ws.embeddings, "embedding"):
        row, header = weight_file_row_and_header(path)
        vectors = width = None
        if row["error"] is None:
            try:
                vectors, width = _vectors_and_width(header)
            except (LorastudioError, KeyError, TypeError, OSError) as exc:
                row["error"] = str(exc) if isinstance(exc, LorastudioError) else f"{path.name}: bad header"
        rows.append({**row, "vectors": vectors, "shape": width})
    return rows


def _embedding_path(ws: Workspace, name: str) -> Path:
    return find_listed_weight(ws.embeddings, name, "embedding", "embedding", LIST_EMBEDDINGS)


def delete_embedding(ws: Workspace, name: str) -> dict[str, Any]:
    """Remove an embedding file from embeddings/ (its prompt word stops being replaced)."""
    _embedding_path(ws, name).unlink()
    return {"name": name, "deleted": True}


def rename_embedding(ws: Workspace, name: str, new_name: str) -> dict[str, Any]:
    """Give an embedding a new name: its file stem is the word prompts use, so that word changes."""
    path = _embedding_path(ws, name)
    new_name = safe_name(new_name, "new embedding name")
    target = path.with_name(f"{new_name}{path.suffix}")  # in its own (sub)folder of embeddings/
    taken = find_weight(ws.embeddings, new_name, "embedding")
    if taken is not None:
        raise LorastudioError(f"embedding {new_name!r}: already exists in {taken.parent}; choose another name.")
    rename_without_clobbering(path, target, "embedding")
    return {"name": new_name, "renamed_from": name, "file": target.name}


def import_embedding(ws: Workspace, source: Path, name: str) -> dict[str, Any]:
    """Copy a .safetensors textual-inversion embedding into `embeddings/` (its stem is the prompt word)."""
    from lorastudio.adapters import load_embedding

    source = Path(source)
    if source.suffix.lower() != ".safetensors":
        raise LorastudioError(f"upload {source.name!r}: expected a .safetensors file; convert it first.")
    target = ws.safe_child(
        ws.embeddings, f"{safe_name(name, 'embedding name')}.safetensors", "embedding name"
    )
    if target.exists() or find_weight(ws.embeddings, name, "embedding") is not None:
        raise LorastudioError(f"embedding {name!r}: already in the library; choose another name.")
    embedding = load_embedding(source)
    tmp = target.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    return {"name": name, "vectors": [int(v.shape[0]) for v in embedding.vectors], "path": target.name}
