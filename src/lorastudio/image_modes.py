"""Any Pillow mode to 8 bits: the one rule every reader of a user's picture follows.

A 16-bit greyscale PNG opens in mode `I;16` (or `I`), a float TIFF in `F`. Pillow's
`convert("RGB")` and `convert("L")` clip those values at 255, so nearly every pixel of such a
picture turns white. Readers in every package (data import, portraits, faces, request images)
bring these modes to 8 bits here first, scaled by the range the mode holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["HIGH_BIT_MODES", "to_8bit", "to_mask", "to_rgb"]

# Pillow's greyscale modes with more than 8 bits per pixel.
HIGH_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

RGB = tuple[int, int, int]


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16/32-bit integer or float greyscale picture as 8-bit 'L'; any other mode as it is.

    Integers above 255 are read as 16-bit (65535 -> 255); floats up to 1.0 as 0..1.
    """
    if image.mode not in HIGH_BIT_MODES:
        return image
    import numpy as np
    from PIL import Image

    array = np.asarray(image)
    if image.mode == "F":
        peak = 1.0 if float(array.max(initial=0.0)) <= 1.0 else 255.0
        array = array / peak * 255.0
    elif array.max(initial=0) > 255:
        array = array / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")


ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBa", "RGBA"})


def _as_rgba_if_transparent(image: Image.Image) -> Image.Image | None:
    """The picture as RGBA when it carries transparency: an alpha band, or a palette / grey / RGB
    picture with a `transparency` colour key (optimisers turn a yes-or-no alpha into one); else None."""
    if image.mode in ALPHA_MODES or (image.mode in {"P", "L", "RGB"} and "transparency" in image.info):
        return image.convert("RGBA")  # premultiplied La/RGBa un-multiplied, the band named "A"
    return None


def to_rgb(image: Image.Image, background: RGB = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited on `background`.

    An RGB picture comes back as it is, its pixels read, so it outlives the `with Image.open(...)` of a caller.
    """
    from PIL import Image

    image.load()
    image = to_8bit(image)
    rgba = _as_rgba_if_transparent(image)
    if rgba is not None:
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


# A1111 reads a transparency mask as repaint where alpha is over half (128 of 255).
MASK_ALPHA_THRESHOLD = 128


def to_mask(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> an 'L' inpainting mask (white = repaint).

    A picture with an alpha channel that is not fully opaque is a mask painted as transparency:
    its alpha decides (over 128 -> 255, else 0), as A1111 reads such a mask; the colours under
    transparent pixels are whatever the editor left there. Any other picture is its luminance.
    """
    image.load()
    image = to_8bit(image)
    rgba = _as_rgba_if_transparent(image)
    if rgba is not None:
        alpha = rgba.getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha.point(lambda a: 255 if a > MASK_ALPHA_THRESHOLD else 0)
    return image.convert("L")
