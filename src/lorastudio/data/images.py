"""Open any image a user drops in and hand back plain 8-bit RGB.

Crawled and phone images arrive in every mode Pillow knows: EXIF-rotated JPEGs, CMYK,
16-bit PNGs, palettes with a transparent index, greyscale, animated GIFs. Training wants
one thing, so every reader in lorastudio goes through `open_image`, which

- refuses decompression bombs (more than `max_pixels`) before decoding the pixels,
- decodes fully, so truncated files fail here and not in the middle of training,
- applies the EXIF orientation, takes the first frame of animations,
- composites alpha on a chosen background colour and maps every mode to RGB.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from lorastudio.errors import LorastudioError
from lorastudio.image_modes import to_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageLoadError",
    "is_image_name",
    "open_image",
    "parse_color",
    "to_rgb",
    "needs_normalising",
]

# AVIF/HEIF only open where the installed Pillow was built with them; others report why.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif", ".heic"}
)
# Pillow's own bomb limit is ~89 MP (warning) / ~179 MP (error); a 64 MP phone photo must pass.
MAX_PIXELS = 120_000_000

RGB = tuple[int, int, int]


class ImageLoadError(LorastudioError):
    """An image could not be read; the message names the file and the reason."""


def is_image_name(name: str) -> bool:
    """True when the file name has an image extension lorastudio tries to read."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def parse_color(value: str | Sequence[int]) -> RGB:
    """'white', '#ff00aa', 'ff00aa' or (r, g, b) -> an RGB tuple for alpha backgrounds."""
    if not isinstance(value, str):
        rgb = tuple(int(c) for c in value)
        if len(rgb) != 3 or any(c < 0 or c > 255 for c in rgb):
            raise LorastudioError(f"colour {value!r} must be three numbers 0-255.")
        return rgb  # type: ignore[return-value]
    from PIL import ImageColor

    text = value.strip()
    if len(text) == 6 and all(c in "0123456789abcdefABCDEF" for c in text):
        text = "#" + text
    try:
        return ImageColor.getrgb(text)[:3]  # type: ignore[return-value]
    except ValueError:
        raise LorastudioError(
            f"colour {value!r} is not known; use a name like 'white' or '#rrggbb'."
        ) from None


def _read_source(source: str | Path | bytes) -> tuple[io.BytesIO | Path, str]:
    if isinstance(source, bytes):
        return io.BytesIO(source), "<bytes>"
    return Path(source), str(source)


def open_image(
    source: str | Path | bytes,
    background: RGB = (255, 255, 255),
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Decode `source` to an upright 8-bit RGB image, or raise `ImageLoadError` naming why."""
    handle, shown = _read_source(source)
    shown = name or shown
    with warnings.catch_warnings():
        # Our own limit below decides; Pillow's softer warning level would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(handle) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageLoadError(
                        f"{shown}: {width}x{height} is over the {max_pixels:,}-pixel limit (decompression bomb?);"
                        " shrink it or raise max_pixels.",
                        key="image_too_large",
                        params={"what": shown, "size": f"{width}x{height}"},
                    )
                if getattr(image, "is_animated", False):
                    image.seek(0)
                image.load()
                upright = ImageOps.exif_transpose(image) or image
                rgb = to_rgb(upright, background)
                return rgb.copy() if rgb is image else rgb
        except ImageLoadError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(
                f"{shown}: refused as a decompression bomb ({exc}); shrink it first.",
                key="image_bomb",
                params={"what": shown},
            ) from None
        except UnidentifiedImageError:
            raise ImageLoadError(
                f"{shown}: not an image Pillow can read (wrong extension, or an unsupported format); remove it.",
                key="image_unreadable",
                params={"what": shown},
            ) from None
        except FileNotFoundError:
            raise ImageLoadError(
                f"{shown}: file not found; check the path.", key="image_missing", params={"what": shown}
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            reason = str(exc).strip() or type(exc).__name__
            raise ImageLoadError(
                f"{shown}: damaged or truncated image ({reason}); re-download or remove it.",
                key="image_unreadable",
                params={"what": shown},
            ) from None


def needs_normalising(source: str | Path | bytes) -> bool:
    """False when the file can be stored byte-for-byte (RGB JPEG/PNG/WebP, upright, one frame)."""
    handle, _ = _read_source(source)
    with Image.open(handle) as image:
        if image.format not in {"JPEG", "PNG", "WEBP"} or image.mode != "RGB":
            return True
        if getattr(image, "is_animated", False):
            return True
        orientation = image.getexif().get(0x0112, 1)
        return orientation not in (0, 1)
