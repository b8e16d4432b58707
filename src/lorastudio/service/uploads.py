"""What clients send as files: base64 images in a request body, and uploaded files.

Both are checked here, once, before anything else reads them: an image must be a real
image of a usual format within the decoding limits, an uploaded file must be what its
suffix says (no pickles, no scripts). The API routes only call these.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from pathlib import Path

from lorastudio.errors import InvalidRequest, LorastudioError

__all__ = ["decode_image", "check_upload", "MAX_IMAGE_PIXELS", "UPLOAD_SUFFIXES"]

# Largest image a request may carry (width x height), against decompression bombs.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".webp": (b"RIFF",),
    ".zip": (b"PK\x03\x04", b"PK\x05\x06"),
}
UPLOAD_SUFFIXES = (*_MAGIC, ".safetensors")


def _invalid(exc: Exception) -> LorastudioError:
    return InvalidRequest(str(exc))


def decode_image(data: str, what: str = "image"):
    """A base64 image, with or without a `data:image/...;base64,` prefix -> (PIL image, format).

    Only real images of the usual formats pass, within the decoding limits of
    `generate.images.open_request_image` (pixels, PNG text chunks).
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
        return open_request_image(raw, what, MAX_IMAGE_PIXELS)
    except RequestImageError as exc:
        raise _invalid(exc) from None


def check_upload(path: Path, filename: str, allowed: Iterable[str] = UPLOAD_SUFFIXES) -> None:
    """The upload's suffix is one we accept and its first bytes match it (no pickles, no scripts)."""
    from lorastudio.models.checkpoint import read_safetensors_header

    suffix = Path(filename or "").suffix.lower()
    allowed = tuple(allowed)
    if suffix not in allowed:
        raise LorastudioError(
            f"upload {filename!r}: type {suffix or '(none)'} is not accepted; send one of {', '.join(allowed)}."
        )
    if suffix == ".safetensors":
        try:
            read_safetensors_header(Path(path))
        except LorastudioError as exc:  # name the client's file, not the spooled copy
            raise LorastudioError(f"upload {filename!r}: {str(exc).partition(': ')[2]}") from None
        return
    with open(path, "rb") as f:
        head = f.read(16)
    if not any(head.startswith(magic) for magic in _MAGIC[suffix]):
        raise LorastudioError(f"upload {filename!r}: its content is not a {suffix[1:]} file.")
    if suffix != ".zip":  # an image: decode it once now, within the limits, not later in a job
        from lorastudio.generate.images import RequestImageError, open_request_image

        try:
            image, _ = open_request_image(Path(path), f"upload {filename!r}", MAX_IMAGE_PIXELS)
            image.close()
        except RequestImageError as exc:
            raise _invalid(exc) from None
