"""kohya-style aspect-ratio buckets, shared by the data tools and the trainer.

Training at one square size crops portraits and landscapes badly. Buckets are a fixed set of
(width, height) pairs, multiples of `step`, each with at most `resolution**2` pixels; every
image goes to the bucket with the nearest aspect ratio and is resized to cover it, then
centre-cropped by the few pixels that remain (`resize_to_bucket`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from PIL import Image

__all__ = [
    "plan_buckets",
    "assign_bucket",
    "resize_to_bucket",
    "crop_box_for",
    "BucketCrop",
    "bucket_crop",
    "no_upscale_bucket",
    "Bucket",
]

Bucket = tuple[int, int]


def plan_buckets(
    resolution: int, min_px: int = 256, max_px: int | None = None, step: int = 64
) -> list[Bucket]:
    """All (w, h) with w, h multiples of `step` in [min_px, max_px] and w*h <= resolution**2.

    `max_px` defaults to 2x the resolution (1024 at 512, 2048 at 1024), as kohya users set it.
    For each width the tallest height that fits the area is taken, so buckets hold as many
    pixels as the budget allows. Sorted by aspect ratio (w/h).
    """
    if resolution < step or resolution % step:
        raise ValueError(f"resolution {resolution} must be a positive multiple of step {step}.")
    max_px = max_px or 2 * resolution
    min_px = min(min_px, resolution)
    max_area = resolution * resolution
    buckets = {(resolution, resolution)}
    width = math.ceil(min_px / step) * step
    while width <= max_px:
        height = min(max_px, (max_area // width) // step * step)
        if height >= min_px:
            buckets.add((width, height))
            buckets.add((height, width))
        width += step
    return sorted(buckets, key=lambda b: (b[0] / b[1], b[0]))


def assign_bucket(width: int, height: int, buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is nearest (in log space, so 2:1 and 1:2 are symmetric)."""
    if not buckets:
        raise ValueError("no buckets to choose from.")
    target = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - target), -b[0] * b[1]))


def no_upscale_bucket(width: int, height: int, resolution: int, step: int = 64) -> Bucket:
    """kohya's `bucket_no_upscale`: the image's own size, never enlarged, in multiples of `step`.

    An image larger than `resolution**2` pixels is first scaled down (aspect kept) to fit that
    area; each side is then rounded down to a multiple of `step`, so only a few pixels are
    cropped and nothing is upscaled (sides below `step` stay at `step`).
    """
    max_area = resolution * resolution
    scale = min(1.0, math.sqrt(max_area / (width * height)))
    w, h = width * scale + 1e-6, height * scale + 1e-6  # 1024 * 0.5 must stay 512
    return max(step, int(w // step) * step), max(step, int(h // step) * step)


def crop_box_for(
    size: tuple[int, int], bucket: Bucket, focus: tuple[float, float] | None = None
) -> tuple[int, int, int, int]:
    """The crop (in pixels of an image of `size`, already scaled to cover `bucket`).

    `focus` is a point (0-1, 0-1) to keep in frame, e.g. a face centre from a detector;
    None keeps the centre.
    """
    width, height = size
    bw, bh = bucket
    fx, fy = focus or (0.5, 0.5)
    left = min(max(round(fx * width - bw / 2), 0), width - bw)
    top = min(max(round(fy * height - bh / 2), 0), height - bh)
    return left, top, left + bw, top + bh


class BucketCrop(NamedTuple):
    """How an image becomes its bucket: scaled by `scale` to `size`, then cut to `box`."""

    scale: float  # above 1 the image is enlarged
    size: tuple[int, int]  # the scaled image, covering the bucket on both sides
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the scaled image


def bucket_crop(
    size: tuple[int, int], bucket: Bucket, focus: tuple[float, float] | None = None
) -> BucketCrop:
    """The one crop arithmetic: `resize_to_bucket` cuts this box, SDXL's time ids name its corner."""
    width, height = size
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    scaled = (max(bw, round(width * scale)), max(bh, round(height * scale)))
    return BucketCrop(scale, scaled, crop_box_for(scaled, bucket, focus))


def resize_to_bucket(
    image: Image.Image, bucket: Bucket, focus: tuple[float, float] | None = None
) -> Image.Image:
    """Resize to cover `bucket` exactly on one side, then crop the other side to fit."""
    crop = bucket_crop(image.size, bucket, focus)
    if crop.size != image.size:
        image = image.resize(crop.size, Image.Resampling.LANCZOS)
    if crop.size == tuple(bucket):
        return image
    return image.crop(crop.box)
