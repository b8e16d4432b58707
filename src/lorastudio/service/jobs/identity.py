"""Who a worker is, and how a restarted worker tells a dead earlier run from a live sibling.

Two processes may be started with the same worker id (two `lorastudio serve` on one
workspace, two `worker --id box:cpu`). Each process therefore claims jobs under its own
*stored id*, `<given id>#<pid>-<random>`, and holds an exclusive `flock` on
`cache/workers/<stored id>.lock` for its whole life. The kernel drops that lock when the
process ends, however it ends (SIGKILL included), so at start a worker can prove that an
earlier incarnation of its id is dead: its lock file exists and nobody holds it. A lock
that is held, or a lock file that is not there (a worker on another machine), proves
nothing: those jobs are left to the lease, which expires when their worker stops
heartbeating.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from urllib.parse import quote

try:
    import fcntl
except ImportError:  # Windows: no flock; restarted workers then rely on lease expiry alone
    fcntl = None

__all__ = ["WorkerLock", "base_worker_id", "lock_is_held", "lock_path", "owner_is_dead", "unique_worker_id"]

SEPARATOR = "#"


def unique_worker_id(base_id: str) -> str:
    """The id this process stores on the jobs it claims: the given id plus pid and a random part."""
    return f"{base_id}{SEPARATOR}{os.getpid()}-{secrets.token_hex(4)}"


def base_worker_id(stored_id: str) -> str:
    """The id a worker was given (`box:cuda:0`) from the id it stored (`box:cuda:0#123-ab12cd34`)."""
    base, sep, _ = stored_id.rpartition(SEPARATOR)
    return base if sep else stored_id


def lock_path(folder: Path, stored_id: str) -> Path:
    """One file per stored id; the id is quoted so ':' and '/' stay inside one file name.

    A very long id (a file name has at most 255 bytes) is named by its SHA-256 instead.
    """
    name = quote(stored_id, safe="")
    if len(name) > 200:
        name = hashlib.sha256(stored_id.encode("utf-8")).hexdigest()
    return folder / f"{name}.lock"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class WorkerLock:
    """An exclusive lock on the worker's lock file, held from `acquire()` to `release()` or exit."""

    def __init__(self, folder: Path, stored_id: str) -> None:
        self.path = lock_path(folder, stored_id)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None or fcntl is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _try_lock(fd):  # cannot happen for a fresh random id, but never share a lock
            os.close(fd)
            raise RuntimeError(f"worker lock {self.path} is held by another process")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the file first, then unlock: a prober sees either a held lock or no file."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def owner_is_dead(folder: Path, stored_id: str) -> bool:
    """True only when `stored_id`'s lock file exists and no process holds its lock.

    The dead owner's lock file is removed here, while locked, so it is proved dead once.
    """
    if fcntl is None:
        return False
    path = lock_path(folder, stored_id)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        if not _try_lock(fd):
            return False
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def lock_is_held(path: Path) -> bool:
    """Whether a live process holds the lock file at `path` (it is left as it is)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        if not _try_lock(fd):
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
