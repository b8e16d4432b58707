"""The shared job queue: PostgreSQL, for several GPU boxes and API processes.

A claim is one statement (`FOR UPDATE SKIP LOCKED`): workers never wait on each other's
row locks and never start the same job. Every write and its event row go in one
statement (data-modifying CTEs), and commits send notifications:
- `lorastudio_jobs` (payload: the kind) when a job is queued: idle workers LISTEN on it;
- `lorastudio_job_events` (payload: `job_id:seq`) for each stored event: an API process
  keeps ONE listener and fans events out to its clients (see docs/SCALING.md).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
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

__all__ = ["PostgresJobStore", "JOBS_CHANNEL", "EVENTS_CHANNEL"]

JOBS_CHANNEL = "lorastudio_jobs"
EVENTS_CHANNEL = "lorastudio_job_events"

# The database clock as Unix seconds; clock_timestamp() advances inside a transaction, now() does not.
NOW = "extract(epoch FROM clock_timestamp())::double precision"

SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS jobs (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        kind text NOT NULL,
        payload jsonb NOT NULL DEFAULT '{}',
        state text NOT NULL DEFAULT 'queued',
        priority integer NOT NULL DEFAULT 0,
        user_name text NOT NULL DEFAULT '',
        affinity text,
        attempt integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL DEFAULT 3,
        progress double precision NOT NULL DEFAULT 0,
        worker text,
        lease_until double precision,
        cancel_requested boolean NOT NULL DEFAULT false,
        skip_requests integer NOT NULL DEFAULT 0,
        event_seq integer NOT NULL DEFAULT 0,
        created_at double precision NOT NULL,
        started_at double precision,
        finished_at double precision,
        error text,
        result jsonb
    )
    """,
    # a database from before /skip
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS skip_requests integer NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS jobs_queued_order ON jobs (priority DESC, seq) WHERE state = 'queued'",
    "CREATE INDEX IF NOT EXISTS jobs_started ON jobs (started_at)",
    "CREATE INDEX IF NOT EXISTS jobs_running_lease ON jobs (lease_until) WHERE state = 'running'",
    "CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs (state, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL",
    """
    CREATE TABLE IF NOT EXISTS job_events (
        job_id text NOT NULL,
        seq integer NOT NULL,
        ts double precision NOT NULL,
        type text NOT NULL,
        data jsonb NOT NULL DEFAULT '{}',
        PRIMARY KEY (job_id, seq)
    )
    """,
]
# Any constant: serialises concurrent schema creation by several processes.
SCHEMA_LOCK_KEY = 0x10A5_7D10
# Serialises purge batches of several processes (two servers' retention, an admin's `jobs purge`):
# each batch picks its jobs after the one before committed, so none waits on rows another deletes.
PURGE_LOCK_KEY = 0x10A5_7D11

COLUMNS = (
    "id, kind, payload, state, priority, user_name, affinity, attempt, max_attempts, progress, worker,"
    " lease_until, cancel_requested, created_at, started_at, finished_at, error, result"
)


def _row_to_job(row: dict[str, Any]) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        payload=row["payload"],
        state=row["state"],
        priority=row["priority"],
        user=row["user_name"],
        affinity=row["affinity"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        progress=row["progress"],
        worker=row["worker"],
        lease_until=row["lease_until"],
        cancel_requested=row["cancel_requested"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        result=row["result"],
    )


def _with_event(update_sql: str, event_type_sql: str, data_sql: str, extra_select: str = "") -> str:
    """Wrap an `UPDATE ... RETURNING id, event_seq, ...` so its event row and notification go in the same statement."""
    return f"""
        WITH changed AS ({update_sql}),
        ev AS (
            INSERT INTO job_events (job_id, seq, ts, type, data)
            SELECT id, event_seq, {NOW}, {event_type_sql}, {data_sql} FROM changed
        )
        SELECT changed.*, pg_notify('{EVENTS_CHANNEL}', changed.id || ':' || changed.event_seq)::text AS notified
            {extra_select}
        FROM changed
    """


class PostgresJobStore(JobStore):
    backend = "postgresql"

    def __init__(
        self,
        url: str,
        lease_s: float = DEFAULT_LEASE_S,
        fair_window_s: float = DEFAULT_FAIR_WINDOW_S,
    ) -> None:
        super().__init__(lease_s=lease_s, fair_window_s=fair_window_s)
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise LorastudioError(
                'queue.url is postgresql but psycopg is not installed; run `pip install "lorastudio[postgres]"`.'
            ) from None
        self.url = url
        self._psycopg = psycopg
        self._lock = threading.RLock()
        try:
            self._conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LorastudioError(
                f"queue {self._safe_url()}: cannot connect ({first}); check that PostgreSQL runs and the URL is right."
            ) from None
        self._listener = None
        self._event_listener = None
        self._create_schema()

    def _safe_url(self) -> str:
        """The URL without its password, for messages."""
        head, sep, tail = self.url.rpartition("@")
        if not sep:
            return self.url
        scheme, _, user_part = head.partition("://")
        return f"{scheme}://{user_part.split(':')[0]}:***@{tail}"

    def _create_schema(self) -> None:
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            for statement in SCHEMA:
                self._conn.execute(statement)

    def _one(self, sql: str, params: dict[str, Any] | tuple[Any, ...] = ()) -> dict[str, Any] | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: dict[str, Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _jsonb(self, value: Any, what: str) -> Any:
        from psycopg.types.json import Jsonb

        dump_json(value, what)  # the same clear error as SQLite for unserialisable values
        return Jsonb(value if value is not None else {})

    def now(self) -> float:
        return self._one(f"SELECT {NOW} AS now")["now"]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            for listener in (self._listener, self._event_listener):
                if listener is not None:
                    listener.close()

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
        params = {
            "id": str(uuid.uuid4()),
            "kind": kind,
            "payload": self._jsonb(payload, "payload"),
            "priority": priority,
            "user": user or "",
            "affinity": affinity,
            "max_attempts": max_attempts,
        }
        insert = f"""
            INSERT INTO jobs (id, kind, payload, priority, user_name, affinity, max_attempts, event_seq, created_at)
            VALUES (%(id)s, %(kind)s, %(payload)s, %(priority)s, %(user)s, %(affinity)s, %(max_attempts)s, 1, {NOW})
            RETURNING {COLUMNS}, event_seq
        """
        wake = f", pg_notify('{JOBS_CHANNEL}', changed.kind)::text AS woke"
        sql = _with_event(insert, f"'{QUEUED}'", "'{}'::jsonb", extra_select=wake)
        return _row_to_job(self._one(sql, params))

    def get(self, job_id: str) -> Job:
        row = self._one(f"SELECT {COLUMNS} FROM jobs WHERE id = %s", (job_id,))
        if row is None:
            raise job_not_found(job_id)
        return _row_to_job(row)

    def list_jobs(self, state: str | None = None, user: str | None = None, limit: int = 100) -> list[Job]:
        check_state_filter(state)
        rows = self._all(
            f"SELECT {COLUMNS} FROM jobs WHERE (%(state)s::text IS NULL OR state = %(state)s)"
            " AND (%(user)s::text IS NULL OR user_name = %(user)s) ORDER BY seq DESC LIMIT %(limit)s",
            {"state": state, "user": user, "limit": limit},
        )
        return [_row_to_job(r) for r in rows]

    def events(self, job_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        rows = self._all(
            "SELECT job_id, seq, ts, type, data FROM job_events WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (job_id, after_seq, limit),
        )
        return [Event(r["job_id"], r["seq"], r["ts"], r["type"], r["data"]) for r in rows]

    def cancel(self, job_id: str) -> Job:
        cancel_queued = _with_event(
            f"UPDATE jobs SET state = '{CANCELLED}', finished_at = {NOW}, event_seq = event_seq + 1"
            f" WHERE id = %(id)s AND state = '{QUEUED}' RETURNING id, event_seq",
            f"'{CANCELLED}'",
            """'{"reason": "cancelled while queued"}'::jsonb""",
        )
        flag_running = _with_event(
            "UPDATE jobs SET cancel_requested = true, event_seq = event_seq + 1"
            f" WHERE id = %(id)s AND state = '{RUNNING}' AND NOT cancel_requested RETURNING id, event_seq",
            "'cancel_requested'",
            "'{}'::jsonb",
        )
        with self._lock, self._conn.transaction():
            if self._conn.execute(cancel_queued, {"id": job_id}).fetchone() is None:
                self._conn.execute(flag_running, {"id": job_id})
        return self.get(job_id)

    def skip(self, job_id: str) -> bool:
        sql = _with_event(
            "UPDATE jobs SET skip_requests = skip_requests + 1, event_seq = event_seq + 1"
            f" WHERE id = %(id)s AND state = '{RUNNING}' RETURNING id, event_seq, skip_requests",
            "'skip_requested'",
            "jsonb_build_object('skips', skip_requests)",
        )
        return self._one(sql, {"id": job_id}) is not None

    # --- the worker side --------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        *,
        kinds: Iterable[str] | None = None,
        loaded: Iterable[str] = (),
        lease_s: float | None = None,
    ) -> Job | None:
        kind_list = sorted(set(kinds)) if kinds is not None else None
        if kind_list is not None and not kind_list:
            return None
        update = f"""
            WITH load AS (
                SELECT user_name, count(*) AS n FROM jobs
                WHERE state = '{RUNNING}' OR started_at > {NOW} - %(window)s
                GROUP BY user_name
            ),
            next AS (
                SELECT j.id FROM jobs AS j LEFT JOIN load ON load.user_name = j.user_name
                WHERE j.state = '{QUEUED}' AND (%(kinds)s::text[] IS NULL OR j.kind = ANY(%(kinds)s::text[]))
                ORDER BY (j.affinity = ANY(%(loaded)s::text[])) IS TRUE DESC, j.priority DESC,
                    coalesce(load.n, 0), j.seq
                LIMIT 1
                FOR UPDATE OF j SKIP LOCKED
            )
            UPDATE jobs SET state = '{RUNNING}', attempt = attempt + 1, worker = %(worker)s,
                started_at = {NOW}, lease_until = {NOW} + %(lease)s, cancel_requested = false,
                event_seq = event_seq + 1
            FROM next WHERE jobs.id = next.id
            RETURNING {", ".join("jobs." + c.strip() for c in COLUMNS.split(","))}, jobs.event_seq
        """
        sql = _with_event(update, "'started'", "jsonb_build_object('attempt', attempt, 'worker', worker)")
        params = {
            "window": self.fair_window_s,
            "kinds": kind_list,
            "loaded": sorted(set(loaded)),
            "worker": worker_id,
            "lease": self.lease_s if lease_s is None else float(lease_s),
        }
        row = self._one(sql, params)
        return _row_to_job(row) if row else None

    def heartbeat(self, job_id: str, attempt: int, lease_s: float | None = None) -> bool:
        lease = self.lease_s if lease_s is None else float(lease_s)
        row = self._one(
            f"UPDATE jobs SET lease_until = {NOW} + %s WHERE id = %s AND attempt = %s AND state = '{RUNNING}'"
            " RETURNING id",
            (lease, job_id, attempt),
        )
        return row is not None

    def progress(
        self, job_id: str, attempt: int, fraction: float, data: dict[str, Any] | None = None
    ) -> bool:
        fraction = min(max(float(fraction), 0.0), 1.0)
        sql = _with_event(
            "UPDATE jobs SET progress = %(fraction)s, event_seq = event_seq + 1"
            f" WHERE id = %(id)s AND attempt = %(attempt)s AND state = '{RUNNING}'"
            " RETURNING id, event_seq, cancel_requested",
            "'progress'",
            "%(data)s",
        )
        event = {"progress": fraction, **(data or {})}
        params = {
            "fraction": fraction,
            "id": job_id,
            "attempt": attempt,
            "data": self._jsonb(event, "event data"),
        }
        row = self._one(sql, params)
        if row is None:
            raise LeaseLost(f"job {job_id} attempt {attempt} no longer owns the job")
        return bool(row["cancel_requested"])

    def emit(self, job_id: str, attempt: int, event_type: str, data: dict[str, Any] | None = None) -> int:
        sql = _with_event(
            "UPDATE jobs SET event_seq = event_seq + 1"
            f" WHERE id = %(id)s AND attempt = %(attempt)s AND state = '{RUNNING}' RETURNING id, event_seq",
            "%(type)s",
            "%(data)s",
        )
        params = {
            "id": job_id,
            "attempt": attempt,
            "type": event_type,
            "data": self._jsonb(data, "event data"),
        }
        row = self._one(sql, params)
        if row is None:
            raise LeaseLost(f"job {job_id} attempt {attempt} no longer owns the job")
        return row["event_seq"]

    def stop_requests(self, job_id: str) -> StopRequests:
        row = self._one("SELECT cancel_requested, skip_requests FROM jobs WHERE id = %s", (job_id,))
        return StopRequests(bool(row["cancel_requested"]), int(row["skip_requests"])) if row else StopRequests(False, 0)

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
        event: dict[str, Any] = {"attempt": attempt}
        if result is not None:
            event["result"] = result
        if error:
            event["error"] = error
        progress = ", progress = 1.0" if state == SUCCEEDED else ""
        sql = _with_event(
            f"UPDATE jobs SET state = %(state)s, result = %(result)s, error = %(error)s, finished_at = {NOW},"
            f" lease_until = NULL, event_seq = event_seq + 1{progress}"
            f" WHERE id = %(id)s AND attempt = %(attempt)s AND state = '{RUNNING}' RETURNING id, event_seq",
            "%(state)s",
            "%(event)s",
        )
        params = {
            "state": state,
            "result": self._jsonb(result, "result") if result is not None else None,
            "error": error,
            "id": job_id,
            "attempt": attempt,
            "event": self._jsonb(event, "event data"),
        }
        return self._one(sql, params) is not None

    def release(self, job_id: str, attempt: int, reason: str = "worker stopped") -> bool:
        sql = _with_event(
            f"UPDATE jobs SET state = CASE WHEN attempt >= max_attempts THEN '{INTERRUPTED}' ELSE '{QUEUED}' END,"
            f" worker = NULL, lease_until = NULL, error = %(reason)s, event_seq = event_seq + 1,"
            f" finished_at = CASE WHEN attempt >= max_attempts THEN {NOW} END"
            f" WHERE id = %(id)s AND attempt = %(attempt)s AND state = '{RUNNING}' RETURNING id, event_seq, state",
            "'released'",
            "jsonb_build_object('attempt', %(attempt)s::int, 'state', state, 'reason', %(reason)s::text)",
        )
        row = self._one(sql, {"reason": reason, "id": job_id, "attempt": attempt})
        if row is not None:
            self._wake_workers()
        return row is not None

    def _wake_workers(self) -> None:
        self._one(f"SELECT pg_notify('{JOBS_CHANNEL}', 'requeued')::text AS woke")

    def _requeue_running(self, condition: str, params: dict[str, Any], reason: str) -> list[Job]:
        new_state = (
            f"CASE WHEN cancel_requested THEN '{CANCELLED}' WHEN attempt >= max_attempts THEN '{FAILED}'"
            f" ELSE '{QUEUED}' END"
        )
        update = (
            f"UPDATE jobs SET state = {new_state},"
            " error = %(reason)s || ' (attempt ' || attempt || ' of ' || max_attempts || ')',"
            f" finished_at = CASE WHEN {new_state} = '{QUEUED}' THEN NULL ELSE {NOW} END,"
            " lease_until = NULL, worker = NULL, event_seq = event_seq + 1"
            f" WHERE state = '{RUNNING}' AND {condition} RETURNING {COLUMNS}, event_seq"
        )
        sql = _with_event(
            update,
            f"CASE WHEN state = '{QUEUED}' THEN 'requeued' ELSE state END",
            "jsonb_build_object('reason', error, 'attempt', attempt)",
        )
        rows = self._all(sql, {"reason": reason, **params})
        if any(r["state"] == QUEUED for r in rows):
            self._wake_workers()
        return [_row_to_job(r) for r in rows]

    def reap(self) -> list[Job]:
        return self._requeue_running(
            f"lease_until < {NOW}", {}, "lease expired: the worker stopped heartbeating"
        )

    def recover(self, worker_id: str) -> list[Job]:
        return self._requeue_running("worker = %(worker)s", {"worker": worker_id}, f"worker {worker_id} died")

    def running_worker_ids(self) -> set[str]:
        rows = self._all(f"SELECT DISTINCT worker FROM jobs WHERE state = '{RUNNING}' AND worker IS NOT NULL")
        return {row["worker"] for row in rows}

    def _listen(self, channel: str):
        conn = self._psycopg.connect(self.url, autocommit=True)
        conn.execute(f"LISTEN {channel}")
        return conn

    def wait_for_work(self, timeout: float) -> bool:
        if self._listener is None:
            # The first call only starts listening and asks the caller to look again, so a job
            # queued between the caller's last claim and LISTEN is never missed.
            self._listener = self._listen(JOBS_CHANNEL)
            return True
        for _ in self._listener.notifies(timeout=max(timeout, 0.0), stop_after=1):
            return True
        return False

    def wait_for_events(self, timeout: float) -> set[str] | None:
        if self._event_listener is None:
            self._event_listener = self._listen(EVENTS_CHANNEL)
            return None
        job_ids = {
            n.payload.rpartition(":")[0] for n in self._event_listener.notifies(timeout=timeout, stop_after=1)
        }
        if job_ids:  # take whatever else already arrived, without waiting
            job_ids |= {n.payload.rpartition(":")[0] for n in self._event_listener.notifies(timeout=0.0)}
        return job_ids

    def _purgeable(self, cutoff: float, states: tuple[str, ...]) -> tuple[list[tuple[str, str]], int]:
        params = {"states": list(states), "cutoff": cutoff}
        old = "state = ANY(%(states)s) AND finished_at <= %(cutoff)s"
        with self._lock, self._conn.transaction():  # one snapshot for both counts
            self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = self._conn.execute(f"SELECT id, state FROM jobs WHERE {old} ORDER BY finished_at", params).fetchall()
            events = self._conn.execute(
                f"SELECT count(*) AS n FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE {old})", params
            ).fetchone()["n"]
        return [(row["id"], row["state"]) for row in rows], events

    def _purge_batch(self, cutoff: float, states: tuple[str, ...], limit: int) -> tuple[list[tuple[str, str]], int]:
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (PURGE_LOCK_KEY,))
            rows = self._conn.execute(
                "SELECT id, state FROM jobs WHERE state = ANY(%(states)s) AND finished_at <= %(cutoff)s"
                " ORDER BY finished_at LIMIT %(limit)s FOR UPDATE",
                {"states": list(states), "cutoff": cutoff, "limit": limit},
            ).fetchall()
            if not rows:
                return [], 0
            ids = [row["id"] for row in rows]
            events = self._conn.execute("DELETE FROM job_events WHERE job_id = ANY(%s)", (ids,)).rowcount
            self._conn.execute("DELETE FROM jobs WHERE id = ANY(%s)", (ids,))
        return [(row["id"], row["state"]) for row in rows], events
