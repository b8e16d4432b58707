"""Images drawn with the model being trained: samples, class images and the scoring sheet.

Three places generate during or after training (`samples.*` during the run, `prior.*` class
images before it, `scoring.*` contact-sheet cells after it). Each config section carries the
same sampling settings (steps, CFG scale, sampler, seed); this module turns one section into a
generation request at the training resolution and clip skip, and renders it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.train.config import TrainConfig

__all__ = ["SamplingSection", "sampling_request", "render"]


class SamplingSection(Protocol):
    """A config section with sampling settings (`samples`, `prior`, `scoring`)."""

    steps: int
    cfg_scale: float
    sampler: str
    seed: int


def sampling_request(
    cfg: TrainConfig,
    section: SamplingSection,
    prompt: str,
    negative: str = "",
    seed: int | None = None,
    batch_size: int = 1,
) -> GenerateConfig:
    """A square request at `train.resolution` with the section's steps, CFG, sampler and seed."""
    from lorastudio.generate.config import GenerateConfig

    size = cfg.train.resolution
    return GenerateConfig(
        model=cfg.model,
        prompt=prompt,
        negative_prompt=negative,
        steps=section.steps,
        cfg_scale=section.cfg_scale,
        sampler=section.sampler,
        seed=section.seed if seed is None else seed,
        width=size,
        height=size,
        batch_size=batch_size,
        clip_skip=cfg.clip_skip,
    )


def render(model: Any, request: GenerateConfig, encoder: Any, plan: Any = None) -> list:
    """The request's images (`GeneratedImage` list), drawn without gradients.

    `encoder` is the caller's `PromptEncoder` (with a checkpoint's embeddings when scoring);
    `plan` the request's sampling plan when the caller needs it too (a sample's infotext).
    """
    import torch

    from lorastudio.generate.pipeline import build_plan, generate_images

    if plan is None:
        plan = build_plan(request, model, request.prompt, request.negative_prompt)
    with torch.no_grad():
        return generate_images(model, request, plan, encoder)
