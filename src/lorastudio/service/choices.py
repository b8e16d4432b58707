"""The names a form offers: samplers, schedules, upscalers and what the library holds.

Pickers in the web UI (and any other front) list these; each comes from the table that
also validates a request, so a picker never offers a value the service would refuse.
"""

from __future__ import annotations

from typing import Any

from lorastudio.service.workspace import Workspace

__all__ = [
    "family_form_defaults",
    "control_module_names",
    "control_module_sliders",
    "controlnet_titles",
    "embedding_names",
    "grid_axis_choices",
    "grid_axis_value_choices",
    "axis_offers_choices",
    "picks_from_text",
    "text_with_picks",
    "hires_upscaler_names",
    "lora_names",
    "model_names",
    "sampler_names",
    "schedule_names",
    "style_names",
    "vae_names",
]


def sampler_names() -> list[str]:
    """A1111 sampler names, in A1111's order."""
    from lorastudio.generate.samplers import sampler_names as names

    return names()


def grid_axis_choices() -> list[tuple[str, str]]:
    """(A1111's label, axis name) of every X/Y/Z plot axis, "Nothing" first (`GridRequest` takes either)."""
    from lorastudio.generate.grid_axes import AXES

    return [(axis.label, axis.name) for axis in AXES.values()]


# The X/Y/Z axes A1111 offers a values dropdown for (its AxisOption `choices`).
AXES_WITH_CHOICES = (
    "sampler", "schedule", "model", "vae", "styles", "hires_upscaler", "hires_sampler", "hires_schedule", "rng",
)  # fmt: skip


def axis_offers_choices(axis: str) -> bool:
    """Whether an X/Y/Z axis (any of its names) is picked from a list of choices, not only typed."""
    from lorastudio.generate.grid_axes import find_axis

    return find_axis(axis or "nothing").name in AXES_WITH_CHOICES


def grid_axis_value_choices(ws: Workspace, axis: str) -> list[str]:
    """What an X/Y/Z plot axis can be picked from (A1111's values dropdown); [] for an axis that only
    takes typed values (numbers, Prompt S/R, a run's checkpoints)."""
    from lorastudio.generate.grid_axes import find_axis

    name = find_axis(axis or "nothing").name
    if name in ("sampler", "hires_sampler"):
        return sampler_names()
    if name in ("schedule", "hires_schedule"):
        return schedule_names()
    if name == "model":
        return model_names(ws)
    if name == "vae":
        return ["Automatic", *vae_names(ws)]
    if name == "styles":
        return style_names(ws)
    if name == "hires_upscaler":
        return hires_upscaler_names(ws)
    if name == "rng":
        return ["GPU", "CPU", "NV"]  # A1111's order
    return []


def schedule_names() -> list[str]:
    """Schedule types ("Automatic" first: the sampler's own)."""
    from lorastudio.generate.samplers import SCHEDULE_TYPES

    return list(SCHEDULE_TYPES)


def hires_upscaler_names(ws: Workspace | None = None) -> list[str]:
    """Upscalers the hires fix takes (GenerateConfig.hires_upscaler): the latent modes and filters,
    then the workspace's model upscalers (studio/models/upscalers) that read."""
    from lorastudio.generate.config import HIRES_UPSCALERS

    if ws is None:
        return list(HIRES_UPSCALERS)
    from lorastudio.service.upscalers import upscaler_names

    return upscaler_names(ws)


def model_names(ws: Workspace) -> list[str]:
    """Models that load: files and folders in models/ that read, then the built-in tiny ones."""
    from lorastudio.service.models import list_models

    return [row["name"] for row in list_models(ws) if not row.get("error")]


def family_form_defaults(
    ws: Workspace, model: str | None, current: dict[str, Any], preferred: dict[str, Any]
) -> dict[str, Any]:
    """The Generate form's CFG scale and sampler for a newly picked model: its family's own
    (Kolors: 5.0, Euler; SD families: the saved preferences) where the form still shows a value no
    one chose (the preferences or another family's); a value the user moved stays."""
    from lorastudio.models.families import FAMILIES, Family, get_family
    from lorastudio.service.models import list_models

    family_name = next((row["family"] for row in list_models(ws) if row["name"] == model), None)
    if not family_name:
        return {}
    family = get_family(family_name)
    fields = {"cfg_scale": "default_guidance", "sampler": "default_sampler"}
    update = {}
    for name, attr in fields.items():
        own = getattr(family, attr)
        wanted = preferred.get(name) if own == Family.__dataclass_fields__[attr].default else own
        automatic = {preferred.get(name)} | {getattr(f, attr) for f in FAMILIES.values()}
        if current.get(name) in automatic and current.get(name) != wanted:
            update[name] = wanted
    return update


def lora_names(ws: Workspace) -> list[str]:
    """LoRA files in loras/ that read, by name (what `<lora:name:w>` takes)."""
    from lorastudio.service.loras import list_loras

    return sorted(row["name"] for row in list_loras(ws) if not row.get("error"))


def embedding_names(ws: Workspace) -> list[str]:
    """Embeddings in embeddings/, by the name a prompt uses."""
    from lorastudio.service.embeddings import list_embeddings

    return sorted(row["name"] for row in list_embeddings(ws) if not row.get("error"))


def style_names(ws: Workspace) -> list[str]:
    """Prompt styles of studio/styles.csv, in file order; none when the file cannot be read (a
    request naming a style then says why)."""
    from lorastudio.errors import LorastudioError
    from lorastudio.service.styles import list_styles

    try:
        return list(dict.fromkeys(style.name for style in list_styles(ws)))
    except LorastudioError:
        return []


def vae_names(ws: Workspace) -> list[str]:
    """Separate VAEs in models/ (a request's `vae`); the form offers "Automatic" (the model's own) first."""
    from lorastudio.service.models import list_vaes

    return [row["name"] for row in list_vaes(ws)]


def controlnet_titles(ws: Workspace) -> list[str]:
    """ControlNets in controlnet/ that read, by A1111 title `name [hash8]`."""
    from lorastudio.service.controlnets import list_controlnets

    return [row["title"] for row in list_controlnets(ws) if not row.get("error")]


def control_module_names() -> list[str]:
    """Preprocessor names a ControlNet unit takes ("none" first: the image is the map)."""
    from lorastudio.generate.annotators.registry import list_annotators

    names = [row.name for row in list_annotators()]
    return ["none", *sorted(name for name in names if name != "none")]


def control_module_sliders(name: str) -> tuple[dict | None, dict | None]:
    """The preprocessor's two parameters (name, value, min, max, step), None where it has none."""
    from dataclasses import asdict

    from lorastudio.errors import LorastudioError
    from lorastudio.generate.annotators.registry import find_annotator

    try:
        row = find_annotator(name or "none")
    except LorastudioError:
        return None, None
    return tuple(asdict(s) if s is not None else None for s in (row.threshold_a, row.threshold_b))


def picks_from_text(text: str, choices: list[str]) -> list[str]:
    """The typed grid axis values the values dropdown can show as picked (those among its choices)."""
    from lorastudio.generate.grid_axes import split_axis_text

    return [item for item in split_axis_text(text) if item in choices]


def text_with_picks(text: str, picks: list[str] | None, choices: list[str]) -> str:
    """A grid axis' values text after a pick in its dropdown: typed values that are not choices stay
    where they are, choices no longer picked go, new picks are added at the end (A1111's order of picks)."""
    from lorastudio.generate.grid_axes import join_axis_text, split_axis_text

    picks = list(picks or [])
    kept = [item for item in split_axis_text(text) if item not in choices or item in picks]
    return join_axis_text(kept + [p for p in picks if p not in kept])
