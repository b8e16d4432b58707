"""The infotext's noise keys beyond the seeds: `RNG` (the source), `ENSD` and lorastudio's `Old step noise`.

lorastudio images made before they wrote `RNG` drew every noise on the CPU and their per-step noise from a
CPU generator seeded with seed + 1; such an image (no `RNG`, `Version: lorastudio …`) reads back with
`rng` CPU and `old_step_noise` on, so it comes back the same. The rule is in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import Any

from lorastudio.generate.samplers import draws_step_noise

__all__ = ["made_before_rng", "noise_source", "read_old_step_noise", "step_noise_drawn"]


def made_before_rng(params: dict[str, Any]) -> bool:
    """A lorastudio image from before images wrote `RNG`."""
    ours = str(params.get("Version", "") or "").startswith("lorastudio")
    return ours and not str(params.get("RNG", "") or "").strip()


def noise_source(params: dict[str, Any]) -> str:
    """The random number source an image's noise came from (`GenerateConfig.rng`): its `RNG` key as
    written; without one, A1111's default GPU, or CPU for lorastudio's images, which drew every noise
    on the CPU before they wrote the key."""
    written = str(params.get("RNG", "") or "").strip()
    if written:
        return written.upper()
    return "CPU" if made_before_rng(params) else "GPU"


def read_old_step_noise(params: dict[str, Any]) -> dict[str, Any]:
    """`old_step_noise` for an image that says `Old step noise: True` or was made before `RNG` was written."""
    written = str(params.get("Old step noise", "") or "").strip().lower() in ("true", "1", "yes")
    return {"old_step_noise": True} if written or made_before_rng(params) else {}


def step_noise_drawn(cfg: Any) -> bool:
    """Whether a request's samplers drew per-step noise from the images' streams (where `ensd` and
    `old_step_noise` act, so where the infotext names them): its sampler, or its hires pass's own."""
    hires = cfg.hires_on and draws_step_noise(cfg.hires_sampler or "", cfg.eta)
    return draws_step_noise(cfg.sampler, cfg.eta) or hires
