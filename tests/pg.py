"""A throwaway PostgreSQL server on 127.0.0.1 for tests and benchmarks.

Uses Debian's `postgresql` package (`/usr/lib/postgresql/<ver>/bin`). `initdb`/`pg_ctl`
refuse to run as root, so as root they run as the `postgres` user on a folder it owns.
Durability is off by default (fsync, synchronous_commit): the data is thrown away anyway.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def find_pg_bin() -> str | None:
    """The newest installed PostgreSQL bin folder, or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    return os.path.dirname(candidates[-1]) if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {proc.stderr.strip() or proc.stdout.strip()}")


class PostgresServer:
    def __init__(self, port: int, user: str = "postgres") -> None:
        self.port = port
        self.user = user

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextmanager
def throwaway_postgres(durable: bool = False) -> Iterator[PostgresServer]:
    """Start a server in a temp folder; stop it and delete the folder afterwards. Raises RuntimeError if impossible.

    `durable=True` keeps PostgreSQL's default fsync/commit settings (for benchmarks).
    """
    bindir = find_pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise RuntimeError('psycopg is not installed (pip install "psycopg[binary]")') from None
    root = tempfile.mkdtemp(prefix="lorastudio-pg-")
    data = os.path.join(root, "data")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    started = False
    try:
        _run([f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        _run([f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", os.path.join(root, "log"), "-w", "start"])
        started = True
        yield PostgresServer(port)
    finally:
        if started:
            try:
                _run([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"])
            except RuntimeError:
                pass
        shutil.rmtree(root, ignore_errors=True)


def start_or_explain(request) -> PostgresServer:
    """For a session fixture: the server, or fail (under CI) / skip (locally) with the reason."""
    import pytest

    context = throwaway_postgres()
    try:
        server = context.__enter__()
    except Exception as exc:
        reason = f"PostgreSQL tests need a throwaway server and could not start one: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set, so this is an error, not a skip)")
        pytest.skip(reason)
    request.addfinalizer(lambda: context.__exit__(None, None, None))
    return server


try:  # fixtures of the job-queue test files (conftest registers this module as a plugin)
    import pytest

    @pytest.fixture(scope="session")
    def pg_server(request):
        return start_or_explain(request)

    @pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
    def queue_url(request, workspace):
        """The same test against the workspace's SQLite db and a fresh PostgreSQL database."""
        if request.param == "sqlite":
            return f"sqlite:///{workspace.root / 'studio.db'}"
        return request.getfixturevalue("pg_server").create_database()

except ImportError:  # the benchmark imports this module without pytest
    pass
