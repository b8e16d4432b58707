"""The hires fix's upscale step: between the first pass and the second, at the larger size.

A latent mode (`Latent`, `Latent (bicubic antialiased)`, ...) interpolates the latents with
A1111's mode and antialias; every other upscaler works on the decoded images, which are then
encoded again: `None` and `Lanczos` resize with Lanczos, `Nearest` with nearest neighbour, and a
model upscaler (loaded by the service into `plan.hires_upscaler`) runs at its native scale until
the image is large enough, then Lanczos brings it to the target (as A1111 does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig, hires_target
from lorastudio.generate.images import pil_to_tensor, tensor_to_pil
from lorastudio.generate.upscalers.names import LATENT_UPSCALE_MODES, RESAMPLE_UPSCALERS

if TYPE_CHECKING:
    import torch

    from lorastudio.generate.plan import SamplingPlan

__all__ = ["run_hires_pass", "wants_hires"]


def wants_hires(cfg: GenerateConfig, plan: SamplingPlan) -> bool:
    """txt2img with an upscale factor above 1 or a size to resize to (img2img never has a hires pass)."""
    return cfg.hires_on and plan.init_image is None


def _crop_latents(latents, crop: tuple[int, int]):
    """Cut `crop` (columns, rows) off the upscaled latents, centred, the odd one at the end (A1111)."""
    columns, rows = crop
    height, width = latents.shape[-2:]
    return latents[:, :, rows // 2 : height - (rows + 1) // 2, columns // 2 : width - (columns + 1) // 2]


def _upscale_latents(latents, name: str, size: tuple[int, int], factor: int):
    import torch

    mode, antialias = LATENT_UPSCALE_MODES[name]
    width, height = size
    return torch.nn.functional.interpolate(
        latents, size=(height // factor, width // factor), mode=mode, antialias=antialias
    )


def _upscale_image(sampler, cfg: GenerateConfig, plan, image: Image.Image, size: tuple[int, int]) -> Image.Image:
    name = cfg.hires_upscaler
    if name in RESAMPLE_UPSCALERS:
        return image.resize(size, getattr(Image.Resampling, RESAMPLE_UPSCALERS[name]))
    upscaler: Any = getattr(plan, "hires_upscaler", None)
    if upscaler is None:
        raise LorastudioError(
            f"hires upscaler {name!r}: a model upscaler is loaded by the service from studio/models/upscalers; "
            "generate through lorastudio generate or the API."
        )

    def stop() -> bool:
        sampler.raise_if_stopped()  # cancel and skip between tiles, as between sampling steps
        return False

    return upscaler.upscale_to(image, size, should_stop=stop)


def _upscale_pixels(sampler, cfg: GenerateConfig, plan, latents, size: tuple[int, int]):
    import torch

    model = sampler.model
    images = tensor_to_pil(sampler.decode(latents))
    sampler.raise_if_stopped()
    pixels = torch.cat(
        [pil_to_tensor(_upscale_image(sampler, cfg, plan, im, size), model.device, model.dtype) for im in images]
    )
    upscaled = sampler.encode_image(pixels)
    sampler.raise_if_stopped()
    return upscaled


def run_hires_pass(
    sampler: Any,  # pipeline._Sampler (importing it here would be an import circle)
    cfg: GenerateConfig,
    plan: SamplingPlan,
    latents: torch.Tensor,
    seeds: list[int],
) -> list[Image.Image]:
    """The first pass's `latents` upscaled with `cfg.hires_upscaler` (cropped to a resize target) and
    denoised again at the larger size."""
    size, crop = hires_target(cfg, plan.width, plan.height)
    if cfg.hires_upscaler in LATENT_UPSCALE_MODES:
        upscaled = _upscale_latents(latents, cfg.hires_upscaler, size, sampler.model.vae_scale_factor)
    else:
        upscaled = _upscale_pixels(sampler, cfg, plan, latents, size)
    upscaled = _crop_latents(upscaled, crop)
    factor = sampler.model.vae_scale_factor
    return sampler.denoise(
        seeds,
        upscaled.shape[-1] * factor,  # the second pass's size: what the crop left
        upscaled.shape[-2] * factor,
        cfg.hires_steps or cfg.steps,
        cfg.hires_strength,
        upscaled,
        first_pass_steps=cfg.steps,
    )
