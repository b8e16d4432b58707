"""What a run will do, checked before any model loads: images, buckets, the step budget.

`prepare_plan` raises every cheap error (no data set, a typo in the optimizer args, a missing
class folder) before the trainer spends minutes loading a model. Scoring opens held-out images
through it too, so a plan means the same thing everywhere.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

from lorastudio.errors import LorastudioError
from lorastudio.train.config import TrainConfig, budget_steps
from lorastudio.train.data import BatchSchedule, BucketOptions, TrainImage, scan_images

__all__ = ["TrainPlan", "check_trigger_in_captions", "resolve_dataset_path", "prepare_plan", "ends_epoch", "warmup_note"]


@dataclass
class TrainPlan:
    """What was checked before any model is loaded: images, buckets and the step budget."""

    images: list[TrainImage]
    steps: int
    explanation: str
    dataset_root: Path
    num_samples: int
    notes: list[str] = dataclasses.field(default_factory=list)  # the data set's caption choices, said at start
    config_notes: list[str] = dataclasses.field(default_factory=list)  # settings that defeat themselves, said too


# Schedulers that ramp up over train.lr_warmup_steps (constant and adafactor ignore a warm-up).
_WARMING_SCHEDULERS = ("constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


def warmup_note(cfg: TrainConfig, steps: int) -> str | None:
    """A warm-up as long as the run (a preset's 50 steps in a 20-step run) never reaches the learning rate."""
    warmup = cfg.train.warmup_steps(steps)
    if cfg.train.lr_scheduler not in _WARMING_SCHEDULERS or warmup < steps:
        return None
    return (
        f"train.lr_warmup_steps={warmup} is not shorter than the run's {steps} steps: the learning rate never"
        f" reaches train.learning_rate; lower it (e.g. train.lr_warmup_steps={steps // 10}) or set"
        " train.lr_warmup_ratio=0.1"
    )


def resolve_dataset_path(data_dir: str, datasets_folder: Path) -> Path:
    if not data_dir:
        raise LorastudioError("data.dir: not set; pass data.dir=<data set name or folder>.")
    named = datasets_folder / data_dir
    if "/" not in data_dir and named.is_dir():
        return named
    return Path(data_dir).expanduser()


def check_trigger_in_captions(cfg: TrainConfig, captions: list[str]) -> None:
    """An embedding learns only from captions that hold its trigger: with none, a run trains nothing."""
    from lorastudio.train.text import build_caption, mentions_trigger

    if not cfg.trains_embedding:
        return
    rng = random.Random(0)  # unused: no shuffling and no dropout here
    built = (build_caption(c, cfg.trigger, cfg.data.caption_prefix_trigger, False, 0, 0.0, rng) for c in captions)
    if not any(mentions_trigger(caption, cfg.trigger) for caption in built):
        raise LorastudioError(
            f"no caption contains the trigger {cfg.trigger!r}; set data.caption_prefix_trigger=true"
            " or add it to the captions."
        )


def prepare_plan(
    cfg: TrainConfig, datasets_folder: Path, num_processes: int = 1, held_out: bool = False
) -> TrainPlan:
    """Open the data set and check sizes and budget: every cheap error before heavy work.

    `held_out`: scoring's validation images, which need not hold the trigger.
    """
    from lorastudio.data.dataset import Dataset

    if not cfg.model:
        raise LorastudioError(
            "model: not set; pass model=<library name, path, or tiny-sd15 / tiny-sd2 / tiny-sdxl>."
        )
    path = resolve_dataset_path(cfg.data.dir, datasets_folder)
    dataset = Dataset.open(
        path,
        default_caption=cfg.data.default_caption,
        fallback_caption=cfg.trigger,
        caption_extension=cfg.data.caption_extension,
    )
    if len(dataset) == 0:
        raise LorastudioError(f"{path}: the data set is empty; add images first.")
    items = dataset.items()
    if cfg.data.repeats is not None:  # kohya subsets' num_repeats: one count for the whole data.dir
        items = [dataclasses.replace(item, repeats=cfg.data.repeats) for item in items]
    if not held_out:
        check_trigger_in_captions(cfg, [item.caption for item in items])
    images = scan_images(
        items, cfg.train.resolution, cfg.data.max_upscale, options=BucketOptions.from_config(cfg.data)
    )
    from lorastudio.train.optim import check_optimizer_args

    check_optimizer_args(cfg.train.optimizer, cfg.train.optimizer_args)  # a typo fails before the model loads
    if cfg.uses_prior:
        from lorastudio.train.prior import check_class_dir

        check_class_dir(cfg, datasets_folder)
    num_samples = sum(img.repeats for img in images)
    batches = BatchSchedule(images, cfg.train.batch_size, cfg.seed, flip=False).batches_per_epoch
    steps, why = budget_steps(cfg, len(images), num_samples, num_processes, batches_per_epoch=batches)
    config_notes = [note for note in (warmup_note(cfg, steps),) if note]
    return TrainPlan(images, steps, why, dataset.root, num_samples, dataset.notes, config_notes)


def ends_epoch(step: int, batches_per_step: int, batches_per_epoch: int, every: int = 1) -> bool:
    """Whether optimizer step `step` (1-based) completes an epoch whose number is a multiple of `every`.

    Batches run on across epochs, so an epoch may end inside a step: that step ends it.
    """

    def epochs_done(n: int) -> int:
        return n * batches_per_step // batches_per_epoch

    return epochs_done(step) // every > epochs_done(step - 1) // every

