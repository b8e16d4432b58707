"""Perceptual hashes for near-duplicate detection (numpy only, no scipy).

pHash: greyscale 32x32, 2-D DCT-II, keep the 8x8 lowest frequencies, one bit per
coefficient above their median. Resized, re-encoded or lightly edited copies of a picture
land within a few bits of each other; different pictures are typically 20+ bits apart.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

__all__ = ["phash", "hamming", "near_duplicate_groups", "blur_score"]

_SIDE = 32
_KEEP = 8


@lru_cache(maxsize=4)
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II basis: `M @ x` is the DCT of a length-n vector x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def phash(image: Image.Image) -> int:
    """64-bit perceptual hash of an image."""
    grey = np.asarray(image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    matrix = _dct_matrix(_SIDE)
    low = (matrix @ grey @ matrix.T)[:_KEEP, :_KEEP].flatten()
    # The DC term only measures brightness; leaving it out of the median keeps the bits balanced.
    bits = low > np.median(low[1:])
    return int(sum(1 << index for index, bit in enumerate(bits) if bit))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_duplicate_groups(hashes: list[int], threshold: int) -> list[list[int]]:
    """Indices grouped by hash distance <= threshold (transitively); only groups of 2+."""
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    values = np.array(hashes, dtype=np.uint64)
    for i in range(len(values)):
        distances = _popcount(values[i + 1 :] ^ values[i])
        for j in np.nonzero(distances <= threshold)[0]:
            parent[root(i + 1 + int(j))] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(hashes)):
        groups.setdefault(root(i), []).append(i)
    return [members for members in groups.values() if len(members) > 1]


def _popcount(values: np.ndarray) -> np.ndarray:
    as_bytes = values.view(np.uint8).reshape(-1, 8)
    return np.unpackbits(as_bytes, axis=1).sum(axis=1)


def blur_score(image: Image.Image, side: int = 512) -> float:
    """Variance of the Laplacian on a greyscale copy (at most `side` px): low means blurry."""
    grey = image.convert("L")
    grey.thumbnail((side, side), Image.Resampling.BILINEAR)
    a = np.asarray(grey, dtype=np.float64)
    if a.shape[0] < 3 or a.shape[1] < 3:
        return 0.0
    laplacian = a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] - 4 * a[1:-1, 1:-1]
    return float(laplacian.var())
