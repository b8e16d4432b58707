"""Filters that take images out of a data set, and optional crop/resize.

`plan_clean` only looks and returns what each filter would drop, with the reason;
`apply_clean` moves those files (and captions) into `removed/` — nothing is deleted, and
`clean_report.json` records it. Filters: minimum width/height/side, aspect-ratio range, exact
duplicates (same pixels), near duplicates (perceptual hash within a threshold; the largest
copy is kept) and blur (variance of the Laplacian).

`resize_images` centre-crops to a square or to the nearest training bucket. A `FocusFinder`
(e.g. a face detector from the portrait tools) can move the crop to keep a point in frame.
`crop_images` crops each image to the box a `BoxFinder` gives (`--face-crop`: around the face).
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

from lorastudio.data.buckets import assign_bucket, plan_buckets, resize_to_bucket
from lorastudio.data.config import CleanConfig
from lorastudio.data.images import ImageLoadError, open_image
from lorastudio.data.manifest import DatasetFolder, ManifestItem, atomic_write_bytes, atomic_write_json
from lorastudio.data.phash import blur_score, hamming, near_duplicate_groups, phash

__all__ = ["BoxFinder", "Drop", "CleanPlan", "FocusFinder", "plan_clean", "apply_clean", "crop_images", "resize_images"]

# Returns a point (x, y) in 0-1 image coordinates to keep in the crop, or None for the centre.
FocusFinder = Callable[[Image.Image], tuple[float, float] | None]
# Returns the box (x0, y0, x1, y1) in pixels to crop an image to, or None to leave it.
BoxFinder = Callable[[Image.Image], tuple[int, int, int, int] | None]
Progress = Callable[[int, int], None]
# The manifest `extra` key that marks a cropped image, so a second run does not crop the crop.
CROPPED_KEY = "cropped"


@dataclass
class Drop:
    file: str
    reason: str


@dataclass
class CleanPlan:
    drops: list[Drop] = field(default_factory=list)
    kept: int = 0

    def to_json(self) -> dict:
        return {"kept": self.kept, "dropped": [{"file": d.file, "reason": d.reason} for d in self.drops]}


def _shape_reason(item: ManifestItem, config: CleanConfig) -> str | None:
    w, h = item.width, item.height
    if w < config.min_width:
        return f"too small: {w}x{h} is narrower than {config.min_width} px"
    if h < config.min_height:
        return f"too small: {w}x{h} is shorter than {config.min_height} px"
    if min(w, h) < config.min_side:
        return f"too small: {w}x{h} has a side under {config.min_side} px"
    ratio = w / h
    if config.min_ratio is not None and ratio < config.min_ratio:
        return f"aspect ratio {ratio:.2f} below {config.min_ratio}"
    if config.max_ratio is not None and ratio > config.max_ratio:
        return f"aspect ratio {ratio:.2f} above {config.max_ratio}"
    if config.max_aspect is not None and max(w, h) / min(w, h) > config.max_aspect:
        return f"aspect ratio {max(w, h) / min(w, h):.2f}:1 above {config.max_aspect}:1"
    return None


def plan_clean(folder: DatasetFolder, config: CleanConfig, progress: Progress | None = None) -> CleanPlan:
    """What `config` would drop, and why; changes nothing."""
    plan = CleanPlan()
    dropped: set[str] = set()
    survivors: list[tuple[ManifestItem, Image.Image]] = []
    needs_pixels = config.dedupe != "off" or config.min_sharpness is not None
    for index, item in enumerate(folder.items, 1):
        reason = _shape_reason(item, config)
        image = None
        if reason is None and needs_pixels:
            try:
                image = open_image(folder.image_path(item))
            except ImageLoadError as exc:
                reason = f"unreadable: {str(exc).split(': ', 1)[-1]}"
        if reason is None and config.min_sharpness is not None and image is not None:
            score = blur_score(image)
            if score < config.min_sharpness:
                reason = f"blurry: sharpness {score:.1f} < {config.min_sharpness}"
        if reason:
            plan.drops.append(Drop(item.file, reason))
            dropped.add(item.file)
        elif image is not None:
            image.thumbnail((256, 256))  # enough for hashes; keeps memory flat on big sets
            survivors.append((item, image))
        if progress:
            progress(index, len(folder.items))
    if config.dedupe != "off":
        plan.drops.extend(_duplicate_drops(survivors, config))
        dropped.update(d.file for d in plan.drops)
    plan.kept = sum(1 for item in folder.items if item.file not in dropped)
    return plan


def _duplicate_drops(survivors: list[tuple[ManifestItem, Image.Image]], config: CleanConfig) -> list[Drop]:
    """Keep the biggest image of each duplicate group; drop the others naming the keeper."""
    drops: list[Drop] = []
    by_pixels: dict[str, ManifestItem] = {}
    unique: list[tuple[ManifestItem, Image.Image]] = []
    for item, image in survivors:
        digest = hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()
        if digest in by_pixels:
            drops.append(Drop(item.file, f"exact duplicate of {by_pixels[digest].file}"))
        else:
            by_pixels[digest] = item
            unique.append((item, image))
    if config.dedupe == "near" and len(unique) > 1:
        hashes = [phash(image) for _, image in unique]
        for group in near_duplicate_groups(hashes, config.phash_threshold):
            keeper = max(group, key=lambda i: unique[i][0].width * unique[i][0].height)
            for i in group:
                if i != keeper:
                    distance = hamming(hashes[i], hashes[keeper])
                    drops.append(
                        Drop(
                            unique[i][0].file,
                            f"near duplicate of {unique[keeper][0].file} (distance {distance})",
                        )
                    )
    return drops


def apply_clean(folder: DatasetFolder, plan: CleanPlan) -> None:
    """Move dropped images and their captions to removed/ and update the manifest."""
    dropped = {d.file for d in plan.drops}
    folder.removed_dir.mkdir(parents=True, exist_ok=True)
    for item in folder.items:
        if item.file in dropped:
            for path in (folder.image_path(item), folder.caption_path(item)):
                if path.exists():
                    shutil.move(str(path), folder.removed_dir / path.name)
    folder.items = [item for item in folder.items if item.file not in dropped]
    folder.save()
    atomic_write_json(folder.clean_report_path, plan.to_json())


def _encode_like(path_suffix: str, image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    if path_suffix in {".jpg", ".jpeg"}:
        image.save(buffer, "JPEG", quality=95, subsampling=0)
    elif path_suffix == ".webp":
        image.save(buffer, "WEBP", quality=95)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def resize_images(
    folder: DatasetFolder,
    resolution: int,
    mode: Literal["square", "buckets"] = "buckets",
    focus: FocusFinder | None = None,
    dry_run: bool = False,
) -> list[dict]:
    """Crop/resize every image in place to a square or its bucket; returns [{file, from, to}]."""
    buckets = plan_buckets(resolution) if mode == "buckets" else [(resolution, resolution)]
    changes = []
    for item in folder.items:
        bucket = assign_bucket(item.width, item.height, buckets)
        if (item.width, item.height) == bucket:
            continue
        changes.append({"file": item.file, "from": [item.width, item.height], "to": list(bucket)})
        if dry_run:
            continue
        path = folder.image_path(item)
        image = open_image(path)
        resized = resize_to_bucket(image, bucket, focus(image) if focus else None)
        atomic_write_bytes(path, _encode_like(path.suffix.lower(), resized))
        item.width, item.height = resized.size
        folder.save()  # per image: an interrupted resize re-runs without touching done ones
    return changes


def crop_images(
    folder: DatasetFolder,
    find_box: BoxFinder,
    files: list[str] | None = None,
    dry_run: bool = False,
) -> tuple[list[dict], list[str]]:
    """Crop images in place to the box `find_box` gives; returns ([{file, from, box}], files left as they were).

    Only `files` when given; an image cropped before (marked in the manifest) is not cropped again.
    """
    wanted = set(files) if files is not None else None
    changes, left = [], []
    for item in folder.items:
        if (wanted is not None and item.file not in wanted) or item.extra.get(CROPPED_KEY):
            continue
        path = folder.image_path(item)
        image = open_image(path)
        box = find_box(image)
        if box is None or tuple(box) == (0, 0, image.width, image.height):
            left.append(item.file)
            continue
        changes.append({"file": item.file, "from": [item.width, item.height], "box": list(box)})
        if dry_run:
            continue
        cropped = image.crop(tuple(box))
        atomic_write_bytes(path, _encode_like(path.suffix.lower(), cropped))
        item.width, item.height = cropped.size
        item.extra[CROPPED_KEY] = list(box)
        folder.save()  # per image, as resize_images does
    return changes, left
