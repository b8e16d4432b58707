"""Before the first step: every latent and caption embedding the run needs, loaded or encoded
once, and the frozen modules the steps will not call moved out of the GPU's way.

On a GPU run the UNet waits in CPU memory while something is encoded (the caches need no UNet,
and SDXL's VAE at 1024 px beside its UNet is the phase's peak), but only then: when every latent
and caption is on disk already (a resumed run, a second run on the same images) it stays where
it is. The text encoders park once every caption is cached, the VAE once every latent is, both
before the UNet comes back, so the GPU never holds all of them at once (`train.offload`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorastudio.train.config import TrainConfig
from lorastudio.train.data import TrainImage
from lorastudio.train.latents import LatentCache, check_cache_space
from lorastudio.train.offload import ParkedModules, unet_in_cpu_memory
from lorastudio.train.text import CaptionLengths, build_caption, caption_lengths
from lorastudio.train.text_cache import CaptionEncoder, TextEncoderCache, text_cache_key

__all__ = ["cut_captions", "prepare_caches"]


def prepare_caches(
    cfg: TrainConfig,
    model: Any,
    images: list[TrainImage],
    latents: LatentCache,
    caption_encoder: CaptionEncoder,
    captions: list[str] | None,
    text_root: Path,
    accelerator: Any,
    parked: ParkedModules,
    say: Callable[[str], None],
) -> None:
    """Fill the latent cache (unless colour augmentation encodes every step) and, with `captions`
    (every caption the frozen text side will see), the caption cache under `text_root`."""
    cache_latents = not cfg.data.color_aug
    if not cache_latents:
        # As in kohya, colour augmentation and cached latents exclude each other.
        say("latents: data.color_aug is on, so latents are encoded every step (latent cache off)")
    text_disk = None
    if captions is not None:
        key = text_cache_key(model.sha256, model.family.name, cfg.clip_skip, model.dtype, cfg.data.max_token_length)
        text_disk = caption_encoder.disk = TextEncoderCache(text_root, key)
    encodes = (cache_latents and latents.missing(images, cfg.data.flip) > 0) or (
        text_disk is not None and text_disk.missing(captions) > 0
    )
    # Parked before the UNet comes back: the GPU never holds all of them at once.
    with unet_in_cpu_memory(model.unet, model.device, encoding=encodes):
        if cache_latents:
            _fill_latents(cfg, images, latents, accelerator, say)
        if text_disk is not None:
            _fill_captions(caption_encoder, captions, text_disk, accelerator, say)
            chatglm = model.family.text_encoder_kind == "chatglm"
            freed = parked.park(model.text_encoders, back_for_samples=not chatglm)
            if freed:  # every caption is cached: the UNet gets the encoders' GPU memory
                say(f"text: the text encoders ({freed / 2**30:.1f} GiB) wait in CPU memory while the UNet trains")
        if cache_latents:
            freed = parked.park([model.vae])
            if freed:
                say(f"latents: the VAE ({freed / 2**30:.2f} GiB) waits in CPU memory while the UNet trains")


def _fill_latents(
    cfg: TrainConfig, images: list[TrainImage], latents: LatentCache, accelerator: Any, say: Callable[[str], None]
) -> None:
    check_cache_space(latents.folder.parent, images, cfg.data.flip)
    with accelerator.main_process_first():
        encoded = latents.prepare(images, cfg.data.flip)
    say(f"latents: {len(images)} images, {encoded} newly encoded (cache {latents.folder})")


def _fill_captions(
    caption_encoder: CaptionEncoder,
    captions: list[str],
    disk: TextEncoderCache,
    accelerator: Any,
    say: Callable[[str], None],
) -> None:
    with accelerator.main_process_first():
        caption_encoder.fill(captions)
    say(f"text: {len(captions)} captions, {disk.writes} newly encoded (cache {disk.folder})")


def cut_captions(cfg: TrainConfig, model: Any, images: list[TrainImage], embedding: Any = None) -> CaptionLengths | None:
    """The training captions (trigger added, before shuffling and dropout) longer than the text encoder
    reads at `data.max_token_length`: said once per run, so a cut caption is never a silent one."""
    import random

    rng = random.Random(0)  # unused: no shuffling and no dropout here
    captions = [
        build_caption(image.caption, cfg.trigger, cfg.data.caption_prefix_trigger, False, 0, 0.0, rng)
        for image in images
    ]
    if embedding is not None:
        captions = [embedding.expand(caption) for caption in captions]
    return caption_lengths(model, captions, cfg.data.max_token_length)
