"""Post-processing shared by the soft-edge preprocessors (HED, PiDiNet) and their variants.

`*_safe` quantises the soft edges into a few levels (fewer hidden details leak into the
ControlNet); `scribble_*` thins them to one-pixel lines (non-maximum suppression along four
directions), then thickens and binarises them as the ControlNet 1.1 annotators do.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["edges_to_scribble", "non_maximum_suppression", "quantise_edges", "to_uint8"]


def to_uint8(edge: np.ndarray) -> np.ndarray:
    """An edge map in [0, 1] as the 8-bit map a ControlNet takes."""
    return (edge * 255.0).clip(0, 255).astype(np.uint8)


def quantise_edges(edge: np.ndarray, steps: int = 2) -> np.ndarray:
    """Soft edges in 0..1 -> `steps + 1` levels in 0..1 (the extension's "safe" step)."""
    levelled = (edge.astype(np.float32) * float(steps + 1)).astype(np.int32)
    return levelled.astype(np.float32) / float(steps)


def non_maximum_suppression(edges: np.ndarray, threshold: int, sigma: float) -> np.ndarray:
    """Blur, keep the pixels that are a maximum along one of four directions, binarise above `threshold`."""
    blurred = cv2.GaussianBlur(edges.astype(np.float32), (0, 0), sigma)
    directions = [
        np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.uint8),
        np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], dtype=np.uint8),
        np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint8),
        np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.uint8),
    ]
    kept = np.zeros_like(blurred)
    for kernel in directions:
        np.putmask(kept, cv2.dilate(blurred, kernel=kernel) == blurred, blurred)
    thinned = np.zeros_like(kept, dtype=np.uint8)
    thinned[kept > threshold] = 255
    return thinned


def edges_to_scribble(edges: np.ndarray) -> np.ndarray:
    """A uint8 soft-edge map -> black/white scribble lines (thin, blur by 3 px, every lit pixel to 255)."""
    lines = non_maximum_suppression(edges, 127, 3.0)
    lines = cv2.GaussianBlur(lines, (0, 0), 3.0)
    lines[lines > 4] = 255
    lines[lines < 255] = 0
    return lines
