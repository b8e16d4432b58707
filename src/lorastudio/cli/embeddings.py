"""`lorastudio embeddings list | import | delete | rename`: textual-inversion embeddings in studio/embeddings."""

from __future__ import annotations

from pathlib import Path

import typer

from lorastudio.cli import app
from lorastudio.cli.common import padded, print_json, workspace

embeddings_app = typer.Typer(
    help="Textual-inversion embeddings in the workspace (the prompt word: the file name, a picture's stored name).",
    no_args_is_help=True,
)
app.add_typer(embeddings_app, name="embeddings")


@embeddings_app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Embeddings with their vector count and width; an unreadable file shows its error."""
    from lorastudio.service.embeddings import list_embeddings

    rows = list_embeddings(workspace())
    if json_out:
        print_json({"embeddings": rows})
        return
    if not rows:
        typer.echo(
            "no embeddings yet: `lorastudio embeddings import FILE` (.safetensors, .pt, .bin or an A1111 picture)."
        )
    for row in rows:
        detail = row["error"] or f"vectors={row['vectors']} width={row['shape']}"
        typer.echo(f"{padded(row['name'], 24)} {padded(row['file'], 32)} {detail}")


@embeddings_app.command("import")
def import_cmd(
    path: str = typer.Argument(..., help="A .safetensors, .pt, .bin or A1111 picture (.png, .webp, .jxl, .avif) embedding file."),
    name: str = typer.Option(None, "--name", help="Name, the word prompts use (default: a picture's stored name, else the file stem)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add an embedding from civitai or A1111; .pt/.bin (read weights-only) and pictures become .safetensors."""
    from lorastudio.service.embeddings import import_embedding

    info = import_embedding(workspace(), Path(path), name)
    if json_out:
        print_json(info)
        return
    converted = f", converted from .{info['converted_from']}" if info["converted_from"] else ""
    typer.echo(
        f"imported embedding {info['name']} ({info['vectors'][0]} vectors x {'+'.join(map(str, info['width']))}"
        f"{converted}) -> {info['path']}; use the word {info['name']!r} in a prompt"
    )


@embeddings_app.command("delete")
def delete_cmd(
    name: str = typer.Argument(..., help="Embedding name (its prompt word), as `embeddings list` shows it."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Remove an embedding file from studio/embeddings."""
    from lorastudio.service.embeddings import delete_embedding

    info = delete_embedding(workspace(), name)
    if json_out:
        print_json(info)
    else:
        typer.echo(f"deleted embedding {info['name']}")


@embeddings_app.command("rename")
def rename_cmd(
    name: str = typer.Argument(..., help="The current name, as `embeddings list` shows it."),
    new_name: str = typer.Argument(..., help="The new name (letters of any script, digits, '.', '-', '_')."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Give an embedding a new name: the word prompts use for it changes."""
    from lorastudio.service.embeddings import rename_embedding

    info = rename_embedding(workspace(), name, new_name)
    if json_out:
        print_json(info)
    else:
        typer.echo(f"renamed embedding {info['renamed_from']} -> {info['name']}")
