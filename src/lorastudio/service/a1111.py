"""The A1111 dialect's names for the fronts: samplers, schedule types and the field table.

`/sdapi/v1` speaks AUTOMATIC1111's names; what they mean lives in generate/ (samplers.py,
a1111_fields.py). The fronts reach them here, so they import nothing below service/.
"""

from __future__ import annotations

from typing import Any

from lorastudio.generate.a1111_fields import A1111_FIELDS, A1111Field, a1111_request_names
from lorastudio.generate.config import RNG_SOURCES, UNIPC_SKIP_TYPES, UNIPC_VARIANTS
from lorastudio.generate.samplers import SAMPLERS, SCHEDULE_TYPES, parse_sampler, schedule_label

__all__ = [
    "A1111_FIELDS",
    "FLAG_OPTIONS",
    "NUMBER_OPTIONS",
    "A1111Field",
    "CHOICE_OPTIONS",
    "SCHEDULE_TYPES",
    "a1111_request_names",
    "api_default",
    "parse_sampler",
    "sampler_names",
    "schedule_label",
]


# A1111 options (a request's `override_settings`, `POST /options`) that are request fields here,
# each true or false: option name -> GenerateConfig field (whose default is the option's).
FLAG_OPTIONS: dict[str, str] = {
    "pad_cond_uncond": "pad_conds",
    "pad_cond_uncond_v0": "pad_conds_v0",
    "use_old_scheduling": "old_prompt_editing",
    "uni_pc_lower_order_final": "unipc_lower_order_final",  # on by default
}


# A1111 options that are request fields here and take one of a few words: option name -> (GenerateConfig
# field, its words, what a request gets when neither it nor the user's options set it: the field's default).
CHOICE_OPTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "randn_source": ("rng", RNG_SOURCES, "CPU"),  # A1111's own default is GPU; lorastudio keeps the CPU's noise
    "uni_pc_variant": ("unipc_variant", UNIPC_VARIANTS, "bh1"),
    "uni_pc_skip_type": ("unipc_skip_type", UNIPC_SKIP_TYPES, "time_uniform"),
}


# A1111 options that are number fields here (the same two places): option name -> GenerateConfig field.
NUMBER_OPTIONS: dict[str, str] = {
    "initial_noise_multiplier": "initial_noise_multiplier",
    "img2img_extra_noise": "extra_noise",
    "eta_noise_seed_delta": "ensd",  # a whole number
    "uni_pc_order": "unipc_order",  # a whole number, 1..50
}


def sampler_names() -> list[tuple[str, list[str]]]:
    """Every sampler's A1111 name with the other names it is known by, in A1111's order."""
    return [(name, list(spec.aliases)) for name, spec in SAMPLERS.items()]


def api_default(field: str) -> Any:
    """What the A1111 API assumes for a GenerateConfig field a client leaves out (`A1111_FIELDS`)."""
    return next(row.api_default for row in A1111_FIELDS if row.field == field)
