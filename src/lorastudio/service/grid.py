"""Comparison grids (A1111's X/Y/Z plot): which checkpoint, which LoRA weight, which sampler.

Every cell is an ordinary generation (service.generation.run_generation) with one request
changed per axis, all through one ModelCache, so each cell's PNG carries its own infotext
and `.yaml` recipe. The grid PNG carries the first cell's infotext plus the axes, as A1111
writes it; each Z value's sub-grid the infotext of its own first cell plus the X and Y axes. A `checkpoint` axis walks a training run's `checkpoints/step-N/` LoRA files;
when `lorastudio train score` has scored them, the scores become the cells' captions.

The axes and A1111's value-list syntax (`1-5`, `1-9 (+2)`, `0.4-1.0 [4]`, Prompt S/R) are
pure functions in generate.grid_axes; the LoRA the weight and checkpoint axes act on is
service.grid_target; this module plans the cells and runs them. As A1111, every cell is saved,
the sub-grids only with `include_sub_grids` (none of it by an A1111 API request with `save_images` false:
`service.unsaved`), and `GridResult.shown()` is what a front shows. A
one-value Z axis's lone sub-grid is answered but never saved, as A1111: it is the grid below its
Z title, cut out on demand (`lone_sub_grid_png`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from lorastudio.config import StrictModel, explain_validation_error
from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.grid_axes import (
    AXES,
    MAX_CELLS,
    SCRIPT_TITLE,
    Axis,
    apply_axis_value,
    axis_title,
    find_axis,
    format_value,
    parse_axis_option,
    parse_values,
    with_lora_weight,
)
from lorastudio.service.grid_target import LoraTarget, lora_target
from lorastudio.service.limits import check_grid_cells
from lorastudio.service.model_cache import ModelCache
from lorastudio.service.names import STRICT, NamePolicy
from lorastudio.service.workspace import Workspace, safe_name

__all__ = [
    "AXES",
    "Axis",
    "AxisRequest",
    "GridRequest",
    "GridResult",
    "find_axis",
    "lone_sub_grid_png",
    "parse_axis_option",
    "parse_values",
    "run_grid",
    "submit_grid",
]



# --- requests -----------------------------------------------------------------------------


class AxisRequest(StrictModel):
    axis: str = Field("nothing", description="Axis name: lora_weight, checkpoint, seed, cfg, steps, ...")
    values: str | list[Any] = Field("", description="A1111 value list: '0.4,0.7,1.0', '1-5', '0.4-1.0 [4]'.")


class GridRequest(StrictModel):
    """The grid part of a request; the generation part is a GenerateConfig."""

    x: AxisRequest = Field(default_factory=AxisRequest, description="The axis across: one column per value.")
    y: AxisRequest = Field(default_factory=AxisRequest, description="The axis down: one row per value.")
    z: AxisRequest = Field(
        default_factory=AxisRequest, description="The third axis: one X/Y grid per value, side by side under its label."
    )
    lora: str | None = Field(None, description="LoRA name the weight/checkpoint axes act on.")
    run: str | None = Field(None, description="Training run whose checkpoints the checkpoint axis walks.")
    draw_legend: bool = Field(True, description="Label the rows, columns and Z grids with their axis values (A1111 draw legend).")
    fixed_seeds: bool = Field(True, description="Resolve seed -1 once for the whole grid (A1111's default).")
    margin: int = Field(0, ge=0, le=500, description="Pixels between cells.")
    include_sub_images: bool = Field(
        False, description="Show and answer every cell after the grid (A1111 Include Sub Images); cells are saved anyway."
    )
    include_sub_grids: bool = Field(
        False,
        description="Save, show and answer each Z value's X/Y grid too (A1111 Include Sub Grids); a lone Z"
        " value's is shown and answered, not saved, as A1111.",
    )
    vary_seeds_x: bool = Field(False, description="A new seed per column: the cell's seed + its column (A1111).")
    vary_seeds_y: bool = Field(False, description="A new seed per row, after the columns' (A1111 Vary seeds for Y).")
    vary_seeds_z: bool = Field(False, description="A new seed per Z grid, after the rows' (A1111 Vary seeds for Z).")


# --- cells --------------------------------------------------------------------------------


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


@dataclass
class GridResult:
    grid: Path
    sub_grids: list[Path]
    cells: list[GridCell]
    infotext: str
    axes: dict[str, dict[str, Any]]
    layout: dict[str, int]
    model: str = ""
    model_hash: str = ""
    include_sub_images: bool = False
    sub_infotexts: list[str] = field(default_factory=list)  # one per sub-grid, in its order
    # A one-value Z axis with include_sub_grids: the row where its X/Y grid starts in `grid` (below
    # the Z title); not saved (A1111 answers it, saves the grid alone), `lone_sub_grid_png` cuts it out
    lone_sub_grid_top: int | None = None

    def shown(self) -> list[Path]:
        """The pictures in A1111's answer order: the grid, its sub-grids (when saved), then the cells
        rendered (with Include Sub Images)."""
        cells = [c.path for c in self.cells if c.path] if self.include_sub_images else []
        return [self.grid, *self.sub_grids, *cells]

    def as_json(self) -> dict[str, Any]:
        return {
            "grid": str(self.grid),
            "sub_grids": [str(p) for p in self.sub_grids],
            "images": [str(p) for p in self.shown()],
            "axes": self.axes,
            "layout": self.layout,
            "cells": [
                {
                    "x": c.x,
                    "y": c.y,
                    "z": c.z,
                    "values": c.values,
                    "image": str(c.path) if c.path else None,
                    "recipe": str(c.recipe) if c.recipe else None,
                    "seed": c.seed,
                    "lora_file": str(c.lora_file) if c.lora_file else None,
                    "caption": c.caption,
                }
                for c in self.cells
            ],
            "infotext": self.infotext,
            "sub_grid_infotexts": self.sub_infotexts,
            "lone_sub_grid_top": self.lone_sub_grid_top,
            "model": self.model,
            "model_hash": self.model_hash,
        }


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


# --- running ------------------------------------------------------------------------------


def _next_grid_stem(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [
        int(m[1])
        for p in folder.glob("grid-*.png")
        if (m := re.fullmatch(r"grid-(\d+)(?:-z\d+)?\.png", p.name))
    ]
    return f"grid-{max(numbers, default=-1) + 1:05d}"


def _grid_infotext(
    first: GridCell, axes: list[tuple[Axis, list, str]], fixed_seeds: bool, with_z: bool
) -> str:
    """The first cell's infotext as it was written, plus the script and its axes on its parameters
    line, as A1111 writes a grid's infotext (no round trip through the parser: that splits `Size`)."""
    from lorastudio.generate.infotext import format_infotext, quote

    script: dict[str, object] = {"Script": SCRIPT_TITLE}
    for letter, (axis, values, raw) in zip("XYZ", axes, strict=True):
        if axis.name == "nothing" or (letter == "Z" and not with_z):
            continue
        script[f"{letter} Type"] = axis.label
        script[f"{letter} Values"] = raw
        if axis.name in {"seed", "subseed"} and fixed_seeds:
            script[f"Fixed {letter} Values"] = ", ".join(str(v) for v in values)
    keys = ", ".join(f"{key}: {quote(value)}" for key, value in script.items())
    if not first.infotext:
        return format_infotext(first.config.prompt, first.config.negative_prompt, script)
    return f"{first.infotext.rstrip()}, {keys}"


def _save_sub_grids(
    folder: Path, stem: str, images: list, infotexts: list[str], main: tuple[Any, Path, str]
) -> tuple[list[Path], int | None]:
    """Each Z value's X/Y grid as `<stem>-z<N>.png`, and None. A1111 saves the sub-grids of two or
    more Z values only: a lone one is answered, never saved. When it is the grid itself (no Z title
    drawn, the same infotext) it is the grid's own file; else ([], the row where it starts in the grid)."""
    from lorastudio.generate.infotext import save_png

    main_image, main_path, main_infotext = main
    if len(images) == 1:
        if images[0] is main_image and infotexts[0] == main_infotext:
            return [main_path], None
        return [], main_image.height - images[0].height  # stack_grids puts the title band above it
    paths = [
        save_png(image, folder / f"{stem}-z{iz + 1}.png", text)
        for iz, (image, text) in enumerate(zip(images, infotexts, strict=True))
    ]
    return paths, None


def lone_sub_grid_png(grid: Path, top: int, infotext: str) -> bytes:
    """The X/Y grid of a one-value Z axis as PNG bytes with its own infotext: the saved grid below
    its Z title (`GridResult.lone_sub_grid_top`), which A1111 answers but does not save."""
    from PIL import Image

    from lorastudio.generate.image_metadata import png_bytes

    with Image.open(grid) as picture:
        lone = picture.convert("RGB").crop((0, top, picture.width, picture.height))
    return png_bytes(lone, infotext)


def run_grid(
    ws: Workspace,
    base: GenerateConfig,
    request: GridRequest,
    cache: ModelCache | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    out_dir: Path | None = None,
    names: NamePolicy = STRICT,
    add_to_library: bool = True,
) -> GridResult:
    """Generate every cell (one model load for all), draw the labelled grid(s), save them.
    `add_to_library=False`: the cells get no library rows (an A1111 request that keeps nothing).

    `should_stop()` is asked before each cell and each sampling step: True ends the loop
    (A1111 /interrupt: the grid is drawn from the cells done, the others left blank);
    raising `SkipBatch` drops the current cell and goes on with the next (A1111 /skip).
    """
    from PIL import Image

    from lorastudio.generate.grid import draw_grid, stack_grids
    from lorastudio.generate.infotext import save_png
    from lorastudio.generate.pipeline import SkipBatch
    from lorastudio.service.generation import run_generation

    cells, axes, target = plan_cells(ws, base, request, names)
    cache = cache or ModelCache(ws, names=names)
    folder = out_dir or ws.outputs / dt.date.today().isoformat()
    total_steps = sum(c.config.steps for c in cells)
    done_steps = 0
    model, model_hash = "", ""
    # Slow-to-change axes outermost (A1111's "cost"): the model loads once per model (and VAE) value.
    order = sorted(range(len(cells)), key=lambda i: (str(cells[i].config.model), str(cells[i].config.vae), i))
    for index in order:
        cell = cells[index]
        try:
            if should_stop is not None and should_stop():
                break  # interrupted: the cells left are not rendered; the grid shows those done
        except SkipBatch:  # a /skip that came between two cells drops the one about to start
            done_steps += cell.config.steps
            continue

        def cell_progress(
            done: int, total: int, before: int = done_steps, steps: int = cell.config.steps
        ) -> None:
            if progress is not None:
                progress(before + round(done * steps / max(total, 1)), total_steps)

        lora_files = {target.name: cell.lora_file} if cell.lora_file is not None and target.name else None
        result = run_generation(
            ws, cell.config, cache, cell_progress, should_stop, out_dir=folder, lora_files=lora_files, names=names,
            add_to_library=add_to_library,
        )
        done_steps += cell.config.steps
        model, model_hash = model or result.model, model_hash or result.model_hash
        if result.images:
            image = result.images[0]
            cell.path, cell.recipe, cell.seed, cell.infotext = (
                image.path,
                image.recipe_path,
                image.seed,
                image.infotext,
            )
    if not any(c.path for c in cells):
        raise LorastudioError("grid: no cell was generated (stopped before the first one finished).")

    (x_axis, xs, _), (y_axis, ys, _), (z_axis, zs, _) = axes
    x_labels = [format_value(x_axis, v) for v in xs]
    y_labels = [format_value(y_axis, v) for v in ys]
    per_z = len(xs) * len(ys)
    stem = _next_grid_stem(folder)
    first = next(c for c in cells if c.path)
    sub_images, sub_infotexts, layout = [], [], None
    for iz in range(len(zs)):
        chunk = cells[iz * per_z : (iz + 1) * per_z]
        images = [Image.open(c.path).convert("RGB") if c.path else None for c in chunk]
        captions = [c.caption for c in chunk]
        grid, layout = draw_grid(
            images, len(xs), x_labels, y_labels, captions, request.margin, request.draw_legend
        )
        sub_images.append(grid)
        sub_first = next((c for c in chunk if c.path), first)
        sub_infotexts.append(_grid_infotext(sub_first, axes, request.fixed_seeds, False))
    z_labels = [format_value(z_axis, v) for v in zs]
    main = stack_grids(sub_images, z_labels, request.margin, request.draw_legend)
    infotext = _grid_infotext(first, axes, request.fixed_seeds, True)
    grid_path = save_png(main, folder / f"{stem}.png", infotext)
    sub_paths, lone_top = [], None
    if request.include_sub_grids:  # A1111 answers the sub-grids only when asked, even a lone one
        sub_paths, lone_top = _save_sub_grids(folder, stem, sub_images, sub_infotexts, (main, grid_path, infotext))
    else:
        sub_infotexts = []
    axes_info = {
        letter: {
            "axis": axis.name,
            "label": axis.label,
            "values": values,
            "labels": [format_value(axis, v) for v in values],
        }
        for letter, (axis, values, _) in zip("xyz", axes, strict=True)
    }
    layout_info = {
        "columns": layout.columns,
        "rows": layout.rows,
        "cell_width": layout.cell_w,
        "cell_height": layout.cell_h,
        "left": layout.left,
        "top": layout.top,
        "caption_height": layout.caption_h,
        "margin": layout.margin,
    }
    result = GridResult(
        grid_path, sub_paths, cells, infotext, axes_info, layout_info, model, model_hash,
        request.include_sub_images, sub_infotexts, lone_top,
    )  # fmt: skip
    summary = result.as_json()
    summary["request"] = base.model_dump()
    summary["grid_request"] = request.model_dump()
    (folder / f"{stem}.yaml").write_text(
        yaml.safe_dump(json.loads(json.dumps(summary, default=str)), allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    return result


# --- the job queue (the A1111 script runs as a job, like any generation) -------------------


def grid_job_result(result: GridResult) -> dict[str, Any]:
    """A grid job's stored result: the grid, its sub-grids (each with its own infotext) and the cells
    that were rendered."""
    done = [c for c in result.cells if c.path]
    return {
        "grid": result.grid.name,
        "grid_infotext": result.infotext,
        "sub_grids": [p.name for p in result.sub_grids],  # with include_sub_grids only, as A1111
        "sub_grid_infotexts": result.sub_infotexts,
        "lone_sub_grid_top": result.lone_sub_grid_top,  # a lone sub-grid, not saved: lone_sub_grid_png
        "include_sub_images": result.include_sub_images,  # whether a front shows the cells after them
        "images": [c.path.name for c in done],
        "seeds": [c.seed for c in done],
        "infotexts": [c.infotext for c in done],
        "prompts": [c.config.prompt for c in done],
        "axes": result.axes,
        "layout": result.layout,
        "model": result.model,
        "model_hash": result.model_hash,
    }


def check_grid_limits(studio, cfg: GenerateConfig, request: GridRequest) -> None:
    """A grid is many generations: every cell within the server's limits, the cells at most
    `--max-grid-cells` (a client must not turn one request into unbounded work)."""
    studio.check_generate_limits(cfg)
    cells, _, _ = plan_cells(studio.workspace, cfg, request)
    check_grid_cells(studio.settings, len(cells))
    for cell in cells:
        studio.check_generate_limits(cell.config)


def submit_grid(
    studio, cfg: GenerateConfig, request: GridRequest, *, user: str = "", priority: int = 0, keep: bool = True
):
    """Queue a grid job; names in the request (model, run, LoRA) must be names, never paths.
    `keep=False` (A1111's save_images false): grid and cells answered, then removed (`service.unsaved`)."""
    from lorastudio.generate.samplers import parse_sampler

    parse_sampler(cfg.sampler, cfg.schedule)
    for spec in (request.x, request.y, request.z):
        axis = find_axis(spec.axis)
        values = parse_values(spec.values, axis)  # a bad list fails now, not in the queue
        if axis.name == "model":
            for value in values:
                studio.check_model_name(str(value))
    if request.run:
        safe_name(request.run, "run name")
    if request.lora:
        safe_name(request.lora, "LoRA name")
    check_grid_limits(studio, cfg, request)
    cfg = studio.resolve_generate(cfg)
    payload = {"config": cfg.model_dump(), "grid": request.model_dump()}
    if not keep:
        payload["keep"] = False
        studio.sweep_unsaved()
    return studio.submit("grid", payload, user=user, priority=priority, affinity=cfg.model)

