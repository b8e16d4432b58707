"""`lorastudio outputs list`: generated images, newest first (what `GET /api/v1/outputs` answers)."""

from __future__ import annotations

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace

outputs_app = typer.Typer(help="Generated images in the workspace (studio/outputs).", no_args_is_help=True)
app.add_typer(outputs_app, name="outputs")


@outputs_app.command("list")
def list_cmd(
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="How many, newest first."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (the API's rows)."),
) -> None:
    """Images with their seed, model and prompt; the id is folder/file under outputs/."""
    from lorastudio.service.outputs import list_outputs

    rows = list_outputs(workspace(), limit)
    if json_out:
        print_json({"outputs": rows})
        return
    if not rows:
        typer.echo("no outputs yet: `lorastudio generate` writes them to studio/outputs.")
    for row in rows:
        prompt = (row["prompt"] or "").replace("\n", " ")
        prompt = prompt if len(prompt) <= 60 else prompt[:57] + "..."
        typer.echo(f"{row['id']:<36} seed={row['seed']:<12} {row['model'] or '-':<16} {prompt}")
