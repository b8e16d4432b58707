"""The template library (`studio/templates`): photos whose faces `portrait make` repaints.

A template is a photo file in the folder, its faces cached beside it (`<name>.faces.json`,
see `portrait/templates.py`). `find_template` also takes a path to any photo (the CLI's
`--template some/photo.jpg`); its face cache is then kept in `cache/templates/`.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.portrait.templates import (
    TEMPLATE_SUFFIXES,
    face_cache_path,
    face_records,
    read_face_cache,
    write_face_cache,
)
from lorastudio.service.workspace import Workspace, safe_name

__all__ = [
    "add_template",
    "delete_template",
    "find_template",
    "list_templates",
    "template_faces",
    "templates_folder",
]


def templates_folder(ws: Workspace) -> Path:
    folder = ws.root / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _template_files(ws: Workspace) -> list[Path]:
    folder = templates_folder(ws)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TEMPLATE_SUFFIXES)


def _open_photo(path: Path):
    from PIL import Image, ImageOps, UnidentifiedImageError

    from lorastudio.image_modes import to_rgb

    try:
        with Image.open(path) as image:
            return to_rgb(ImageOps.exif_transpose(image))  # 16-bit greys kept
    except (OSError, UnidentifiedImageError) as exc:
        raise LorastudioError(f"{path}: not a readable image ({exc}); use a PNG, JPEG or WebP photo.") from None


def find_template(ws: Workspace, ref: str, allow_paths: bool = True) -> Path:
    """A template by its library name (with or without suffix), or (`allow_paths`: the CLI) a path
    to a photo file. A server passes `allow_paths=False`: a request names library templates only."""
    folder = templates_folder(ws)
    for path in _template_files(ws):
        if ref in (path.name, path.stem):
            return path
    given = Path(ref).expanduser()
    if allow_paths and given.is_file():
        return given.resolve()
    names = ", ".join(p.stem for p in _template_files(ws)) or "none yet"
    where = f"not in {folder} and no such file" if allow_paths else f"not in {folder}"
    raise NotFoundError(
        f"template {ref!r}: {where}; templates: {names} "
        "(add one with `lorastudio portrait templates add FILE`)."
    )


def _cache_file(ws: Workspace, template: Path) -> Path:
    """Where a template's face cache lives: beside it in the library, else in cache/templates/."""
    if template.parent.resolve() == templates_folder(ws).resolve():
        return face_cache_path(template)
    digest = hashlib.sha256(str(template.resolve()).encode("utf-8")).hexdigest()[:16]
    folder = ws.cache / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest}-{template.stem}.faces.json"


def template_faces(ws: Workspace, template: Path, backend: Any) -> list[Any]:
    """The template's faces, left to right, from the cache when it is current, else detected and cached."""
    from lorastudio.portrait.faces import Face
    from lorastudio.portrait.make import faces_left_to_right

    cache = _cache_file(ws, template)
    records = read_face_cache(template, backend.name, cache)
    if records is None:
        records = face_records(backend.detect(_open_photo(template)))
        write_face_cache(template, backend.name, records, cache)
    order = faces_left_to_right([r["box"] for r in records])
    return [
        Face(
            box=tuple(records[i]["box"]),
            points={k: tuple(v) for k, v in records[i]["points"].items()},
            score=records[i]["score"],
        )
        for i in order
    ]


def add_template(ws: Workspace, file: str | Path, name: str | None = None, backend: str | None = None) -> dict[str, Any]:
    """Copy a photo into the library under `name` (default: its file name) and find its faces.

    A photo without a face is refused (one line naming it) and not kept.
    """
    from lorastudio.service.faces import open_backend

    source = Path(file).expanduser()
    if not source.is_file():
        raise NotFoundError(f"{source}: no such file; give a template photo (PNG, JPEG or WebP).")
    suffix = source.suffix.lower()
    if suffix not in TEMPLATE_SUFFIXES:
        raise LorastudioError(f"{source}: {suffix or 'no suffix'} is not a photo; use one of {', '.join(TEMPLATE_SUFFIXES)}.")
    _open_photo(source)
    stem = safe_name(name or source.stem, "template name")
    folder = templates_folder(ws)
    if any(p.stem == stem for p in _template_files(ws)):
        raise LorastudioError(
            f"template {stem!r}: already in {folder}; choose another --name or delete it first.",
            key="name_taken",
            params={"what": "template", "name": stem},
        )
    target = folder / f"{stem}{suffix}"
    shutil.copyfile(source, target)
    try:
        faces = template_faces(ws, target, open_backend(ws, backend))
    except BaseException:
        target.unlink(missing_ok=True)
        face_cache_path(target).unlink(missing_ok=True)
        raise
    if not faces:
        target.unlink(missing_ok=True)
        face_cache_path(target).unlink(missing_ok=True)
        raise LorastudioError(f"{source}: no face found; a template needs at least one clearly visible face.")
    return _row(target, len(faces))


def _row(path: Path, faces: int | None) -> dict[str, Any]:
    return {"name": path.stem, "file": path.name, "path": str(path), "faces": faces}


def list_templates(ws: Workspace) -> list[dict[str, Any]]:
    """One row per template: name, file, path and the number of faces (None until detected)."""
    rows = []
    for path in _template_files(ws):
        records = _any_backend_cache(path)
        rows.append(_row(path, None if records is None else len(records)))
    return rows


def _any_backend_cache(path: Path) -> list[dict[str, Any]] | None:
    import json

    try:
        backend = json.loads(face_cache_path(path).read_text(encoding="utf-8")).get("backend", "")
    except (OSError, ValueError, AttributeError):
        return None
    return read_face_cache(path, str(backend))


def delete_template(ws: Workspace, name: str) -> dict[str, Any]:
    """Remove a template and its face cache from the library."""
    path = find_template(ws, name)
    if path.parent.resolve() != templates_folder(ws).resolve():
        raise NotFoundError(f"template {name!r}: not in {templates_folder(ws)}; only library templates are deleted.")
    path.unlink()
    face_cache_path(path).unlink(missing_ok=True)
    return {"deleted": path.stem}
