"""The queue database's health: check it, back it up, restore it (`lorastudio db ...`).

For SQLite (`studio.db` in the workspace) a check is `PRAGMA quick_check`; a backup uses
SQLite's online backup API, so it is consistent even while a server writes; a restore
refuses a backup that fails the check, refuses while a worker of this workspace is alive,
and keeps the old database aside as `studio.db.bak-<time>` (with its WAL files). For
PostgreSQL, the server keeps its own integrity; backups are `pg_dump`'s job, and these
functions say how.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from lorastudio.errors import LorastudioError
from lorastudio.service.jobs import resolve_queue_url, sqlite_path
from lorastudio.service.workspace import Workspace

__all__ = [
    "DatabaseCheck",
    "backup_database",
    "check_database",
    "ensure_database_healthy",
    "postgres_advice",
    "restore_database",
]

# SQLite keeps recent commits in these files next to the database (WAL mode).
_SIDE_FILES = ("-wal", "-shm")
# Lines of quick_check output kept in a message.
_MAX_PROBLEMS = 3


@dataclass
class DatabaseCheck:
    """The outcome of `check_database`: `ok`, and what is wrong when it is not."""

    backend: str
    location: str
    ok: bool
    problems: list[str]

    def to_dict(self) -> dict[str, object]:
        return {"backend": self.backend, "location": self.location, "ok": self.ok, "problems": self.problems}


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _safe_url(url: str) -> str:
    """A PostgreSQL URL without its password."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, user_part = head.partition("://")
    return f"{scheme}://{user_part.split(':')[0]}@{tail}"


def postgres_advice(url: str) -> str:
    """How to back up and restore a PostgreSQL queue (these tools are PostgreSQL's own)."""
    safe = _safe_url(url)
    return (
        f"the queue is PostgreSQL ({safe}): back it up with `pg_dump -Fc -f studio.dump '{safe}'` and "
        f"restore it with `pg_restore --clean --if-exists -d '{safe}' studio.dump` (stop servers and workers first)."
    )


def _sqlite_file(url: str | None, workspace: Workspace) -> Path:
    url = resolve_queue_url(url)
    if _is_postgres(url):
        raise LorastudioError(postgres_advice(url))
    return sqlite_path(url, workspace)


def _quick_check(path: Path) -> list[str]:
    """The problems `PRAGMA quick_check` finds in the file at `path` (empty: healthy), read-only."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [f"cannot open: {exc}"]
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        return [str(exc)]
    finally:
        conn.close()
    problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
    # A workspace used by the CLI alone holds only the library tables: the queue adds its own.
    foreign = {t for t in tables if not t.startswith(("library_", "job", "sqlite_"))}
    if not problems and foreign and "jobs" not in tables:
        problems.append("no jobs table: this is not a lorastudio queue database")
    return problems


def _check_postgres(url: str) -> DatabaseCheck:
    """PostgreSQL checks its own pages; here: can we connect and read the queue."""
    from lorastudio.service.jobs import open_store

    try:
        with open_store(url) as store:
            store.list_jobs(limit=1)
    except Exception as exc:  # a connection refused, a missing psycopg: what is wrong, in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return DatabaseCheck("postgresql", _safe_url(url), False, [first])
    return DatabaseCheck("postgresql", _safe_url(url), True, [])


def check_database(url: str | None = None, workspace: Workspace | None = None) -> DatabaseCheck:
    """Check the queue database; a missing SQLite file is healthy (it is created on first use)."""
    url = resolve_queue_url(url)
    if _is_postgres(url):
        return _check_postgres(url)
    path = sqlite_path(url, workspace or Workspace.open())
    if not path.exists():
        return DatabaseCheck("sqlite", str(path), True, [])
    problems = _quick_check(path)
    return DatabaseCheck("sqlite", str(path), not problems, problems[:_MAX_PROBLEMS])


def ensure_database_healthy(url: str | None = None, workspace: Workspace | None = None) -> None:
    """At server/worker start: one clear error naming the file and how to restore it, never a traceback.

    SQLite only: PostgreSQL checks its own pages, and connecting to it reports its own errors.
    """
    if _is_postgres(resolve_queue_url(url)):
        return
    result = check_database(url, workspace)
    if result.ok:
        return
    raise LorastudioError(
        f"queue database {result.location} is damaged ({'; '.join(result.problems)}); stop every server and "
        "worker using it and run `lorastudio db restore BACKUP` with a backup from `lorastudio db backup` "
        "(restore keeps the damaged file aside), or move the file away to start with an empty queue."
    )


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def _copy_with_backup_api(source: Path, target: Path) -> None:
    """Copy a live database page by page under SQLite's locking, into a new file at `target`."""
    partial = target.with_name(target.name + ".part")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(str(source))  # not read-only: a WAL database's readers need its -shm file
    try:
        dst = sqlite3.connect(str(partial))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dst.close()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    os.replace(partial, target)


def backup_database(
    url: str | None = None, workspace: Workspace | None = None, target: str | Path | None = None
) -> Path:
    """Write a consistent copy of the SQLite queue (safe while servers run); returns its path.

    Default target: `<workspace>/backups/studio-<UTC time>.db`. A damaged database is refused:
    a backup must be something a restore can use.
    """
    workspace = workspace or Workspace.open()
    source = _sqlite_file(url, workspace)
    if not source.exists():
        raise LorastudioError(f"queue database {source}: does not exist yet; nothing to back up.")
    problems = _quick_check(source)
    if problems:
        raise LorastudioError(
            f"queue database {source} is damaged ({'; '.join(problems[:_MAX_PROBLEMS])}); a backup of it would "
            "not help: restore an earlier backup with `lorastudio db restore BACKUP`."
        )
    target = Path(target) if target else workspace.root / "backups" / f"studio-{_timestamp()}.db"
    if target.is_dir():
        target = target / f"studio-{_timestamp()}.db"
    if target.resolve() == source.resolve():
        raise LorastudioError(f"db backup {target}: that is the database itself; choose another file.")
    target.parent.mkdir(parents=True, exist_ok=True)
    _copy_with_backup_api(source, target)
    return target


def _live_workers(workspace: Workspace) -> list[str]:
    """Lock files of this workspace's workers that a live process still holds."""
    from lorastudio.service.jobs.identity import lock_is_held
    from lorastudio.service.jobs.worker import worker_locks_dir

    folder = worker_locks_dir(workspace)
    return sorted(p.name for p in folder.glob("*.lock") if lock_is_held(p)) if folder.is_dir() else []


def restore_database(
    backup: str | Path, url: str | None = None, workspace: Workspace | None = None
) -> tuple[Path, Path | None]:
    """Replace the SQLite queue by `backup`; returns (database, where the old one was kept or None).

    Refuses a backup that fails `quick_check`, and refuses while a server or worker of this
    workspace runs (it would keep writing to the file being replaced).
    """
    workspace = workspace or Workspace.open()
    database = _sqlite_file(url, workspace)
    backup = Path(backup).expanduser()
    if not backup.is_file():
        raise LorastudioError(f"db restore {backup}: no such file; pass a file written by `lorastudio db backup`.")
    problems = _quick_check(backup)
    if problems:
        raise LorastudioError(
            f"db restore {backup}: the backup is damaged ({'; '.join(problems[:_MAX_PROBLEMS])}); "
            "nothing was changed; choose another backup."
        )
    live = _live_workers(workspace)
    if live:
        raise LorastudioError(
            f"db restore: {len(live)} server/worker process(es) of this workspace are running "
            f"({', '.join(live)} in {workspace.cache / 'workers'}); stop them first."
        )
    kept = None
    if database.exists():
        kept = database.with_name(f"{database.name}.bak-{_timestamp()}")
        for suffix in ("", *_SIDE_FILES):  # the WAL belongs to the old file: never let it meet the new one
            side = Path(f"{database}{suffix}")
            if side.exists():
                os.replace(side, Path(f"{kept}{suffix}"))
    database.parent.mkdir(parents=True, exist_ok=True)
    _copy_with_backup_api(backup, database)
    return database, kept
