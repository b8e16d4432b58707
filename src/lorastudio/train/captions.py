"""The caption each training image is trained on at each micro-batch, and the set worth caching.

Caption augmentation (the trigger in front, tag shuffling and dropout, caption dropout) is drawn
from a generator seeded by (seed, micro-batch index), so a resumed run sees the captions an
uninterrupted one does. Without shuffling or tag dropout the captions a run can produce are a
finite set: a frozen text side encodes them once (`train.caches`).
"""

from __future__ import annotations

import random
from typing import Any

from lorastudio.train.config import TrainConfig
from lorastudio.train.data import TrainImage
from lorastudio.train.text import build_caption

__all__ = ["every_caption", "micro_batch_captions"]


def micro_batch_captions(
    cfg: TrainConfig, images: list[TrainImage], embedding: Any, batch: list[tuple[int, bool]], micro_index: int
) -> list[str]:
    """The augmented captions of one micro-batch's images, the trigger embedding's words expanded."""
    rng = random.Random(f"{cfg.seed}:caption:{micro_index}")
    return [_caption_of(cfg, embedding, images[index].caption, rng) for index, _ in batch]


def _caption_of(cfg: TrainConfig, embedding: Any, caption: str, rng: random.Random) -> str:
    text = build_caption(
        caption,
        cfg.trigger,
        cfg.data.caption_prefix_trigger,
        cfg.data.shuffle_tags,
        cfg.data.keep_tokens,
        cfg.data.caption_dropout,
        rng,
        tag_dropout=cfg.data.tag_dropout,
    )
    return embedding.expand(text) if embedding is not None else text


def every_caption(
    cfg: TrainConfig, images: list[TrainImage], class_images: list[TrainImage] | None
) -> list[str] | None:
    """Every caption training can produce, when that set is finite (no tag shuffling)."""
    if cfg.data.shuffle_tags or cfg.data.tag_dropout:
        return None
    rng = random.Random(0)  # unused: no shuffling and no dropout here
    captions = [
        build_caption(img.caption, cfg.trigger, cfg.data.caption_prefix_trigger, False, 0, 0.0, rng)
        for img in images
    ]
    if cfg.data.caption_dropout:
        captions.append("")
    if class_images is not None:
        captions += [img.caption for img in class_images]
    return list(dict.fromkeys(captions))
