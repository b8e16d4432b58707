"""What a recipe says about its noise: where the noise drawn here can still differ from the image's.

The starting noise comes back from the image's random source (`GenerateConfig.rng`, read from its
`RNG` key; an A1111 image without one was made on an NVIDIA GPU, drawn here as NVIDIA's Philox
numbers). What can still differ: the per-step noise of some samplers, and how a smaller NVIDIA card
laid out a large latent's numbers.
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
    notes = _step_notes(params, source, sampler)
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


def _step_notes(params: dict[str, Any], source: str, sampler: str) -> list[RecipeNote]:
    """The sampler's per-step noise, where A1111 drew it otherwise than this studio draws it."""
    from lorastudio.generate.samplers import a1111_step_noise

    if str(params.get("Version", "") or "").startswith("lorastudio"):
        return []  # our own sampler drew it
    kind = a1111_step_noise(sampler)
    if kind == "stream" and "DDIM" in sampler and not _number(params.get("Eta DDIM")):
        kind = ""  # DDIM at eta 0 adds no noise
    if kind == "brownian":
        return [
            RecipeNote(
                "noise_steps_brownian",
                {"sampler": sampler},
                f"A1111's {sampler} draws its per-step noise from a Brownian tree on the GPU, which lorastudio"
                " does not draw; the picture will differ.",
            )
        ]
    if kind == "stream" and source == "CPU":
        return [
            RecipeNote(
                "noise_steps_cpu",
                {"sampler": sampler},
                f"A1111 drew {sampler}'s per-step noise by continuing each seed's CPU generator; lorastudio's CPU"
                " source draws it from seed + 1, so the picture will differ (the starting noise is the same).",
            )
        ]
    ensd = _number(params.get("ENSD"))
    if kind == "stream" and ensd:
        return [
            RecipeNote(
                "noise_steps_ensd",
                {"sampler": sampler, "ensd": f"{ensd:g}"},
                f"the image's per-step noise was seeded with seed + {ensd:g} (ENSD, eta noise seed delta), which"
                f" lorastudio does not apply; {sampler}'s picture will differ.",
            )
        ]
    return []


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
