"""Exponential moving average of the trained weights (LoRA, trigger vectors or a whole UNet).

An average over the last few hundred steps is smoother than the last step's weights and
usually generalises better on small data sets (OneTrainer and diffusers offer the same).
The average is what gets saved and sampled; the optimizer keeps stepping the live weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["WeightAverage"]


class WeightAverage:
    """fp32 shadow copies of `params`, updated after every optimizer step.

    The decay warms up as in diffusers' `EMAModel`: `min(decay, (1 + n) / (10 + n))` after
    n updates, so the first steps are not dominated by the random initial weights.
    """

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params = params
        self.decay = decay
        self.updates = 0
        self.shadow = [p.detach().float().clone() for p in params]

    def current_decay(self) -> float:
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        decay = self.current_decay()
        self.updates += 1
        for shadow, param in zip(self.shadow, self.params, strict=True):
            shadow.lerp_(param.detach().float(), 1.0 - decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Put the averaged weights into the live parameters for saving or sampling, then restore."""
        saved = [p.detach().to("cpu", copy=True) for p in self.params]  # host copy: no 2nd UNet on the GPU
        with torch.no_grad():
            for param, shadow in zip(self.params, self.shadow, strict=True):
                param.copy_(shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, original in zip(self.params, saved, strict=True):
                    param.copy_(original)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": [s.cpu() for s in self.shadow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        for shadow, saved in zip(self.shadow, state["shadow"], strict=True):
            shadow.copy_(saved)
