"""Initial latent noise: seeds, A1111 variation seeds (subseeds) and "resize seed from".

A1111 makes the starting noise of image i from its seed; with a variation seed it walks
from that noise towards the noise of the variation seed along a great circle (slerp), so
strength 0 is the seed's image and strength 1 starts from the variation seed's noise.
"Resize seed from WxH" draws the noise as if the image had that size and pastes its centre
into noise of the real size, so an image keeps its composition when the size changes.
Everything is drawn on CPU generators: the same seed gives the same noise on any device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["NoiseOptions", "seed_noise", "slerp", "image_noise", "batch_noise"]


@dataclass(frozen=True)
class NoiseOptions:
    """The variation settings of a request; the defaults draw plain seed noise."""

    subseed_strength: float = 0.0
    resize_from: tuple[int, int] | None = None  # (latent width, latent height)

    @property
    def plain(self) -> bool:
        return self.subseed_strength == 0 and self.resize_from is None


def seed_noise(seed: int, shape: tuple[int, ...]) -> Any:
    """Standard normal noise of `shape` from a fresh CPU generator seeded with `seed`."""
    import torch

    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)))


def slerp(strength: float, low, high):
    """Spherical interpolation between two noises of one image, as A1111's `slerp`.

    Like A1111 the vectors are the columns along dim 1 (height) of a [C, H, W] noise, each
    normalised on its own; nearly parallel noises fall back to a straight line.
    """
    import torch

    low_dir = low / torch.norm(low, dim=1, keepdim=True)
    high_dir = high / torch.norm(high, dim=1, keepdim=True)
    cosine = (low_dir * high_dir).sum(1)
    if cosine.mean() > 0.9995:
        return low * (1 - strength) + high * strength
    angle = torch.acos(cosine)
    sine = torch.sin(angle)
    low_weight = (torch.sin((1.0 - strength) * angle) / sine).unsqueeze(1)
    high_weight = (torch.sin(strength * angle) / sine).unsqueeze(1)
    return low_weight * low + high_weight * high


def _paste_centre(small, big):
    """Centre `small` [C, h, w] on `big` [C, H, W], cropping it where it is larger."""
    out = big.clone()
    _, small_h, small_w = small.shape
    _, big_h, big_w = big.shape
    top, left = (big_h - small_h) // 2, (big_w - small_w) // 2
    h = small_h if top >= 0 else small_h + 2 * top
    w = small_w if left >= 0 else small_w + 2 * left
    out_top, out_left = max(top, 0), max(left, 0)
    in_top, in_left = max(-top, 0), max(-left, 0)
    out[:, out_top : out_top + h, out_left : out_left + w] = small[
        :, in_top : in_top + h, in_left : in_left + w
    ]
    return out


def image_noise(seed: int, subseed: int | None, shape: tuple[int, ...], options: NoiseOptions):
    """The starting noise of one image, [C, H, W], following A1111's ImageRNG.first()."""
    if options.plain:
        return seed_noise(seed, shape)
    draw_shape = shape
    if options.resize_from is not None:
        draw_shape = (shape[0], options.resize_from[1], options.resize_from[0])
    noise = seed_noise(seed, draw_shape)
    if options.subseed_strength != 0 and subseed is not None:
        noise = slerp(options.subseed_strength, noise, seed_noise(subseed, draw_shape))
    if draw_shape != tuple(shape):
        noise = _paste_centre(noise, seed_noise(seed, shape))
    return noise


def batch_noise(seeds: list[int], subseeds: list[int] | None, shape: tuple[int, ...], options: NoiseOptions):
    """[N, C, H, W] starting noise for a batch, one image per seed (CPU, float32)."""
    import torch

    subs = list(subseeds or [])
    return torch.stack(
        [image_noise(s, subs[i] if i < len(subs) else None, shape, options) for i, s in enumerate(seeds)]
    )
