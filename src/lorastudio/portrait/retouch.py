"""Skin retouching without a model: edge-preserving smoothing inside the face's skin.

EasyPhoto runs ModelScope's skin-retouching network (`cv_unet_skin_retouching`) on the training
crops and, when asked, on the finished portraits. No such model ships here and none is downloaded,
so this is the classical retouch: a self-guided filter (He et al., the box-filter form) smooths
blemishes and pore noise while keeping edges whose local variance is well above `eps` (the nose, the
jaw line, wrinkles that shape the face), and the smoothed skin is blended in through the retouch
mask (`masks.retouch_mask`: the skin less eyes, brows and mouth, feathered inwards), weighted by
`strength`. Every pixel outside the mask keeps its exact value; strength 0 is the picture unchanged.

Any Pillow mode goes in: 16-bit and float greys are brought to 8 bits (`image_modes`), CMYK and
palette pictures come back RGB, and an alpha band is kept as it was (the colour under it retouched).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from lorastudio.portrait.faces import Face

__all__ = ["DEFAULT_STRENGTH", "guided_smooth", "retouch_face", "retouch_faces", "retouch_skin"]

DEFAULT_STRENGTH = 0.7  # how much of the smoothed skin replaces the original, 0..1
RADIUS_OF_FACE = 0.035  # filter radius as a share of the face size (about 6 px on a 170 px face)
EPS = 0.08**2  # edges with a local standard deviation well above 0.08 (of 0..1) are kept


def guided_smooth(pixels: np.ndarray, radius: int, eps: float = EPS) -> np.ndarray:
    """Self-guided filter of an H x W (x C) float array in 0..1, each channel on its own."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(values: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(values, -1, size, borderType=cv2.BORDER_REFLECT)

    mean = box(pixels)
    variance = np.maximum(box(pixels * pixels) - mean * mean, 0.0)
    gain = variance / (variance + eps)
    offset = mean - gain * mean
    return box(gain) * pixels + box(offset)


def _check_strength(strength: float) -> float:
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise LorastudioError(f"skin retouch strength {strength:g}: give a value from 0 (off) to 1.")
    return strength


def _split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """(8-bit RGB colours, the alpha band or None): the picture as retouching reads it."""
    from lorastudio.image_modes import to_8bit

    image.load()
    image = to_8bit(image)
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return (image if image.mode == "RGB" else image.convert("RGB")), None


def retouch_skin(image: Image.Image, mask: Image.Image, strength: float = DEFAULT_STRENGTH,
                 radius: int = 4, eps: float = EPS) -> Image.Image:  # fmt: skip
    """`image` with the smoothed skin blended in where `mask` is white, by `strength` (0 = unchanged).

    The result is RGB, or RGBA when the picture has transparency (its alpha untouched).
    """
    strength = _check_strength(strength)
    rgb, alpha = _split_alpha(image)
    weights = np.asarray(mask.convert("L").resize(rgb.size), dtype=np.float32) * (strength / 255.0)
    if strength > 0 and weights.any():
        pixels = np.asarray(rgb, dtype=np.float32) / 255.0
        smooth = guided_smooth(pixels, max(1, int(radius)), eps)
        blended = pixels + (smooth - pixels) * weights[..., None]
        out = np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
        out[weights == 0] = np.asarray(rgb)[weights == 0]  # exactly as it was outside the mask
        rgb = Image.fromarray(out, "RGB")
    elif rgb is image:
        rgb = rgb.copy()
    if alpha is None:
        return rgb
    rgb.putalpha(alpha)
    return rgb


def face_radius(face: Face) -> int:
    """The filter radius for a face: a few pixels, growing with the face."""
    return max(2, round(RADIUS_OF_FACE * face.size))


def retouch_face(image: Image.Image, face: Face, strength: float = DEFAULT_STRENGTH) -> Image.Image:
    """Retouch one face's skin (eyes, brows, mouth, hair and background untouched)."""
    return retouch_faces(image, [face], strength)


def retouch_faces(image: Image.Image, faces: list[Face], strength: float = DEFAULT_STRENGTH) -> Image.Image:
    """Retouch each face's skin in turn, each with its own mask and filter radius."""
    from lorastudio.portrait.masks import retouch_mask

    strength = _check_strength(strength)
    out = image
    for face in faces:
        colours, _alpha = _split_alpha(out)  # the skin is found in the colours, transparent or not
        out = retouch_skin(out, retouch_mask(colours, face), strength, radius=face_radius(face))
    if out is image:  # no face, or strength 0: the picture as retouching would hand it back
        out = retouch_skin(image, Image.new("L", image.size, 0), 0.0)
    return out
