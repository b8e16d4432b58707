"""`lorastudio portrait` verbs: train a person's LoRA from their photos (and, from helper
modules, make portraits from templates).

The group `portrait_app` is shared: other modules add their commands to it.
"""

from __future__ import annotations

import typer

from lorastudio.cli import app

portrait_app = typer.Typer(
    help="Personal portraits (EasyPhoto's workflow, offline): train a person, make portraits from templates.",
    no_args_is_help=True,
)
app.add_typer(portrait_app, name="portrait")
