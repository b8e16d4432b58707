"""`lorastudio control list | detect | modules`: ControlNets in studio/controlnet and their preprocessors."""

from __future__ import annotations

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
    """ControlNets with their A1111 title `name [hash8]` (what `--control model=` and A1111 clients send)."""
    from lorastudio.service.controlnets import list_controlnets

    rows = list_controlnets(workspace())
    if json_out:
        print_json({"controlnets": rows})
        return
    if not rows:
        typer.echo("no ControlNets yet: copy .safetensors/.pth files (or diffusers folders) into studio/controlnet.")
    for row in rows:
        typer.echo(f"{row['title']:<48} {row['error'] or row['file']}")
