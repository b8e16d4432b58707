"""Where a pass that starts from a picture (img2img, the hires fix) begins: the picture's latents
noised to the first sampled timestep, with A1111's two knobs on that noise.

`initial_noise_multiplier` (img2img only, infotext "Noise multiplier") scales the seed's noise
before it is added; `extra_noise` (img2img and the hires fix, infotext "Extra noise") adds the
same noise once more, `extra_noise` times, on top (A1111's `img2img_extra_noise`). Both are
written in k-diffusion's terms (x + noise * (sigma + extra)); on a scheduler whose latents are
scaled by the picture's weight at the timestep (DDIM, DPM-Solver: sqrt(alpha_cumprod)) the extra
noise is scaled by that weight too, as A1111's timestep samplers do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from diffusers import SchedulerMixin

__all__ = ["noised_start"]


def noised_start(
    scheduler: SchedulerMixin,
    init_latents: torch.Tensor,
    noise: torch.Tensor,
    timestep: torch.Tensor,
    multiplier: float = 1.0,
    extra: float = 0.0,
) -> torch.Tensor:
    """`init_latents` noised to `timestep` (one per image) with the seed's `noise`."""
    if multiplier != 1.0:  # 1.0 leaves the noise as it is: today's pixels exactly
        noise = noise * multiplier
    latents = scheduler.add_noise(init_latents, noise, timestep)
    if extra > 0:
        import torch

        # the picture's own weight at this timestep: 1 for k-diffusion's x + sigma * noise,
        # sqrt(alpha_cumprod) for the schedulers that sample the scaled latents
        signal = scheduler.add_noise(torch.ones_like(init_latents), torch.zeros_like(noise), timestep)
        latents = latents + noise * extra * signal
    return latents
