"""How many jobs one user may have unfinished, and the errors that ask a client to come back later.

`QuotaExceeded` (429) and `StorageFull` (503) carry the seconds a client should wait; the API's
one exception handler turns them into `Retry-After`. A damaged job database is told apart from
a full or locked one, so the operator gets the command that checks it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

from lorastudio.errors import LorastudioError
from lorastudio.service.jobs import JobStore
from lorastudio.service.jobs.store import QUEUED, RUNNING

__all__ = [
    "DATABASE_DAMAGED_DETAIL",
    "Quota",
    "QuotaExceeded",
    "StorageFull",
    "is_database_damaged",
    "is_storage_full",
    "max_queued_from_env",
]

DEFAULT_MAX_QUEUED_PER_USER = 100
# What Retry-After says when no running job gives a better estimate, and its cap.
DEFAULT_RETRY_AFTER_S = 5
MAX_RETRY_AFTER_S = 300
# What a client is told to wait after the disk or the database was full.
STORAGE_FULL_RETRY_AFTER_S = 60


class QuotaExceeded(LorastudioError):
    """A user has too many unfinished jobs; the API answers 429 with `Retry-After`."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageFull(LorastudioError):
    """The disk or the database is full; the API answers 503 with `Retry-After`, nothing half-written."""

    retry_after_s = STORAGE_FULL_RETRY_AFTER_S


def is_storage_full(exc: BaseException) -> bool:
    """True for "no space left" from the OS or "database or disk is full" from SQLite."""
    import errno
    import sqlite3

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return "full" in str(exc).lower()
    return type(exc).__name__ == "DiskFull"  # psycopg.errors.DiskFull


# SQLite's result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_DAMAGED_DB_CODES = (11, 26)
DATABASE_DAMAGED_DETAIL = (
    "the job database (studio.db) is damaged; the operator checks it with `lorastudio db check` "
    "and restores a backup with `lorastudio db restore BACKUP`."
)


def is_database_damaged(exc: BaseException) -> bool:
    """True for SQLite's "database disk image is malformed" / "file is not a database" (a damaged
    page hit while the server runs), never for a locked or full database."""
    import sqlite3

    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.OperationalError):
        return False
    message = str(exc).lower()
    code = getattr(exc, "sqlite_errorcode", None)
    return code in _DAMAGED_DB_CODES or "malformed" in message or "not a database" in message


def max_queued_from_env() -> int:
    """`LORASTUDIO_MAX_QUEUED_PER_USER`, or the default of 100 (0 = no limit)."""
    value = os.environ.get("LORASTUDIO_MAX_QUEUED_PER_USER", "").strip()
    if not value:
        return DEFAULT_MAX_QUEUED_PER_USER
    try:
        return int(value)
    except ValueError:
        raise LorastudioError(
            f"LORASTUDIO_MAX_QUEUED_PER_USER={value!r}: not a whole number; set e.g. 100 (0 = no limit)."
        ) from None


class Quota:
    """At most `limit` unfinished (queued + running) jobs per user; 0 = no limit.

    `eta` gives the seconds until the running job likely ends (None when unknown): a refused
    client is told to come back then, when a slot may be free.
    """

    def __init__(self, store: JobStore, limit: int, eta: Callable[[], float | None]) -> None:
        self.store = store
        self.limit = limit
        self.eta = eta

    def check(self, user: str = "") -> None:
        """Refuse a new job of `user` past the limit of unfinished jobs (`QuotaExceeded`, a 429)."""
        limit = self.limit
        if limit <= 0:
            return
        active = len(self.store.list_jobs(state=QUEUED, user=user, limit=limit + 1))
        if active < limit:
            active += len(self.store.list_jobs(state=RUNNING, user=user, limit=limit + 1))
        if active >= limit:
            who = f"user {user!r}" if user else "anonymous user"
            raise QuotaExceeded(
                f"{who}: {active} unfinished jobs, the limit is {limit}; "
                "wait for some to finish or cancel queued ones (DELETE /api/v1/jobs/<id>).",
                self.retry_after_s(),
            )

    def retry_after_s(self) -> int:
        """Seconds until the running job likely ends (a slot frees up), within sane bounds."""
        try:
            eta = self.eta()
        except Exception:  # an estimate only; never let it turn a 429 into a 500
            eta = None
        seconds = DEFAULT_RETRY_AFTER_S if eta is None else eta
        return int(min(max(math.ceil(seconds), 1), MAX_RETRY_AFTER_S))
