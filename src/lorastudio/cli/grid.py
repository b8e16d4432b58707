"""`lorastudio grid`: an X/Y/Z comparison grid (which checkpoint, which LoRA weight, ...)."""

from __future__ import annotations

from pathlib import Path

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace
from lorastudio.cli.options import config_options
from lorastudio.generate.config import GenerateConfig

# One grid renders one image per cell: the batch fields have no meaning there.
GRID_EXCLUDED = ("batch_size", "count", "controlnet")

_AXIS_HELP = (
    "NAME=VALUES, e.g. 'lora_weight=0.4,0.7,1.0', 'checkpoint=step-500,step-1000,final', "
    "'cfg=4-10 (+2)', 'seed=1-4', 'sampler=Euler a,DPM++ 2M Karras', 'prompt_sr=red,blue', "
    "'prompt_order=a cat,a dog' (every order of the terms). "
    "Axes: lora_weight, checkpoint, seed, subseed, subseed_strength, steps, cfg, prompt_sr, prompt_order, "
    "sampler, eta, schedule, model, vae, styles, width, height, size, clip_skip, hires_steps, hires_strength, "
    "hires_upscaler, hires_sampler, hires_schedule, initial_noise_multiplier, extra_noise (A1111 labels work too)."
)


@app.command("grid")
@config_options(GenerateConfig, exclude=GRID_EXCLUDED)
def grid_cmd(
    x: str = typer.Option(None, "--x", help=f"Columns: {_AXIS_HELP}"),
    y: str = typer.Option(None, "--y", help="Rows (same syntax as --x)."),
    z: str = typer.Option(None, "--z", help="One grid per value, side by side (same syntax)."),
    lora: str = typer.Option(
        None, "--lora", help="LoRA the lora_weight axis acts on (name in studio/loras)."
    ),
    run: str = typer.Option(None, "--run", help="Training run whose checkpoints the checkpoint axis walks."),
    margin: int = typer.Option(0, "--margin", help="Pixels between cells."),
    legend: bool = typer.Option(True, "--legend/--no-legend", help="Draw the axis labels."),
    fixed_seeds: bool = typer.Option(
        True, "--fixed-seeds/--random-seeds", help="Seed -1: one seed for every cell, or a new one per cell."
    ),
    sub_images: bool = typer.Option(
        False, "--include-sub-images", help="List every cell after the grid (A1111 Include Sub Images)."
    ),
    sub_grids: bool = typer.Option(
        False,
        "--include-sub-grids",
        help="Also save each Z value's X/Y grid (A1111 Include Sub Grids; with one Z value A1111 saves the grid alone).",
    ),
    vary_seeds: str = typer.Option(
        "", "--vary-seeds", help="Axes whose cells each take the next seed, e.g. 'x' or 'xy' (A1111 Vary seeds)."
    ),
    out: Path = typer.Option(None, "--out", help="Output folder (default studio/outputs/<date>)."),
    json_out: bool = typer.Option(
        False, "--json", help="Print one JSON object with the grid, cells and axes."
    ),
    fields: dict | None = None,
) -> None:
    """Render a labelled comparison grid; every cell is saved with its own infotext and recipe."""
    from lorastudio.cli.generate import progress_bar
    from lorastudio.config import load_config
    from lorastudio.errors import LorastudioError
    from lorastudio.service.grid import parse_axis_option, run_grid
    from lorastudio.service.grid_request import GridRequest
    from lorastudio.service.names import LENIENT  # the CLI runs as the user: local paths are fine

    if not (x or y or z):
        raise LorastudioError("grid: give at least one axis, e.g. --x 'lora_weight=0.4,0.7,1.0'.")
    axes = {}
    for letter, option in (("x", x), ("y", y), ("z", z)):
        if option:
            axis, values = parse_axis_option(option)
            axes[letter] = {"axis": axis.name, "values": values}
    if set(vary_seeds.lower()) - set("xyz"):
        raise LorastudioError(f"grid --vary-seeds {vary_seeds!r}: give the axes as letters, e.g. 'x' or 'xz'.")
    base = load_config(GenerateConfig, None, fields or {})
    request = GridRequest.model_validate(
        {
            **axes,
            "lora": lora,
            "run": run,
            "margin": margin,
            "draw_legend": legend,
            "fixed_seeds": fixed_seeds,
            "include_sub_images": sub_images,
            "include_sub_grids": sub_grids,
            **{f"vary_seeds_{a}": a in vary_seeds.lower() for a in "xyz"},
        }
    )
    bar, update = progress_bar("grid")
    try:
        result = run_grid(workspace(), base, request, progress=update, out_dir=out, names=LENIENT)
    finally:
        bar.close()
    if json_out:
        print_json(result.as_json())
        return
    typer.echo(f"grid: {result.grid}")
    for path in result.sub_grids:
        typer.echo(f"  sub-grid: {path}")
    if result.lone_sub_grid_top is not None:
        typer.echo("  sub-grid: not saved (one Z value: the grid without its Z title, as A1111 saves it)")
    if sub_images:
        for cell in result.cells:
            if cell.path:
                typer.echo(f"  cell: {cell.path}")
    typer.echo(f"{sum(1 for c in result.cells if c.path)} cells in {result.grid.parent}")
