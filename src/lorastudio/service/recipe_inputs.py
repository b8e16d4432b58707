"""The pictures a recipe names (init image, mask, each ControlNet unit's image and mask), written so
the recipe still finds them, and found again when it is read.

A picture that came with the request (an upload, a base64 image, the web form's) lives in the
workspace's uploads, which are a cache; the recipe keeps a copy beside its image, `inputs/<hash>.png`,
named relative to the recipe so a moved outputs folder or workspace still reproduces. A user's own file
is named by its absolute path (the CLI's relative path meant the folder it was run in); if it moves,
reading the recipe says so in one line naming the recipe and the file.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lorastudio.errors import NotFoundError
from lorastudio.service.uploads import UPLOADS_DIR
from lorastudio.service.workspace import Workspace

__all__ = ["INPUTS_FOLDER", "find_recipe_pictures", "kept_request"]

# Beside a request's images: the copies of the pictures it came with (not downloads, not outputs).
INPUTS_FOLDER = "inputs"

# request key -> (what it is, the CLI option that gives it anew)
_REQUEST_PICTURES = {"init_image": ("init image", "--init-image PATH"), "mask": ("mask", "--mask PATH")}
_UNIT_PICTURES = {"image": "image", "mask": "mask"}


def _pictures(request: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str, str, str]]:
    """(the mapping holding it, its key, what it is, how to give it anew) for each picture a request names."""
    for key, (what, option) in _REQUEST_PICTURES.items():
        if request.get(key):
            yield request, key, what, option
    for index, unit in enumerate(request.get("controlnet") or []):
        if not isinstance(unit, dict):
            continue
        for key, what in _UNIT_PICTURES.items():
            if unit.get(key):
                yield unit, key, f"ControlNet unit {index} {what}", "--control ...,image=PATH"


def _is_upload(ws: Workspace, path: Path) -> bool:
    try:
        return path.resolve().is_relative_to((ws.cache / UPLOADS_DIR).resolve())
    except OSError:
        return False


def _keep_copy(source: Path, folder: Path) -> str:
    """A copy of `source` in `folder/inputs/`, named by its content (a batch, or a grid's cells, share
    one); answers its path relative to `folder`."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = folder / INPUTS_FOLDER / f"{digest}{source.suffix.lower() or '.png'}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    return target.relative_to(folder).as_posix()


def kept_request(ws: Workspace, request: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The request as its recipes in `folder` record it: an uploaded picture as its kept copy
    (`inputs/<hash>.png`), a user's file by its absolute path."""
    request = {**request, "controlnet": [dict(unit) for unit in request.get("controlnet") or []]}
    for holder, key, _, _ in _pictures(request):
        path = Path(holder[key])
        if _is_upload(ws, path) and path.is_file():
            holder[key] = _keep_copy(path, folder)
        else:
            holder[key] = str(path.absolute())
    return request


def find_recipe_pictures(request: dict[str, Any], recipe: Path, given: Iterable[str] = ()) -> None:
    """Each picture a recipe's request names, made a path that exists (a kept copy is relative to the
    recipe's folder; an older recipe's relative path, to where it is run); a missing one is one line
    naming the recipe and the file. `given`: request keys the caller replaces (no check for those)."""
    given = set(given)
    for holder, key, what, option in _pictures(request):
        if (key if holder is request else "controlnet") in given:
            continue
        written = Path(holder[key])
        beside = recipe.parent / written
        if not written.is_absolute() and beside.is_file():
            holder[key] = str(beside)
        elif not written.is_file():
            shown = written if written.is_absolute() else beside
            raise NotFoundError(
                f"{recipe}: its {what} {shown} is missing (moved or deleted); put it back, or give it anew ({option})."
            )
