"""The scorer plug-in point: what a scorer is, what it may read, and the registry.

A scorer is one column of a run's score table (`scores.json`). `train/scoring.py` runs them
and registers the built-in ones; `train/tag_scoring.py` adds `tag_agreement`. A new scorer
(face-ID similarity, an aesthetic model...) is a `Scorer` passed to `register_scorer` from
a module that `scoring` imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.train.runs import Checkpoint, StudioFolders

if TYPE_CHECKING:
    from lorastudio.train.config import TrainConfig

__all__ = ["Checkpoint", "ScoringContext", "Scorer", "SCORERS", "register_scorer"]


@dataclass
class ScoringContext:
    """What every scorer may use: the run, its config, the loaded model and generations."""

    ws: StudioFolders
    run_dir: Path
    cfg: TrainConfig
    model: Any
    prompts: list[str]
    held_out: list[Any]  # TrainImage list used for the validation loss
    held_out_note: str
    latents: Any  # LatentCache holding the held-out latents
    generated: dict[int, list[Path]] = field(default_factory=dict)  # step -> one image per prompt


@dataclass
class Scorer:
    """One column of the score table.

    `unavailable(ctx)` returns why it cannot run here (missing weights), or None.
    `score(ctx, checkpoint, lora)` runs with the checkpoint's LoRA already applied.
    """

    name: str
    higher_is_better: bool
    score: Callable[[ScoringContext, Checkpoint, Any], float]
    unavailable: Callable[[ScoringContext], str | None] = lambda ctx: None
    description: str = ""


SCORERS: dict[str, Scorer] = {}


def register_scorer(scorer: Scorer) -> Scorer:
    """Add a scorer (e.g. a WD14 tagger or face-ID similarity) under its name."""
    SCORERS[scorer.name] = scorer
    return scorer
