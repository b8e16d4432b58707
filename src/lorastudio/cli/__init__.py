"""The `lorastudio` command: a thin Typer front over the service layer.

Each verb lives in its own module here and only translates arguments, calls a service
function and prints the result. Nothing heavy is imported at module level, so
`lorastudio --help` stays fast; commands import what they need when they run.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from lorastudio.errors import LorastudioError


class _ErrorsAsOneLine(TyperGroup):
    """Any LorastudioError from any verb: one line on stderr, exit code 2, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LorastudioError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_ErrorsAsOneLine,
    name="lorastudio",
    help="Prepare data sets, train LoRAs and generate images with Stable Diffusion, offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


_registered = False


def _register() -> None:
    """Each module adds its commands to `app`; they are cheap to import (no torch)."""
    global _registered
    if _registered:
        return
    _registered = True
    from lorastudio.cli import (  # noqa: F401
        common,  # noqa: F401
        control,
        dataset,
        db,
        demo,
        embeddings,
        face,
        generate,
        grid,
        jobs,
        lora,
        models,
        outputs,
        portrait,
        prompt,
        serve,
        train,
        upscale,
    )


def main() -> None:
    """Entry point: one clear line and a non-zero exit for anything the user can fix."""
    _register()
    try:
        app()
    except LorastudioError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
