"""Pixel <-> tensor conversions and mask handling shared by img2img, inpainting and hires."""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageFilter

__all__ = ["pil_to_tensor", "tensor_to_pil", "prepare_mask", "mask_crop_region", "expand_to_aspect"]


def pil_to_tensor(image: Image.Image, device: str, dtype) -> Any:
    """RGB PIL -> [1, 3, H, W] in [-1, 1]."""
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(device=device, dtype=dtype)


def tensor_to_pil(images) -> list[Image.Image]:
    """[N, 3, H, W] in [-1, 1] -> PIL images."""
    import numpy as np

    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(dtype=images.new_tensor(0).byte().dtype)
    array = array.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
    return [Image.fromarray(a) for a in array]


def prepare_mask(mask: Image.Image, size: tuple[int, int], blur: int) -> Image.Image:
    """Greyscale mask at `size`, white = repaint, blurred like A1111's mask blur."""
    mask = mask.convert("L").resize(size, Image.Resampling.LANCZOS)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return mask


def expand_to_aspect(
    box: tuple[int, int, int, int], aspect: float, bounds: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Grow a box to width/height == aspect, staying inside the image where possible."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w / max(h, 1) < aspect:
        grow = int(round(h * aspect)) - w
        x0, x1 = x0 - grow // 2, x1 + grow - grow // 2
    else:
        grow = int(round(w / aspect)) - h
        y0, y1 = y0 - grow // 2, y1 + grow - grow // 2
    width, height = bounds
    if x0 < 0:
        x0, x1 = 0, min(width, x1 - x0)
    if x1 > width:
        x0, x1 = max(0, x0 - (x1 - width)), width
    if y0 < 0:
        y0, y1 = 0, min(height, y1 - y0)
    if y1 > height:
        y0, y1 = max(0, y0 - (y1 - height)), height
    return x0, y0, x1, y1


def mask_crop_region(mask: Image.Image, padding: int, aspect: float) -> tuple[int, int, int, int] | None:
    """The masked area plus padding, widened to the output aspect ("only masked" inpainting)."""
    bbox = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    box = (
        max(0, x0 - padding),
        max(0, y0 - padding),
        min(mask.width, x1 + padding),
        min(mask.height, y1 + padding),
    )
    return expand_to_aspect(box, aspect, mask.size)
