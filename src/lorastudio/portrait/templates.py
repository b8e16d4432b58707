"""Template photos and their face boxes, cached beside each template as `<name>.faces.json`.

Detecting faces costs tens of milliseconds per photo with the default backend and seconds with
the slower ones; a template library is read again and again, so the boxes (and 5 points) are
kept next to the photo with the file's size and modification time and the backend that found
them. A changed file or another backend means the cache is stale and the faces are found again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "TEMPLATE_SUFFIXES",
    "face_cache_path",
    "face_records",
    "file_stamp",
    "read_face_cache",
    "write_face_cache",
]

TEMPLATE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def face_cache_path(template: Path) -> Path:
    """`<folder>/<stem>.faces.json` beside the template."""
    return template.with_name(f"{template.stem}.faces.json")


def file_stamp(path: Path) -> dict[str, int]:
    """What says the file changed: its size and modification time (ns)."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def face_records(faces: Sequence[Any]) -> list[dict[str, Any]]:
    """Faces (anything with `box`, `points`, `score`) as plain JSON records."""
    return [
        {
            "box": [float(v) for v in face.box],
            "points": {k: [float(p[0]), float(p[1])] for k, p in (face.points or {}).items()},
            "score": float(face.score),
        }
        for face in faces
    ]


def read_face_cache(template: Path, backend: str, cache: Path | None = None) -> list[dict[str, Any]] | None:
    """The cached face records, or None when there is no cache, the template changed since, the
    backend differs or the cache cannot be read (it is then simply made again). `cache`: the
    cache file when it is not beside the template."""
    path = cache or face_cache_path(template)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("stamp") != file_stamp(template) or data.get("backend") != backend:
        return None
    faces = data.get("faces")
    return faces if isinstance(faces, list) else None


def write_face_cache(
    template: Path, backend: str, records: list[dict[str, Any]], cache: Path | None = None
) -> Path:
    """Write the records with the template's stamp (atomically: a reader never sees half a file)."""
    path = cache or face_cache_path(template)
    data = {"template": str(template) if cache else template.name, "backend": backend, "stamp": file_stamp(template), "faces": records}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path
