"""Training images: size checks, bucket assignment and a seeded, resumable batch order.

The order of batches is a pure function of (seed, micro-batch index), so a resumed run
sees exactly the batches the killed run would have seen without storing any iterator
state. Every batch holds images of one bucket (one latent size).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from lorastudio.data.buckets import Bucket, assign_bucket, bucket_crop, no_upscale_bucket, plan_buckets
from lorastudio.errors import LorastudioError
from lorastudio.models.checkpoint import file_sha256

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lorastudio.data.dataset import DatasetItem
    from lorastudio.train.sections import DataConfig

__all__ = ["TrainImage", "scan_images", "BatchSchedule", "BucketOptions", "color_jitter"]

# Colour augmentation range (kohya's color_aug is a small hue shift): hue +-3%, brightness +-10%.
COLOR_AUG_HUE = 0.03
COLOR_AUG_BRIGHTNESS = 0.1

_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class TrainImage:
    path: Path
    caption: str
    repeats: int
    size: tuple[int, int]  # upright (width, height)
    bucket: Bucket
    crop: tuple[int, int]  # (top, left) of the crop in the scaled image (SDXL time ids)
    digest: str  # content hash, the latent cache key
    subset: str = ""  # that folder's name, kohya's ss_dataset_dirs key (data.repeats may change repeats)


def _upright_size(path: Path) -> tuple[int, int]:
    """The picture's size as shown, from its header; a file cut short (PNG chunks checked) is refused now,
    not when its latents are made hours into a run."""
    try:
        with Image.open(path) as image:
            image.verify()  # only right after opening: a second open reads the header
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise LorastudioError(f"{path} ({exc})") from None
    return (height, width) if orientation in _ROTATED else (width, height)


def _scaled_crop(size: tuple[int, int], bucket: Bucket) -> tuple[float, tuple[int, int]]:
    """Upscale factor needed and the (top, left) crop that `resize_to_bucket` cuts (`bucket_crop`)."""
    crop = bucket_crop(size, bucket)
    left, top, _, _ = crop.box
    return crop.scale, (top, left)


@dataclass(frozen=True)
class BucketOptions:
    """kohya's bucket settings: side range and step, and whether small images keep their size."""

    min_reso: int | None = None  # default: half the resolution, at most 256
    max_reso: int | None = None  # default: 2 x resolution
    step: int = 64
    no_upscale: bool = False

    @classmethod
    def from_config(cls, data: DataConfig) -> BucketOptions:
        """From a `DataConfig` (`data.min_bucket_reso`, ...)."""
        return cls(data.min_bucket_reso, data.max_bucket_reso, data.bucket_reso_steps, data.bucket_no_upscale)

    def buckets(self, resolution: int) -> list[Bucket]:
        min_px = self.min_reso or max(self.step, min(256, resolution // 2))
        return plan_buckets(resolution, min_px=min_px, max_px=self.max_reso, step=self.step)

    def bucket_for(self, size: tuple[int, int], resolution: int, buckets: list[Bucket]) -> Bucket:
        if self.no_upscale:
            return no_upscale_bucket(size[0], size[1], resolution, self.step)
        return assign_bucket(size[0], size[1], buckets)


def scan_images(
    items: Iterable[DatasetItem],
    resolution: int,
    max_upscale: float = 1.0,
    bucket_step: int = 64,
    options: BucketOptions | None = None,
) -> list[TrainImage]:
    """Read sizes (headers only), assign buckets, and refuse images too small for `resolution`."""
    options = options or BucketOptions(step=bucket_step)
    buckets = options.buckets(resolution)
    images, too_small, unreadable, worst = [], [], [], 1.0
    for item in items:
        try:
            size = _upright_size(Path(item.image))
        except LorastudioError as exc:  # every unreadable file is named at once, not one per attempt
            unreadable.append(str(exc))
            continue
        bucket = options.bucket_for(size, resolution, buckets)
        scale, crop = _scaled_crop(size, bucket)
        if scale > max_upscale * 1.01:
            too_small.append(f"{Path(item.image).name} ({size[0]}x{size[1]})")
            worst = max(worst, scale)
            continue
        images.append(
            TrainImage(
                Path(item.image), item.caption, item.repeats, size, bucket, crop, file_sha256(item.image),
                getattr(item, "subset", ""),
            )
        )
    if unreadable:
        shown = "; ".join(unreadable[:5]) + (f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
        raise LorastudioError(f"{len(unreadable)} files cannot be read as images: {shown}; remove or replace them.")
    if too_small:
        shown = ", ".join(too_small[:5]) + (f" and {len(too_small) - 5} more" if len(too_small) > 5 else "")
        raise LorastudioError(
            f"{len(too_small)} images are smaller than train.resolution={resolution}: {shown}; "
            f"upscale or remove them, lower train.resolution, or allow it with data.max_upscale={math.ceil(worst * 10) / 10:g}."
        )
    return images


class BatchSchedule:
    """Micro-batch index -> list of (image index, flipped), epoch by epoch, seeded."""

    def __init__(self, images: list[TrainImage], batch_size: int, seed: int, flip: bool):
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.flip = flip
        self._epochs: dict[int, list[list[tuple[int, bool]]]] = {}
        self.batches_per_epoch = len(self._build(0))

    def _build(self, epoch: int) -> list[list[tuple[int, bool]]]:
        if epoch in self._epochs:
            return self._epochs[epoch]
        rng = random.Random(f"{self.seed}:epoch:{epoch}")
        by_bucket: dict[Bucket, list[tuple[int, bool]]] = {}
        for index, image in enumerate(self.images):
            for _ in range(image.repeats):
                flipped = self.flip and rng.random() < 0.5
                by_bucket.setdefault(image.bucket, []).append((index, flipped))
        batches = []
        for bucket in sorted(by_bucket):
            samples = by_bucket[bucket]
            rng.shuffle(samples)
            batches += [samples[i : i + self.batch_size] for i in range(0, len(samples), self.batch_size)]
        rng.shuffle(batches)
        if len(self._epochs) > 4:
            self._epochs.pop(min(self._epochs))
        self._epochs[epoch] = batches
        return batches

    def batch(self, micro_index: int) -> list[tuple[int, bool]]:
        epoch, offset = divmod(micro_index, self.batches_per_epoch)
        return self._build(epoch)[offset]

    def epoch_of(self, micro_index: int) -> int:
        return micro_index // self.batches_per_epoch


def color_jitter(image: Image.Image, rng: random.Random) -> Image.Image:
    """A small random hue rotation and brightness change (kohya's `color_aug`)."""
    import numpy as np

    hue_shift = rng.uniform(-COLOR_AUG_HUE, COLOR_AUG_HUE)
    brightness = 1.0 + rng.uniform(-COLOR_AUG_BRIGHTNESS, COLOR_AUG_BRIGHTNESS)
    hsv = np.asarray(image.convert("RGB").convert("HSV"), dtype=np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue_shift * 256.0) % 256.0
    hsv[..., 2] = np.clip(hsv[..., 2] * brightness, 0, 255)
    return Image.fromarray(hsv.round().astype(np.uint8), "HSV").convert("RGB")
