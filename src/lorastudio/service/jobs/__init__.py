"""The persistent job queue and its workers.

`open_store(url, workspace)` picks the backend from one setting, `queue.url`:
- `sqlite:///studio.db` (default): embedded, no server; relative paths are inside the
  workspace, `sqlite:////abs/path.db` is absolute;
- `postgresql://user:pass@host:port/db`: shared by several API processes and GPU boxes.
`LORASTUDIO_QUEUE_URL` sets it when no URL is passed.

The queue knows no application kind: a worker runs what its `HandlerRegistry` holds
(`registry.py`), filled by whoever starts it (`service.job_kinds.install`); a handler sees
its job through a `JobContext` (`context.py`), never the worker itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from lorastudio.errors import LorastudioError
from lorastudio.service.jobs.registry import (
    HandlerRegistry,
    default_registry,
    register_handler,
    registered_kinds,
)
from lorastudio.service.jobs.store import (
    ACTIVE_STATES,
    DEFAULT_FAIR_WINDOW_S,
    FINISHED_STATES,
    STATES,
    Event,
    Job,
    JobCancelled,
    JobInterrupted,
    JobStopped,
    JobStore,
    LeaseLost,
)
from lorastudio.service.workspace import Workspace

__all__ = [
    "ACTIVE_STATES",
    "DEFAULT_QUEUE_URL",
    "FINISHED_STATES",
    "HandlerRegistry",
    "STATES",
    "Event",
    "Job",
    "JobCancelled",
    "JobInterrupted",
    "JobStopped",
    "JobStore",
    "LeaseLost",
    "default_registry",
    "open_store",
    "register_handler",
    "registered_kinds",
    "resolve_queue_url",
    "sqlite_path",
]

DEFAULT_QUEUE_URL = "sqlite:///studio.db"
QUEUE_URL_ENV = "LORASTUDIO_QUEUE_URL"


def resolve_queue_url(url: str | None) -> str:
    """The URL to use: the argument, else `LORASTUDIO_QUEUE_URL`, else the workspace's studio.db."""
    return url or os.environ.get(QUEUE_URL_ENV) or DEFAULT_QUEUE_URL


def sqlite_path(url: str, workspace: Workspace) -> Path:
    """The database file a `sqlite://` queue URL names (relative paths are inside the workspace)."""
    rest = url[len("sqlite://") :]
    if not rest.startswith("/") or rest == "/":
        raise LorastudioError(
            f"queue.url {url!r}: a SQLite URL looks like sqlite:///studio.db (in the workspace) "
            "or sqlite:////absolute/path.db."
        )
    path = Path(rest[1:])
    return path if path.is_absolute() else workspace.root / path


def open_store(
    url: str | None = None,
    workspace: Workspace | None = None,
    *,
    lease_s: float | None = None,
    fair_window_s: float = DEFAULT_FAIR_WINDOW_S,
) -> JobStore:
    """The job store named by `url` (see module docs); `lease_s` is how long a claim lasts without heartbeats."""
    url = resolve_queue_url(url)
    options = {"fair_window_s": fair_window_s}
    if lease_s is not None:
        options["lease_s"] = lease_s
    if url.startswith("sqlite://"):
        from lorastudio.service.jobs.sqlite_store import SqliteJobStore

        return SqliteJobStore(sqlite_path(url, workspace or Workspace.open()), **options)
    if url.startswith(("postgresql://", "postgres://")):
        from lorastudio.service.jobs.postgres_store import PostgresJobStore

        return PostgresJobStore(url, **options)
    raise LorastudioError(
        f"queue.url {url.split('@')[-1]!r}: unknown backend; use sqlite:///studio.db or postgresql://user@host/db."
    )
