"""The writers `A1111_FIELDS`' rows are built from: a request and what sampling found -> infotext.

`InfotextFacts` is what an image's infotext states beyond its request (the resolved seed and size,
model and VAE names and hashes, what prompt padding did, the hires pass's sampler as sampled).
A writer answers its key's value, or None where A1111 leaves the key out (a default, a setting the
image never used), so a written image reads back as it was made. Most writers are one expression
in their row of the table (`generate.a1111_fields`); here are the longer ones and those rows share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

__all__ = [
    "InfotextFacts",
    "hires_resized",
    "only_masked",
    "write_denoising",
    "write_extra_noise",
    "write_hashes",
    "write_hires_prompt",
    "write_hires_sampler",
    "write_hires_schedule",
    "write_masked_content",
    "write_noise_multiplier",
    "write_version",
]


@dataclass(frozen=True)
class InfotextFacts:
    """What an image's infotext states beyond the request: resolved seed, size, model, hashes."""

    sampler: str
    schedule: str
    width: int
    height: int
    seed: int
    subseed: int | None = None
    model_hash: str | None = None
    model_name: str | None = None
    vae_hash: str | None = None
    vae_name: str | None = None
    lora_hashes: list[tuple[str, str]] = dc_field(default_factory=list)
    ti_hashes: list[tuple[str, str]] = dc_field(default_factory=list)
    padded_conds: bool = False  # `pad_conds` padded a prompt and its negative to one length
    padded_conds_v0: bool = False  # `pad_conds_v0` cut or extended the negative prompt to the prompt's length
    old_timelines: bool = False  # `old_prompt_editing` gave a prompt another schedule than 1.6+ would
    hires_sampler: str = ""  # the hires pass's sampler and schedule type as sampled ("": no hires pass)
    hires_schedule: str = ""

    @classmethod
    def of_image(cls, plan: Any, model: Any, seed: int, **resolved: Any) -> InfotextFacts:
        """What a sampling plan and its loaded model state about one image; `resolved` adds the rest
        (subseed, LoRA and embedding hashes) or names the checkpoint otherwise (a training sample's)."""
        facts: dict[str, Any] = {
            "sampler": plan.sampler.sampler,
            "schedule": plan.sampler.schedule,
            "width": plan.width,
            "height": plan.height,
            "seed": seed,
            "model_hash": model.short_hash,
            "model_name": model.name,
            "vae_hash": model.vae_sha256[:10] if model.vae_sha256 else None,
            "vae_name": model.vae_name,
            "padded_conds": plan.padded_conds,
            "padded_conds_v0": plan.padded_conds_v0,
            "old_timelines": plan.old_timelines,
            "hires_sampler": plan.hires_sampler.sampler if plan.hires_sampler else "",
            "hires_schedule": plan.hires_sampler.schedule if plan.hires_sampler else "",
        }
        return cls(**{**facts, **resolved})


def hires_resized(cfg: Any) -> bool:
    return bool(cfg.hires_resize_x or cfg.hires_resize_y)


def write_denoising(cfg: Any, facts: InfotextFacts) -> Any:
    if cfg.init_image:
        return cfg.strength
    return cfg.hires_strength if cfg.hires_on else None


def write_masked_content(cfg: Any, facts: InfotextFacts) -> Any:
    from lorastudio.generate.images import INPAINTING_FILLS

    # A1111 leaves out the default, "original"
    return INPAINTING_FILLS[cfg.inpainting_fill] if cfg.mask and cfg.inpainting_fill != 1 else None


def only_masked(cfg: Any) -> bool:
    return bool(cfg.mask and cfg.inpaint_only_masked)


def write_hashes(pairs: list[tuple[str, str]]) -> str | None:
    return ", ".join(f"{n}: {h}" for n, h in pairs) if pairs else None


def write_hires_sampler(cfg: Any, facts: InfotextFacts) -> str | None:
    """A1111 writes the hires sampler only where it differs from the first pass's."""
    return facts.hires_sampler if cfg.hires_on and facts.hires_sampler not in ("", facts.sampler) else None


def write_hires_schedule(cfg: Any, facts: InfotextFacts) -> str | None:
    """The hires schedule type where it differs from the first pass's (A1111 leaves out an "Automatic" there,
    which its paste reads back as the first pass's; written here, so the image comes back the same)."""
    return facts.hires_schedule if cfg.hires_on and facts.hires_schedule not in ("", facts.schedule) else None


def write_hires_prompt(field: str, first: str) -> Callable[[Any, InfotextFacts], Any]:
    """A1111 writes a hires prompt only where it is not the prompt itself."""

    def write(cfg: Any, facts: InfotextFacts) -> str | None:
        text = getattr(cfg, field)
        return text if cfg.hires_on and text and text != getattr(cfg, first) else None

    return write


def write_noise_multiplier(cfg: Any, facts: InfotextFacts) -> float | None:
    return cfg.initial_noise_multiplier if cfg.init_image and cfg.initial_noise_multiplier != 1.0 else None


def write_extra_noise(cfg: Any, facts: InfotextFacts) -> float | None:
    return cfg.extra_noise if cfg.extra_noise > 0 and (cfg.init_image or cfg.hires_on) else None


def write_version(cfg: Any, facts: InfotextFacts) -> str:
    from lorastudio import __version__

    return f"lorastudio {__version__}"
