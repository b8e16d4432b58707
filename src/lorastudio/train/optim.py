"""Optimizer and learning-rate scheduler registries.

A name in the config picks a builder; optional back-ends (bitsandbytes, prodigyopt) are
imported only when chosen and say how to install them when missing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lorastudio.errors import LorastudioError

__all__ = ["OPTIMIZERS", "build_optimizer", "build_lr_scheduler"]


def _adamw(groups, weight_decay: float):
    return torch.optim.AdamW(groups, weight_decay=weight_decay, foreach=False)


def _adamw8bit(groups, weight_decay: float):
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise LorastudioError(
            "train.optimizer=adamw8bit: needs the bitsandbytes package (CUDA); `pip install bitsandbytes` or use adamw."
        ) from None
    return bnb.optim.AdamW8bit(groups, weight_decay=weight_decay)


def _prodigy(groups, weight_decay: float):
    try:
        from prodigyopt import Prodigy
    except ImportError:
        raise LorastudioError(
            "train.optimizer=prodigy: needs the prodigyopt package; `pip install prodigyopt` or use adamw."
        ) from None
    # Prodigy finds the step size itself; learning rates act as multipliers (1.0 is usual).
    return Prodigy(groups, weight_decay=weight_decay, safeguard_warmup=True, use_bias_correction=True)


OPTIMIZERS: dict[str, Callable] = {"adamw": _adamw, "adamw8bit": _adamw8bit, "prodigy": _prodigy}


def build_optimizer(name: str, groups: list[dict], weight_decay: float):
    if name not in OPTIMIZERS:
        raise LorastudioError(f"train.optimizer {name!r}: unknown; choose one of {', '.join(OPTIMIZERS)}.")
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise LorastudioError(
            "nothing to train: method and lora settings select no parameters; check method=."
        )
    return OPTIMIZERS[name](groups, weight_decay)


def build_lr_scheduler(name: str, optimizer, warmup_steps: int, total_steps: int):
    from diffusers.optimization import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
