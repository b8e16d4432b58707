"""What a recipe says about its noise: where the noise drawn here can still differ from the image's.

The starting noise comes back from the image's random source (`GenerateConfig.rng`, read from its
`RNG` key; an A1111 image without one was made on an NVIDIA GPU, drawn here as NVIDIA's Philox
numbers), and so does the per-step noise: each seed's stream continued, or seeded with seed + ENSD,
and the SDE samplers' Brownian trees seeded with the image seeds, all from that source, as A1111
draws them. What can still differ: how a smaller NVIDIA card laid out a large latent's numbers, and
the samplers lorastudio ran otherwise when it made an image before images wrote `RNG` (their per-step
noise comes back: `old_step_noise`, `generate.noise_fields`).
"""

from __future__ import annotations

from typing import Any

from lorastudio.service.recipe_notes import RecipeNote

__all__ = ["GPU_LAYOUT_FREE_VALUES", "noise_notes"]

# torch's CUDA kernel gives each latent value its own thread while the card runs that many threads at
# once (SMs x threads per SM); past that a thread draws several values and their numbers move. Every
# NVIDIA card of the last years runs 4 x 64 x 64 (an SD 1.5 512 x 512 latent); larger latents are noted.
GPU_LAYOUT_FREE_VALUES = 4 * 64 * 64
LATENT_CHANNELS, LATENT_SCALE = 4, 8


def noise_notes(params: dict[str, Any]) -> list[RecipeNote]:
    """The notes on an image's noise (A1111 or lorastudio infotext keys, as parsed)."""
    from lorastudio.generate.a1111_fields import noise_source

    source = noise_source(params)
    sampler = str(params.get("Sampler", "") or "")
    notes = _old_sampler_notes(params, sampler)
    values = _latent_values(params)
    if source == "GPU" and values > GPU_LAYOUT_FREE_VALUES:
        notes.append(
            RecipeNote(
                "noise_gpu_layout",
                {"values": str(values)},
                f"the noise is NVIDIA's GPU numbers (RNG: GPU); they come back the same if the card that made"
                f" the image ran {values} threads at once (SMs x threads per SM; an RTX 3090 runs 125952), else"
                " it laid the latent's values out otherwise and the picture will differ.",
            )
        )
    return notes


def _old_sampler_notes(params: dict[str, Any], sampler: str) -> list[RecipeNote]:
    """A lorastudio image from before images wrote `RNG` whose sampler — the first pass's or its hires pass's own
    (`Hires sampler`, `Hires schedule type`) — lorastudio now runs otherwise: DPM++ 2S a (then without its
    ancestral noise), Euler a on a Karras or Exponential schedule (then on plain Euler a's), DPM++ SDE (then a
    Brownian tree seeded at random). One note per such sampler."""
    from types import SimpleNamespace

    from lorastudio.errors import LorastudioError
    from lorastudio.generate.noise_fields import made_before_rng
    from lorastudio.generate.plan import hires_sampler_choice
    from lorastudio.generate.samplers import parse_sampler

    if not made_before_rng(params):
        return []
    try:
        first = parse_sampler(sampler, str(params.get("Schedule type", "") or "") or None)
    except LorastudioError:
        return []
    passes = [(sampler, first)]
    hires = {
        field: "" if text in ("Use same sampler", "Use same scheduler") else text
        for field, key in (("hires_sampler", "Hires sampler"), ("hires_schedule", "Hires schedule type"))
        for text in [str(params.get(key, "") or "").strip()]
    }
    if any(hires.values()):
        try:  # as the hires pass picked it: its own sampler, else the first's, on its own schedule, else the first's
            passes.append((hires["hires_sampler"] or sampler, hires_sampler_choice(SimpleNamespace(**hires), first)))
        except LorastudioError:
            pass
    named = []
    for name, choice in passes:
        euler_scheduled = choice.sampler == "Euler a" and choice.schedule in ("Karras", "Exponential")
        if (choice.sampler in ("DPM++ 2S a", "DPM++ SDE") or euler_scheduled) and name not in named:
            named.append(name)
    return [
        RecipeNote(
            "noise_old_sampler",
            {"sampler": name},
            f"lorastudio ran {name} otherwise when it made this image (before images wrote RNG); it now samples"
            " it as A1111 does, so the picture will differ.",
        )
        for name in named
    ]


def _number(value: Any) -> float:
    try:
        return float(str(value or 0).strip())
    except ValueError:
        return 0.0


def _latent_values(params: dict[str, Any]) -> int:
    """Values of the largest latent the image drew noise for: its size, or its hires fix's."""
    width, height = int(_number(params.get("Size-1"))), int(_number(params.get("Size-2")))  # `Size: WxH` parsed
    scale = _number(params.get("Hires upscale")) or 1.0
    hires_w, hires_h = int(_number(params.get("Hires resize-1"))), int(_number(params.get("Hires resize-2")))
    if hires_w or hires_h:
        hires_w, hires_h = hires_w or hires_h * width // max(height, 1), hires_h or hires_w * height // max(width, 1)
    else:
        hires_w, hires_h = int(width * scale), int(height * scale)
    largest = max(width * height, hires_w * hires_h)
    return LATENT_CHANNELS * largest // (LATENT_SCALE * LATENT_SCALE)
