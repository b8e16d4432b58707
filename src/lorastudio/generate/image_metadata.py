"""Where images keep their infotext: the PNG `parameters` chunk, EXIF UserComment, a GIF comment.

Written and read the way the AUTOMATIC1111 webui does, so images travel between tools.
The text itself (format and parse) is `generate/infotext.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "PARAMETERS_KEY",
    "decode_user_comment",
    "encode_user_comment",
    "infotext_and_items",
    "read_infotext",
    "png_bytes",
    "save_png",
    "write_jpeg_with_infotext",
]

PARAMETERS_KEY = "parameters"  # the PNG text chunk A1111 reads

_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\x00"
_ASCII_PREFIX = b"ASCII\x00\x00\x00"
_JIS_PREFIX = b"JIS\x00\x00\x00\x00\x00"


def save_png(
    image: PILImage.Image,
    path: str | Path,
    infotext: str,
    extra_text: dict[str, str] | None = None,
) -> Path:
    """Write a PNG whose `parameters` chunk holds the infotext, as A1111 does.

    Pillow writes a tEXt chunk when the text is Latin-1 and an iTXt (UTF-8) chunk
    otherwise, so Chinese prompts survive. `extra_text` adds more text chunks.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=_png_text(infotext, extra_text))
    return path


def png_bytes(image: PILImage.Image, infotext: str) -> bytes:
    """A PNG with its infotext, in memory: a picture answered but not saved (A1111's lone sub-grid)."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=_png_text(infotext, None))
    return buffer.getvalue()


def _png_text(infotext: str, extra_text: dict[str, str] | None):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in (extra_text or {}).items():
        if key != PARAMETERS_KEY:
            info.add_text(key, str(value))
    info.add_text(PARAMETERS_KEY, infotext)
    return info


def encode_user_comment(text: str) -> bytes:
    """EXIF UserComment bytes the way A1111 writes them (piexif: UNICODE, UTF-16BE)."""
    return _UNICODE_PREFIX + text.encode("utf-16-be")


def decode_user_comment(data: bytes) -> str:
    """Read an EXIF UserComment: UNICODE/ASCII/JIS prefixes, else UTF-8 like A1111's fallback."""
    prefix, body = data[:8], data[8:]
    if prefix == _UNICODE_PREFIX:
        return body.decode(_utf16_flavour(body), errors="ignore")
    if prefix == _ASCII_PREFIX:
        return body.decode("ascii", errors="ignore")
    if prefix == _JIS_PREFIX:
        return body.decode("shift_jis", errors="ignore")
    return data.decode("utf-8", errors="ignore")


def _utf16_flavour(body: bytes) -> str:
    # A1111 (piexif) writes big-endian, so ASCII-range text has its zero bytes at even
    # offsets. Some tools write little-endian (zeros at odd offsets); read those too.
    zeros_even = body[0::2].count(0)
    zeros_odd = body[1::2].count(0)
    return "utf-16-le" if zeros_odd > 2 * zeros_even else "utf-16-be"


def write_jpeg_with_infotext(
    image: PILImage.Image, path: str | Path, infotext: str, quality: int = 95
) -> Path:
    """Save a JPEG (or WebP, by suffix) with the infotext in EXIF UserComment, like A1111."""
    from PIL import Image

    path = Path(path)
    exif = Image.Exif()
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = encode_user_comment(infotext)
    if image.mode in ("RGBA", "P", "LA"):
        image = image.convert("RGB")
    fmt = "WEBP" if path.suffix.lower() == ".webp" else "JPEG"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, quality=quality, exif=exif)
    return path


def read_infotext(source: str | Path | bytes | PILImage.Image) -> str | None:
    """The infotext stored in an image (a path, the file's bytes or an opened image), or None.

    Looks where A1111's `read_info_from_image` looks, in its order: EXIF UserComment
    (JPEG/WebP; it wins when present), then the PNG `parameters` text chunk, then a GIF
    comment. Broken EXIF is ignored, as in A1111. Raises LorastudioError when a path or
    bytes cannot be read as an image.
    """
    return infotext_and_items(source)[0]


def infotext_and_items(source: str | Path | bytes | PILImage.Image) -> tuple[str | None, dict[str, str]]:
    """(infotext or None, the image's other text items) - what A1111's PNG Info shows."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return _infotext_of_open_image(source)
    with _open_image(source) as image:
        return _infotext_of_open_image(image)


def _open_image(source: str | Path | bytes):
    import io

    from PIL import Image, UnidentifiedImageError

    name = "image" if isinstance(source, bytes) else str(source)
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
        image.load()
        return image
    except FileNotFoundError:
        raise LorastudioError(f"{name}: file not found; check the path.") from None
    except Image.DecompressionBombError as exc:
        raise LorastudioError(f"{name}: too large to open ({exc}); shrink it first.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise LorastudioError(
            f"{name}: not a readable image ({exc}); pass a PNG, JPEG or WebP file."
        ) from None


def _infotext_of_open_image(image: PILImage.Image) -> tuple[str | None, dict[str, str]]:
    info = dict(image.info or {})
    text = _read_user_comment(image) or info.get(PARAMETERS_KEY)
    if text is None and "comment" in info:
        text = info["comment"]
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="ignore")
    items = {k: v for k, v in info.items() if isinstance(v, str) and k != PARAMETERS_KEY}
    return (str(text) if text else None), items


def _read_user_comment(image: PILImage.Image) -> str | None:
    try:
        exif = image.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
        if raw is None:
            return None
        if isinstance(raw, str):
            return raw or None
        return decode_user_comment(bytes(raw)) or None
    except Exception:  # broken EXIF: A1111 ignores it too
        return None
