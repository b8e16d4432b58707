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
from pathlib import Path

from lorastudio.errors import LorastudioError
from lorastudio.train.config import TrainConfig

__all__ = ["class_images_folder", "check_class_dir", "existing_class_images", "generate_class_images"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


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
    model,
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
