"""`lorastudio control list | detect | modules`: ControlNets in studio/controlnet and their preprocessors."""

from __future__ import annotations

from pathlib import Path

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace

control_app = typer.Typer(
    help="ControlNet: the models in studio/controlnet and the preprocessors that make control maps.",
    no_args_is_help=True,
)
app.add_typer(control_app, name="control")


@control_app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """ControlNets with their A1111 title `name \\[hash8]` (what `--control model=` and A1111 clients send)."""
    from lorastudio.service.controlnets import list_controlnets

    rows = list_controlnets(workspace())
    if json_out:
        print_json({"controlnets": rows})
        return
    if not rows:
        typer.echo("no ControlNets yet: copy .safetensors/.pth files (or diffusers folders) into studio/controlnet.")
    for row in rows:
        typer.echo(f"{row['title']:<48} {row['error'] or row['file']}")


@control_app.command("detect")
def detect_cmd(
    image: Path = typer.Argument(..., help="The image to make a control map of (PNG, JPEG or WebP)."),
    module: str = typer.Option(..., "--module", "-m", help="Preprocessor name or alias (`lorastudio control modules`)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="PNG to write (default: <image stem>-<module>.png here)."),
    resolution: int = typer.Option(512, "--resolution", help="Processing resolution: the map's short side (64-2048)."),
    threshold_a: float | None = typer.Option(None, "--threshold-a", help="The preprocessor's first slider (default: its own)."),
    threshold_b: float | None = typer.Option(None, "--threshold-b", help="The preprocessor's second slider (default: its own)."),
    seed: int = typer.Option(0, "--seed", help="Seed of random preprocessors (shuffle)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Write the control map a preprocessor makes of IMAGE (weights from studio/models/annotators)."""
    from lorastudio.service.annotate import detect_file

    path = detect_file(workspace(), module, image, out, resolution, threshold_a, threshold_b, seed)
    if json_out:
        print_json({"map": str(path), "module": module, "image": str(image)})
        return
    typer.echo(str(path))


@control_app.command("modules")
def modules_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Preprocessors with their sliders and whether their weight files are in studio/models/annotators."""
    from lorastudio.service.annotate import list_modules

    rows = list_modules(workspace())
    if json_out:
        print_json({"modules": rows})
        return
    for row in rows:
        sliders = ", ".join(f"{s['name']}={s['value']:g}" for s in row["sliders"] if s)
        if row["ready"]:
            state = "ready"
        elif row["missing_weights"]:
            state = "needs " + ", ".join(row["missing_weights"])
        else:
            state = "needs setup: lorastudio control detect --module '" + row["name"] + "' says how"
        typer.echo(f"{row['name']:<48} {state:<40} {sliders}")
