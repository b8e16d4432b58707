"""A recipe for the web form: what this studio cannot take is left out and noted, not refused.

A1111's "Send to txt2img" fills every field it can and leaves the rest as they are: a VAE it
lacks, a sampler or schedule type it does not know, a hires upscaler not installed. The CLI's
`--recipe` refuses those (the picture would differ without a word); the form gets the same
request with those fields dropped, each with a note, and the sampler split into the form's
two pickers (A1111 before 1.9 wrote `Sampler: DPM++ 2M Karras`). ControlNet units come back
as the extension's paste restores them: settings and model by its title, the image left to the user.
A grid image's X/Y/Z plot comes back as A1111's script restores it: each axis' type and values.
Prompt styles come back as A1111's paste restores them ("infotext_styles": "Apply if any"): a
style of `studio/styles.csv` whose texts the prompts hold is taken out of them and picked.
"""

from __future__ import annotations

from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.generate.grid_axes import SCRIPT_TITLE
from lorastudio.service.recipe_notes import RecipeNote
from lorastudio.service.workspace import Workspace

__all__ = ["form_grid", "form_params", "form_request", "form_styles"]


def form_params(params: dict[str, Any], notes: list) -> dict[str, Any]:
    """The infotext's keys with a `Schedule type` this studio lacks (e.g. Align Your Steps) left out."""
    from lorastudio.generate.samplers import find_schedule

    for key in ("Schedule type", "Hires schedule type"):
        schedule = str(params.get(key) or "")
        if not schedule or schedule == "Use same scheduler" or find_schedule(schedule) is not None:
            continue
        notes.append(RecipeNote("schedule_unknown", {"name": schedule}, f"schedule type {schedule} is not available here."))
        params = {name: value for name, value in params.items() if name != key}
    return params


def form_request(ws: Workspace, request: dict[str, Any], notes: list) -> dict[str, Any]:
    """`request` (infotext fields) with what the form cannot show dropped, and a note for each."""
    request = dict(request)
    _keep_known_vae(ws, request, notes)
    _split_sampler(request, notes)
    _split_hires_sampler(request, notes)
    _keep_known_hires_upscaler(ws, request, notes)
    _keep_known_control_units(ws, request, notes)
    return request


def _keep_known_vae(ws: Workspace, request: dict[str, Any], notes: list) -> None:
    from lorastudio.service.names import find_vae

    name = request.get("vae")
    if not name:
        return
    try:
        find_vae(ws, name)
    except LorastudioError:
        request.pop("vae")
        notes.append(RecipeNote("vae_missing", {"name": str(name)}, f"VAE {name} is not in this workspace; using the model's own."))


def _split_sampler(request: dict[str, Any], notes: list) -> None:
    """`DPM++ 2M Karras` -> sampler `DPM++ 2M`, schedule `Karras`; an unknown one is left to the form."""
    from lorastudio.generate.samplers import parse_sampler

    sampler, schedule = request.get("sampler"), request.get("schedule")
    if not sampler:
        return
    try:
        choice = parse_sampler(str(sampler), schedule)
    except LorastudioError:
        try:
            choice = parse_sampler(str(sampler))
        except LorastudioError:
            request.pop("sampler", None)
            request.pop("schedule", None)
            notes.append(RecipeNote("sampler_unknown", {"name": str(sampler)}, f"sampler {sampler} is not available here."))
            return
        notes.append(
            RecipeNote("schedule_unknown", {"name": str(schedule)}, f"schedule type {schedule} is not available here.")
        )
    request["sampler"] = choice.sampler
    request["schedule"] = None if choice.schedule == "Automatic" else choice.schedule


def _split_hires_sampler(request: dict[str, Any], notes: list) -> None:
    """The hires sampler as the form's two hires pickers take it (`DPM++ 2M Karras` split, as A1111's
    paste does); one this studio lacks is left to the form, with a note."""
    from lorastudio.generate.samplers import parse_sampler

    sampler = request.get("hires_sampler")
    if not sampler:
        return
    try:
        choice = parse_sampler(str(sampler), request.get("hires_schedule"))
    except LorastudioError:
        request.pop("hires_sampler", None)
        request.pop("hires_schedule", None)
        notes.append(RecipeNote("hires_sampler_unknown", {"name": str(sampler)},
                                f"hires sampler {sampler} is not available here."))  # fmt: skip
        return
    request["hires_sampler"] = choice.sampler
    if choice.schedule != "Automatic" or request.get("hires_schedule"):  # a suffix, or the schedule given
        request["hires_schedule"] = choice.schedule


def _keep_known_hires_upscaler(ws: Workspace, request: dict[str, Any], notes: list) -> None:
    from lorastudio.service.choices import hires_upscaler_names

    name = request.get("hires_upscaler")
    if not name:
        return
    known = {option.lower(): option for option in hires_upscaler_names(ws)}
    if str(name).lower() in known:
        request["hires_upscaler"] = known[str(name).lower()]
        return
    request.pop("hires_upscaler")
    notes.append(
        RecipeNote("hires_upscaler_missing", {"name": str(name)}, f"hires upscaler {name} is not installed here.")
    )


def _keep_known_control_units(ws: Workspace, request: dict[str, Any], notes: list) -> None:
    """Each `ControlNet N` unit with its model as the form's picker titles it (`name [hash8]`); a unit
    whose model or preprocessor this studio lacks is left out with a note."""
    from lorastudio.service.controlnets import check_module, controlnet_title, find_controlnet

    kept = []
    for unit in request.get("controlnet") or []:
        unit = dict(unit)
        index = unit["slot"]  # the image's `ControlNet N` (`units_from_infotext`)
        try:
            unit["model"] = controlnet_title(find_controlnet(ws, str(unit.get("model") or "")))
        except LorastudioError:
            notes.append(RecipeNote("controlnet_missing", {"unit": index, "name": str(unit.get("model"))},
                                    f"ControlNet unit {index}: {unit.get('model')} is not in this studio; the unit is left off."))  # fmt: skip
            continue
        try:
            unit["module"] = check_module(unit.get("module") or "none").name
        except LorastudioError:
            notes.append(RecipeNote("control_module_unknown", {"unit": index, "name": str(unit.get("module"))},
                                    f"ControlNet unit {index}: preprocessor {unit.get('module')} is not available here; the unit is left off."))  # fmt: skip
            continue
        kept.append(unit)
    request["controlnet"] = kept


def form_grid(params: dict[str, Any], notes: list) -> dict[str, Any] | None:
    """A grid image's X/Y/Z plot (`Script: X/Y/Z plot`) as the panel's values, as A1111's script
    pastes it: `x`/`y`/`z` = {"axis": name, "values": text} (an axis the grid lacks: "nothing"), and
    `keep_seeds` where a seed axis tells (A1111 writes `Fixed X Values` unless "Keep -1" was on).
    None for an image that is no grid. An axis type this studio lacks is left at "nothing", noted."""
    from lorastudio.generate.grid_axes import find_axis

    if str(params.get("Script") or "").strip() != SCRIPT_TITLE:
        return None
    grid: dict[str, Any] = {}
    for letter in "XYZ":
        label = str(params.get(f"{letter} Type") or "").strip()
        grid[letter.lower()] = {"axis": "nothing", "values": ""}
        if not label:
            continue
        try:
            axis = find_axis(label)
        except LorastudioError:
            notes.append(RecipeNote("grid_axis_unknown", {"axis": letter, "name": label},
                                    f"X/Y/Z plot: {letter} type {label} is not available here; the axis is left off."))  # fmt: skip
            continue
        grid[letter.lower()] = {"axis": axis.name, "values": str(params.get(f"{letter} Values") or "")}
        if axis.name in {"seed", "subseed"}:
            grid["keep_seeds"] = f"Fixed {letter} Values" not in params
    return grid


def form_styles(ws: Workspace, request: dict[str, Any]) -> list[str]:
    """The styles of `studio/styles.csv` the pasted prompts hold, taken out of `request`'s prompts (A1111's
    "Apply if any": the form's Styles picker gets them, so generating again merges them back once).

    As A1111: a style is held where both its prompt and its negative prompt text are (`extract_styles`);
    an image with a hires prompt of its own keeps its prompts whole unless those hold the same styles
    (an empty hires box is the prompt). No styles file, or one that cannot be read: nothing changes.
    """
    from lorastudio.service.styles import extract_styles, list_styles

    try:
        styles = list_styles(ws)
    except LorastudioError:  # the picker lists none then either (`choices.style_names`)
        return []
    prompt, negative = str(request.get("prompt") or ""), str(request.get("negative_prompt") or "")
    bare, bare_negative, found = extract_styles(styles, prompt, negative)
    if not found:
        return []
    hires = {key: str(request.get(key) or "") for key in ("hires_prompt", "hires_negative_prompt")}
    if any(hires.values()):
        hires_bare, hires_bare_negative, hires_found = extract_styles(
            styles, hires["hires_prompt"] or prompt, hires["hires_negative_prompt"] or negative
        )
        if {style.name for style in hires_found} != {style.name for style in found}:
            return []
        for key, text in (("hires_prompt", hires_bare), ("hires_negative_prompt", hires_bare_negative)):
            if hires[key]:
                request[key] = text
    request["prompt"], request["negative_prompt"] = bare, bare_negative
    return list(dict.fromkeys(style.name for style in found))
