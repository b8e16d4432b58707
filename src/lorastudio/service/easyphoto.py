"""The workspace side of the portrait routes that take images inline (EasyPhoto's API, the
native portrait-make job): base64 photos stored as uploads, base64 templates added to the
template library, persons checked before a job is queued, a refused photo set read back
from the job's selection report.

Every refusal is an `InvalidRequest` (422) whose first word is the request field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.jobs import Job
from lorastudio.service.studio import InvalidRequest, Studio
from lorastudio.service.workspace import Workspace, safe_name

__all__ = [
    "UPLOADED_TEMPLATE_PREFIX",
    "add_template_image",
    "delete_library_template",
    "library_templates",
    "check_people",
    "photo_refusal",
    "store_photos",
    "template_names",
]

# Templates sent as images are kept in the library as `upload-<sha256[:12]>`: the same image
# sent again reuses its entry (and its cached faces).
UPLOADED_TEMPLATE_PREFIX = "upload-"
# A template reference longer than this (or a data: URL) is an image, not a name.
MAX_NAME_CHARS = 200


def _reason(exc: LorastudioError) -> str:
    """The message without its leading `<what>: ` (the caller names the field instead)."""
    text = str(exc)
    head, sep, rest = text.partition(": ")
    return rest if sep and len(head) < 300 else text


@contextmanager
def _unprocessable() -> Iterator[None]:
    """A plain refusal of a sent image (bad base64, empty) as the 422 of a bad field; a full disk
    or a missing name keep their own status."""
    try:
        yield
    except LorastudioError as exc:
        if type(exc) is LorastudioError:
            raise InvalidRequest.wrap(str(exc), exc) from None
        raise


def store_photos(ws: Workspace, images: list[str], field: str) -> tuple[list[str], list[str]]:
    """Base64 photos stored as PNG uploads: (upload names, file names `photo-01.png`...).

    A photo that is not an image refuses the whole request (nothing is kept).
    """
    from lorastudio.service.uploads import discard_uploads, store_image

    stored: list[str] = []
    try:
        for index, data in enumerate(images):
            with _unprocessable():
                stored.append(store_image(ws, data, f"{field}[{index}]"))
    except BaseException:
        discard_uploads(ws, stored)
        raise
    return stored, [f"photo-{index + 1:02d}.png" for index in range(len(stored))]


def _is_image(ref: str) -> bool:
    return ref.startswith("data:") or len(ref) > MAX_NAME_CHARS


def _library_template(ws: Workspace, ref: str) -> str | None:
    from lorastudio.service.templates import find_template

    try:
        return find_template(ws, ref, allow_paths=False).stem
    except NotFoundError:
        return None


def _add_image_template(
    ws: Workspace, image: Any, where: str, backend: str | None, name: str | None = None
) -> str:
    """An image put in the library as `name`, or (no name) under its content hash, reused when it
    is there already."""
    import io
    import tempfile

    from lorastudio.image_modes import to_rgb
    from lorastudio.service.templates import add_template

    buffer = io.BytesIO()
    to_rgb(image).save(buffer, format="PNG")
    data = buffer.getvalue()
    if name is None:
        name = UPLOADED_TEMPLATE_PREFIX + hashlib.sha256(data).hexdigest()[:12]
        if _library_template(ws, name):
            return name
    else:
        try:
            name = safe_name(name, "template name")
        except LorastudioError as exc:
            raise InvalidRequest.wrap(f"name: {_reason(exc)}", exc) from None
        if _library_template(ws, name):
            raise InvalidRequest(f"name: template {name!r} is in the library already; choose another or delete it first.")
    folder = ws.cache / "template-uploads"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as work:
        path = Path(work) / f"{name}.png"
        path.write_bytes(data)
        try:
            add_template(ws, path, name=name, backend=backend)
        except LorastudioError as exc:  # no face: name the field, not the temporary file
            text = _reason(exc) if str(exc).startswith(str(path)) else str(exc)
            raise InvalidRequest.wrap(f"{where}: {text}", exc) from None
    return name


def template_names(
    ws: Workspace, refs: list[str], field: str, backend: str | None = None, fields: list[str] | None = None
) -> list[str]:
    """Each template reference as a library name: a library name stays, a base64 image or an
    upload name (POST /api/v1/uploads) is added to the library first.

    A template image without a face is refused, naming `field[i]` (or `fields[i]`: each
    reference's own request field); the library keeps nothing of it.
    """
    from lorastudio.service.uploads import decode_image, upload_path

    names = []
    for index, ref in enumerate(refs):
        where = fields[index] if fields else f"{field}[{index}]"
        if not ref.strip():
            raise InvalidRequest(f"{where}: empty; give a template name or a base64 image.")
        if _is_image(ref):
            with _unprocessable():
                image, _ = decode_image(ref, where)
        elif (found := _library_template(ws, ref)) is not None:
            names.append(found)
            continue
        elif _is_upload(ws, ref):
            image, _ = decode_image_file(upload_path(ws, ref), where)
        else:
            from lorastudio.service.templates import find_template

            find_template(ws, ref, allow_paths=False)  # the 404 that lists the library's templates
            raise AssertionError("unreachable")
        names.append(_add_image_template(ws, image, where, backend))
    return names


def _is_upload(ws: Workspace, name: str) -> bool:
    from lorastudio.service.uploads import upload_path

    try:
        upload_path(ws, name)
    except LorastudioError:
        return False
    return True


def decode_image_file(path: Path, where: str) -> tuple[Any, str]:
    """An uploaded image file opened within the request limits (as a base64 one would be)."""
    from lorastudio.generate.images import RequestImageError, open_request_image
    from lorastudio.service.uploads import MAX_IMAGE_PIXELS

    try:
        return open_request_image(path, where, MAX_IMAGE_PIXELS)
    except RequestImageError as exc:
        raise InvalidRequest.wrap(str(exc), exc) from None


def check_people(ws: Workspace, names: list[str], field: str) -> None:
    """Every name is a trained person with a LoRA; else one line naming the field and the known people."""
    from lorastudio.service.portraits import list_people, load_person

    people = list_people(ws)
    known = ", ".join(row["name"] for row in people) or "none yet"
    if not names:
        raise InvalidRequest(f"{field}: empty; name a trained person ({known}).")
    for name in names:
        try:
            safe_name(name, "person")
        except LorastudioError as exc:
            raise InvalidRequest.wrap(f"{field}: {_reason(exc)}", exc) from None
        if not any(row["name"] == name for row in people):
            raise InvalidRequest(f"{field}: {name!r} is not a trained person; known: {known} (train them first).")
        try:
            load_person(ws, name)
        except LorastudioError as exc:
            raise InvalidRequest.wrap(f"{field}: {exc}", exc) from None


def photo_refusal(studio: Studio, job: Job, field: str) -> str | None:
    """Why a failed portrait-train job refused its photos (each left-out photo by name with its
    reason), read from the job's `selection` event; None when it failed for another reason."""
    minimum = int(((job.payload or {}).get("config") or {}).get("min_photos") or 1)
    for event in studio.job_events(job.id):
        if event.type == "selection" and len(event.data.get("kept") or []) < minimum:
            return (
                f"{field}: {event.data.get('summary', '')}; need at least {minimum} usable photos:"
                " send clear photos of one face (at least 128 px, upright)."
            )
    return None


# --- the template library over HTTP -------------------------------------------------------


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "path"}  # a response never carries a server path


def library_templates(ws: Workspace) -> list[dict[str, Any]]:
    """The library's templates: name, file, number of faces (None until detected)."""
    from lorastudio.service.templates import list_templates

    return [_row(row) for row in list_templates(ws)]


def add_template_image(
    ws: Workspace, image: str | Path, where: str, name: str | None = None, backend: str | None = None
) -> dict[str, Any]:
    """A template from a base64 image or an uploaded file, its faces found; a photo without a
    face is refused naming `where`. Answers its library row."""
    from lorastudio.service.uploads import decode_image

    with _unprocessable():
        picture, _ = decode_image_file(image, where) if isinstance(image, Path) else decode_image(image, where)
    stem = _add_image_template(ws, picture, where, backend, name)
    return next(row for row in library_templates(ws) if row["name"] == stem)


def delete_library_template(ws: Workspace, name: str) -> dict[str, Any]:
    """Remove a library template (never a path: the name must be in the library)."""
    from lorastudio.service.templates import delete_template, find_template

    return delete_template(ws, find_template(ws, name, allow_paths=False).stem)
