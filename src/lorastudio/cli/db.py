"""`lorastudio db check|backup|restore`: the queue database's health and its backups."""

from __future__ import annotations

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace

db_app = typer.Typer(help="Check, back up and restore the queue database (studio.db).", no_args_is_help=True)
app.add_typer(db_app, name="db")

QUEUE_HELP = "Queue URL (sqlite:///studio.db or postgresql://...); default $LORASTUDIO_QUEUE_URL or the workspace db."


@db_app.command("check")
def check(
    queue: str = typer.Option(None, "--queue", help=QUEUE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """SQLite: run quick_check on studio.db; PostgreSQL: connect and read. Exit code 1 when not ok."""
    from lorastudio.service.database import check_database

    result = check_database(queue, workspace())
    if as_json:
        print_json(result.to_dict())
    elif result.ok:
        typer.echo(f"ok: {result.location}")
    else:
        typer.echo(f"not ok: {result.location}: {'; '.join(result.problems)}")
        if result.backend == "sqlite":
            typer.echo("restore a backup with `lorastudio db restore BACKUP` (servers and workers stopped)", err=True)
    if not result.ok:
        raise typer.Exit(1)


@db_app.command("backup")
def backup(
    target: str = typer.Argument(None, help="File (or folder) to write; default <workspace>/backups/studio-<time>.db."),
    queue: str = typer.Option(None, "--queue", help=QUEUE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Write a consistent copy of the queue database (safe while servers and workers run)."""
    from lorastudio.service.database import backup_database

    written = backup_database(queue, workspace(), target)
    if as_json:
        print_json({"backup": str(written)})
    else:
        typer.echo(str(written))


@db_app.command("restore")
def restore(
    backup_file: str = typer.Argument(..., metavar="BACKUP", help="A file written by `lorastudio db backup`."),
    queue: str = typer.Option(None, "--queue", help=QUEUE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Replace the queue database by a backup; the old file is kept as studio.db.bak-<time>."""
    from lorastudio.service.database import restore_database

    database, kept = restore_database(backup_file, queue, workspace())
    if as_json:
        print_json({"database": str(database), "backup": str(backup_file), "kept": str(kept) if kept else None})
        return
    typer.echo(f"restored {database} from {backup_file}" + (f"; the old database is kept as {kept}" if kept else ""))
