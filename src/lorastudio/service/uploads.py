"""What clients send as files: base64 images in a request body, and uploaded files.

Both are checked here, once, before anything else reads them: an image must be a real
image of a usual format within the decoding limits, an uploaded file must be what its
suffix says (no scripts; pickled weights only where a weights-only reader follows). Both are stored here too, under a fresh name in the
workspace's uploads folder, whole or not at all (a `.part` file is renamed into place, a
refused file or a full disk leaves nothing). The API routes only call these.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from lorastudio.errors import InvalidRequest, LorastudioError
from lorastudio.service.quota import StorageFull, is_storage_full
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "MAX_IMAGE_PIXELS",
    "UPLOADS_DIR",
    "UPLOAD_SUFFIXES",
    "DATASET_UPLOAD_SUFFIXES",
    "check_upload",
    "decode_image",
    "store_picture",
    "discard_uploads",
    "image_or_upload",
    "new_upload_name",
    "save_upload",
    "shown_size",
    "store_image",
    "store_stream",
    "upload_path",
    "uploads_dir",
]

# Files sent to the API wait here (by name, under the workspace cache) until a job or route uses them.
UPLOADS_DIR = "uploads"
# Uploaded files are copied to disk in chunks of this many bytes.
COPY_CHUNK = 1024 * 1024

# Largest image a request may carry (width x height), against decompression bombs.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".webp": (b"RIFF",),
    ".bmp": (b"BM",),
    ".zip": (b"PK\x03\x04", b"PK\x05\x06"),
}
# Pickled weights (embeddings only: `service.embeddings` reads them weights-only, never unpickled
# freely): torch's zip format, or its legacy format, which opens with a pickled magic number.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")
_PICKLE_SUFFIXES = (".pt", ".bin")
# Pictures only an embedding import takes (A1111 reads embeddings from them): an ISO box file branded
# AVIF, a JPEG XL codestream or container. The import opens them, or says what Pillow lacks for them.
_EMBEDDING_PICTURE_MAGIC = {
    ".avif": lambda head: head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"),
    ".jxl": lambda head: head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")),
}
# What `POST /api/v1/uploads` takes; a stored .pt/.bin is handed only to an embedding import
# (`upload_path(..., pickles=True)`), every other use of an upload name refuses it.
UPLOAD_SUFFIXES = (*_MAGIC, ".safetensors", *_PICKLE_SUFFIXES)
# A data set's files as a browser uploads them: images, zips, the caption beside each image (.txt,
# or kohya's BLIP .caption) and a kohya metadata json (meta_cap.json...), read as a folder's are.
DATASET_UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".zip", ".txt", ".caption", ".json")
_CAPTION_SUFFIXES = (".txt", ".caption")
# A caption file is text of at most this many bytes; a kohya metadata json (every image's caption and
# tags) of at most this many.
MAX_CAPTION_BYTES = 64 * 1024
MAX_METADATA_BYTES = 64 * 1024 * 1024


def _invalid(exc: Exception) -> LorastudioError:
    return InvalidRequest.wrap(str(exc), exc)


def decode_image(data: str, what: str = "image", *, as_shown: bool = True) -> tuple[PILImage.Image, str]:
    """A base64 image, with or without a `data:image/...;base64,` prefix -> (PIL image, format).

    Only real images of the usual formats pass, within the decoding limits of
    `generate.images.open_request_image` (pixels, PNG text chunks). `as_shown`: a photo's EXIF
    rotation is applied (as A1111 1.7+ reads every request image, and as image files are read
    here), so an init image, its mask and ControlNet images line up, and 16-bit greyscale is
    brought to 8 bits (`image_modes.to_8bit`); off to read metadata as sent.
    """
    from lorastudio.generate.images import RequestImageError, open_request_image

    text = (data or "").strip()
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise LorastudioError(f"{what}: a data URL must be base64 (data:image/png;base64,...).")
    try:
        raw = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise LorastudioError(f"{what}: not valid base64; send a PNG or JPEG as base64.") from None
    if not raw:
        raise LorastudioError(f"{what}: empty; send a PNG or JPEG as base64.")
    try:
        image, fmt = open_request_image(raw, what, MAX_IMAGE_PIXELS)
    except RequestImageError as exc:
        raise _invalid(exc) from None
    if as_shown:
        from PIL import ImageOps

        from lorastudio.image_modes import to_8bit

        image = to_8bit(ImageOps.exif_transpose(image))
    return image, fmt


def check_upload(path: Path, filename: str, allowed: Iterable[str] = UPLOAD_SUFFIXES) -> None:
    """The upload's suffix is one we accept and its first bytes match it (no scripts; a pickle only
    where `allowed` names .pt/.bin, for a reader that loads it weights-only)."""
    from lorastudio.models.checkpoint import read_safetensors_header

    suffix = Path(filename or "").suffix.lower()
    allowed = tuple(allowed)
    if suffix not in allowed:
        raise LorastudioError(
            f"upload {filename!r}: type {suffix or '(none)'} is not accepted; send one of {', '.join(allowed)}.",
            key="upload_type",
            params={"file": filename, "type": suffix or "-", "allowed": " ".join(allowed)},
        )
    if suffix in _CAPTION_SUFFIXES:  # a caption: UTF-8 text of a caption's size
        data = Path(path).read_bytes()[: MAX_CAPTION_BYTES + 1]
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise LorastudioError(
                f"upload {filename!r}: a caption file must be UTF-8 text.", key="caption_not_utf8", params={"file": filename}
            ) from None
        if len(data) > MAX_CAPTION_BYTES:
            raise LorastudioError(
                f"upload {filename!r}: over {MAX_CAPTION_BYTES} bytes; a caption is one line.",
                key="caption_too_large", params={"file": filename, "limit": MAX_CAPTION_BYTES},
            )  # fmt: skip
        return
    if suffix == ".json":  # only where `allowed` names it: a data set's kohya metadata json
        _check_kohya_metadata(Path(path), filename)
        return
    if suffix == ".safetensors":
        try:
            read_safetensors_header(Path(path))
        except LorastudioError as exc:  # name the client's file, not the spooled copy
            raise LorastudioError.wrap(f"upload {filename!r}: {str(exc).partition(': ')[2]}", exc) from None
        return
    with open(path, "rb") as f:
        head = f.read(16)
    if suffix in _PICKLE_SUFFIXES:
        if not head.startswith(_TORCH_MAGIC):
            raise LorastudioError(
                f"upload {filename!r}: its content is not a PyTorch {suffix} file.",
                key="upload_content", params={"file": filename, "type": suffix[1:]},
            )  # fmt: skip
        return
    if suffix in _EMBEDDING_PICTURE_MAGIC:  # an embedding import's picture: the import reads it
        if not _EMBEDDING_PICTURE_MAGIC[suffix](head):
            raise LorastudioError(
                f"upload {filename!r}: its content is not a {suffix[1:]} file.",
                key="upload_content", params={"file": filename, "type": suffix[1:]},
            )  # fmt: skip
        return
    if not any(head.startswith(magic) for magic in _MAGIC[suffix]):  # damaged, or another format renamed
        raise LorastudioError(
            f"upload {filename!r}: its content is not a {suffix[1:]} file.",
            key="upload_content", params={"file": filename, "type": suffix[1:]},
        )  # fmt: skip
    if suffix != ".zip":  # an image: decode it once now, within the limits, not later in a job
        from lorastudio.generate.images import RequestImageError, open_request_image

        try:
            image, _ = open_request_image(Path(path), f"upload {filename!r}", MAX_IMAGE_PIXELS)
            image.close()
        except RequestImageError as exc:
            raise _invalid(exc) from None


# --- storing uploads --------------------------------------------------------------------------


def uploads_dir(ws: Workspace) -> Path:
    """The uploads folder of the workspace (made on first use)."""
    folder = ws.cache / UPLOADS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def upload_path(ws: Workspace, name: str, *, pickles: bool = False) -> Path:
    """The stored upload called `name` (as returned by the upload route); never a path from a request.

    A pickled .pt/.bin upload only where the caller reads it weights-only (`pickles`: an embedding
    import); anywhere else it is refused in one line."""
    from lorastudio.service.names import resolve

    folder = ws.cache / UPLOADS_DIR
    path = resolve(name, folder, "upload", "POST /api/v1/uploads (send the file first)", want="file").path
    if not pickles and path.suffix.lower() in _PICKLE_SUFFIXES:
        raise LorastudioError(
            f"upload {name!r}: a PyTorch {path.suffix.lower()} file is only read by an embedding import; "
            "queue POST /api/v1/jobs/import with what: embedding, or send a .safetensors."
        )
    return path


def _check_kohya_metadata(path: Path, filename: str) -> None:
    """A kohya metadata json (merge_captions_to_metadata's `{image_key: {caption, tags}}`), as a
    folder import reads one beside its images."""
    from lorastudio.data.sources import is_kohya_metadata_name, kohya_metadata_problem

    if path.stat().st_size > MAX_METADATA_BYTES:
        raise LorastudioError(
            f"upload {filename!r}: over {MAX_METADATA_BYTES // 2**20} MiB; upload the folder as a zip.",
            key="metadata_too_large", params={"file": filename, "limit_mib": MAX_METADATA_BYTES // 2**20},
        )  # fmt: skip
    problem = kohya_metadata_problem(filename, path.read_bytes())
    if problem:
        raise LorastudioError(
            f"upload {filename!r}: {problem}; upload kohya's meta_*.json or leave it out.",
            key="not_kohya_metadata" if is_kohya_metadata_name(filename) else "json_not_meta_name",
            params={"file": filename},
        )


def new_upload_name(filename: str) -> str:
    """A fresh upload name that keeps the client's file suffix (importers read it)."""
    suffix = Path(filename or "").suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,12}", suffix):
        suffix = ""
    return f"{uuid.uuid4().hex}{suffix}"


@contextmanager
def _whole_or_nothing(path: Path, when_full: str) -> Iterator[Path]:
    """The `.part` file to write `path` through: renamed into place when the block ends, removed
    when it raises (a refused file, a dropped connection); a full disk answers `StorageFull`."""
    tmp = path.with_name(path.name + ".part")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_storage_full(exc):
            raise StorageFull(when_full, key="disk_full") from exc
        raise


def save_upload(ws: Workspace, data: bytes, suffix: str = ".png") -> str:
    """Store bytes as a new upload: whole or not at all (a full disk leaves no `.part`)."""
    path = uploads_dir(ws) / new_upload_name(f"x{suffix}")
    with _whole_or_nothing(path, "the server's disk is full; try again later.") as tmp:
        tmp.write_bytes(data)
    return path.name


def store_stream(
    ws: Workspace, stream: BinaryIO, filename: str, allowed: Iterable[str] = UPLOAD_SUFFIXES
) -> tuple[str, Path]:
    """Copy an uploaded file into the uploads folder under a fresh name, then check its type.

    Whole or not at all: a refused file, a full disk or a dropped connection leaves no `.part`.
    """
    path = uploads_dir(ws) / new_upload_name(filename)
    with _whole_or_nothing(path, "the server's disk is full; the upload was not kept, try again later.") as tmp:
        with tmp.open("wb") as out:
            shutil.copyfileobj(stream, out, COPY_CHUNK)
        check_upload(tmp, filename, allowed)
    return path.name, path


def store_image(
    ws: Workspace, data: str, what: str, *, mask: bool = False, invert: bool = False
) -> str:
    """A base64 image stored as a PNG upload: RGB, or a grey mask (`mask`); answers its upload name.

    A mask painted as transparency (A1111 clients send them) is read from its alpha channel and a
    picture's transparency is composited on white (`image_modes`); `invert` swaps what is kept and
    what is repainted (A1111's inpainting_mask_invert).
    A photo is stored as it is shown (`decode_image`): the PNG keeps no EXIF orientation.
    """
    image, _ = decode_image(data, what)
    return store_picture(ws, image, mask=mask, invert=invert)


def store_picture(ws: Workspace, image: Any, *, mask: bool = False, invert: bool = False) -> str:
    """A decoded picture stored as a PNG upload by the one transparency rule (`image_modes`): RGB on
    white, or an 'L' mask (from its alpha when painted as transparency); answers its upload name."""
    from lorastudio.image_modes import to_mask, to_rgb

    if mask:
        image = to_mask(image)
        if invert:
            from PIL import ImageOps

            image = ImageOps.invert(image)
    else:
        image = to_rgb(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return save_upload(ws, buffer.getvalue(), ".png")


def shown_size(picture: Any) -> tuple[int, int] | None:
    """A picture's (path or PIL image) width x height as shown, EXIF rotation applied; None if unreadable."""
    from lorastudio.generate.images import picture_size

    return picture_size(picture)


def image_or_upload(ws: Workspace, value: str | None, what: str, *, mask: bool = False) -> str | None:
    """An image given inline (data URL / base64) is stored as an upload; anything else must name one."""
    if not value:
        return None
    if value.startswith("data:") or len(value) > 200:
        return store_image(ws, value, what, mask=mask)
    upload_path(ws, value)
    return value


def discard_uploads(ws: Workspace, names: Iterable[str | None]) -> None:
    """Remove uploads a refused request stored (its images), so a 4xx leaves nothing behind."""
    for name in names:
        if name:
            try:
                upload_path(ws, name, pickles=True).unlink(missing_ok=True)
            except LorastudioError:
                pass
