"""The sampling loop: txt2img, img2img, inpainting and hires fix on a `LoadedModel`.

Written out instead of calling diffusers' pipelines because A1111 semantics need control
of every step: prompt editing and alternation change the conditioning per step, each
image of a batch has its own seed (seed + i) and noise generator, and inpainting with a
normal model blends the known latents back in after every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from lorastudio.generate.config import GenerateConfig, size_from_picture
from lorastudio.generate.guidance import GuidedUnet
from lorastudio.generate.hires import run_hires_pass, wants_hires
from lorastudio.generate.images import (
    fill_masked,
    mask_crop_region,
    pil_to_tensor,
    prepare_mask,
    resize_image,
    tensor_to_pil,
)
from lorastudio.generate.noise import ImageNoise, NoiseOptions, batch_noise
from lorastudio.generate.plan import SamplingPlan, build_plan, open_request_images, resolve_seed
from lorastudio.generate.samplers import img2img_steps, make_scheduler, prompt_calls
from lorastudio.generate.start_noise import noised_start

if TYPE_CHECKING:
    import torch
    from diffusers import SchedulerMixin

    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.models.loading import LoadedModel

# SamplingPlan, build_plan, open_request_images and resolve_seed live in generate/plan.py (imported here too)
__all__ = [
    "GeneratedImage",
    "SamplingPlan",
    "SkipBatch",
    "build_plan",
    "generate_images",
    "open_request_images",
    "resolve_seed",
]

ProgressFn = Callable[[int, int], None]
PreviewFn = Callable[[Image.Image], None]

# Images of more pixels than this are decoded (and encoded, for img2img and hires fix) one
# image at a time in tiles of TILE_LATENT latents (512 px for an 8x VAE), checking for a
# cancel before each. Smaller images keep the plain VAE call: tiles are not bit-identical
# to it (see generate/vae_tiling.py).
TILED_DECODE_MIN_PIXELS = 1536 * 1536
TILE_LATENT = 64


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    index: int  # position in the whole request (batch * count)


class _Cancelled(Exception):
    pass


def denoised_estimate(scheduler: SchedulerMixin, stepped: Any, latents: torch.Tensor) -> torch.Tensor:
    """The step's estimate of the finished latents (the preview, and an interrupted batch's picture
    as A1111 returns it): the step output's own, else the x0 prediction DPM-Solver and UniPC keep
    for their next step, else (PLMS) the latents as they are."""
    for name in ("pred_original_sample", "denoised"):  # most samplers; LCM
        value = getattr(stepped, name, None)
        if value is not None:
            return value
    outputs = getattr(scheduler, "model_outputs", None)
    config = scheduler.config
    predicts_x0 = getattr(config, "predict_x0", False) or getattr(config, "algorithm_type", "").endswith("dpmsolver++")
    if predicts_x0 and outputs and outputs[-1] is not None and outputs[-1].shape == latents.shape:
        return outputs[-1]
    return latents


class SkipBatch(Exception):
    """Raised by a `should_stop` callback to drop the current batch and go on with the next (A1111 /skip)."""


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
        self.subseeds: list[int] = []  # the current batch's variation seeds
        self.control = getattr(plan, "extra", {}).get("control")  # a generate.control.ControlStack or None
        self.guided = GuidedUnet(model, cfg, encoder, self.control)
        self.old_timelines_differed = False  # infotext "Old prompt editing timelines"
        # The current batch's latest denoised estimate, and what stopped it (a cancel or a skip):
        # as A1111, an interrupted batch still comes back, decoded from where it got to.
        self.estimate = None
        self.stopped: Exception | None = None

    # -- conditioning ---------------------------------------------------------------------
    def _schedule(self, text: str, steps: int, first_pass_steps: int | None = None) -> list[tuple[int, Any]]:
        """The conditioning up to each step of a pass of `steps`.

        In a hires pass (`first_pass_steps` given) prompt editing goes on from the first
        pass, as in A1111 1.6+: `[a:b:1.5]` switches half-way through the hires pass.
        """
        from lorastudio.generate.prompt_parser import get_learned_conditioning_prompt_schedules

        base, hires = (steps, None) if first_pass_steps is None else (first_pass_steps, steps)
        schedule = get_learned_conditioning_prompt_schedules([text], base, hires)[0]
        if self.cfg.old_prompt_editing:  # A1111's pre-1.6 timelines; the infotext says so where they differ
            old = get_learned_conditioning_prompt_schedules([text], base, hires, use_old_scheduling=True)[0]
            self.old_timelines_differed |= old != schedule
            schedule = old
        return [(int(end), self.encoder.encode(t)) for end, t in schedule]

    def _composable_schedule(
        self, text: str, steps: int, first_pass_steps: int | None = None
    ) -> list[tuple[float, list[tuple[int, Any]]]]:
        """A1111's composable diffusion: `a AND b :0.7` -> one `(weight, schedule)` per sub-prompt.

        Each sub-prompt has its own prompt-editing schedule and attention weights. Only the
        prompt is split; the negative prompt keeps `AND` as plain text, as in A1111.
        """
        from lorastudio.generate.prompt_parser import split_composable

        return [(weight, self._schedule(part, steps, first_pass_steps)) for part, weight in split_composable(text)]

    def _conds_at_step(self, composable, step: int):
        """The sub-prompts' conditionings at `step`, one row each."""
        from lorastudio.generate.conditioning import stack_conditionings

        return stack_conditionings([self._at_step(schedule, step) for _, schedule in composable])

    @staticmethod
    def _at_step(schedule, step: int):
        """The conditioning for `step`; past the schedule's end the first one, as A1111 (only a hires
        pass longer than the first pass under the old timelines reaches there)."""
        for end, cond in schedule:
            if step <= end:
                return cond
        return schedule[0][1]

    # -- latents --------------------------------------------------------------------------
    def _noise(self, seeds: list[int], shape: tuple[int, ...]):
        """The batch's starting noise on the model's device, and its streams for the per-step noise
        (drawn from `cfg.rng`'s source, not the device's: the same seed gives the same noise anywhere)."""
        streams = ImageNoise(seeds, self.subseeds, shape, self._noise_options())
        return streams.first().to(self.model.device, self.model.dtype), streams

    def _noise_options(self) -> NoiseOptions:
        cfg, factor = self.cfg, self.model.vae_scale_factor
        resize_from = None
        if cfg.seed_resize_from_w > 0 and cfg.seed_resize_from_h > 0:
            resize_from = (cfg.seed_resize_from_w // factor, cfg.seed_resize_from_h // factor)
        return NoiseOptions(cfg.subseed_strength, resize_from, cfg.rng, cfg.ensd, cfg.old_step_noise)

    def _through_vae(self, fn, x, image_pixels: int, in_tiles):
        """`fn(x)` at once for images up to TILED_DECODE_MIN_PIXELS, else image by image in tiles
        (`in_tiles` is vae_tiling's encode or decode), stopping at the next tile when asked to."""
        import torch

        if image_pixels <= TILED_DECODE_MIN_PIXELS:
            return fn(x)
        factor = self.model.vae_scale_factor
        return torch.cat(
            [
                in_tiles(fn, x[i : i + 1], factor, tile=TILE_LATENT, before_tile=self.raise_if_stopped)
                for i in range(x.shape[0])
            ]
        )

    def encode_image(self, pixels):
        """Latents of pixels in -1..1; large images in tiles, stopping at the next tile when asked to."""
        from lorastudio.generate.vae_tiling import encode_in_tiles

        vae = self.model.vae
        pixels = pixels.to(vae.dtype)

        def tile_latents(tile):
            return vae.encode(tile).latent_dist.mean

        latents = self._through_vae(tile_latents, pixels, pixels.shape[-2] * pixels.shape[-1], encode_in_tiles)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * vae.config.scaling_factor).to(self.model.dtype)

    def _paint_everything(self, batch: int, width: int, height: int):
        """An inpainting UNet's inputs with no mask (txt2img, img2img, hires): repaint all over mid-grey, as A1111."""
        import torch

        f, opts = self.model.vae_scale_factor, {"device": self.model.device, "dtype": self.model.dtype}
        blank = self.encode_image(torch.zeros(1, 3, height, width, **opts))
        return torch.ones(batch, 1, height // f, width // f, **opts), blank.expand(batch, -1, -1, -1)

    def decode(self, latents):
        """Pixels in -1..1; large images in tiles, stopping at the next tile when asked to."""
        import torch

        from lorastudio.generate.vae_tiling import decode_in_tiles

        vae = self.model.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        scaled = latents / vae.config.scaling_factor + shift
        factor = self.model.vae_scale_factor
        image_pixels = scaled.shape[-2] * scaled.shape[-1] * factor * factor

        def tile_pixels(tile):
            return self.model.vae.decode(tile).sample

        images = self._through_vae(tile_pixels, scaled.to(vae.dtype), image_pixels, decode_in_tiles)
        # The dtype first: an fp32 VAE skips the NaN scan (a pass over the image and, on a GPU, a sync).
        if vae.dtype in (torch.float16, torch.bfloat16) and not torch.isfinite(images).all():
            # fp16 VAEs overflow on some images (SDXL's famously): retry in fp32, keep it there.
            vae.to(torch.float32)
            images = self._through_vae(tile_pixels, scaled.to(torch.float32), image_pixels, decode_in_tiles)
        return images

    def raise_if_stopped(self) -> None:
        """The cancel check between sampling steps, VAE tiles and the passes of a hires fix (none
        while a stopped batch's estimate is decoded: that finishes it)."""
        if self.stopped is None and self.should_stop is not None and self.should_stop():
            raise _Cancelled()

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
        first_pass_steps: int | None = None,
    ):
        """Sample one pass; `first_pass_steps` marks a hires pass (its prompt editing continues the first)."""
        import torch

        model = self.model
        hires = first_pass_steps is not None
        choice = self.plan.pass_sampler(hires)  # a hires pass: its own sampler where the request names one
        scheduler = make_scheduler(choice, model.scheduler_config, self.cfg)
        schedule_steps, sampled = (steps, steps) if init_latents is None else img2img_steps(steps, strength, hires)
        # a hires pass at a tiny strength stretches its schedule past the model's timesteps (12 / 0.01)
        schedule_steps = min(schedule_steps, int(getattr(scheduler.config, "num_train_timesteps", 1000)))
        sampled = min(sampled, schedule_steps)
        scheduler.set_timesteps(schedule_steps, device=model.device)
        timesteps = scheduler.timesteps
        order = getattr(scheduler, "order", 1)
        # Noise in the VAE's latent space (an inpainting UNet's mask and masked image join per step).
        shape = (
            model.vae.config.latent_channels,
            height // model.vae_scale_factor,
            width // model.vae_scale_factor,
        )
        noise, streams = self._noise(seeds, shape)
        if masked_image_latents is None and model.unet.config.in_channels == 9:
            full_mask, masked_image_latents = self._paint_everything(len(seeds), width, height)
        if init_latents is None:
            latents = noise * scheduler.init_noise_sigma
        else:  # the last `sampled` steps of the schedule, as A1111
            t_start = schedule_steps - sampled
            window = getattr(scheduler, "img2img_window", None)  # A1111's UniPC: its own steps and noise level
            if window is not None:
                timesteps, start = window(sampled)
            else:
                timesteps = timesteps[t_start * order :]
                start = timesteps[:1]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(t_start * order)
            if len(timesteps) == 0:
                return init_latents
            # A1111: the noise multiplier is img2img's; the extra noise is img2img's and the hires fix's
            multiplier = 1.0 if hires else self.cfg.initial_noise_multiplier
            start = start.repeat(len(seeds))
            latents = noised_start(scheduler, init_latents, noise, start, multiplier, self.cfg.extra_noise)
        if self.control is not None:
            self.control.begin_pass(width, height, len(timesteps), order, hires)
        # Prompt editing is timed over the requested steps and counts the steps this pass samples
        # from 0 (A1111's denoiser counter restarts each pass): img2img at 0.5 sees the first half.
        # A1111's denoiser counts model calls: a second-order sampler's prompts are timed over twice
        # the steps, and each of this pass's calls maps onto A1111's (2 per step, 1 for the last)
        # (a hires pass times its prompts by its own sampler's calls, over the first pass's, as A1111)
        first = self.plan.sampler.sampler
        timed, base = prompt_calls(choice.sampler, steps), first_pass_steps and prompt_calls(first, first_pass_steps)
        counts_calls = timed != steps  # a second-order sampler
        n_steps = -(-len(timesteps) // order)
        a1111_calls = 2 * n_steps - 1 if counts_calls else len(timesteps)
        prompt, negative = self.plan.pass_prompts(hires)
        composable = self._composable_schedule(prompt, timed, base)
        weights = [weight for weight, _ in composable]
        uncond_schedule = self._schedule(negative, timed, base)
        # A plain prompt skips the negative at CFG <= 1; AND's weighted sum is built on it.
        use_cfg = self.cfg.cfg_scale > 1.0 or weights != [1.0]
        step_kwargs = self._step_kwargs(scheduler, streams)  # the same objects every step
        batch = len(seeds)
        done_before = self.step_done
        for i, t in enumerate(timesteps):
            self.raise_if_stopped()
            step_index = i * a1111_calls // len(timesteps) if counts_calls else i // order
            cond = self._conds_at_step(composable, step_index)
            uncond = self._at_step(uncond_schedule, step_index)
            latent_in = scheduler.scale_model_input(latents, t)
            if masked_image_latents is not None:
                latent_in = torch.cat([latent_in, full_mask, masked_image_latents], dim=1)
            noise_pred = self._predict(
                latent_in, t, cond, weights, uncond if use_cfg else None, batch, width, height
            )
            stepped = scheduler.step(noise_pred, t, latents, **step_kwargs)
            latents = stepped.prev_sample
            if latent_mask is not None and masked_image_latents is None:
                known = init_latents
                if i < len(timesteps) - 1:
                    known = scheduler.add_noise(init_latents, noise, timesteps[i + 1 : i + 2].repeat(batch))
                latents = (1 - latent_mask) * known + latent_mask * latents
            self.estimate = denoised_estimate(scheduler, stepped, latents)
            # A second-order sampler (Heun, DPM2) evaluates most steps twice: progress counts steps.
            done = done_before + i // order + 1
            if done != self.step_done:
                self.step_done = done
                if self.progress is not None:
                    self.progress(self.step_done, self.total_steps)
                self._maybe_preview()
        return latents

    def _maybe_preview(self) -> None:
        """Every N steps, decode the current denoised estimate of the first image (A1111's "Full")."""
        if self.preview is None or not self.preview_every or self.step_done % self.preview_every:
            return
        self.preview(tensor_to_pil(self.decode(self.estimate[:1]))[0])

    def _step_kwargs(self, scheduler, streams: ImageNoise) -> dict[str, Any]:
        """What this scheduler's step takes of ours: the images' noise streams, and eta (DDIM).

        Ancestral/SDE samplers draw noise each step, one stream per image: image i of a batch
        comes out as generating it alone with seed + i."""
        import inspect

        accepted = inspect.signature(scheduler.step).parameters
        kwargs: dict[str, Any] = {}
        if "generator" in accepted:
            kwargs["generator"] = streams.step_generator(scheduler)
        if "eta" in accepted:
            kwargs["eta"] = self.cfg.eta
        return kwargs

    def _predict(self, latent_in, t, cond, weights: list[float], uncond, batch: int, width: int, height: int):
        """One step's guided prediction (`generate.guidance`)."""
        return self.guided.predict(latent_in, t, cond, weights, uncond, batch, width, height)


def _reframe_init(cfg: GenerateConfig, plan: SamplingPlan) -> tuple[Image.Image, bool, bool]:
    """The init image after `resize_mode`, and whether it was reframed / is latent-upscaled.

    Modes 0-2 reframe the image to width x height (the mask follows, and an inpainted picture
    is width x height, as in A1111); plain img2img in mode 0 is stretched where it is encoded.
    With no size given the request works at the init image's own size (`request_size`), and an
    inpainted picture comes back at exactly that size (not rounded to 8); so does one whose size
    is the one the picture itself gives (its recipe regenerated). Mode 3 keeps the
    image at its own size and stretches its latents. "Only masked" inpainting crops its own region, so it
    ignores the mode, as A1111 does.
    """
    only_masked = plan.mask is not None and cfg.inpaint_only_masked
    size_given = (plan.width, plan.height) != size_from_picture(plan.init_image.size)
    if only_masked or (cfg.resize_mode == 0 and (plan.mask is None or not size_given)):
        return plan.init_image, False, False
    if cfg.resize_mode == 3:
        return plan.init_image, False, True
    return resize_image(cfg.resize_mode, plan.init_image, plan.width, plan.height), True, False


def _to_latent_size(latents, plan: SamplingPlan, factor: int):
    """Latent upscale (resize mode 3): stretch latents of another size to the request's."""
    import torch

    size = (plan.height // factor, plan.width // factor)
    if tuple(latents.shape[-2:]) == size:
        return latents
    return torch.nn.functional.interpolate(latents, size=size, mode="bilinear")


def _fill_latent_hole(cfg: GenerateConfig, init_latents, latent_mask, seeds: list[int], model):
    """Masked content 2 (latent noise: the seeds' noise) or 3 (latent nothing: zeros) in the mask."""
    hole = latent_mask.round()
    if cfg.inpainting_fill == 3:
        return init_latents * (1 - hole)
    noise = batch_noise(seeds, None, tuple(init_latents.shape[1:]), NoiseOptions(rng=cfg.rng))
    return init_latents * (1 - hole) + noise.to(model.device, model.dtype) * hole


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
        source, reframed, latent_upscale = _reframe_init(cfg, plan)
        work_size = None if latent_upscale else (width, height)
        mask_full = prepare_mask(plan.mask, plan.init_image.size, cfg.mask_blur) if plan.mask is not None else None
        if mask_full is not None and reframed:
            mask_full = resize_image(cfg.resize_mode, mask_full, width, height)
        if mask_full is not None and cfg.inpaint_only_masked:  # around the blurred mask: its feather fades inside
            crop_box = mask_crop_region(mask_full, cfg.inpaint_padding, width / height)
            if crop_box is None and model.unet.config.in_channels != 9:  # a blank mask: A1111 falls back to
                mask_full = None  # img2img of the whole picture (an inpainting model keeps its empty mask)
        if mask_full is not None:
            region = source.crop(crop_box) if crop_box else source
            mask_region = mask_full.crop(crop_box) if crop_box else mask_full
            init_for_overlay, mask_for_overlay = source, mask_full
            source = region.resize(work_size or region.size, Image.Resampling.LANCZOS)
            mask_img = mask_region.resize(work_size or region.size, Image.Resampling.LANCZOS)
            if cfg.inpainting_fill != 1:  # A1111 fills the pixels for fill, latent noise and nothing
                source = fill_masked(source, mask_img)
        else:
            source = source.resize(work_size or source.size, Image.Resampling.LANCZOS)
            mask_img = None
        pixels = pil_to_tensor(source, model.device, model.dtype)
        init_latents = _to_latent_size(sampler.encode_image(pixels), plan, model.vae_scale_factor)
        init_latents = init_latents.expand(len(seeds), -1, -1, -1)
        if mask_img is not None:
            mask_t = pil_to_tensor(mask_img.convert("RGB"), model.device, model.dtype)[:, :1] * 0.5 + 0.5
            lat_h, lat_w = init_latents.shape[-2:]
            # rounded as A1111's latent mask: a latent is repainted or kept (the blur feathers the pixels)
            latent_mask = torch.nn.functional.interpolate(mask_t, size=(lat_h, lat_w), mode="bilinear").round()
            if cfg.inpainting_fill in (2, 3):
                init_latents = _fill_latent_hole(cfg, init_latents, latent_mask, seeds, model)
            if model.unet.config.in_channels == 9:  # a dedicated inpainting model
                binary = (mask_t > 0.5).to(pixels.dtype)
                masked_latents = _to_latent_size(
                    sampler.encode_image(pixels * (1 - binary)), plan, model.vae_scale_factor
                ).expand(len(seeds), -1, -1, -1)
                # One row per image: _predict repeats the 9-channel input for uncond and each sub-prompt.
                full_mask = torch.cat([latent_mask.round()] * len(seeds))
    strength = cfg.strength if init_latents is not None else None
    sampler.estimate = None
    try:
        latents = sampler.denoise(
            seeds, width, height, cfg.steps, strength, init_latents, latent_mask, masked_latents, full_mask
        )
        if wants_hires(cfg, plan):
            latents = run_hires_pass(sampler, cfg, plan, latents, seeds)
        sampler.raise_if_stopped()  # a cancel during the last step: the images as they are, decoded once
    except (_Cancelled, SkipBatch) as stop:
        if sampler.estimate is None:  # stopped before its first step: nothing to show
            raise
        latents, sampler.stopped = sampler.estimate, stop  # A1111's interrupt/skip: where it got to
    images = tensor_to_pil(sampler.decode(latents))
    if init_for_overlay is not None:
        images = [_paste_back(im, init_for_overlay, mask_for_overlay, crop_box) for im in images]
    return images


def _paste_back(generated: Image.Image, original: Image.Image, mask: Image.Image, crop_box) -> Image.Image:
    """Keep the original pixels outside the (blurred) mask, like A1111's overlay.

    The whole picture's overlay mask is A1111's too: the blurred mask doubled (clipped at white),
    so the generated pixels reach the middle of the blur; "only masked" pastes by the mask itself.
    """
    if crop_box is not None:
        x0, y0, x1, y1 = crop_box
        canvas = original.copy()
        canvas.paste(generated.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS), (x0, y0))
        generated = canvas
    else:
        mask = mask.point(lambda value: min(255, value * 2))
        generated = (
            generated.resize(original.size, Image.Resampling.LANCZOS)
            if generated.size != original.size
            else generated
        )
        original = original if original.size == generated.size else original.resize(generated.size)
    return Image.composite(generated, original, mask.resize(generated.size))


def generate_images(
    model: LoadedModel,
    cfg: GenerateConfig,
    plan: SamplingPlan,
    encoder: PromptEncoder,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    preview: PreviewFn | None = None,
    preview_every: int = 0,
) -> list[GeneratedImage]:
    """Run every batch of a request; LoRAs must already be applied by the caller.

    `should_stop()` is asked before every sampling step and VAE tile: True stops the
    request, raising `SkipBatch` ends the current batch only. As A1111's interrupt and skip, the
    batch that was stopped comes back too, decoded from its latest denoised estimate (a batch
    stopped before its first step does not).

    `preview(image)` is called every `preview_every` steps with the current estimate.
    """
    import torch

    sampler = _Sampler(model, encoder, cfg, plan, progress, should_stop)
    sampler.preview, sampler.preview_every = preview, preview_every
    passes = cfg.steps if plan.init_image is None else img2img_steps(cfg.steps, cfg.strength)[1]
    if wants_hires(cfg, plan):
        passes += img2img_steps(cfg.hires_steps or cfg.steps, cfg.hires_strength, exact=True)[1]
    sampler.total_steps = passes * cfg.count
    results: list[GeneratedImage] = []
    with torch.inference_mode():
        for batch_index in range(cfg.count):
            seeds = plan.seeds[batch_index * cfg.batch_size : (batch_index + 1) * cfg.batch_size]
            sampler.subseeds = plan.subseeds[batch_index * cfg.batch_size :][: cfg.batch_size]
            try:
                images = _run_batch(sampler, cfg, plan, seeds)
            except _Cancelled:
                break
            except SkipBatch:
                continue
            for offset, (image, seed) in enumerate(zip(images, seeds, strict=True)):
                results.append(GeneratedImage(image, seed, batch_index * cfg.batch_size + offset))
            stopped, sampler.stopped = sampler.stopped, None
            if isinstance(stopped, _Cancelled):
                break
    plan.padded_conds = sampler.guided.padded
    plan.padded_conds_v0 = sampler.guided.padded_v0
    plan.old_timelines = sampler.old_timelines_differed
    return results
