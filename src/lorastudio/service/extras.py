"""Extras: upscale one finished image (A1111's Extras tab and `/sdapi/v1/extra-single-image`).

One function for the API and the web UI. The upscalers are the resampling filters lorastudio
has today; model upscalers (ESRGAN family) plug in here with issue 15. The result keeps the
source's recipe and adds A1111's `Postprocess upscale by` / `Postprocess upscaler` keys, so an
upscaled picture still says how it was made.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.errors import InvalidRequest, LorastudioError
from lorastudio.service.limits import RequestLimits, check_output_pixels
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["UPSCALERS", "upscale_image", "save_upscaled"]

# name -> Pillow resampling filter ("None", A1111's default name, resizes with Lanczos as before)
UPSCALERS: dict[str, str] = {"None": "LANCZOS", "Lanczos": "LANCZOS", "Nearest": "NEAREST"}


def _target_size(image: PILImage.Image, scale: float | None, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        return int(size[0]), int(size[1])
    if scale is None or not scale > 0:
        raise InvalidRequest(f"upscaling_resize: {scale} is out of range; use a factor above 0.")
    return round(image.width * scale), round(image.height * scale)


def upscale_image(
    image: PILImage.Image,
    limits: RequestLimits,
    *,
    scale: float | None = 2.0,
    size: tuple[int, int] | None = None,
    upscaler: str | None = "Lanczos",
) -> PILImage.Image:
    """`image` resized by `scale` (or to `size`) with `upscaler`, within `--max-output-pixels`."""
    from PIL import Image

    width, height = _target_size(image, scale, size)
    if min(width, height) < 1:
        raise InvalidRequest(f"upscaling_resize: target size {width}x{height} is out of range.")
    check_output_pixels(limits, width, height, f"upscaled size {width}x{height}")
    known = {name.lower(): name for name in UPSCALERS}
    name = known.get((upscaler or "None").lower())
    if name is None:
        raise LorastudioError(f"upscaler {upscaler!r}: not available; use one of {', '.join(UPSCALERS)}.")
    return image.convert("RGB").resize((width, height), getattr(Image.Resampling, UPSCALERS[name]))


def save_upscaled(
    ws: Workspace, source: str | Path, upscaled: PILImage.Image, scale: float, upscaler: str
) -> Path:
    """Store an upscaled picture in `outputs/<date>/` with the source's recipe plus the postprocess keys."""
    from lorastudio.generate.image_metadata import read_infotext, save_png

    recipe = read_infotext(source) or ""
    keys = f"Postprocess upscale by: {scale:g}, Postprocess upscaler: {upscaler}"
    text = f"{recipe.rstrip()}, {keys}" if recipe else keys  # on the parameters line, as A1111 writes it
    folder = ws.outputs / dt.date.today().isoformat()
    stem = Path(source).stem
    target = folder / f"{stem}-upscaled-{scale:g}x.png"
    index = 1
    while target.exists():
        index += 1
        target = folder / f"{stem}-upscaled-{scale:g}x-{index}.png"
    return save_png(upscaled, target, text)
