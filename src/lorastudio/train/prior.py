"""Class images for prior preservation (DreamBooth, Ruiz et al. 2022).

Training on 5-30 pictures of one dog teaches the model that every dog is that dog. A
second loss on images of the *class* ("a photo of a dog"), made by the base model itself
before training, keeps the class as it was. lorastudio generates the missing class images
with its own sampler and keeps them in the workspace, so later runs with the same base
model, prompt and resolution reuse them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError
from lorastudio.train.config import TrainConfig

if TYPE_CHECKING:
    from lorastudio.models.loading import LoadedModel
    from lorastudio.train.data import BatchSchedule, TrainImage
    from lorastudio.train.latents import LatentCache

__all__ = [
    "PriorSet",
    "prepare_prior",
    "class_images_folder",
    "check_class_dir",
    "existing_class_images",
    "generate_class_images",
]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass
class PriorSet:
    """Class images of a DreamBooth run with their latents and own batch order."""

    images: list[TrainImage]
    latents: LatentCache
    schedule: BatchSchedule


def prepare_prior(
    cfg: TrainConfig,
    model: LoadedModel,
    datasets_folder: Path,
    cache_root: Path,
    vae_digest: str,
    accelerator: Any,
    say: Callable[[str], None],
    emit: Callable[[dict], None],
    show_progress: bool = True,
) -> PriorSet:
    """Generate missing class images with the base model, then cache their latents.

    Runs before the trainables exist: class images come from the untouched base model. Only
    the main process generates; the others wait and then read the same folder.
    """
    from lorastudio.data.dataset import Dataset
    from lorastudio.train.data import BatchSchedule, BucketOptions, scan_images
    from lorastudio.train.latents import LatentCache, check_cache_space
    from lorastudio.train.offload import unet_in_cpu_memory

    folder = class_images_folder(cfg, datasets_folder, model.sha256)
    if not cfg.prior.class_dir:  # lorastudio's own folder: fill it up
        with accelerator.main_process_first():
            if accelerator.is_main_process:
                _fill_class_folder(cfg, model, folder, say, emit, show_progress)
    dataset = Dataset.open(folder, default_caption=cfg.prior.class_prompt)
    items = dataset.items()[: cfg.prior.num_images]
    if not items:
        raise LorastudioError(f"prior.class_dir {folder}: holds no images; add class images or remove the setting.")
    if len(items) < cfg.prior.num_images:
        say(f"prior: {folder} holds {len(items)} class images (prior.num_images={cfg.prior.num_images})")
    try:
        images = scan_images(
            items, cfg.train.resolution, cfg.data.max_upscale, options=BucketOptions.from_config(cfg.data)
        )
    except LorastudioError as exc:
        raise LorastudioError.wrap(f"class images in {folder}: {exc}", exc) from None
    check_cache_space(cache_root, images, False)
    latents = LatentCache(cache_root, model.vae, vae_digest)
    # As for the run's own images (`train.caches`): the UNet waits in CPU memory while the VAE encodes.
    encodes = latents.missing(images, flip=False) > 0
    with unet_in_cpu_memory(model.unet, model.device, encoding=encodes):
        with accelerator.main_process_first():
            latents.prepare(images, flip=False)
    schedule = BatchSchedule(images, cfg.train.batch_size, cfg.seed + 1, flip=False)
    say(f"prior: {len(images)} class images, loss weight {cfg.prior.loss_weight:g}")
    return PriorSet(images, latents, schedule)


def _fill_class_folder(
    cfg: TrainConfig,
    model,
    folder: Path,
    say: Callable[[str], None],
    emit: Callable[[dict], None],
    show_progress: bool,
) -> None:
    """Generate the class images `folder` lacks, with a progress bar and `class_images` events."""
    from tqdm.auto import tqdm

    missing = max(cfg.prior.num_images - len(existing_class_images(folder)), 0)
    if not missing:
        return
    bar = tqdm(total=missing, desc="class images", unit="img", disable=not show_progress)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)
        emit({"event": "class_images", "done": done, "total": total})

    vae_dtype = model.vae.dtype
    try:
        made = generate_class_images(cfg, model, folder, progress)
    finally:
        bar.close()
        # The fp16 NaN fallback may have moved the VAE to fp32; latents use the load precision.
        model.vae.to(vae_dtype)
    say(f"prior: generated {made} class images for {cfg.prior.class_prompt!r} in {folder}")


def class_images_folder(cfg: TrainConfig, datasets_folder: Path, model_sha256: str) -> Path:
    """`prior.class_dir`, else lorastudio's own `datasets/class-<prompt>-<settings>-<model>-<res>`.

    A bare `class_dir` name is always a data set in `datasets/` (never a path relative to
    wherever the process runs); a path needs a slash, e.g. `./dogs`.
    """
    if cfg.prior.class_dir:
        if "/" not in cfg.prior.class_dir and "\\" not in cfg.prior.class_dir:
            return datasets_folder / cfg.prior.class_dir
        return Path(cfg.prior.class_dir).expanduser()
    prior = cfg.prior
    slug = re.sub(r"[^\w]+", "_", prior.class_prompt.lower()).strip("_")[:40] or "class"
    # Every setting that changes the images is in the name: other settings, other images.
    recipe = (
        "|".join(
            str(v)
            for v in (prior.class_prompt, prior.negative_prompt, prior.steps, prior.cfg_scale, prior.sampler)
        )
        + f"|{prior.seed}|{cfg.clip_skip}"
    )
    recipe_hash = hashlib.sha256(recipe.encode()).hexdigest()[:6]
    return datasets_folder / f"class-{slug}-{recipe_hash}-{model_sha256[:8]}-{cfg.train.resolution}"


def check_class_dir(cfg: TrainConfig, datasets_folder: Path) -> None:
    """A user's `prior.class_dir` must exist: lorastudio only fills folders it owns."""
    if not cfg.prior.class_dir:
        return
    folder = class_images_folder(cfg, datasets_folder, "")
    if not folder.is_dir():
        raise LorastudioError(
            f"prior.class_dir {cfg.prior.class_dir!r}: no such data set or folder ({folder}); add class"
            " images there, or remove prior.class_dir to let lorastudio generate them."
        )


def existing_class_images(folder: Path) -> list[Path]:
    """Images lorastudio generated into one of its own class folders."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())


def generate_class_images(
    cfg: TrainConfig,
    model: LoadedModel,
    folder: Path,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Fill `folder` up to `prior.num_images` class images; returns how many were made now.

    Each image gets a `.txt` caption with the class prompt. File names carry the seed, so
    an interrupted fill continues with the next seed instead of repeating images.
    """
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.train.sampling import render, sampling_request

    prior = cfg.prior
    have = existing_class_images(folder)
    missing = prior.num_images - len(have)
    if missing <= 0:
        return 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LorastudioError(
            f"prior.class_dir {folder}: cannot be created ({exc}); set another folder."
        ) from None
    encoder = PromptEncoder(model, cfg.clip_skip)
    next_seed = prior.seed + _highest_seed(have) + 1 if have else prior.seed
    made = 0
    while made < missing:
        count = min(4, missing - made)
        request = sampling_request(
            cfg, prior, prior.class_prompt, prior.negative_prompt, seed=next_seed, batch_size=count
        )
        images = render(model, request, encoder)
        for offset, generated in enumerate(images):
            stem = f"class-{next_seed + offset - prior.seed:05d}"
            generated.image.save(folder / f"{stem}.png")
            (folder / f"{stem}.txt").write_text(prior.class_prompt, encoding="utf-8")
        made += count
        next_seed += count
        if progress is not None:
            progress(made, missing)
    return made


def _highest_seed(paths: list[Path]) -> int:
    """The largest seed offset among `class-NNNNN.png` files (others count as offset 0)."""
    offsets = [int(p.stem.split("-")[1]) for p in paths if re.fullmatch(r"class-\d+", p.stem)]
    return max(offsets, default=len(paths) - 1)
