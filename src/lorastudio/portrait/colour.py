"""Colour transfer: the source's LAB mean and spread moved to the reference's, inside a mask only.

EasyPhoto's step between the two inpaint passes: the generated face takes the template's skin
tone. Outside the mask the source is unchanged; a feathered mask blends the edge.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

__all__ = ["transfer_colour"]


def _lab(image: Image.Image) -> np.ndarray:
    return cv2.cvtColor(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _stats(lab: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    total = float(weights.sum())
    if total <= 0:
        pixels = lab.reshape(-1, 3)
        return pixels.mean(axis=0), pixels.std(axis=0)
    w = weights[..., None]
    mean = (lab * w).sum(axis=(0, 1)) / total
    std = np.sqrt(((lab - mean) ** 2 * w).sum(axis=(0, 1)) / total)
    return mean, std


def transfer_colour(
    source: Image.Image, reference: Image.Image, mask: Image.Image, reference_mask: Image.Image | None = None
) -> Image.Image:
    """`source` with its LAB mean/std inside `mask` matched to `reference`'s, changed only inside `mask`.

    The reference's statistics come from `reference_mask` when given, else from `mask` when the
    reference has the source's size (the same face before and after), else from the whole reference.
    """
    source_lab = _lab(source)
    weights = np.asarray(mask.convert("L").resize(source.size), dtype=np.float32) / 255.0
    if reference_mask is not None:
        reference_weights = np.asarray(reference_mask.convert("L").resize(reference.size), dtype=np.float32) / 255.0
    elif reference.size == source.size:
        reference_weights = weights
    else:
        reference_weights = np.ones((reference.height, reference.width), dtype=np.float32)
    source_mean, source_std = _stats(source_lab, weights)
    reference_mean, reference_std = _stats(_lab(reference), reference_weights)
    ratio = reference_std / np.maximum(source_std, 1e-6)
    moved = (source_lab - source_mean) * ratio + reference_mean
    rgb = cv2.cvtColor(moved.astype(np.float32), cv2.COLOR_LAB2RGB)
    recoloured = Image.fromarray(np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8))
    # Pixels outside the mask stay exactly as they were; a feathered edge blends.
    return Image.composite(recoloured, source.convert("RGB"), mask.convert("L").resize(source.size))
