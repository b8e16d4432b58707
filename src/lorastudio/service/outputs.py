"""Generated images in outputs/: list them (newest first) and read one back.

An output is addressed by `folder/file` under outputs/ (its `id`), never by a path; the
CLI's `outputs list` and `GET /api/v1/outputs` print the same rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorastudio.service.names import resolve
from lorastudio.service.workspace import Workspace

__all__ = ["list_outputs", "output_path", "output_info"]

LIST_OUTPUTS = "GET /api/v1/outputs (or `lorastudio outputs list`)"


def list_outputs(ws: Workspace, limit: int = 100) -> list[dict[str, Any]]:
    """The newest `limit` images the library recorded that are still in outputs/."""
    from lorastudio.service.library import Library

    outputs_root = ws.outputs.resolve()
    rows = []
    for row in Library(ws).outputs(limit):
        path = Path(row["path"]).resolve()
        if outputs_root not in path.parents or not path.is_file():
            continue
        rel = path.relative_to(outputs_root).as_posix()
        rows.append(
            {
                "id": rel,
                "url": f"/api/v1/outputs/{rel}",
                "seed": row["seed"],
                "model": row["model"],
                "model_hash": row["model_hash"],
                "prompt": row["prompt"],
                "created_at": row["created_at"],
            }
        )
    return rows


def output_path(ws: Workspace, folder: str, file: str) -> Path:
    """The image `folder/file` names in outputs/ (plain names only, as every request name)."""
    where = resolve(folder, ws.outputs, "output folder", LIST_OUTPUTS, want="dir").path
    return resolve(file, where, "output", LIST_OUTPUTS, want="file").path


def output_info(ws: Workspace, folder: str, file: str) -> dict[str, Any]:
    """The image's infotext, parsed, and its YAML recipe when there is one."""
    import yaml

    from lorastudio.generate.infotext import parse_infotext, read_infotext

    path = output_path(ws, folder, file)
    text = read_infotext(path) or ""
    recipe_path = path.with_suffix(".yaml")
    recipe = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) if recipe_path.is_file() else None
    return {
        "id": f"{folder}/{file}",
        "infotext": text,
        "parameters": parse_infotext(text) if text else {},
        "recipe": recipe,
    }
