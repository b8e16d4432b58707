"""A1111 selectable scripts on `/sdapi/v1/txt2img`: the "x/y/z plot" (comparison grids).

A1111 clients send `script_name: "x/y/z plot"` and the script's positional `script_args`:
`[x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds,
margin_size, csv_mode]` (A1111 1.6), or with `vary_seeds_x, vary_seeds_y, vary_seeds_z`
after `no_fixed_seeds` (A1111 1.7+; told apart by the booleans there). A type is an index
into A1111's txt2img axis list (those before index 21, which A1111 1.10 renumbered) or, more
robust across A1111 versions, the axis name ("CFG Scale", "Seed", "Prompt S/R", "Prompt order",
"Hires upscaler", "VAE", "Styles", or lorastudio's own "LoRA weight", "LoRA checkpoint").
The answer is A1111's: `images` = [grid, sub-grids (include_sub_grids: one per Z value, even a lone one,
which A1111 answers without saving it, each with its own infotext), cells (include_lone_images)]; as
A1111, grid and cells are saved only with `save_images: true` (false: answered, then removed,
`service.unsaved`). An
axis A1111 has and lorastudio lacks (`generate.grid_axes.UNSUPPORTED_AXES`) is refused by its label.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.api.a1111_controlnet import CONTROLNET_M2M, CONTROLNET_SCRIPT
from lorastudio.api.a1111_requests import answer_when_done
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from lorastudio.api.a1111_requests import Txt2ImgRequest
    from lorastudio.service.grid_request import GridRequest
    from lorastudio.service.studio import Studio

__all__ = [
    "A1111_TXT2IMG_AXES",
    "A1111_TXT2IMG_LABELS",
    "LISTED_SCRIPTS",
    "SCRIPTS",
    "XYZ_SCRIPT",
    "grid_request_from_script_args",
    "run_script",
    "script_info",
]

XYZ_SCRIPT = "x/y/z plot"
# The selectable scripts lorastudio runs (`script_name`).
SCRIPTS = {"txt2img": [XYZ_SCRIPT], "img2img": []}
# What `/sdapi/v1/scripts` lists: those, ControlNet's always-on script (its units are read from
# `alwayson_scripts`), and "controlnet m2m", the extension's name webuiapi looks for before it
# sends units. ControlNet's movie-to-movie script itself is not run.
LISTED_SCRIPTS = {
    mode: [*names, CONTROLNET_SCRIPT, CONTROLNET_M2M] for mode, names in SCRIPTS.items()
}

# A1111's txt2img axis list, by index: the same labels in 1.6 to 1.10 up to index 20 (the img2img-only
# "Image CFG Scale" and img2img "Sampler" are not in it). From index 21 on the versions differ (1.10 put
# "Skip Early CFG" and the beta schedule axes before "Eta"), so lorastudio's Eta, Clip skip, Denoising,
# Hires upscaler, VAE and Styles are taken by name only. An index whose axis lorastudio lacks is refused
# by its label, with the reason (`generate.grid_axes.UNSUPPORTED_AXES`).
A1111_TXT2IMG_LABELS = (
    "Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale", "Prompt S/R",
    "Prompt order", "Sampler", "Hires sampler", "Checkpoint name", "Negative Guidance minimum sigma",
    "Sigma Churn", "Sigma min", "Sigma max", "Sigma noise", "Schedule type", "Schedule min sigma",
    "Schedule max sigma", "Schedule rho",
)  # fmt: skip


# The indices lorastudio runs (tests/test_grid_options.py keeps them in step with the axes).
A1111_TXT2IMG_AXES = {
    index: A1111_TXT2IMG_LABELS[index] for index in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 17)
}
_NAMED_ARGS = (
    "x_type",
    "x_values",
    "x_values_dropdown",
    "y_type",
    "y_values",
    "y_values_dropdown",
    "z_type",
    "z_values",
    "z_values_dropdown",
    "draw_legend",
    "include_lone_images",
    "include_sub_grids",
    "no_fixed_seeds",
)


def _axis_name(value: Any, which: str) -> str:
    from lorastudio.service.grid import find_axis

    if isinstance(value, bool):
        raise LorastudioError(
            f"script_args {which}: {value!r} is not an axis; give an index or an axis name."
        )
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if 0 <= index < len(A1111_TXT2IMG_LABELS):  # an axis lorastudio lacks is refused by its label, with why
            return find_axis(A1111_TXT2IMG_LABELS[index]).name
        known = ", ".join(f"{i} {n}" for i, n in A1111_TXT2IMG_AXES.items())
        raise LorastudioError(
            f"script_args {which}: axis index {index} is not supported; use one of {known}, or send the axis name."
        )
    return find_axis(str(value)).name


def _values(axis: str, text: Any, dropdown: Any, csv_mode: bool) -> str | list:
    """A1111 takes an axis with choices (sampler, checkpoint) from the dropdown unless csv_mode, and every
    other axis from its text (a dropdown list left over beside Prompt order or CFG is not its values);
    an empty dropdown falls back to the text, as clients older than A1111 1.6 send only text."""
    from lorastudio.service.choices import axis_offers_choices

    offers = axis_offers_choices(axis)
    if offers and isinstance(dropdown, list) and dropdown and (not csv_mode or not str(text or "").strip()):
        return [str(v) for v in dropdown]
    return str(text or "")


def _as_named(args: list | dict) -> dict[str, Any]:
    if isinstance(args, dict):
        return dict(args)
    if not isinstance(args, list):
        raise LorastudioError("script_args: send a list (A1111's positional arguments of the x/y/z plot).")
    named = dict(zip(_NAMED_ARGS, args, strict=False))
    rest = list(args[len(_NAMED_ARGS) :])
    if rest and isinstance(rest[0], bool):  # A1111 1.7+: vary_seeds_x/y/z come first
        named.update(zip(("vary_seeds_x", "vary_seeds_y", "vary_seeds_z"), rest[:3], strict=False))
        rest = rest[3:]
    named.update(zip(("margin_size", "csv_mode"), rest, strict=False))
    return named


def grid_request_from_script_args(args: list | dict) -> GridRequest:
    """The GridRequest of the x/y/z plot's arguments (its options included, by A1111's positions)."""
    from lorastudio.service.grid_request import GridRequest

    named = _as_named(args)
    if not any(named.get(f"{a}_type") for a in "xyz"):
        raise LorastudioError("script_args: the x/y/z plot needs at least x_type and x_values.")
    csv_mode = bool(named.get("csv_mode", False))
    axes = {}
    for letter in "xyz":
        kind = named.get(f"{letter}_type", 0)
        axis = _axis_name(kind if kind not in (None, "") else 0, f"{letter}_type")
        axes[letter] = {
            "axis": axis,
            "values": _values(axis, named.get(f"{letter}_values"), named.get(f"{letter}_values_dropdown"), csv_mode),
        }
    request = GridRequest.model_validate(
        {
            **axes,
            "draw_legend": bool(named.get("draw_legend", True)),
            "fixed_seeds": not bool(named.get("no_fixed_seeds", False)),
            "margin": int(named.get("margin_size") or 0),
            "include_sub_images": bool(named.get("include_lone_images", False)),
            "include_sub_grids": bool(named.get("include_sub_grids", False)),
            **{f"vary_seeds_{a}": bool(named.get(f"vary_seeds_{a}", False)) for a in "xyz"},
        }
    )
    return request


def script_info() -> list[dict[str, Any]]:
    """`/sdapi/v1/script-info`: the x/y/z plot and its arguments, in A1111's shape."""
    from lorastudio.service.controlnets import MAX_CONTROL_UNITS
    from lorastudio.service.grid import AXES

    labels = [a.label for a in AXES.values()]

    def arg(label: str, value: Any, choices: list | None = None) -> dict[str, Any]:
        return {
            "label": label,
            "value": value,
            "minimum": None,
            "maximum": None,
            "step": None,
            "choices": choices,
        }

    args = []
    for letter in "XYZ":
        args += [
            arg(f"{letter} type", "Nothing", labels),
            arg(f"{letter} values", ""),
            arg(f"{letter} values", None),
        ]
    args += [
        arg("Draw legend", True),
        arg("Include Sub Images", False),
        arg("Include Sub Grids", False),
        arg("Keep -1 for seeds", False),
        arg("Grid margins (px)", 0),
        arg("Use text inputs instead of dropdowns", False),
    ]
    units = [arg(f"ControlNet Unit {i}", None) for i in range(MAX_CONTROL_UNITS)]
    return [
        {"name": XYZ_SCRIPT, "is_alwayson": False, "is_img2img": False, "args": args},
        *(
            {"name": CONTROLNET_SCRIPT, "is_alwayson": True, "is_img2img": img2img, "args": units}
            for img2img in (False, True)
        ),
    ]


def _sub_grid_infotexts(result: dict[str, Any], count: int) -> list[str]:
    """Each sub-grid's own infotext (its first cell's, with the X and Y axes); a job stored before
    they were recorded answers the grid's."""
    own = list(result.get("sub_grid_infotexts") or [])
    return own if len(own) == count else [result.get("grid_infotext", "")] * count


async def run_script(req: Txt2ImgRequest, studio: Studio, user: str = "") -> dict[str, Any]:
    """Run the request's selectable script through the job queue and answer as A1111 does."""
    from lorastudio.api.a1111_controlnet import parse_units, store_units
    from lorastudio.api.a1111_requests import Img2ImgRequest, to_generate_config
    from lorastudio.service.grid import submit_grid

    name = str(req.script_name or "").strip()
    if name.lower() != XYZ_SCRIPT or isinstance(req, Img2ImgRequest):
        mode = "img2img" if isinstance(req, Img2ImgRequest) else "txt2img"
        have = ", ".join(SCRIPTS[mode]) or "none"
        raise LorastudioError(f"script_name {name!r}: not available for {mode}; scripts here: {have}.")
    grid = grid_request_from_script_args(req.script_args or [])

    def submit():
        units = parse_units(req.alwayson_scripts)
        controlnet, stored = store_units(studio.workspace, units, img2img=False)
        try:
            cfg = to_generate_config(req, studio, user=user, controlnet=controlnet)
            # over quota: 429 (api.app); save_images false (A1111's default): grid and cells not kept
            job = submit_grid(studio, cfg, grid, user=user, keep=req.save_images)
        except BaseException:
            studio.discard_uploads(stored)
            raise
        studio.hold_request_uploads(job, stored)  # the units' images go once answered
        return cfg, job

    cfg, job = await asyncio.to_thread(submit)
    return await answer_when_done(studio, job, "x/y/z plot", lambda done: _answer(req, studio, cfg, done, grid))


def _answer(req, studio, cfg, job, grid) -> dict[str, Any]:
    """A1111's answer of a finished x/y/z plot job: the grid, its sub-grids and (Include Sub Images)
    the cells, as base64."""
    from lorastudio.api.a1111_requests import a1111_info, b64_file
    from lorastudio.service.grid import lone_sub_grid_png

    def _b64(picture: Path | bytes) -> str:
        return base64.b64encode(picture).decode("ascii") if isinstance(picture, bytes) else b64_file(picture)

    lone = grid.include_sub_images
    result = job.result or {}
    folder = studio.job_folder(job)
    paths: list[Path | bytes] = [folder / result["grid"]] if result.get("grid") else []
    infotexts = [result.get("grid_infotext", "")] if paths else []
    seeds = [result["seeds"][0]] if paths and result.get("seeds") else []
    prompts = [req.prompt] if paths else []
    if grid.include_sub_grids and paths:  # one per Z value, a lone one too (service.grid), as A1111
        subs: list[Path | bytes] = [folder / n for n in result.get("sub_grids", [])]
        if result.get("lone_sub_grid_top") is not None:  # answered, never saved (A1111)
            lone_text = (result.get("sub_grid_infotexts") or [""])[0]
            subs = [lone_sub_grid_png(paths[0], int(result["lone_sub_grid_top"]), lone_text)]
        paths += subs
        infotexts += _sub_grid_infotexts(result, len(subs))
        seeds += seeds[:1] * len(subs)
        prompts += [req.prompt] * len(subs)
    if lone:
        paths += [folder / n for n in result.get("images", [])]
        infotexts += list(result.get("infotexts", []))
        seeds += list(result.get("seeds", []))
        prompts += list(result.get("prompts", []))
    info = a1111_info(req, cfg, job, infotexts, seeds, studio)
    info.update(all_prompts=prompts, index_of_first_image=1 if lone else 0)
    images = [_b64(p) for p in paths] if req.send_images else []
    return {
        "images": images,
        "parameters": req.model_dump(),
        "info": json.dumps(info, ensure_ascii=False),
    }

