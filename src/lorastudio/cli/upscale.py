"""`lorastudio upscale IMAGE... --upscaler NAME --scale 2`: Extras upscaling as a standalone step."""

from __future__ import annotations

from pathlib import Path

import typer

from lorastudio.cli import app
from lorastudio.cli.common import padded, print_json, workspace


def _tile_bar(source: Path):
    """A tqdm bar with ETA over one picture's tiles (stderr), created on the first tile."""
    from tqdm import tqdm

    state: dict = {}

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=source.name, unit="tile", leave=False, dynamic_ncols=True)
        bar.total = max(total, done)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


@app.command("upscale")
def upscale_cmd(
    images: list[Path] = typer.Argument(None, help="Pictures to upscale (their recipes are kept)."),
    upscaler: str = typer.Option(
        "Lanczos", "--upscaler", "-u", help="A1111 name (Lanczos, Nearest, R-ESRGAN 4x+, 4x-UltraSharp) or a model file."
    ),
    scale: float = typer.Option(2.0, "--scale", "-s", min=0.01, max=8.0, help="Upscale factor."),
    out: Path = typer.Option(None, "--out", help="Output folder (default studio/outputs/<date>)."),
    tile: int = typer.Option(192, "--tile", min=0, help="Tile size for model upscalers in pixels (0 = no tiling)."),
    tile_overlap: int = typer.Option(8, "--tile-overlap", min=0, help="Overlap between tiles in pixels."),
    list_only: bool = typer.Option(False, "--list", help="List the upscalers (studio/models/upscalers) and exit."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Upscale pictures with a filter or a model (ESRGAN family, SwinIR, SCUNet); each PNG keeps its recipe plus
    `Postprocess upscale by` / `Postprocess upscaler`."""
    from lorastudio.service.extras import upscale_files
    from lorastudio.service.settings import StudioSettings
    from lorastudio.service.upscalers import list_upscalers

    ws = workspace()
    if list_only:
        rows = [row for row in list_upscalers(ws) if row["kind"] != "latent"]
        if json_out:
            print_json({"upscalers": rows})
            return
        for row in rows:
            scale_text = f"{row['scale']:g}x" if row["scale"] else "?"
            typer.echo(f"{padded(row['name'], 32)} {row['kind']:<9} {scale_text:<4} {row['error'] or row['model_path'] or ''}")
        return
    if not images:
        raise typer.BadParameter("give at least one picture (or --list).", param_hint="IMAGE")
    limits = StudioSettings(max_output_pixels=0)
    saved = upscale_files(ws, images, limits, upscaler, scale, out, tile, tile_overlap, progress_for=_tile_bar)
    if json_out:
        print_json({"images": [str(path) for path in saved]})
        return
    for path in saved:
        typer.echo(str(path))
