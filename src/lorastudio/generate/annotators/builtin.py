"""The preprocessors that need no weights: OpenCV/numpy filters behaving as the A1111 extension's.

Each takes an HxWx3 uint8 RGB array (already at the processing resolution when its row uses one)
and the run's `AnnotatorContext`, and returns a uint8 map; `registry.run_annotator` does the rest.
"""

from __future__ import annotations

import cv2
import numpy as np

from lorastudio.generate.annotators.base import AnnotatorContext

__all__ = [
    "blur_gaussian",
    "canny",
    "identity",
    "inpaint",
    "inpaint_hint",
    "invert",
    "lineart_standard",
    "noise_disk",
    "scribble_xdog",
    "shuffle",
    "threshold",
    "tile_resample",
]


def identity(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """The image itself (`none`, and tile_colorfix: its colour fix acts while sampling, not on the map)."""
    return image


def invert(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """Black lines on white become white lines on black, what line ControlNets were trained on."""
    return 255 - image


def canny(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """Canny edges with the unit's low/high hysteresis thresholds."""
    return cv2.Canny(image, int(ctx.value_a()), int(ctx.value_b()))


def threshold(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """White where every channel is brighter than the threshold, black elsewhere."""
    darkest = image.min(axis=2)
    return np.where(darkest > ctx.value_a(), 255, 0).astype(np.uint8)


def blur_gaussian(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """The image blurred with the unit's sigma (for the tile/blur ControlNets)."""
    sigma = max(float(ctx.value_a()), 0.01)
    return cv2.GaussianBlur(image, (0, 0), sigma)


def tile_resample(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """The image shrunk by the down-sampling rate (rates below 1.1 leave it as it is)."""
    rate = float(ctx.value_a())
    if rate < 1.1:
        return image
    height, width = image.shape[:2]
    size = (max(1, int(width / rate)), max(1, int(height / rate)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def noise_disk(height: int, width: int, channels: int, scale: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random noise in [0, 1]: a coarse random grid blown up with cubic interpolation."""
    coarse = rng.uniform(0.0, 1.0, size=(height // scale + 2, width // scale + 2, channels)).astype(np.float32)
    smooth = cv2.resize(coarse, (width + 2 * scale, height + 2 * scale), interpolation=cv2.INTER_CUBIC)
    if smooth.ndim == 2:
        smooth = smooth[:, :, None]
    smooth = smooth[scale : scale + height, scale : scale + width]
    smooth = smooth - smooth.min()
    return smooth / max(float(smooth.max()), 1e-6)


def shuffle(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """The image's content moved along a smooth random flow (content shuffle); the same seed, the same map."""
    height, width = image.shape[:2]
    rng = np.random.default_rng(int(ctx.seed))
    flow_x = noise_disk(height, width, 1, 256, rng) * float(width - 1)
    flow_y = noise_disk(height, width, 1, 256, rng) * float(height - 1)
    flow = np.concatenate([flow_x, flow_y], axis=2).astype(np.float32)
    return cv2.remap(image, flow, None, cv2.INTER_LINEAR)


def lineart_standard(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """Dark lines on a light ground as white lines on black, strength normalised by the median line."""
    pixels = image.astype(np.float32)
    background = cv2.GaussianBlur(pixels, (0, 0), 6.0)
    darkness = (background - pixels).min(axis=2).clip(0, 255)
    lines = darkness[darkness > 8]
    reference = max(16.0, float(np.median(lines))) if lines.size else 16.0
    return (darkness / reference * 127.0).clip(0, 255).astype(np.uint8)


def scribble_xdog(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """Scribble lines from a difference of Gaussians (XDoG), kept where it passes the unit's threshold."""
    pixels = image.astype(np.float32)
    fine = cv2.GaussianBlur(pixels, (0, 0), 0.5)
    coarse = cv2.GaussianBlur(pixels, (0, 0), 5.0)
    # A dark line is darker than its blurred surroundings in every channel.
    inverted_dog = (255.0 - (coarse - fine).min(axis=2)).clip(0, 255).astype(np.uint8)
    strength = 255.0 - inverted_dog.astype(np.float32)
    return np.where(2.0 * strength > ctx.value_a(), 255, 0).astype(np.uint8)


def inpaint(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """The image with its masked pixels (4th channel above 127) black: what the inpaint ControlNet repaints.

    The sampling side feeds the network `inpaint_hint` (masked pixels at -1), not this picture.
    """
    color = image[:, :, :3].copy()
    if image.shape[2] == 4:
        color[image[:, :, 3] > 127] = 0
    return color


def inpaint_hint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The inpaint ControlNet's input: RGB in [0, 1], masked pixels (mask above 127) set to -1."""
    hint = image[:, :, :3].astype(np.float32) / 255.0
    hint[mask > 127] = -1.0
    return hint
