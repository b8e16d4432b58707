"""Which cells a comparison grid has: every cell's generation request, checked before any model loads.

The axes' values are parsed (A1111's value-list syntax, `generate.grid_axes`), checked against what
the workspace holds (samplers, VAEs, upscalers, styles), and each cell's request is the base request
with one value per axis applied, x fastest, then y, then z (A1111's order in the picture), its seed
moved on by "Vary seeds for X/Y/Z". An axis no cell would act on is refused, as is a cell a value
makes invalid: one line naming the value. `service.grid` runs the cells this plans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lorastudio.config import explain_validation_error
from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.grid_axes import (
    AXES,
    MAX_CELLS,
    Axis,
    apply_axis_value,
    axis_title,
    find_axis,
    format_value,
    parse_values,
    with_lora_weight,
)
from lorastudio.service.grid_request import GridRequest
from lorastudio.service.grid_target import LoraTarget, lora_target
from lorastudio.service.names import STRICT, NamePolicy
from lorastudio.service.workspace import Workspace

__all__ = ["GridCell", "plan_cells"]


@dataclass
class GridCell:
    x: int
    y: int
    z: int
    values: dict[str, Any]
    config: GenerateConfig
    lora_file: Path | None = None
    step: int | None = None
    caption: str | None = None
    path: Path | None = None
    recipe: Path | None = None
    seed: int | None = None
    infotext: str = ""


def _seed_values(axis: Axis, values: list, fixed: bool) -> list:
    from lorastudio.generate.pipeline import resolve_seed

    if fixed and axis.name in {"seed", "subseed"}:
        return [resolve_seed(int(v)) for v in values]
    return values


def _checked_values(ws: Workspace, axis: Axis, values: list, base: GenerateConfig, names: NamePolicy) -> list:
    """An axis's values checked against what the workspace holds before any model loads; upscalers
    by their A1111 titles (as a cell's infotext writes them)."""
    from lorastudio.generate.grid_axes import VAE_AUTOMATIC
    from lorastudio.generate.samplers import parse_sampler, schedule_label
    from lorastudio.service.names import find_vae
    from lorastudio.service.styles import apply_styles
    from lorastudio.service.upscalers import find_upscaler

    if axis.name == "sampler":
        for value in values:
            parse_sampler(value, base.schedule)
    elif axis.name == "hires_sampler":
        for value in values:
            parse_sampler(value)
    elif axis.name == "hires_schedule":
        for value in values:
            schedule_label(value)
    elif axis.name == "hires_upscaler":
        return [find_upscaler(ws, str(v), allow_paths=not names.strict)["name"] for v in values]
    elif axis.name == "vae":
        for value in values:
            if str(value).strip().lower() not in VAE_AUTOMATIC:
                find_vae(ws, str(value), names)
    elif axis.name == "styles":
        for value in values:
            apply_styles(ws, "", "", [s.strip() for s in str(value).split(",") if s.strip()])
    return values


def _seed_offset(request: GridRequest, ix: int, iy: int, iz: int, columns: int, rows: int) -> int:
    """A1111's "Vary seeds for X/Y/Z": each column, row or Z grid a seed further on."""
    width = columns if request.vary_seeds_x else 1
    height = rows if request.vary_seeds_y else 1
    return (
        ix * request.vary_seeds_x + iy * width * request.vary_seeds_y + iz * width * height * request.vary_seeds_z
    )


def plan_cells(
    ws: Workspace, base: GenerateConfig, request: GridRequest, names: NamePolicy = STRICT
) -> tuple[list[GridCell], list[tuple[Axis, list, str]], LoraTarget]:
    """Every cell's request, x fastest, then y, then z (A1111's order in the picture)."""
    from lorastudio.generate.pipeline import resolve_seed
    from lorastudio.service.styles import apply_styles

    axes = []
    for spec in (request.x, request.y, request.z):
        axis = find_axis(spec.axis)
        values = _seed_values(axis, parse_values(spec.values, axis), request.fixed_seeds)
        values = _checked_values(ws, axis, values, base, names)
        raw = spec.values if isinstance(spec.values, str) else ", ".join(str(v) for v in spec.values)
        axes.append((axis, values, raw))
    names = [a.name for a, _, _ in axes if a.name != "nothing"]
    if len(set(names)) != len(names):
        raise LorastudioError("grid: the same axis type is used twice; give each of X, Y and Z (--x/--y/--z) a different one.")
    total = math.prod(len(values) for _, values, _ in axes)
    if total > MAX_CELLS:
        raise LorastudioError(f"grid: {total} cells; at most {MAX_CELLS}, use fewer values.")
    uses = {a.name for a, _, _ in axes}
    target = lora_target(ws, base.prompt, request.lora, request.run, "checkpoint" in uses)
    if "lora_weight" in uses and not target.name:
        raise LorastudioError(
            "grid axis lora_weight: which LoRA? pass --lora NAME or --run RUN, or put one <lora:NAME:1> in the prompt."
        )
    if target.full_model and "lora_weight" in uses:
        raise LorastudioError(
            f"run {target.run_dir.name!r} trains the whole UNet: its checkpoints are models, they have no LoRA weight."
        )

    fields = base.model_dump()
    fields.update(batch_size=1, count=1)  # one image per cell
    if request.fixed_seeds:
        fields["seed"] = resolve_seed(base.seed)
    cells = []
    (x_axis, xs, _), (y_axis, ys, _), (z_axis, zs, _) = axes
    for iz, z in enumerate(zs):
        for iy, y in enumerate(ys):
            for ix, x in enumerate(xs):
                cell_fields = dict(fields)
                state: dict[str, Any] = {"weight": None, "checkpoint": None}
                for axis, value, values in ((x_axis, x, xs), (y_axis, y, ys), (z_axis, z, zs)):
                    apply_axis_value(axis, value, values, cell_fields, state)
                if cell_fields["seed"] != -1:  # "Keep -1 for seeds" leaves each cell's seed random
                    cell_fields["seed"] += _seed_offset(request, ix, iy, iz, len(xs), len(ys))
                if state.get("styles"):
                    cell_fields["prompt"], cell_fields["negative_prompt"] = apply_styles(
                        ws, cell_fields["prompt"], cell_fields["negative_prompt"], state["styles"]
                    )
                cell = _cell(ws, ix, iy, iz, axes, (x, y, z), cell_fields, state, target)
                cells.append(cell)
    _check_axes_act(uses, cells)
    return cells, axes, target


def _check_axes_act(uses: set[str], cells: list[GridCell]) -> None:
    """An axis whose setting no cell uses is refused: its cells would all come out alike."""
    hires = any(c.config.hires_on for c in cells)
    img2img = any(c.config.init_image for c in cells)
    for name in ("hires_upscaler", "hires_sampler", "hires_schedule"):
        if name in uses and not hires:
            raise LorastudioError(
                f"grid axis {axis_title(AXES[name])}: the hires fix is off, so no hires pass samples; "
                "set Hires fix's Upscale by above 1 (--hires-scale 2) or a size to resize to."
            )
    if "initial_noise_multiplier" in uses and not img2img:
        raise LorastudioError(
            f"grid axis {axis_title(AXES['initial_noise_multiplier'])}: it scales img2img's starting noise; "
            "give an init picture (--init-image)."
        )
    if "extra_noise" in uses and not (img2img or hires):
        raise LorastudioError(
            f"grid axis {axis_title(AXES['extra_noise'])}: it adds noise in img2img and the hires pass; give an "
            "init picture (--init-image) or turn the hires fix on (--hires-scale 2)."
        )


def _cell(ws, ix, iy, iz, axes, values, fields, state, target: LoraTarget) -> GridCell:
    lora_file, step = None, None
    if state["checkpoint"] is not None:
        lora_file, step = target.file_for(state["checkpoint"])
        if target.full_model:
            fields["model"], lora_file = str(lora_file), None
    if target.name and not target.full_model:  # the prompt names the LoRA (weight 1 unless an axis sets it)
        fields["prompt"] = with_lora_weight(fields["prompt"], target.name, state["weight"])
    if (
        lora_file is None
        and target.run_dir is not None
        and not target.full_model
        and target.final is not None
    ):
        if not (ws.loras / f"{target.name}.safetensors").is_file():
            lora_file = target.final  # a run whose result is not in loras/ (yet): use its final file
    try:
        config = GenerateConfig.model_validate(fields)
    except ValidationError as exc:  # one line: the axis value a cell cannot take, never pydantic's dump
        shown = ", ".join(format_value(axis, value) for (axis, _, _), value in zip(axes, values, strict=True)
                          if axis.name != "nothing")  # fmt: skip
        problem = explain_validation_error(GenerateConfig, exc, "value").removeprefix("value: ")
        raise LorastudioError(f"grid cell {shown}: {problem}") from None
    except ValueError as exc:
        raise LorastudioError(f"grid cell {values}: {exc}") from None
    named = {
        axis.name: value for (axis, _, _), value in zip(axes, values, strict=True) if axis.name != "nothing"
    }
    return GridCell(
        ix, iy, iz, named, config, lora_file, step, target.caption(step) if step is not None else None
    )
