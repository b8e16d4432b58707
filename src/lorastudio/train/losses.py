"""The training objective: denoising MSE on one micro-batch, with min-SNR weights and SDXL time ids.

Every random draw (noise, timesteps, colour jitter) comes from a generator seeded by the
micro-batch, so a resumed run computes the same losses as an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from lorastudio.train.async_steps import to_device
from lorastudio.train.data import TrainImage, color_jitter
from lorastudio.train.latents import LatentCache, encode_image
from lorastudio.train.noise import training_noise

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, SchedulerMixin

    from lorastudio.train.config import TrainConfig

__all__ = ["DenoisingLoss", "time_ids", "snr_weights", "color_augmented_latents"]

Batch = list[tuple[int, bool]]  # (image index, flipped) per sample


def time_ids(images: list[TrainImage], batch: Batch, device: torch.device) -> torch.Tensor:
    """SDXL's micro-conditioning per sample: original size, crop corner, target (bucket) size."""
    rows = []
    for index, _ in batch:
        img = images[index]
        (w, h), (top, left), (bw, bh) = img.size, img.crop, img.bucket
        rows.append([h, w, top, left, bh, bw])
    return to_device(torch.tensor(rows, dtype=torch.float32), device)


def snr_weights(
    noise_scheduler: SchedulerMixin, timesteps: torch.Tensor, gamma: float, prediction_type: str
) -> torch.Tensor:
    """min-SNR-gamma (Hang et al. 2023): cap the weight of easy, low-noise timesteps."""
    alphas = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    capped = torch.clamp(snr, max=gamma)
    return capped / (snr + 1) if prediction_type == "v_prediction" else capped / snr


def color_augmented_latents(
    vae: AutoencoderKL, images: list[TrainImage], batch: Batch, seed: int
) -> torch.Tensor:
    """`data.color_aug`: every exposure gets its own colour jitter, so its latent is encoded now."""
    from lorastudio.data.images import open_image

    rng = random.Random(f"{seed}:color")
    latents = []
    for index, flipped in batch:
        image = images[index]
        jittered = color_jitter(open_image(image.path), rng)
        latents.append(encode_image(vae, jittered, image.bucket, flipped))
    return torch.stack(latents)


@dataclass
class DenoisingLoss:
    """The loss of one batch: noise the latents, predict with the UNet, compare with the target.

    `encode` turns captions into (embeddings, pooled); `autocast` is accelerate's context.
    """

    cfg: TrainConfig
    model: Any
    noise_scheduler: Any
    unet_dtype: torch.dtype
    encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor | None]]
    autocast: Callable[[], Any]

    @property
    def prediction_type(self) -> str:
        return self.noise_scheduler.config.prediction_type

    def __call__(
        self,
        images: list[TrainImage],
        cache: LatentCache,
        batch: Batch,
        captions: list[str],
        seed: int,
        color_aug: bool = False,
    ) -> torch.Tensor:
        cfg, model = self.cfg, self.model
        device = model.device
        if color_aug:
            latents = color_augmented_latents(model.vae, images, batch, seed).to(device)
        else:
            latents = to_device(torch.stack([cache.get(i, flipped) for i, flipped in batch]), device)
        generator = torch.Generator(device=device).manual_seed(seed)
        noise = training_noise(
            latents.shape,
            generator,
            device,
            offset=cfg.train.noise_offset,
            multires_iterations=cfg.train.multires_noise_iterations,
            multires_discount=cfg.train.multires_noise_discount,
        )
        num_timesteps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, num_timesteps, (latents.shape[0],), generator=generator, device=device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        embeds, pooled = self.encode(captions)
        dtype = self.unet_dtype
        added = None
        if model.family.uses_pooled_text:
            added = {"text_embeds": pooled.to(dtype), "time_ids": time_ids(images, batch, device).to(dtype)}
        with self.autocast():
            prediction = model.unet(
                noisy.to(dtype),
                timesteps,
                encoder_hidden_states=embeds.to(dtype),
                added_cond_kwargs=added,
                return_dict=False,
            )[0]
        if self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if cfg.train.min_snr_gamma:
            per_sample = per_sample * snr_weights(
                self.noise_scheduler, timesteps, cfg.train.min_snr_gamma, self.prediction_type
            )
        return per_sample.mean()
