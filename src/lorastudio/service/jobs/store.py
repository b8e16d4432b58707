"""The job queue contract: one `JobStore` interface, the `Job` record, states and errors.

Two backends implement it (`sqlite_store`, `postgres_store`) and one conformance test
suite runs against both, so the API and the workers never care which one is configured.

Rules every backend follows (the pattern of procrastinate / Oban / River):
- `claim` takes one job in one statement, so two workers can never start the same job.
- A running job holds a lease (`lease_until`, database clock) that `heartbeat` renews.
- `claim` increments `attempt`; heartbeats, progress and `finish` carry it, so a worker
  whose lease expired (and whose job was handed to someone else) cannot record anything.
- `reap` puts jobs with an expired lease back in the queue, or fails them after
  `max_attempts` starts.
- `cancel` cancels a queued job at once; a running one gets `cancel_requested`, which
  the handler reads at its next step, so the worker keeps its model loaded.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from lorastudio.errors import LorastudioError, NotFoundError

__all__ = [
    "ACTIVE_STATES",
    "FINISHED_STATES",
    "STATES",
    "Event",
    "Job",
    "JobCancelled",
    "JobInterrupted",
    "JobStopped",
    "JobStore",
    "LeaseLost",
    "PURGE_BATCH",
    "Purged",
    "StopRequests",
    "job_not_found",
    "error_result",
]

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
# A worker was stopped (SIGTERM) while the job ran and the job had no attempts left.
INTERRUPTED = "interrupted"

STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
ACTIVE_STATES = (QUEUED, RUNNING)
FINISHED_STATES = (SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)

DEFAULT_LEASE_S = 30.0
DEFAULT_MAX_ATTEMPTS = 3
# A user's jobs started within this window count against them in fair-share ordering.
DEFAULT_FAIR_WINDOW_S = 600.0
# Jobs one purge transaction deletes (with their events): workers write between two batches.
PURGE_BATCH = 500


class JobStopped(BaseException):
    """A running job must stop now.

    A `BaseException` (like `KeyboardInterrupt`), so a handler's `except Exception`
    around model code cannot swallow a cancel by accident.
    """


class JobCancelled(JobStopped):
    """The user cancelled the job; raised by `JobContext.check_cancelled()`.

    A handler that keeps what it made before the cancel (an interrupted grid) raises it
    again with `result`: the job ends `cancelled` with that result stored.
    """

    def __init__(self, message: str = "", result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result


class JobInterrupted(JobStopped):
    """The worker is shutting down; the job goes back to the queue and resumes later."""


class LeaseLost(JobStopped):
    """This worker no longer owns the job (its lease expired and the job was reaped)."""


@dataclass
class Job:
    """One row of the `jobs` table. Timestamps are Unix seconds from the database clock."""

    id: str
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    state: str = QUEUED
    priority: int = 0
    user: str = ""
    affinity: str | None = None
    attempt: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    progress: float = 0.0
    worker: str | None = None
    lease_until: float | None = None
    cancel_requested: bool = False
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def error_key(self) -> str | None:
        """A failed job's error key (`LorastudioError.key`), kept in its result; None without one."""
        key = (self.result or {}).get(ERROR_KEY) if self.state == FAILED else None
        return key if isinstance(key, str) else None

    @property
    def error_params(self) -> dict[str, Any]:
        """The values `error_key`'s sentence names (empty without a key)."""
        params = (self.result or {}).get(ERROR_PARAMS) if self.error_key else None
        return dict(params) if isinstance(params, dict) else {}

    @property
    def resumed(self) -> bool:
        """True when an earlier attempt started this job (a train job resumes from its checkpoint)."""
        return self.attempt > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StopRequests(NamedTuple):
    """What was asked of a running job: a cancel, and how many skips (A1111 /skip) so far."""

    cancel: bool
    skips: int


@dataclass
class Event:
    """A stored progress/state event; `seq` counts from 1 per job, so clients resume with `after_seq`."""

    job_id: str
    seq: int
    ts: float
    type: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Purged:
    """What `JobStore.purge_finished` deleted (in a dry run: would delete): job ids, their states, events."""

    job_ids: list[str] = field(default_factory=list)
    by_state: dict[str, int] = field(default_factory=dict)
    events: int = 0

    @property
    def jobs(self) -> int:
        return len(self.job_ids)

    def add(self, rows: Iterable[tuple[str, str]], events: int) -> None:
        """`rows`: (job id, state) of one batch; `events`: how many event rows went with them."""
        for job_id, state in rows:
            self.job_ids.append(job_id)
            self.by_state[state] = self.by_state.get(state, 0) + 1
        self.events += events


# A failed job's result holds its error's key and params beside `Job.error` (the English line):
# a JSON column both stores already have, so a page can word the error later in its own language.
ERROR_KEY = "error_key"
ERROR_PARAMS = "error_params"


def error_result(exc: BaseException) -> dict[str, Any] | None:
    """The result a job that failed with `exc` records: its key and params, or None when it has no key."""
    key = getattr(exc, "key", None) if isinstance(exc, LorastudioError) else None
    return {ERROR_KEY: key, ERROR_PARAMS: dict(exc.params)} if key else None


def job_not_found(job_id: str) -> NotFoundError:
    return NotFoundError(
        f"job {job_id}: not found; list jobs with `lorastudio jobs list`.", key="job_not_found", params={"id": job_id}
    )


def dump_json(value: Any, what: str) -> str:
    """JSON text for a payload/result column; a clear error instead of a half-written row."""
    try:
        return json.dumps(value if value is not None else {}, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise LorastudioError(
            f"job {what}: not JSON-serialisable ({exc}); pass plain dicts, lists, numbers and strings."
        ) from None


def check_new_job(kind: str, priority: int, max_attempts: int) -> None:
    if not kind or not isinstance(kind, str):
        raise LorastudioError("job kind: empty; pass a kind such as 'generate', 'train' or 'sleep'.")
    if not isinstance(priority, int):
        raise LorastudioError(f"job priority {priority!r}: must be an integer (higher runs first).")
    if max_attempts < 1:
        raise LorastudioError(f"job max_attempts {max_attempts}: must be at least 1.")


class JobStore(ABC):
    """The persistent job queue. Thread-safe: one instance may be shared by a worker and its heartbeat."""

    #: `sqlite` or `postgresql`
    backend: str = ""

    def __init__(
        self,
        lease_s: float = DEFAULT_LEASE_S,
        fair_window_s: float = DEFAULT_FAIR_WINDOW_S,
    ) -> None:
        self.lease_s = float(lease_s)
        self.fair_window_s = float(fair_window_s)

    # --- submitting and reading -------------------------------------------------------

    @abstractmethod
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
        """Add a queued job and wake an idle worker."""

    @abstractmethod
    def get(self, job_id: str) -> Job:
        """The job, or `NotFoundError`."""

    @abstractmethod
    def list_jobs(self, state: str | None = None, user: str | None = None, limit: int = 100) -> list[Job]:
        """Newest first."""

    @abstractmethod
    def events(self, job_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Events with `seq > after_seq`, oldest first: what a reconnecting client missed."""

    @abstractmethod
    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now; ask a running one to stop at its next step. Finished jobs are unchanged."""

    @abstractmethod
    def skip(self, job_id: str) -> bool:
        """Ask a running job to drop the item it works on and go on (A1111 /skip); False if not running."""

    def skips_requested(self, job_id: str) -> int:
        """How many skips were asked of the job so far (a worker acts on each new one)."""
        return self.stop_requests(job_id).skips

    # --- the worker side ----------------------------------------------------------------

    @abstractmethod
    def claim(
        self,
        worker_id: str,
        *,
        kinds: Iterable[str] | None = None,
        loaded: Iterable[str] = (),
        lease_s: float | None = None,
    ) -> Job | None:
        """Start the best queued job, or None.

        Order: affinity in `loaded` first, then higher priority, then the user with the
        fewest running/recent jobs, then oldest first.
        """

    @abstractmethod
    def heartbeat(self, job_id: str, attempt: int, lease_s: float | None = None) -> bool:
        """Renew the lease; False when this attempt no longer owns the job."""

    @abstractmethod
    def progress(
        self, job_id: str, attempt: int, fraction: float, data: dict[str, Any] | None = None
    ) -> bool:
        """Store progress and a `progress` event; returns `cancel_requested`. Raises `LeaseLost`."""

    @abstractmethod
    def emit(self, job_id: str, attempt: int, event_type: str, data: dict[str, Any] | None = None) -> int:
        """Store an event for a running job; returns its seq. Raises `LeaseLost`."""

    def is_cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked the running job to stop."""
        return self.stop_requests(job_id).cancel

    @abstractmethod
    def stop_requests(self, job_id: str) -> StopRequests:
        """The cancel flag and the skip count in one read: a job checks both between sampling steps."""

    @abstractmethod
    def finish(
        self,
        job_id: str,
        attempt: int,
        state: str = SUCCEEDED,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> bool:
        """Record the outcome; False (nothing written) when this attempt lost the job."""

    @abstractmethod
    def release(self, job_id: str, attempt: int, reason: str = "worker stopped") -> bool:
        """Give a running job back to the queue (graceful worker stop); `interrupted` if no attempts are left."""

    @abstractmethod
    def reap(self) -> list[Job]:
        """Requeue running jobs whose lease expired (failed once `max_attempts` is used; cancelled if asked)."""

    @abstractmethod
    def recover(self, worker_id: str) -> list[Job]:
        """Requeue jobs still marked running by exactly this stored worker id, lease or not.

        Only for a worker proved dead (see `jobs.identity`): a live one would run them twice.
        """

    @abstractmethod
    def running_worker_ids(self) -> set[str]:
        """The stored worker ids that hold running jobs (a restarting worker looks for its dead selves)."""

    @abstractmethod
    def wait_for_work(self, timeout: float) -> bool:
        """Block until a job may have been queued (or `timeout`); True if woken early."""

    @abstractmethod
    def wait_for_events(self, timeout: float) -> set[str] | None:
        """Block until someone stores events: the job ids that got some, None if the backend
        cannot tell which (SQLite, or the first call that starts listening), empty on timeout.

        For the API: ONE thread per process calls this in a loop and wakes the clients
        that follow those jobs, which then read `events(job_id, after_seq)`.
        """

    def purge(self, older_than_s: float) -> int:
        """Delete finished jobs (and their events) that finished more than `older_than_s` ago; how many."""
        return self.purge_finished(older_than_s).jobs

    def purge_finished(
        self,
        older_than_s: float,
        states: Iterable[str] | None = None,
        *,
        dry_run: bool = False,
        batch: int = PURGE_BATCH,
    ) -> Purged:
        """Delete the jobs in `states` (default: every finished state) that finished `older_than_s` or
        more ago by the database clock, and their events; `dry_run` only counts them.

        A queued or running job is never touched (a state that is not finished is refused). It goes
        in transactions of `batch` jobs, so workers write between them; safe to run from several
        processes at once (a job is deleted once, the others count nothing for it)."""
        wanted = check_purge_states(states)
        if batch < 1:
            raise LorastudioError(f"purge batch {batch}: must be at least 1.")
        cutoff = self.now() - float(older_than_s)
        purged = Purged()
        if dry_run:
            purged.add(*self._purgeable(cutoff, wanted))
            return purged
        while True:
            rows, events = self._purge_batch(cutoff, wanted, batch)
            purged.add(rows, events)
            if len(rows) < batch:
                return purged

    @abstractmethod
    def _purgeable(self, cutoff: float, states: tuple[str, ...]) -> tuple[list[tuple[str, str]], int]:
        """(id, state) of the jobs in `states` finished before `cutoff`, and how many events they have."""

    @abstractmethod
    def _purge_batch(self, cutoff: float, states: tuple[str, ...], limit: int) -> tuple[list[tuple[str, str]], int]:
        """Delete up to `limit` of those jobs, oldest first, with their events, in one transaction:
        (id, state) of the jobs deleted, and how many events went."""

    def compact(self) -> tuple[int, int] | None:
        """Give the space of deleted rows back to the file system: (bytes before, after); None where the
        backend does that itself (PostgreSQL's autovacuum)."""
        return None

    @abstractmethod
    def now(self) -> float:
        """The database clock, Unix seconds."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    # --- helpers ------------------------------------------------------------------------

    def wait_until(self, job_id: str, states: Iterable[str] = FINISHED_STATES, timeout: float = 60.0) -> Job:
        """Poll until the job reaches one of `states` (tests, CLI); raises TimeoutError."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.state in wanted:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout:.0f}s")
            time.sleep(0.02)

    def queue_position(self, job: Job) -> int | None:
        """How many queued jobs run before this one (0 = next); None once it started."""
        if job.state != QUEUED:
            return None
        queued = self.list_jobs(state=QUEUED, limit=10_000)
        return sum((j.priority, -j.created_at) > (job.priority, -job.created_at) for j in queued)

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_finish_state(state: str) -> None:
    if state not in FINISHED_STATES:
        raise LorastudioError(
            f"job state {state!r}: a job can only finish as one of {', '.join(FINISHED_STATES)}."
        )


def check_purge_states(states: Iterable[str] | None) -> tuple[str, ...]:
    """The finished states a purge may delete (default: all of them); a queued or running one is refused."""
    if states is None:
        return FINISHED_STATES
    wanted = tuple(dict.fromkeys(states))
    for state in wanted:
        if state in ACTIVE_STATES:
            raise LorastudioError(
                f"job state {state!r}: a {state} job is never purged, only finished ones "
                f"({', '.join(FINISHED_STATES)}); stop it first with `lorastudio jobs cancel ID`."
            )
        if state not in FINISHED_STATES:
            raise LorastudioError(f"job state {state!r}: unknown; purge one of {', '.join(FINISHED_STATES)}.")
    if not wanted:
        raise LorastudioError(f"job states: none given; purge one of {', '.join(FINISHED_STATES)}.")
    return wanted


def check_state_filter(state: str | None) -> None:
    if state is not None and state not in STATES:
        raise LorastudioError(f"job state {state!r}: unknown; use one of {', '.join(STATES)}.")
