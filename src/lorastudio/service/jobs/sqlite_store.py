"""The embedded job queue: SQLite in WAL mode, in the workspace's `studio.db`.

Writes take the database lock up front (`BEGIN IMMEDIATE`), so a claim is one atomic
step across processes. Idle workers notice new jobs by polling `PRAGMA data_version`
(it changes when another connection commits; reading it costs microseconds) with a
short adaptive interval, 2 ms right after activity growing to 20 ms when idle.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.service.jobs.store import (
    CANCELLED,
    DEFAULT_FAIR_WINDOW_S,
    DEFAULT_LEASE_S,
    DEFAULT_MAX_ATTEMPTS,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Event,
    Job,
    JobStore,
    LeaseLost,
    StopRequests,
    check_finish_state,
    check_new_job,
    check_state_filter,
    dump_json,
    job_not_found,
)

__all__ = ["SqliteJobStore"]

# The database clock as Unix seconds (julianday has ~10 microsecond resolution here).
NOW = "((julianday('now') - 2440587.5) * 86400.0)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'queued',
    priority INTEGER NOT NULL DEFAULT 0,
    user_name TEXT NOT NULL DEFAULT '',
    affinity TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    progress REAL NOT NULL DEFAULT 0,
    worker TEXT,
    lease_until REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    skip_requests INTEGER NOT NULL DEFAULT 0,
    event_seq INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state_order ON jobs (state, priority DESC, seq);
CREATE INDEX IF NOT EXISTS jobs_started ON jobs (started_at);
CREATE INDEX IF NOT EXISTS jobs_state_lease ON jobs (state, lease_until);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""

COLUMNS = (
    "id, kind, payload, state, priority, user_name, affinity, attempt, max_attempts, progress, worker,"
    " lease_until, cancel_requested, created_at, started_at, finished_at, error, result"
)

MIN_POLL_S = 0.002
MAX_POLL_S = 0.02


def _row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        payload=json.loads(row["payload"]),
        state=row["state"],
        priority=row["priority"],
        user=row["user_name"],
        affinity=row["affinity"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        progress=row["progress"],
        worker=row["worker"],
        lease_until=row["lease_until"],
        cancel_requested=bool(row["cancel_requested"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        result=json.loads(row["result"]) if row["result"] is not None else None,
    )


def _placeholders(values: list[Any]) -> str:
    return ", ".join("?" for _ in values)


class SqliteJobStore(JobStore):
    backend = "sqlite"

    def __init__(
        self,
        path: str | Path,
        lease_s: float = DEFAULT_LEASE_S,
        fair_window_s: float = DEFAULT_FAIR_WINDOW_S,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        super().__init__(lease_s=lease_s, fair_window_s=fair_window_s)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the worker thread and its heartbeat thread, behind a lock.
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        self._conn.row_factory = sqlite3.Row
        try:
            self._prepare(busy_timeout_ms)
        except sqlite3.OperationalError:  # locked, read-only, disk full: not damage
            self._conn.close()
            raise
        except sqlite3.DatabaseError as exc:  # "file is not a database", "disk image is malformed"
            self._conn.close()
            raise LorastudioError(
                f"queue database {self.path} is damaged ({exc}); check it with `lorastudio db check` and "
                "restore a backup with `lorastudio db restore BACKUP`."
            ) from None
        # Seen from the start: a job queued between opening and the first wait is not missed.
        self._seen_versions = {"work": self._data_version()}
        self._poll_s = MIN_POLL_S

    # --- plumbing -----------------------------------------------------------------------

    def _prepare(self, busy_timeout_ms: int) -> None:
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: commits survive a process crash; only a power cut may lose the last ones.
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._write() as cur:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
            columns = {row[1] for row in cur.execute("PRAGMA table_info(jobs)")}
            if "skip_requests" not in columns:  # a studio.db from before /skip
                cur.execute("ALTER TABLE jobs ADD COLUMN skip_requests INTEGER NOT NULL DEFAULT 0")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction holding the database lock from its first statement."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def _data_version(self) -> int:
        with self._lock:
            return self._conn.execute("PRAGMA data_version").fetchone()[0]

    @staticmethod
    def _add_event(cur: sqlite3.Cursor, job_id: str, seq: int, event_type: str, data: dict[str, Any]) -> None:
        cur.execute(
            f"INSERT INTO job_events (job_id, seq, ts, type, data) VALUES (?, ?, {NOW}, ?, ?)",
            (job_id, seq, event_type, dump_json(data, "event data")),
        )

    def now(self) -> float:
        return self._read(f"SELECT {NOW}")[0][0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- submitting and reading -----------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        priority: int = 0,
        user: str = "",
        affinity: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> Job:
        check_new_job(kind, priority, max_attempts)
        job_id = str(uuid.uuid4())
        payload_text = dump_json(payload, "payload")
        with self._write() as cur:
            row = cur.execute(
                f"INSERT INTO jobs (id, kind, payload, priority, user_name, affinity, max_attempts, event_seq,"
                f" created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, {NOW}) RETURNING {COLUMNS}",
                (job_id, kind, payload_text, priority, user or "", affinity, max_attempts),
            ).fetchone()
            self._add_event(cur, job_id, 1, QUEUED, {})
        return _row_to_job(row)

    def get(self, job_id: str) -> Job:
        rows = self._read(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise job_not_found(job_id)
        return _row_to_job(rows[0])

    def list_jobs(self, state: str | None = None, user: str | None = None, limit: int = 100) -> list[Job]:
        check_state_filter(state)
        where, params = [], []
        if state:
            where.append("state = ?")
            params.append(state)
        if user is not None:
            where.append("user_name = ?")
            params.append(user)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(f"SELECT {COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ?", [*params, limit])
        return [_row_to_job(r) for r in rows]

    def events(self, job_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        rows = self._read(
            "SELECT job_id, seq, ts, type, data FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, limit),
        )
        return [Event(r["job_id"], r["seq"], r["ts"], r["type"], json.loads(r["data"])) for r in rows]

    def cancel(self, job_id: str) -> Job:
        with self._write() as cur:
            row = cur.execute(
                f"UPDATE jobs SET state = '{CANCELLED}', finished_at = {NOW}, event_seq = event_seq + 1"
                f" WHERE id = ? AND state = '{QUEUED}' RETURNING event_seq",
                (job_id,),
            ).fetchone()
            if row is not None:
                self._add_event(cur, job_id, row[0], CANCELLED, {"reason": "cancelled while queued"})
            else:
                row = cur.execute(
                    "UPDATE jobs SET cancel_requested = 1, event_seq = event_seq + 1"
                    f" WHERE id = ? AND state = '{RUNNING}' AND cancel_requested = 0 RETURNING event_seq",
                    (job_id,),
                ).fetchone()
                if row is not None:
                    self._add_event(cur, job_id, row[0], "cancel_requested", {})
        return self.get(job_id)

    def skip(self, job_id: str) -> bool:
        with self._write() as cur:
            row = cur.execute(
                "UPDATE jobs SET skip_requests = skip_requests + 1, event_seq = event_seq + 1"
                f" WHERE id = ? AND state = '{RUNNING}' RETURNING event_seq, skip_requests",
                (job_id,),
            ).fetchone()
            if row is not None:
                self._add_event(cur, job_id, row[0], "skip_requested", {"skips": row[1]})
        return row is not None

    # --- the worker side --------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        *,
        kinds: Iterable[str] | None = None,
        loaded: Iterable[str] = (),
        lease_s: float | None = None,
    ) -> Job | None:
        lease = self.lease_s if lease_s is None else float(lease_s)
        loaded = sorted(set(loaded))
        kind_list = sorted(set(kinds)) if kinds is not None else None
        if kind_list is not None and not kind_list:
            return None
        # Jobs for a loaded model first; NULL affinity counts as "no preference" (0).
        affinity_rank = f"coalesce(j.affinity IN ({_placeholders(loaded)}), 0) DESC, " if loaded else ""
        kind_filter = f"AND j.kind IN ({_placeholders(kind_list)})" if kind_list else ""
        sql = f"""
            UPDATE jobs SET state = '{RUNNING}', attempt = attempt + 1, worker = ?, started_at = {NOW},
                lease_until = {NOW} + ?, cancel_requested = 0, event_seq = event_seq + 1
            WHERE state = '{QUEUED}' AND id = (
                SELECT j.id FROM jobs AS j
                LEFT JOIN (
                    SELECT user_name, count(*) AS n FROM jobs
                    WHERE state = '{RUNNING}' OR started_at > {NOW} - ?
                    GROUP BY user_name
                ) AS load ON load.user_name = j.user_name
                WHERE j.state = '{QUEUED}' {kind_filter}
                ORDER BY {affinity_rank}j.priority DESC, coalesce(load.n, 0), j.seq
                LIMIT 1
            )
            RETURNING {COLUMNS}, event_seq
        """
        params = [worker_id, lease, self.fair_window_s, *(kind_list or []), *loaded]
        with self._write() as cur:
            row = cur.execute(sql, params).fetchone()
            if row is None:
                return None
            job = _row_to_job(row)
            self._add_event(
                cur, job.id, row["event_seq"], "started", {"attempt": job.attempt, "worker": worker_id}
            )
        return job

    def heartbeat(self, job_id: str, attempt: int, lease_s: float | None = None) -> bool:
        lease = self.lease_s if lease_s is None else float(lease_s)
        with self._write() as cur:
            cur.execute(
                f"UPDATE jobs SET lease_until = {NOW} + ? WHERE id = ? AND attempt = ? AND state = '{RUNNING}'",
                (lease, job_id, attempt),
            )
            return cur.rowcount == 1

    def progress(
        self, job_id: str, attempt: int, fraction: float, data: dict[str, Any] | None = None
    ) -> bool:
        fraction = min(max(float(fraction), 0.0), 1.0)
        with self._write() as cur:
            row = cur.execute(
                "UPDATE jobs SET progress = ?, event_seq = event_seq + 1"
                f" WHERE id = ? AND attempt = ? AND state = '{RUNNING}' RETURNING event_seq, cancel_requested",
                (fraction, job_id, attempt),
            ).fetchone()
            if row is None:
                raise LeaseLost(f"job {job_id} attempt {attempt} no longer owns the job")
            self._add_event(cur, job_id, row[0], "progress", {"progress": fraction, **(data or {})})
            return bool(row[1])

    def emit(self, job_id: str, attempt: int, event_type: str, data: dict[str, Any] | None = None) -> int:
        with self._write() as cur:
            row = cur.execute(
                "UPDATE jobs SET event_seq = event_seq + 1"
                f" WHERE id = ? AND attempt = ? AND state = '{RUNNING}' RETURNING event_seq",
                (job_id, attempt),
            ).fetchone()
            if row is None:
                raise LeaseLost(f"job {job_id} attempt {attempt} no longer owns the job")
            self._add_event(cur, job_id, row[0], event_type, data or {})
            return row[0]

    def stop_requests(self, job_id: str) -> StopRequests:
        rows = self._read("SELECT cancel_requested, skip_requests FROM jobs WHERE id = ?", (job_id,))
        return StopRequests(bool(rows[0][0]), int(rows[0][1])) if rows else StopRequests(False, 0)

    def finish(
        self,
        job_id: str,
        attempt: int,
        state: str = SUCCEEDED,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        check_finish_state(state)
        result_text = dump_json(result, "result") if result is not None else None
        progress = ", progress = 1.0" if state == SUCCEEDED else ""
        with self._write() as cur:
            row = cur.execute(
                f"UPDATE jobs SET state = ?, result = ?, error = ?, finished_at = {NOW}, lease_until = NULL,"
                f" event_seq = event_seq + 1{progress}"
                f" WHERE id = ? AND attempt = ? AND state = '{RUNNING}' RETURNING event_seq",
                (state, result_text, error, job_id, attempt),
            ).fetchone()
            if row is None:
                return False
            data: dict[str, Any] = {"attempt": attempt}
            if result is not None:
                data["result"] = result
            if error:
                data["error"] = error
            self._add_event(cur, job_id, row[0], state, data)
        return True

    def release(self, job_id: str, attempt: int, reason: str = "worker stopped") -> bool:
        with self._write() as cur:
            row = cur.execute(
                f"UPDATE jobs SET state = CASE WHEN attempt >= max_attempts THEN '{INTERRUPTED}' ELSE '{QUEUED}' END,"
                f" worker = NULL, lease_until = NULL, error = ?, event_seq = event_seq + 1,"
                f" finished_at = CASE WHEN attempt >= max_attempts THEN {NOW} END"
                f" WHERE id = ? AND attempt = ? AND state = '{RUNNING}' RETURNING state, event_seq",
                (reason, job_id, attempt),
            ).fetchone()
            if row is None:
                return False
            self._add_event(
                cur, job_id, row[1], "released", {"attempt": attempt, "state": row[0], "reason": reason}
            )
        return True

    def _requeue_running(self, condition: str, params: tuple[Any, ...], reason: str) -> list[Job]:
        """Move matching running jobs back to queued (or cancelled / failed) with one event each."""
        new_state = (
            f"CASE WHEN cancel_requested THEN '{CANCELLED}' WHEN attempt >= max_attempts THEN '{FAILED}'"
            f" ELSE '{QUEUED}' END"
        )
        with self._write() as cur:
            rows = cur.execute(
                f"UPDATE jobs SET state = {new_state}, error = ? || ' (attempt ' || attempt || ' of ' || max_attempts || ')',"
                f" finished_at = CASE WHEN {new_state} = '{QUEUED}' THEN NULL ELSE {NOW} END,"
                f" lease_until = NULL, worker = NULL, event_seq = event_seq + 1"
                f" WHERE state = '{RUNNING}' AND {condition} RETURNING {COLUMNS}, event_seq",
                (reason, *params),
            ).fetchall()
            jobs = [_row_to_job(r) for r in rows]
            for job, row in zip(jobs, rows, strict=True):
                event = "requeued" if job.state == QUEUED else job.state
                self._add_event(
                    cur, job.id, row["event_seq"], event, {"reason": job.error, "attempt": job.attempt}
                )
        return jobs

    def reap(self) -> list[Job]:
        return self._requeue_running(
            f"lease_until < {NOW}", (), "lease expired: the worker stopped heartbeating"
        )

    def recover(self, worker_id: str) -> list[Job]:
        return self._requeue_running("worker = ?", (worker_id,), f"worker {worker_id} died")

    def running_worker_ids(self) -> set[str]:
        rows = self._read(f"SELECT DISTINCT worker FROM jobs WHERE state = '{RUNNING}' AND worker IS NOT NULL")
        return {row[0] for row in rows}

    def _wait_for_commit(self, purpose: str, timeout: float) -> bool:
        """Poll `PRAGMA data_version` until another connection commits (True) or `timeout` (False).

        Each `purpose` remembers the last version it saw, so waiting for work and for
        events on one store do not swallow each other's wake-ups.
        """
        deadline = time.monotonic() + timeout
        while True:
            version = self._data_version()
            if version != self._seen_versions.setdefault(purpose, version):
                self._seen_versions[purpose] = version
                self._poll_s = MIN_POLL_S
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self._poll_s, left))
            self._poll_s = min(self._poll_s * 1.25, MAX_POLL_S)

    def wait_for_work(self, timeout: float) -> bool:
        return self._wait_for_commit("work", timeout)

    def wait_for_events(self, timeout: float) -> set[str] | None:
        # SQLite cannot say which job changed: any commit by another connection wakes the caller.
        return None if self._wait_for_commit("events", timeout) else set()

    def _purgeable(self, cutoff: float, states: tuple[str, ...]) -> tuple[list[tuple[str, str]], int]:
        old = f"state IN ({_placeholders(list(states))}) AND finished_at <= ?"
        params = (*states, cutoff)
        with self._lock:  # one read transaction: the jobs and their events counted from one snapshot
            self._conn.execute("BEGIN")
            try:
                rows = self._conn.execute(f"SELECT id, state FROM jobs WHERE {old} ORDER BY finished_at", params).fetchall()
                events = self._conn.execute(
                    f"SELECT count(*) FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE {old})", params
                ).fetchone()[0]
            finally:
                self._conn.execute("COMMIT")
        return [(row[0], row[1]) for row in rows], events

    def _purge_batch(self, cutoff: float, states: tuple[str, ...], limit: int) -> tuple[list[tuple[str, str]], int]:
        with self._write() as cur:
            rows = cur.execute(
                f"SELECT id, state FROM jobs WHERE state IN ({_placeholders(list(states))}) AND finished_at <= ?"
                " ORDER BY finished_at LIMIT ?",
                (*states, cutoff, limit),
            ).fetchall()
            if not rows:
                return [], 0
            ids = [row[0] for row in rows]
            cur.execute(f"DELETE FROM job_events WHERE job_id IN ({_placeholders(ids)})", ids)
            events = cur.rowcount
            cur.execute(f"DELETE FROM jobs WHERE id IN ({_placeholders(ids)})", ids)
        return [(row[0], row[1]) for row in rows], events

    def _file_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal")) if p.exists())

    def compact(self) -> tuple[int, int]:
        """`VACUUM` (the file is rewritten without the free pages; it takes the database lock while it
        runs, and needs as much free disk as the file), then the WAL is truncated."""
        before = self._file_bytes()
        with self._lock:
            self._conn.execute("VACUUM")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return before, self._file_bytes()
