"""The sampling loop: txt2img, img2img, inpainting and hires fix on a `LoadedModel`.

Written out instead of calling diffusers' pipelines because A1111 semantics need control
of every step: prompt editing and alternation change the conditioning per step, each
image of a batch has its own seed (seed + i) and noise generator, and inpainting with a
normal model blends the known latents back in after every step.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.images import mask_crop_region, pil_to_tensor, prepare_mask, tensor_to_pil
from lorastudio.generate.samplers import SamplerChoice, make_scheduler, parse_sampler

__all__ = ["SamplingPlan", "GeneratedImage", "generate_images", "resolve_seed"]

ProgressFn = Callable[[int, int], None]
PreviewFn = Callable[[Image.Image], None]


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    index: int  # position in the whole request (batch * count)


@dataclass
class SamplingPlan:
    """Everything the loop needs that is derived from the request, decided once."""

    width: int
    height: int
    seeds: list[int]
    sampler: SamplerChoice
    prompt: str  # without <lora:...> tags
    negative: str
    init_image: Image.Image | None = None
    mask: Image.Image | None = None
    extra: dict = field(default_factory=dict)


def resolve_seed(seed: int) -> int:
    """-1 means random, like A1111; the chosen seed is recorded so the image can be reproduced."""
    return random.randrange(0, 2**32 - 1) if seed == -1 else seed


class _Cancelled(Exception):
    pass


class _Sampler:
    """Runs one batch of the denoising loop for a model and a prompt encoder."""

    def __init__(
        self,
        model,
        encoder,
        cfg: GenerateConfig,
        plan: SamplingPlan,
        progress: ProgressFn | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.model = model
        self.encoder = encoder
        self.cfg = cfg
        self.plan = plan
        self.progress = progress
        self.should_stop = should_stop
        self.step_done = 0
        self.total_steps = 0
        self.preview: PreviewFn | None = None
        self.preview_every = 0

    # -- conditioning ---------------------------------------------------------------------
    def _schedule(self, text: str, steps: int) -> list[tuple[int, Any]]:
        from lorastudio.generate.prompt_parser import get_learned_conditioning_prompt_schedules

        schedule = get_learned_conditioning_prompt_schedules([text], steps)[0]
        return [(int(end), self.encoder.encode(t)) for end, t in schedule]

    @staticmethod
    def _at_step(schedule, step: int):
        for end, cond in schedule:
            if step <= end:
                return cond
        return schedule[-1][1]

    # -- latents --------------------------------------------------------------------------
    def _noise(self, seeds: list[int], shape: tuple[int, ...]):
        import torch

        # CPU generators: the same seed gives the same noise on any device.
        noises = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s)) for s in seeds]
        return torch.stack(noises).to(self.model.device, self.model.dtype)

    def encode_image(self, pixels):
        vae = self.model.vae
        latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mean
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * vae.config.scaling_factor).to(self.model.dtype)

    def decode(self, latents):
        import torch

        vae = self.model.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        scaled = latents / vae.config.scaling_factor + shift
        images = vae.decode(scaled.to(vae.dtype)).sample
        if torch.isnan(images).any() and vae.dtype in (torch.float16, torch.bfloat16):
            # fp16 VAEs overflow on some images (SDXL's famously): retry in fp32, keep it there.
            vae.to(torch.float32)
            images = vae.decode(scaled.to(torch.float32)).sample
        return images

    # -- the loop -------------------------------------------------------------------------
    def denoise(
        self,
        seeds: list[int],
        width: int,
        height: int,
        steps: int,
        strength: float | None,
        init_latents=None,
        latent_mask=None,
        masked_image_latents=None,
        full_mask=None,
    ):
        import torch

        model = self.model
        scheduler = make_scheduler(self.plan.sampler, model.scheduler_config)
        scheduler.set_timesteps(steps, device=model.device)
        timesteps = scheduler.timesteps
        order = getattr(scheduler, "order", 1)
        # Noise lives in the VAE's latent space (an inpainting UNet's extra input channels are
        # the mask and masked image, concatenated per step).
        shape = (
            model.vae.config.latent_channels,
            height // model.vae_scale_factor,
            width // model.vae_scale_factor,
        )
        noise = self._noise(seeds, shape)
        if init_latents is None:
            latents = noise * scheduler.init_noise_sigma
            t_start = 0
        else:
            init_steps = min(int(steps * strength), steps)
            t_start = max(steps - init_steps, 0)
            timesteps = timesteps[t_start * order :]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(t_start * order)
            if len(timesteps) == 0:
                return init_latents
            latents = scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(len(seeds)))
        cond_schedule = self._schedule(self.plan.prompt, steps)
        uncond_schedule = self._schedule(self.plan.negative, steps)
        use_cfg = self.cfg.cfg_scale > 1.0
        generators = [torch.Generator("cpu").manual_seed(s + 1) for s in seeds]
        batch = len(seeds)
        for i, t in enumerate(timesteps):
            if self.should_stop is not None and self.should_stop():
                raise _Cancelled()
            step_index = t_start + i // order
            cond = self._at_step(cond_schedule, step_index)
            uncond = self._at_step(uncond_schedule, step_index)
            latent_in = scheduler.scale_model_input(latents, t)
            if masked_image_latents is not None:
                latent_in = torch.cat([latent_in, full_mask, masked_image_latents], dim=1)
            noise_pred = self._predict(latent_in, t, cond, uncond if use_cfg else None, batch, width, height)
            step_kwargs = (
                {"generator": self._step_generator(generators)} if self._takes_generator(scheduler) else {}
            )
            stepped = scheduler.step(noise_pred, t, latents, **step_kwargs)
            latents = stepped.prev_sample
            if latent_mask is not None and masked_image_latents is None:
                known = init_latents
                if i < len(timesteps) - 1:
                    known = scheduler.add_noise(init_latents, noise, timesteps[i + 1 : i + 2].repeat(batch))
                latents = (1 - latent_mask) * known + latent_mask * latents
            self.step_done += 1
            if self.progress is not None:
                self.progress(self.step_done, self.total_steps)
            self._maybe_preview(stepped, latents)
        return latents

    def _maybe_preview(self, stepped, latents) -> None:
        """Every N steps, decode the current denoised estimate of the first image (A1111's "Full")."""
        if self.preview is None or not self.preview_every or self.step_done % self.preview_every:
            return
        estimate = getattr(stepped, "pred_original_sample", None)
        estimate = latents if estimate is None else estimate
        self.preview(tensor_to_pil(self.decode(estimate[:1]))[0])

    @staticmethod
    def _takes_generator(scheduler) -> bool:
        import inspect

        return "generator" in inspect.signature(scheduler.step).parameters

    @staticmethod
    def _step_generator(generators):
        # Ancestral/SDE samplers draw noise each step: one generator per image keeps
        # image i of a batch identical to generating it alone with seed + i.
        return generators if len(generators) > 1 else generators[0]

    def _predict(self, latent_in, t, cond, uncond, batch: int, width: int, height: int):
        import torch

        from lorastudio.generate.conditioning import pad_to_same_length

        model = self.model
        c = cond.embeds
        if uncond is not None:
            u, c = pad_to_same_length(uncond.embeds, c, self.encoder.empty_chunk())
            context = torch.cat([u.expand(batch, -1, -1), c.expand(batch, -1, -1)])
            latent_in = torch.cat([latent_in, latent_in])
        else:
            context = c.expand(batch, -1, -1)
        kwargs = {}
        if model.family.uses_pooled_text:
            time_ids = torch.tensor(
                [[height, width, 0, 0, height, width]], device=model.device, dtype=model.dtype
            )
            pooled = cond.pooled.expand(batch, -1)
            if uncond is not None:
                pooled = torch.cat([uncond.pooled.expand(batch, -1), pooled])
            kwargs["added_cond_kwargs"] = {
                "text_embeds": pooled,
                "time_ids": time_ids.expand(pooled.shape[0], -1),
            }
        out = model.unet(latent_in, t, encoder_hidden_states=context.to(model.dtype), **kwargs).sample
        if uncond is None:
            return out
        out_uncond, out_cond = out.chunk(2)
        return out_uncond + self.cfg.cfg_scale * (out_cond - out_uncond)


def _check_size(cfg: GenerateConfig, model) -> tuple[int, int]:
    width = cfg.width or model.native_size
    height = cfg.height or model.native_size
    factor = model.vae_scale_factor
    if width % factor or height % factor:
        raise LorastudioError(
            f"size {width}x{height} must be a multiple of {factor}; e.g. {width // factor * factor}x{height // factor * factor}."
        )
    return width, height


def _open_image(path: str, what: str) -> Image.Image:
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB") if what == "init image" else img.convert("L")
    except FileNotFoundError:
        raise LorastudioError(f"{path}: {what} not found; check the path.") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise LorastudioError(
            f"{path}: {what} is not a readable image ({type(exc).__name__}); use a PNG or JPEG."
        ) from None


def open_request_images(cfg: GenerateConfig) -> tuple[Image.Image | None, Image.Image | None]:
    """The request's init image and mask, or a one-line error naming the bad file."""
    init = _open_image(cfg.init_image, "init image") if cfg.init_image else None
    mask = _open_image(cfg.mask, "mask") if cfg.mask else None
    return init, mask


def build_plan(cfg: GenerateConfig, model, prompt: str, negative: str) -> SamplingPlan:
    width, height = _check_size(cfg, model)
    base_seed = resolve_seed(cfg.seed)
    seeds = [base_seed + i for i in range(cfg.total_images)]
    plan = SamplingPlan(width, height, seeds, parse_sampler(cfg.sampler, cfg.schedule), prompt, negative)
    plan.init_image, plan.mask = open_request_images(cfg)
    return plan


def _run_batch(
    sampler: _Sampler, cfg: GenerateConfig, plan: SamplingPlan, seeds: list[int]
) -> list[Image.Image]:
    import torch

    model = sampler.model
    width, height = plan.width, plan.height
    init_latents = latent_mask = masked_latents = full_mask = None
    crop_box = None
    init_for_overlay = mask_for_overlay = None
    if plan.init_image is not None:
        source = plan.init_image
        if plan.mask is not None:
            mask_full = prepare_mask(plan.mask, source.size, cfg.mask_blur)
            if cfg.inpaint_only_masked:
                crop_box = mask_crop_region(
                    plan.mask.resize(source.size), cfg.inpaint_padding, width / height
                )
            region = source.crop(crop_box) if crop_box else source
            mask_region = mask_full.crop(crop_box) if crop_box else mask_full
            init_for_overlay, mask_for_overlay = source, mask_full
            source = region.resize((width, height), Image.Resampling.LANCZOS)
            mask_img = mask_region.resize((width, height), Image.Resampling.LANCZOS)
        else:
            source = source.resize((width, height), Image.Resampling.LANCZOS)
            mask_img = None
        pixels = pil_to_tensor(source, model.device, model.dtype)
        init_latents = sampler.encode_image(pixels).expand(len(seeds), -1, -1, -1)
        if mask_img is not None:
            mask_t = pil_to_tensor(mask_img.convert("RGB"), model.device, model.dtype)[:, :1] * 0.5 + 0.5
            lat_h, lat_w = init_latents.shape[-2:]
            latent_mask = torch.nn.functional.interpolate(mask_t, size=(lat_h, lat_w), mode="bilinear")
            if model.unet.config.in_channels == 9:  # a dedicated inpainting model
                binary = (mask_t > 0.5).to(pixels.dtype)
                masked_latents = sampler.encode_image(pixels * (1 - binary)).expand(len(seeds), -1, -1, -1)
                full_mask = torch.cat([latent_mask.round()] * len(seeds))
                if cfg.cfg_scale > 1.0:
                    full_mask = torch.cat([full_mask, full_mask])
                    masked_latents = torch.cat([masked_latents, masked_latents])
    strength = cfg.strength if init_latents is not None else None
    latents = sampler.denoise(
        seeds, width, height, cfg.steps, strength, init_latents, latent_mask, masked_latents, full_mask
    )
    if cfg.hires_scale > 1.0 and plan.init_image is None:
        hires_w = int(width * cfg.hires_scale) // 8 * 8
        hires_h = int(height * cfg.hires_scale) // 8 * 8
        if cfg.hires_upscaler == "Latent":
            upscaled = torch.nn.functional.interpolate(
                latents,
                size=(hires_h // model.vae_scale_factor, hires_w // model.vae_scale_factor),
                mode="bilinear",
            )
        else:
            images = tensor_to_pil(sampler.decode(latents))
            pixels = torch.cat(
                [
                    pil_to_tensor(
                        im.resize((hires_w, hires_h), Image.Resampling.LANCZOS), model.device, model.dtype
                    )
                    for im in images
                ]
            )
            upscaled = sampler.encode_image(pixels)
        latents = sampler.denoise(
            seeds, hires_w, hires_h, cfg.hires_steps or cfg.steps, cfg.hires_strength, upscaled
        )
    images = tensor_to_pil(sampler.decode(latents))
    if init_for_overlay is not None:
        images = [_paste_back(im, init_for_overlay, mask_for_overlay, crop_box) for im in images]
    return images


def _paste_back(generated: Image.Image, original: Image.Image, mask: Image.Image, crop_box) -> Image.Image:
    """Keep the original pixels outside the (blurred) mask, like A1111's overlay."""
    if crop_box is not None:
        x0, y0, x1, y1 = crop_box
        canvas = original.copy()
        canvas.paste(generated.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS), (x0, y0))
        generated = canvas
    else:
        generated = (
            generated.resize(original.size, Image.Resampling.LANCZOS)
            if generated.size != original.size
            else generated
        )
        original = original if original.size == generated.size else original.resize(generated.size)
    return Image.composite(generated, original, mask.resize(generated.size))


def generate_images(
    model,
    cfg: GenerateConfig,
    plan: SamplingPlan,
    encoder,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    preview: PreviewFn | None = None,
    preview_every: int = 0,
) -> list[GeneratedImage]:
    """Run every batch of a request; LoRAs must already be applied by the caller.

    `preview(image)` is called every `preview_every` steps with the current estimate.
    """
    import torch

    sampler = _Sampler(model, encoder, cfg, plan, progress, should_stop)
    sampler.preview, sampler.preview_every = preview, preview_every
    passes = cfg.steps if plan.init_image is None else max(1, int(cfg.steps * cfg.strength))
    if cfg.hires_scale > 1.0 and plan.init_image is None:
        passes += max(1, int((cfg.hires_steps or cfg.steps) * cfg.hires_strength))
    sampler.total_steps = passes * cfg.count
    results: list[GeneratedImage] = []
    with torch.inference_mode():
        for batch_index in range(cfg.count):
            seeds = plan.seeds[batch_index * cfg.batch_size : (batch_index + 1) * cfg.batch_size]
            try:
                images = _run_batch(sampler, cfg, plan, seeds)
            except _Cancelled:
                break
            for offset, (image, seed) in enumerate(zip(images, seeds, strict=True)):
                results.append(GeneratedImage(image, seed, batch_index * cfg.batch_size + offset))
    return results
