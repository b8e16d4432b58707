"""Optimizer and learning-rate scheduler registries.

The optimizers kohya users pick (AdamW, AdamW8bit, Lion, Prodigy, DAdaptation, Adafactor,
CAME) come from one maintained package, `pytorch-optimizer`, plus torch's AdamW and
bitsandbytes' 8-bit AdamW (CUDA only, imported when chosen). `train.optimizer_args` is a
typed mapping checked against the chosen optimizer's own signature, so a typo is one line
naming the argument instead of a keyword silently swallowed by `**kwargs`.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

import torch

from lorastudio.errors import LorastudioError
from lorastudio.train.train_section import ADAPTIVE_OPTIMIZERS, LrSchedulerName, uses_relative_step

__all__ = [
    "OPTIMIZERS",
    "OPTIMIZER_ARG_ALIASES",
    "ADAPTIVE_OPTIMIZERS",
    "LR_SCHEDULERS",
    "build_optimizer",
    "build_lr_scheduler",
    "optimizer_class",
    "uses_relative_step",
]

LR_SCHEDULERS = get_args(LrSchedulerName)


def _torch_adamw():
    return torch.optim.AdamW


def _bnb_adamw8bit():
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise LorastudioError(
            "train.optimizer=adamw8bit: needs the bitsandbytes package and a CUDA GPU;"
            " `pip install bitsandbytes` on a CUDA machine, or use train.optimizer=adamw."
        ) from None
    return bnb.optim.AdamW8bit


def _from_pytorch_optimizer(name: str) -> Callable[[], type]:
    def load():
        import pytorch_optimizer

        return getattr(pytorch_optimizer, name)

    return load


@dataclass(frozen=True)
class OptimizerSpec:
    """Where an optimizer class comes from and the arguments lorastudio passes by default."""

    load: Callable[[], type]
    defaults: dict[str, Any] = field(default_factory=dict)
    needs_cuda: bool = False


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adamw": OptimizerSpec(_torch_adamw, {"foreach": False}),
    "adamw8bit": OptimizerSpec(_bnb_adamw8bit, needs_cuda=True),
    "lion": OptimizerSpec(_from_pytorch_optimizer("Lion")),
    # Prodigy / D-Adaptation: the safeguards kohya's guides recommend for LoRA.
    "prodigy": OptimizerSpec(
        _from_pytorch_optimizer("Prodigy"), {"safeguard_warmup": True, "bias_correction": True}
    ),
    "dadaptation": OptimizerSpec(_from_pytorch_optimizer("DAdaptAdam"), {"weight_decouple": True}),
    "dadapt_adam": OptimizerSpec(_from_pytorch_optimizer("DAdaptAdam"), {"weight_decouple": True}),
    "dadapt_lion": OptimizerSpec(_from_pytorch_optimizer("DAdaptLion")),
    # fp32 first moment (the package's default is bf16) keeps CPU runs bit-reproducible and exact.
    "adafactor": OptimizerSpec(_from_pytorch_optimizer("AdaFactor"), {"momentum_dtype": torch.float32}),
    "came": OptimizerSpec(_from_pytorch_optimizer("CAME")),
}


def optimizer_class(name: str) -> type:
    if name not in OPTIMIZERS:
        raise LorastudioError(f"train.optimizer {name!r}: unknown; choose one of {', '.join(OPTIMIZERS)}.")
    return OPTIMIZERS[name].load()


def _accepted_arguments(cls: type) -> dict[str, inspect.Parameter]:
    """Named keyword arguments of the optimizer's constructor (`**kwargs` accepts nothing)."""
    params = inspect.signature(cls).parameters
    return {
        name: p
        for name, p in params.items()
        if name not in ("self", "params", "lr")
        and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }


# Arguments as prodigyopt / dadaptation (kohya's optimizer_args) spell them -> pytorch-optimizer's names.
OPTIMIZER_ARG_ALIASES = {"decouple": "weight_decouple", "use_bias_correction": "bias_correction"}
# bitsandbytes' AdamW8bit arguments: a config is checked on machines without the package (it needs CUDA).
ADAMW8BIT_ARGS = (
    "betas", "eps", "weight_decay", "amsgrad", "optim_bits", "min_8bit_size", "percentile_clipping",
    "block_wise", "is_paged",
)  # fmt: skip


def _accepted_by(name: str, cls: type | None) -> tuple[str, set[str]]:
    """(class name, argument names) of an optimizer; AdamW8bit's from its known list without bitsandbytes."""
    if cls is None and name == "adamw8bit":
        try:
            cls = optimizer_class(name)
        except LorastudioError:
            return "AdamW8bit", set(ADAMW8BIT_ARGS)
    cls = cls or optimizer_class(name)
    return cls.__name__, set(_accepted_arguments(cls))


def check_optimizer_args(name: str, args: Mapping[str, Any], cls: type | None = None) -> dict[str, Any]:
    """`train.optimizer_args` checked against the optimizer's signature; lists become tuples."""
    class_name, accepted = _accepted_by(name, cls)
    checked: dict[str, Any] = {}
    for key, value in args.items():
        if key == "lr":
            raise LorastudioError(
                "train.optimizer_args.lr: set the learning rate with train.learning_rate instead."
            )
        renamed = OPTIMIZER_ARG_ALIASES.get(key)
        if key not in accepted and renamed in accepted:
            raise LorastudioError(
                f"train.optimizer_args.{key}: pytorch-optimizer's {class_name} calls it {renamed};"
                f" use train.optimizer_args.{renamed}={json.dumps(value)}."
            )
        if key not in accepted:
            raise LorastudioError(
                f"train.optimizer_args.{key}: not an argument of {name} ({class_name});"
                f" valid: {', '.join(sorted(accepted))}."
            )
        checked[key] = tuple(value) if isinstance(value, list) else value
    return checked


def build_optimizer(
    name: str, groups: list[dict], weight_decay: float, args: Mapping[str, Any] | None = None
) -> torch.optim.Optimizer:
    """The optimizer for `groups`: lorastudio's defaults < train.weight_decay < train.optimizer_args."""
    spec = OPTIMIZERS.get(name)
    if spec is None:
        raise LorastudioError(f"train.optimizer {name!r}: unknown; choose one of {', '.join(OPTIMIZERS)}.")
    if spec.needs_cuda and not torch.cuda.is_available():
        raise LorastudioError(
            f"train.optimizer={name}: needs a CUDA GPU (bitsandbytes); use train.optimizer=adamw on the CPU."
        )
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise LorastudioError(
            "nothing to train: method and lora settings select no parameters; check method=."
        )
    cls = spec.load()
    defaults = {**spec.defaults, **_device_defaults(name, groups)}
    kwargs = {**defaults, "weight_decay": weight_decay, **check_optimizer_args(name, args or {}, cls)}
    return cls(groups, **kwargs)


def _device_defaults(name: str, groups: list[dict]) -> dict[str, Any]:
    """On a GPU torch's AdamW runs as one fused kernel per step instead of several per parameter.

    The CPU keeps the plain loop: its results are the reference the CPU tests reproduce bit for bit.
    """
    first = next(iter(groups[0]["params"]))
    if name == "adamw" and first.device.type == "cuda":
        return {"foreach": None, "fused": True}
    return {}


class AdafactorSchedule(torch.optim.lr_scheduler.LambdaLR):
    """kohya's `adafactor` scheduler: the optimizer picks the step size; this only reports it.

    With `relative_step` Adafactor ignores the group learning rate and uses
    min(1e-2, 1/sqrt(step)) (times the weights' RMS when `scale_parameter`); the
    multiplier here stays 1.0 and `get_last_lr` returns that relative step size for the log.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        super().__init__(optimizer, lambda _step: 1.0)

    def get_last_lr(self) -> list[float]:
        out = []
        for group in self.optimizer.param_groups:
            step = max(int(group.get("step", 0)), 1)
            warmup = group.get("warmup_init", False)
            out.append(min(1e-6 * step if warmup else 1e-2, 1.0 / math.sqrt(step)))
        return out


def build_lr_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    num_cycles: int = 1,
    power: float = 1.0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """diffusers' schedulers (`num_cycles` for cosine_with_restarts, `power` for polynomial) + `adafactor`."""
    if name == "adafactor":
        if not isinstance(optimizer, _adafactor_type()):
            raise LorastudioError(
                "train.lr_scheduler=adafactor: only for train.optimizer=adafactor (relative step); choose another scheduler."
            )
        return AdafactorSchedule(optimizer)
    if name not in LR_SCHEDULERS:
        raise LorastudioError(f"train.lr_scheduler {name!r}: unknown; choose one of {', '.join(LR_SCHEDULERS)}.")
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=warmup_steps,
        num_training_steps=total_steps,
        num_cycles=num_cycles,
        power=power,
    )


def _adafactor_type() -> type:
    return OPTIMIZERS["adafactor"].load()
