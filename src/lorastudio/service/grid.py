"""Comparison grids (A1111's X/Y/Z plot): which checkpoint, which LoRA weight, which sampler.

Every cell is an ordinary generation (service.generation.run_generation) with one request
changed per axis, all through one ModelCache, so each cell's PNG carries its own infotext
and `.yaml` recipe. The grid PNG carries the first cell's infotext plus the axes, as A1111
writes it; each Z value's sub-grid the infotext of its own first cell plus the X and Y axes. A `checkpoint` axis walks a training run's `checkpoints/step-N/` LoRA files;
when `lorastudio train score` has scored them, the scores become the cells' captions.

The axes and A1111's value-list syntax (`1-5`, `1-9 (+2)`, `0.4-1.0 [4]`, Prompt S/R) are
pure functions in generate.grid_axes; the LoRA the weight and checkpoint axes act on is
service.grid_target; the request is service.grid_request, the cells are planned (and checked
before any model loads) in service.grid_plan; this module runs them. As A1111, every cell is saved,
the sub-grids only with `include_sub_grids` (none of it by an A1111 API request with `save_images` false:
`service.unsaved`), and `GridResult.shown()` is what a front shows. A
one-value Z axis's lone sub-grid is answered but never saved, as A1111: it is the grid below its
Z title, cut out on demand (`lone_sub_grid_png`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.grid_axes import (
    AXES,
    SCRIPT_TITLE,
    Axis,
    find_axis,
    format_value,
    parse_axis_option,
    parse_values,
)
from lorastudio.service.grid_plan import GridCell, plan_cells
from lorastudio.service.grid_request import GridRequest
from lorastudio.service.limits import check_grid_cells
from lorastudio.service.model_cache import ModelCache
from lorastudio.service.names import STRICT, NamePolicy
from lorastudio.service.workspace import Workspace, safe_name

if TYPE_CHECKING:
    from lorastudio.service.jobs.store import Job

__all__ = [
    "AXES",
    "Axis",
    "GridResult",
    "find_axis",
    "lone_sub_grid_png",
    "parse_axis_option",
    "parse_values",
    "run_grid",
    "submit_grid",
]


# --- results ------------------------------------------------------------------------------


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


def check_grid_limits(studio: Any, cfg: GenerateConfig, request: GridRequest) -> None:
    """A grid is many generations: every cell within the server's limits, the cells at most
    `--max-grid-cells` (a client must not turn one request into unbounded work)."""
    studio.check_generate_limits(cfg)
    cells, _, _ = plan_cells(studio.workspace, cfg, request)
    check_grid_cells(studio.settings, len(cells))
    for cell in cells:
        studio.check_generate_limits(cell.config)


def submit_grid(
    studio: Any,
    cfg: GenerateConfig,
    request: GridRequest,
    *,
    user: str = "",
    priority: int = 0,
    keep: bool = True,
) -> Job:
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

