"""What a request samples, decided once before the loop: size, seeds, the samplers and prompts of
each pass, and the request's pictures (`SamplingPlan`, `build_plan`).

The hires pass has its own sampler, schedule type and prompts where the request gives them
(A1111's "Hires sampler", "Hires schedule type", "Hires prompt"), else the first pass's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig, request_size
from lorastudio.generate.images import binary_mask
from lorastudio.generate.samplers import SamplerChoice, parse_sampler

if TYPE_CHECKING:
    from lorastudio.models.loading import LoadedModel

__all__ = ["SamplingPlan", "build_plan", "hires_sampler_choice", "open_request_images", "resolve_seed"]


@dataclass
class SamplingPlan:
    """Everything the loop needs that is derived from the request, decided once."""

    width: int
    height: int
    seeds: list[int]
    sampler: SamplerChoice
    prompt: str  # without <lora:...> tags
    negative: str
    init_image: Image.Image | None = None
    mask: Image.Image | None = None
    extra: dict = field(default_factory=dict)
    subseeds: list[int] = field(default_factory=list)  # variation seeds, one per image (A1111)
    hires_upscaler: Any = None  # the model upscaler a hires fix names, loaded by the service
    hires_sampler: SamplerChoice | None = None  # the hires pass's sampler and schedule (None: the first's)
    hires_prompt: str | None = None  # the hires pass's prompts, without <lora:...> tags (None: the first's)
    hires_negative: str | None = None
    padded_conds: bool = False  # set by the loop when `pad_conds` padded a prompt (infotext "Pad conds")
    padded_conds_v0: bool = False  # the same for `pad_conds_v0` ("Pad conds v0")
    old_timelines: bool = False  # `old_prompt_editing` changed a schedule ("Old prompt editing timelines")

    def pass_sampler(self, hires: bool) -> SamplerChoice:
        """The sampler and schedule type one pass samples with."""
        return self.hires_sampler if hires and self.hires_sampler is not None else self.sampler

    def pass_prompts(self, hires: bool) -> tuple[str, str]:
        """(prompt, negative prompt) one pass is conditioned on."""
        if not hires:
            return self.prompt, self.negative
        return (
            self.prompt if self.hires_prompt is None else self.hires_prompt,
            self.negative if self.hires_negative is None else self.hires_negative,
        )


def resolve_seed(seed: int) -> int:
    """-1 means random, like A1111; the chosen seed is recorded so the image can be reproduced."""
    return random.randrange(0, 2**32 - 1) if seed == -1 else seed


def hires_sampler_choice(cfg: GenerateConfig, first: SamplerChoice) -> SamplerChoice:
    """The hires pass's sampler and schedule type, as A1111 1.10 picks them: the hires sampler (else
    the first pass's) with the hires schedule type (else the first pass's; a suffix such as
    `DPM++ 2M Karras` wins). An inherited schedule the hires sampler cannot take (Karras for DDIM)
    becomes the sampler's own; one the request names is refused."""
    if not cfg.hires_sampler and not cfg.hires_schedule:
        return first
    name = cfg.hires_sampler or first.sampler
    if cfg.hires_schedule:
        return _hires_parsed(name, cfg.hires_schedule)
    try:
        return parse_sampler(name, first.schedule)
    except LorastudioError:
        return _hires_parsed(name, None)


def _hires_parsed(name: str, schedule: str | None) -> SamplerChoice:
    try:
        return parse_sampler(name, schedule)
    except LorastudioError as exc:
        raise LorastudioError.wrap(f"hires sampler: {exc}", exc) from None


def _check_size(cfg: GenerateConfig, model, init: Image.Image | None) -> tuple[int, int]:
    width, height = request_size(cfg, model.native_size, init.size if init else None)
    factor = model.vae_scale_factor
    if width % factor or height % factor:
        raise LorastudioError(
            f"size {width}x{height} must be a multiple of {factor}; e.g. {width // factor * factor}x{height // factor * factor}."
        )
    return width, height


def open_request_images(cfg: GenerateConfig) -> tuple[Image.Image | None, Image.Image | None]:
    """The request's init image and mask, or a one-line error naming the bad file."""
    from lorastudio.generate.images import open_image_file

    init = open_image_file(cfg.init_image, "init image") if cfg.init_image else None
    mask = open_image_file(cfg.mask, "mask", grey=True) if cfg.mask else None
    if mask is not None and cfg.mask_invert:  # "Inpaint not masked": the plan's mask is what is repainted
        from PIL import ImageOps

        mask = ImageOps.invert(binary_mask(mask))  # A1111: made binary, then inverted
    return init, mask


def build_plan(cfg: GenerateConfig, model: LoadedModel, prompt: str, negative: str) -> SamplingPlan:
    init_image, mask = open_request_images(cfg)
    width, height = _check_size(cfg, model, init_image)
    base_seed = resolve_seed(cfg.seed)
    seeds = [base_seed + i for i in range(cfg.total_images)]
    subseeds: list[int] = []
    if cfg.subseed_strength > 0:
        # A1111: with a variation seed every image keeps the seed and the subseed counts up.
        base_subseed = resolve_seed(cfg.subseed)
        seeds = [base_seed] * cfg.total_images
        subseeds = [base_subseed + i for i in range(cfg.total_images)]
    plan = SamplingPlan(width, height, seeds, parse_sampler(cfg.sampler, cfg.schedule), prompt, negative)
    plan.subseeds = subseeds
    plan.init_image, plan.mask = init_image, mask
    if cfg.hires_on:
        _plan_hires_pass(cfg, plan)
    return plan


def _plan_hires_pass(cfg: GenerateConfig, plan: SamplingPlan) -> None:
    """The hires pass's own sampler and prompts (A1111: an empty hires prompt is the prompt)."""
    from lorastudio.generate.prompt_parser import extract_extra_networks

    plan.hires_sampler = hires_sampler_choice(cfg, plan.sampler)
    if cfg.hires_prompt:
        plan.hires_prompt = extract_extra_networks(cfg.hires_prompt)[0]
    if cfg.hires_negative_prompt:
        plan.hires_negative = extract_extra_networks(cfg.hires_negative_prompt)[0]
