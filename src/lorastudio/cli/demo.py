"""`lorastudio demo`: the main job on the built-in tiny model."""

from __future__ import annotations

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace


@app.command("demo")
def demo_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object with every path."),
    train_steps: int = typer.Option(60, "--train-steps", help="LoRA training steps."),
) -> None:
    """Generate with several samplers, train a LoRA on red pictures, compare before/after."""
    from lorastudio.service.demo import run_demo

    ws = workspace()
    summary = run_demo(ws, say=(lambda s: None) if json_out else typer.echo, train_steps=train_steps)
    if json_out:
        print_json(summary)
        return
    typer.echo(f"\nEverything is in {summary['workspace']}; images in {summary['outputs']}.")
    typer.echo("The tiny model makes no art: it exists to show every step working on a CPU.")
