"""The noise added to latents in a training step: Gaussian, offset noise and pyramid noise.

Plain Gaussian noise is white: every spatial frequency gets the same energy, so the model
never learns to shift a whole image's brightness or colour. Offset noise (one random value
per channel) and multires / pyramid noise (low-resolution noise upsampled and added at
decreasing weights) give the low frequencies more energy; kohya exposes both as
`noise_offset` and `multires_noise_iterations` / `multires_noise_discount`.

Every draw comes from the caller's generator, so a step's noise is a function of its seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["training_noise", "pyramid_noise"]


def pyramid_noise(
    noise: torch.Tensor, generator: torch.Generator, iterations: int, discount: float
) -> torch.Tensor:
    """Add `iterations` layers of coarser noise to `noise` ([B, C, H, W]), then rescale to unit std.

    Layer i (1-based) is Gaussian noise at (H, W) / r**i, with r drawn in [2, 4) per layer,
    upsampled bilinearly to full size and weighted `discount**i`; layers stop once a side is 1.
    """
    batch, channels, height, width = noise.shape
    out = noise.clone()
    for i in range(1, iterations + 1):
        r = 2.0 + 2.0 * float(torch.rand((), generator=generator, device=noise.device))
        h, w = max(1, int(height / r**i)), max(1, int(width / r**i))
        coarse = torch.randn((batch, channels, h, w), generator=generator, device=noise.device)
        out = out + F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) * (
            discount**i
        )
        if h == 1 or w == 1:
            break
    std = out.std(dim=(1, 2, 3), keepdim=True)
    return out / std


def training_noise(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator,
    device: torch.device | str,
    offset: float = 0.0,
    multires_iterations: int = 0,
    multires_discount: float = 0.3,
) -> torch.Tensor:
    """The noise of one micro-batch: Gaussian, + pyramid layers, + per-channel offset.

    The first two draws (Gaussian, then the offset) are the same as without pyramid noise,
    so runs that do not use it keep their exact noise.
    """
    noise = torch.randn(shape, generator=generator, device=device)
    if offset:
        per_channel = torch.randn(tuple(shape[:2]) + (1, 1), generator=generator, device=device)
        noise_offset = offset * per_channel
    else:
        noise_offset = None
    if multires_iterations:
        noise = pyramid_noise(noise, generator, multires_iterations, multires_discount)
    if noise_offset is not None:
        noise = noise + noise_offset
    return noise
