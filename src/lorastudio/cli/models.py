"""`lorastudio models list | info | import | delete | rename`."""

from __future__ import annotations

from pathlib import Path

import typer

from lorastudio.cli import app
from lorastudio.cli.common import padded, print_json, workspace

models_app = typer.Typer(help="The model library in the workspace (studio/models).", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@models_app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List models with family, A1111 short hash and size."""
    from lorastudio.service.models import list_models

    rows = list_models(workspace())
    if json_out:
        print_json({"models": rows})
        return
    for r in rows:
        typer.echo(
            f"{padded(r['name'], 32)} {r['family'] or '?':<5} {r['hash'] or '-':<10} {_size(r['size_bytes']):>8}  "
            f"{r.get('error') or r.get('note', r['path'])}"
        )


@models_app.command("info")
def info_cmd(
    name: str = typer.Argument(..., help="Library name, tiny model or path."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Path, family, hash and size of one model."""
    from lorastudio.service.models import model_info
    from lorastudio.service.names import LENIENT  # the CLI runs as the user: local paths are fine

    info = model_info(workspace(), name, names=LENIENT)
    if json_out:
        print_json(info)
        return
    for key in ("name", "path", "family", "hash", "sha256", "size_bytes", "kind"):
        typer.echo(f"{key:>10}: {info[key]}")


@models_app.command("import")
def import_cmd(
    path: str = typer.Argument(..., help="A .safetensors/.ckpt file or a diffusers folder."),
    name: str = typer.Option(None, "--name", help="Library name (default: file stem)."),
    link: bool = typer.Option(False, "--link", help="Symlink instead of copying."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add a model to the workspace library (pickled .ckpt files are converted to safetensors)."""
    from lorastudio.service.models import import_model

    info = import_model(workspace(), path, name, link)
    if json_out:
        print_json(info)
    else:
        original = f", converted from a .ckpt with hash {info['original_hash']}" if info.get("original_hash") else ""
        source = Path(path).name
        named = info["name"] if info["name"] in (source, Path(path).stem) else f"{source} as {info['name']}"
        typer.echo(f"imported {named} ({info['family']}, hash {info['hash']}{original}) -> {info['path']}")


@models_app.command("delete")
def delete_cmd(
    name: str = typer.Argument(..., help="Library name, as `models list` shows it."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Remove a model file or folder from studio/models and from the library (a link goes, not its target)."""
    from lorastudio.service.models import delete_model

    info = delete_model(workspace(), name)
    if json_out:
        print_json(info)
    else:
        typer.echo(f"deleted model {info['name']}")


@models_app.command("rename")
def rename_cmd(
    name: str = typer.Argument(..., help="The current name, as `models list` shows it."),
    new_name: str = typer.Argument(..., help="The new name (letters of any script, digits, '.', '-', '_')."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Give a model a new name (requests and recipes using the old name stop finding it)."""
    from lorastudio.service.models import rename_model

    info = rename_model(workspace(), name, new_name)
    if json_out:
        print_json(info)
    else:
        typer.echo(f"renamed model {info['renamed_from']} -> {info['name']}")
