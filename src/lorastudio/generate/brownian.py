"""The Brownian-tree noise of the SDE samplers (DPM++ SDE, DPM++ 2M SDE, DPM++ 3M SDE), drawn as A1111 draws it.

A1111 gives each image of a batch a Brownian tree (torchsde) seeded with the image's seed, over the
sampling schedule's sigmas, and has the tree draw its normal numbers from the request's random source
(CPU, GPU or NV: it replaces torchsde's `_randn`). The tree here is the same: seeded with the image
seeds, its numbers from `cfg.rng`'s source (`generate.noise.seed_noise`), kept in float32 on the CPU
so the same seed gives the same increments on any device. Without seeds (diffusers' default) the
tree was seeded from torch's global generator, and a request's pixels depended on what ran before it.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["BrownianNoise", "step_noise_seeds"]

_LOCAL = threading.local()  # the source the tree being built or queried in this thread draws from
_ROUTED_LOCK = threading.Lock()


def step_noise_seeds(generator: Any, batch: int) -> tuple[list[int], str] | None:
    """The image seeds and source of a step's `generator` (a `generate.noise.StepNoise`), or, for torch
    generators (`old_step_noise`), their seeds on the CPU; None when the caller gave nothing usable."""
    import torch

    if hasattr(generator, "seeds") and hasattr(generator, "rng"):
        return list(generator.seeds), generator.rng
    generators = generator if isinstance(generator, list) else [generator]
    if len(generators) == batch and all(isinstance(g, torch.Generator) for g in generators):
        return [g.initial_seed() for g in generators], "CPU"
    return None


class BrownianNoise:
    """`(sigma, sigma_next)` -> the batch's normalised Brownian increments, one tree per image seed."""

    def __init__(self, sample: torch.Tensor, sigmas: torch.Tensor, seeds: list[int], rng: str) -> None:
        import torch
        from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

        _route_tree_draws()
        positive = sigmas[sigmas > 0]
        self.device, self.dtype, self.rng = sample.device, sample.dtype, rng
        shape = (len(seeds), *sample.shape[1:])
        with _drawing_from(rng):
            self.sampler = BrownianTreeNoiseSampler(
                torch.zeros(shape), float(positive.min()), float(sigmas.max()), [int(s) for s in seeds]
            )

    def __call__(self, sigma, sigma_next):
        with _drawing_from(self.rng):
            noise = self.sampler(float(sigma), float(sigma_next))
        return noise.to(device=self.device, dtype=self.dtype)


@contextmanager
def _drawing_from(rng: str):
    previous = getattr(_LOCAL, "rng", None)
    _LOCAL.rng = rng
    try:
        yield
    finally:
        _LOCAL.rng = previous


def _route_tree_draws() -> None:
    """Wrap torchsde's `_randn` once: inside `_drawing_from(rng)` it draws from that source, elsewhere
    (other threads, other code) it is torchsde's own."""
    import torchsde._brownian.brownian_interval as interval

    with _ROUTED_LOCK:
        original = interval._randn
        if getattr(original, "routes_source", False):
            return

        def _randn(size, dtype, device, seed):
            from lorastudio.generate.noise import seed_noise

            rng = getattr(_LOCAL, "rng", None)
            if rng is None:
                return original(size, dtype, device, seed)
            return seed_noise(int(seed), tuple(size), rng).to(device=device, dtype=dtype)

        _randn.routes_source = True  # type: ignore[attr-defined]
        interval._randn = _randn
        # torchsde rounds the tree's ends to its tolerance and warns when a query at the end sigma lies past
        # the rounded value (it clamps it, as under A1111): nothing to act on
        warnings.filterwarnings("ignore", message=r"Should have t[ab][<>]=t[01]", module=r"torchsde\.")
