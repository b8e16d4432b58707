"""The axes of a comparison grid (A1111's X/Y/Z plot) and their value lists, as pure functions.

An `Axis` is one thing a grid varies (seed, CFG scale, sampler, LoRA weight, ...), found by our
name, A1111's label or an alias. Value lists follow A1111's syntax: comma separated (CSV quotes
allowed), integer ranges `1-5`, `1-9 (+2)`, `10-1 (-3)`, `1-10 [4]` (4 evenly spaced values) and
float ranges `0.4-1.0 (+0.2)`, `0.4-1.0 [4]`; Prompt order's values are terms, expanded to every
order of them. `apply_axis_value` changes one cell's request for one value (Prompt S/R replaces the
first value by the others, Prompt order rearranges the terms in the prompt). service.grid_plan plans
the cells, service.grid runs them. A1111's axes for settings this studio's generation does not run
are not axes here: `UNSUPPORTED_AXES` says why, and asking for one by its label is refused with that line.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.generate.config import RNG_SOURCES
from lorastudio.generate.samplers import SCHEDULE_TYPES

__all__ = [
    "AXES",
    "MAX_CELLS",
    "SCRIPT_TITLE",
    "UNSUPPORTED_AXES",
    "VAE_AUTOMATIC",
    "Axis",
    "apply_axis_value",
    "axis_title",
    "find_axis",
    "format_value",
    "join_axis_text",
    "parse_axis_option",
    "split_axis_text",
    "parse_values",
    "reorder_prompt",
    "with_lora_weight",
]

MAX_CELLS = 1000
# The script's name in A1111's infotext ("Script: X/Y/Z plot"): written by a grid, read by PNG info.
SCRIPT_TITLE = "X/Y/Z plot"


@dataclass(frozen=True)
class Axis:
    """One thing a grid can vary. `label` is A1111's name for it where A1111 has one."""

    name: str
    label: str
    kind: type
    aliases: tuple[str, ...] = ()
    show_label: bool = True  # "Steps: 20"; Prompt S/R and model names show the value alone
    cost: int = 0  # slow to change (a model load): generated in the outer loop


AXES: dict[str, Axis] = {
    axis.name: axis
    for axis in (
        Axis("nothing", "Nothing", str, ("none",)),
        Axis("seed", "Seed", int),
        Axis("subseed", "Var. seed", int, ("variation seed", "var seed")),
        Axis("subseed_strength", "Var. strength", float, ("variation strength", "var strength")),
        Axis("steps", "Steps", int),
        Axis("cfg", "CFG Scale", float, ("cfg_scale", "cfg scale", "guidance")),
        Axis(
            "prompt_sr", "Prompt S/R", str, ("prompt s/r", "prompt", "sr", "search replace"), show_label=False
        ),
        # A value is one order of the terms (a tuple), labelled by the terms joined with ", " as A1111 does
        Axis("prompt_order", "Prompt order", tuple, show_label=False),
        Axis("sampler", "Sampler", str, ("sampler_name",), show_label=False),
        Axis("schedule", "Schedule type", str, ("scheduler", "schedule type")),
        Axis("eta", "Eta", float, ("ddim eta",)),
        Axis(
            "model",
            "Checkpoint name",
            str,
            ("checkpoint name", "sd_model_checkpoint"),
            show_label=False,
            cost=2,
        ),
        Axis("vae", "VAE", str, ("sd_vae",), cost=1),
        Axis("styles", "Styles", str, ("style",)),
        Axis("checkpoint", "LoRA checkpoint", str, ("lora checkpoint", "run checkpoint", "step"), cost=1),
        Axis("lora_weight", "LoRA weight", float, ("lora weight", "weight", "lora strength")),
        Axis("width", "Width", int),
        Axis("height", "Height", int),
        Axis("size", "Size", str),
        Axis("clip_skip", "Clip skip", int, ("clip skip", "clipskip")),
        Axis("hires_steps", "Hires steps", int, ("hr_second_pass_steps",)),
        Axis("hires_strength", "Denoising", float, ("denoising", "denoising_strength")),
        Axis("hires_upscaler", "Hires upscaler", str, ("hr_upscaler", "hires upscaler", "upscaler")),
        # A1111's option randn_source: GPU, CPU or NV (GenerateConfig.rng)
        Axis("rng", "RNG source", str, ("randn_source", "rng source", "random number generator source")),
        Axis("hires_sampler", "Hires sampler", str, ("hr_sampler_name",)),
        Axis("hires_schedule", "Hires schedule type", str, ("hr_scheduler",)),
        Axis("initial_noise_multiplier", "Initial noise multiplier", float, ("noise multiplier",)),
        Axis("extra_noise", "Extra noise", float, ("img2img_extra_noise",)),
        Axis("unipc_order", "UniPC Order", int, ("uni_pc_order", "unipc order")),  # A1111's option uni_pc_order
    )
}


# A1111 1.10's X/Y/Z axes whose setting the generation here does not run, by A1111's label: why. No stub
# axis stands in for them (a grid whose cells all come out alike would look like a finding).
_NO_CHURN = "the samplers run without k-diffusion's churn options (s_churn, s_tmin, s_tmax, s_noise are not settings)"
_OWN_SIGMAS = "each schedule type uses the model's own sigma range and its fixed rho (no schedule overrides)"
_NO_TOME = "no token merging (ToMe) runs in the UNet"
_NO_REFINER = "no SDXL refiner pass runs after the base model"
_NO_BETA = f"there is no Beta schedule type (schedule types: {', '.join(SCHEDULE_TYPES)})"
UNSUPPORTED_AXES: dict[str, str] = {
    "Image CFG Scale": "it guides instruct-pix2pix models, which this studio does not load",
    "Negative Guidance minimum sigma": "every step evaluates the negative prompt (no s_min_uncond skipping)",
    "Sigma Churn": _NO_CHURN,
    "Sigma min": _NO_CHURN,
    "Sigma max": _NO_CHURN,
    "Sigma noise": _NO_CHURN,
    "Schedule min sigma": _OWN_SIGMAS,
    "Schedule max sigma": _OWN_SIGMAS,
    "Schedule rho": _OWN_SIGMAS,
    "Skip Early CFG": "every step applies CFG (no skip_early_cond)",
    "Beta schedule alpha": _NO_BETA,
    "Beta schedule beta": _NO_BETA,
    "Cond. Image Mask Weight": "inpainting models always get the whole masked picture (no inpainting_mask_weight)",
    "Face restore": "no face restoration runs after sampling (restore_faces is accepted and ignored)",
    "Token merging ratio": _NO_TOME,
    "Token merging ratio high-res": _NO_TOME,
    "Always discard next-to-last sigma": "each sampler keeps the sigma schedule its scheduler makes (no always_discard_next_to_last_sigma)",
    "SGM noise multiplier": "SDXL's starting noise is scaled one way only (no sgm_noise_multiplier)",
    "Refiner checkpoint": _NO_REFINER,
    "Refiner switch at": _NO_REFINER,
    "FP8 mode": "models are never stored in FP8 here (no fp8_storage)",
}


def _key(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


_AXIS_KEYS = {_key(k): a for a in AXES.values() for k in (a.name, a.label, *a.aliases)}
_UNSUPPORTED_KEYS = {_key(label): label for label in UNSUPPORTED_AXES}


def axis_title(axis: Axis) -> str:
    """An axis as messages name it for every front: A1111's label, and the CLI's name beside it."""
    return f"{axis.label} ({axis.name})" if _key(axis.label) != _key(axis.name) else axis.label


def find_axis(name: str) -> Axis:
    """An axis by our name (`lora_weight`), A1111's label (`CFG Scale`) or an alias."""
    axis = _AXIS_KEYS.get(_key(str(name)))
    label = _UNSUPPORTED_KEYS.get(_key(str(name)))
    if axis is None and label is not None:
        raise LorastudioError(f"A1111's X/Y/Z axis {label!r} is not supported here: {UNSUPPORTED_AXES[label]}.")
    if axis is None:
        raise LorastudioError(f"grid axis {name!r}: unknown; choose one of: {', '.join(AXES)}.")
    return axis


# A1111's VAE values that mean "no separate VAE": the model's own
VAE_AUTOMATIC = ("automatic", "auto", "none", "")


# --- value lists --------------------------------------------------------------------------

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE_STEP = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})(?:\s*\(\s*([+-]\s*{_FLOAT})\s*\))?\s*")
_RANGE_COUNT = re.compile(rf"\s*({_FLOAT})\s*-\s*({_FLOAT})\s*\[\s*(\d+)\s*\]\s*")


def split_axis_text(text: str, keep_empty: bool = False) -> list[str]:
    """A value list's items as A1111 splits them (CSV: quotes keep commas inside a value)."""
    rows = list(csv.reader(io.StringIO(str(text or "")), skipinitialspace=True))
    return [item.strip() for row in rows for item in row if keep_empty or item.strip() != ""]


def join_axis_text(items: list[str]) -> str:
    """Items back into a value list, quoted where a value holds a comma or a quote (A1111's CSV)."""
    quoted = ['"' + item.replace('"', '""') + '"' if ("," in item or '"' in item) else item for item in items]
    return ", ".join(quoted)


def _number(text: str, kind: type, axis: str):
    cleaned = text.replace(" ", "")
    try:
        value = float(cleaned)
    except ValueError:
        raise LorastudioError(
            f"grid axis {axis}: {text!r} is not a number; give e.g. '1,2,3', '1-5', '1-9 (+2)' or '0.4-1.0 [4]'."
        ) from None
    if kind is int:
        if not value.is_integer():
            raise LorastudioError(f"grid axis {axis}: {text!r} is not a whole number.")
        return int(value)
    return value


def _expand_range(item: str, kind: type, axis: str) -> list | None:
    """A1111's `a-b`, `a-b (+s)` and `a-b [n]`; None when the item is not a range."""
    counted = _RANGE_COUNT.fullmatch(item)
    stepped = _RANGE_STEP.fullmatch(item)
    if counted:
        start, end = _number(counted[1], float, axis), _number(counted[2], float, axis)
        count = int(counted[3])
        if count < 1:
            raise LorastudioError(f"grid axis {axis}: {item!r} asks for no values; use [1] or more.")
        values = [start + (end - start) * i / (count - 1) if count > 1 else start for i in range(count)]
        return [int(v) for v in values] if kind is int else [round(v, 10) for v in values]
    if stepped is None:
        return None
    start, end = _number(stepped[1], kind, axis), _number(stepped[2], kind, axis)
    if stepped[3] is not None:
        step = _number(stepped[3], kind, axis)
    else:
        step = 1 if end >= start else -1
    if step == 0 or (end - start) * step < 0:
        raise LorastudioError(f"grid axis {axis}: {item!r} never reaches its end; check the step's sign.")
    count = math.floor((end - start) / step + 1e-9) + 1
    if count > MAX_CELLS:
        raise LorastudioError(f"grid axis {axis}: {item!r} makes {count} values; at most {MAX_CELLS}.")
    if kind is int:
        return [start + i * step for i in range(count)]
    return [round(start + i * step, 10) for i in range(count)]


def parse_values(text: str | list, axis: Axis) -> list:
    """A value list in A1111's syntax, typed for the axis. A list is taken as already split."""
    # Prompt S/R keeps an empty value, as A1111 does: `cat, ` is "cat", then "cat" replaced by nothing
    items = [str(v).strip() for v in text] if isinstance(text, list) else split_axis_text(text, axis.name == "prompt_sr")
    if axis.name == "prompt_sr" and not any(items):
        items = []
    if axis.name == "nothing":
        return [""]
    if not items:
        raise LorastudioError(f"grid axis {axis_title(axis)}: no values; give e.g. 'a, b, c'.")
    if axis.name == "prompt_order":
        return _term_orders(items)
    if axis.name == "rng":
        return [_rng_source(item) for item in items]
    if axis.kind is str:
        return items
    values: list = []
    for item in items:
        expanded = _expand_range(item, axis.kind, axis_title(axis))
        values += expanded if expanded is not None else [_number(item, axis.kind, axis_title(axis))]
    return values


def _rng_source(item: str) -> str:
    """An RNG source value in A1111's spelling (upper case), or one line naming the choices."""
    if item.upper() not in RNG_SOURCES:
        raise LorastudioError(f"grid axis {axis_title(AXES['rng'])}: {item!r}; use one of {', '.join(RNG_SOURCES)}.")
    return item.upper()


def _term_orders(terms: list[str]) -> list[tuple[str, ...]]:
    """Prompt order's values: every permutation of the terms, in itertools' order (A1111's)."""
    count = math.factorial(len(terms))
    if count > MAX_CELLS:
        raise LorastudioError(
            f"grid axis {axis_title(AXES['prompt_order'])}: {len(terms)} terms make {count} orders; at most {MAX_CELLS}, "
            "give 6 terms or fewer."
        )
    return list(itertools.permutations(terms))


def parse_axis_option(option: str) -> tuple[Axis, str]:
    """`NAME=VALUES` as the CLI's --x/--y/--z take it."""
    name, sep, values = str(option).partition("=")
    if not sep:
        raise LorastudioError(f"grid axis {option!r}: write NAME=VALUES, e.g. --x 'lora_weight=0.4,0.7,1.0'.")
    return find_axis(name.strip()), values.strip()


def format_value(axis: Axis, value: Any) -> str:
    """The label of one value, as A1111 writes it ("CFG Scale: 7", "Euler a")."""
    if axis.name == "nothing":
        return ""
    if isinstance(value, (tuple, list)):  # Prompt order: "dog, cat" as A1111 labels it
        text = ", ".join(str(v) for v in value)
    else:
        text = f"{round(value, 8):g}" if isinstance(value, float) else str(value)
    return f"{axis.label}: {text}" if axis.show_label else text


def apply_axis_value(axis: Axis, value: Any, values: list, fields: dict[str, Any], state: dict[str, Any]) -> None:
    """Change one cell's request for one axis value (`state` holds the LoRA weight, checkpoint and the
    styles, which service.grid_plan applies: they need the workspace)."""
    name = axis.name
    if name == "nothing":
        return
    if name == "prompt_sr":
        search = values[0]
        if not search:
            raise LorastudioError("grid axis prompt_sr: the first value is empty; start with the words to replace.")
        if search not in fields["prompt"] and search not in fields["negative_prompt"]:
            raise LorastudioError(
                f"grid axis prompt_sr: {search!r} (the first value) is in neither the prompt nor the negative prompt."
            )
        fields["prompt"] = fields["prompt"].replace(search, value)
        fields["negative_prompt"] = fields["negative_prompt"].replace(search, value)
    elif name == "prompt_order":
        fields["prompt"] = reorder_prompt(fields["prompt"], list(value))
    elif name == "lora_weight":
        state["weight"] = value
    elif name == "checkpoint":
        state["checkpoint"] = value
    elif name == "cfg":
        fields["cfg_scale"] = value
    elif name == "size":
        match = re.fullmatch(r"\s*(\d+)\s*[x×X]\s*(\d+)\s*", str(value))
        if match is None:
            raise LorastudioError(f"grid axis size: {value!r} is not WIDTHxHEIGHT, e.g. 512x768.")
        fields["width"], fields["height"] = int(match[1]), int(match[2])
    elif name == "sampler":
        fields["sampler"] = value
    elif name == "vae":
        fields["vae"] = None if str(value).strip().lower() in VAE_AUTOMATIC else value
    elif name == "styles":  # A1111: one value may name several styles, "a,b"
        state.setdefault("styles", []).extend(s.strip() for s in str(value).split(",") if s.strip())
    elif name == "unipc_order":  # A1111's axis: at most steps - 1 (the cell records the order it samples at)
        fields["unipc_order"] = max(1, min(int(value), int(fields.get("steps") or 1) - 1))
    elif name == "hires_strength" and fields.get("init_image"):
        fields["strength"] = value  # A1111's "Denoising" is the img2img strength when there is a picture
    else:
        fields[name] = value


def reorder_prompt(prompt: str, order: list[str]) -> str:
    """The prompt with the terms put in `order`: the places the terms hold (each first found, the
    earliest place first) are filled by the terms in the new order, the text between them kept, as
    A1111's Prompt order does. A term the prompt lacks is refused (A1111 silently garbles the prompt)."""
    missing = [term for term in order if term not in prompt]
    if missing:
        raise LorastudioError(
            f"grid axis {axis_title(AXES['prompt_order'])}: {missing[0]!r} is not in the prompt; give terms the "
            "prompt holds (prompt 'a cat, a dog': values 'a cat, a dog')."
        )
    by_place = sorted(order, key=prompt.find)  # stable: terms found at one place keep the given order
    gaps, rest = [], prompt
    for term in by_place:
        start = rest.find(term)
        if start < 0:  # only found inside a term taken before it ("red" and "red hair")
            raise LorastudioError(
                f"grid axis {axis_title(AXES['prompt_order'])}: {term!r} overlaps another term in the prompt; give "
                "terms that do not."
            )
        gaps.append(rest[:start])
        rest = rest[start + len(term) :]
    return "".join(gap + term for gap, term in zip(gaps, order, strict=True)) + rest


def with_lora_weight(prompt: str, name: str, weight: float | None) -> str:
    """The prompt with `<lora:name:weight>`: an existing tag of that name gets the weight, else one is added."""
    pattern = re.compile(rf"<(lora|lyco):{re.escape(name)}((?::[^>]*)?)>")
    match = pattern.search(prompt)
    if match is None:
        text = f"{weight if weight is not None else 1.0:g}"
        return f"{prompt} <lora:{name}:{text}>".strip()
    if weight is None:
        return prompt
    return prompt[: match.start()] + f"<{match[1]}:{name}:{weight:g}>" + prompt[match.end() :]
