"""`lorastudio prompt` verbs (A1111 prompt syntax) and `lorastudio pnginfo`."""

from __future__ import annotations

from pathlib import Path

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json

prompt_app = typer.Typer(
    help="Check how a prompt is read: attention weights and prompt-editing schedule (A1111 syntax).",
    no_args_is_help=True,
)
app.add_typer(prompt_app, name="prompt")

JSON = typer.Option(False, "--json", help="Print one JSON object instead of text.")


@prompt_app.command("parse")
def parse_cmd(
    text: str = typer.Argument(..., help="The prompt, e.g. 'a (red:1.2) dress'."),
    as_json: bool = JSON,
) -> None:
    """Show each piece of the prompt with its attention weight, as A1111 reads it."""
    from lorastudio.service.prompts import prompt_weights

    pieces = prompt_weights(text)
    if as_json:
        print_json(pieces)  # the bare list A1111 returns, as scripts expect
        return
    for piece, weight in pieces:
        typer.echo(f"{weight:<8.4g} {piece!r}")


@prompt_app.command("schedule")
def schedule_cmd(
    text: str = typer.Argument(..., help="The prompt, with prompt editing or alternation."),
    steps: int = typer.Option(..., "--steps", min=1, help="Sampling steps."),
    as_json: bool = JSON,
) -> None:
    """Show which text conditions each range of steps (prompt editing and alternation)."""
    from lorastudio.service.prompts import prompt_schedule

    schedule = prompt_schedule(text, steps)
    if as_json:
        print_json(schedule)  # [[end_step, text], ...] exactly as A1111
        return
    start = 1
    for end, piece in schedule:
        span = f"step {start}" if start == end else f"steps {start}-{end}"
        typer.echo(f"{span}: {piece}")
        start = end + 1


@app.command("pnginfo")
def pnginfo_cmd(
    image: Path = typer.Argument(
        ..., help="A PNG, JPEG or WebP made by A1111, ComfyUI (A1111 text) or lorastudio."
    ),
    as_json: bool = JSON,
) -> None:
    """Print the generation parameters stored in an image (A1111's PNG Info)."""
    from lorastudio.errors import LorastudioError
    from lorastudio.service.png_info import infotext_parameters, png_info

    info = png_info(image)
    if not info["info"]:
        raise LorastudioError(
            f"{image}: holds no generation parameters; pass an image saved with A1111-style PNG info."
        )
    if as_json:
        print_json(info["parameters"])  # what /sdapi/v1/png-info answers as "parameters"
        return
    params = infotext_parameters(info["info"], fill_defaults=False)
    typer.echo(f"Prompt: {params.pop('Prompt')}")
    negative = params.pop("Negative prompt")
    if negative:
        typer.echo(f"Negative prompt: {negative}")
    for key, value in params.items():
        typer.echo(f"{key}: {value}")
