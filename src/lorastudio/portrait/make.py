"""The image steps of a portrait from a template: which person goes on which face, the square
crop around a face, and pasting the repainted crop back.

Pure PIL/numpy steps, no models: `service/portrait_make.py` runs the flow (detection, the
inpaint passes, colour transfer, scoring) and calls these between them. Every mask and warp
is made on the whole template first and then cut with the same box as the face, so each face
is worked on from the untouched template: one face's pass never sees another face's result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from lorastudio.errors import LorastudioError

__all__ = [
    "Box",
    "assign_persons",
    "cut",
    "faces_left_to_right",
    "paste_back",
    "square_crop_box",
]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


def faces_left_to_right(boxes: Sequence[Sequence[float]]) -> list[int]:
    """Indexes of the face boxes ordered by their centre, left to right (then top to bottom)."""
    return sorted(range(len(boxes)), key=lambda i: ((boxes[i][0] + boxes[i][2]) / 2, (boxes[i][1] + boxes[i][3]) / 2))


def assign_persons(
    persons: Sequence[str], explicit: Mapping[int, str], face_count: int, template: str
) -> dict[int, str]:
    """Face number (1-based, left to right) -> person name.

    `persons` take the faces left to right; `explicit` (`--face 2=B`) names a face's person and
    wins. Faces that nobody takes are left as they are. More persons than faces, or a face number
    the template does not have, is one line naming the template.
    """
    if face_count == 0:
        raise LorastudioError(f"template {template}: no face found; use a photo with a clearly visible face.")
    if len(persons) > face_count:
        raise LorastudioError(
            f"template {template}: {len(persons)} persons given but the template has {face_count} "
            f"face{'s' if face_count != 1 else ''}; give at most {face_count} --person."
        )
    chosen = {number: name for number, name in enumerate(persons, start=1)}
    for number, name in explicit.items():
        if not 1 <= number <= face_count:
            raise LorastudioError(
                f"template {template}: --face {number}={name}: the template has faces 1..{face_count} (left to right)."
            )
        chosen[number] = name
    return dict(sorted(chosen.items()))


def square_crop_box(box: Sequence[float], image_size: tuple[int, int], scale: float) -> Box:
    """A square around the face box, `scale` times its longer side, moved (not cut) to stay inside
    the image; shrunk only when the image itself is smaller than the square."""
    width, height = image_size
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * scale
    side = int(round(min(side, width, height)))
    side = max(side, 1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(cx - side / 2))
    top = int(round(cy - side / 2))
    left = min(max(left, 0), width - side)
    top = min(max(top, 0), height - side)
    return left, top, left + side, top + side


def cut(image: Image.Image, box: Box, size: int) -> Image.Image:
    """The box of the image as a `size` x `size` square (the model's native size)."""
    resample = Image.Resampling.BILINEAR if image.mode == "L" else Image.Resampling.LANCZOS
    return image.crop(box).resize((size, size), resample)


def paste_back(template: Image.Image, crop: Image.Image, box: Box, mask: Image.Image) -> Image.Image:
    """The template with the repainted crop blended in through `mask` (template-sized, L: white =
    the crop's pixels). Outside the mask the template's pixels stay exactly as they were."""
    base = np.asarray(template.convert("RGB"), dtype=np.float32)
    out = base.copy()
    x0, y0, x1, y1 = box
    patch = np.asarray(crop.convert("RGB").resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS), dtype=np.float32)
    alpha = np.asarray(mask.convert("L"), dtype=np.float32)[y0:y1, x0:x1, None] / 255.0
    out[y0:y1, x0:x1] = patch * alpha + base[y0:y1, x0:x1] * (1.0 - alpha)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
