"""What a handler sees of its job, its worker and the queue: `JobContext`.

The context holds no reference to the `Worker`: what a handler may know of it is a
`WorkerInfo` (device, id, the cache kept across jobs, the loaded affinity keys, and the
event that says the worker is stopping). The worker's heartbeat thread tells the context
about a cancel or a lost lease (`note_cancel`, `note_lease_lost`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorastudio.service.jobs.store import Job, JobCancelled, JobInterrupted, JobStore, LeaseLost
from lorastudio.service.workspace import Workspace

__all__ = ["JobContext", "WorkerInfo"]


@dataclass
class WorkerInfo:
    """The parts of a worker a handler may use; shared, so what a handler adds stays for the next job."""

    device: str | None
    worker_id: str
    cache: dict[str, Any] = field(default_factory=dict)
    loaded: set[str] = field(default_factory=set)
    stopping: threading.Event = field(default_factory=threading.Event)


class JobContext:
    """What a handler sees of its job and of the queue; `folder` is where the job writes its files."""

    def __init__(self, job: Job, store: JobStore, workspace: Workspace, worker: WorkerInfo, folder: Path) -> None:
        self.job = job
        self.store = store
        self.workspace = workspace
        self.worker = worker
        self.folder = folder
        self._lease_lost = False
        self._cancel_requested = job.cancel_requested
        self._skips_seen: int | None = None

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def resumed(self) -> bool:
        """An earlier attempt ran (and was interrupted): resume from its checkpoint if there is one."""
        return self.job.resumed

    @property
    def user(self) -> str:
        return self.job.user

    @property
    def device(self) -> str | None:
        return self.worker.device

    @property
    def worker_id(self) -> str:
        """This worker process's stored id (`<given id>#<pid>-<random>`), unique per process."""
        return self.worker.worker_id

    @property
    def cache(self) -> dict[str, Any]:
        """Kept across jobs by this worker: the place to keep a loaded pipeline."""
        return self.worker.cache

    @property
    def loaded(self) -> set[str]:
        """Affinity keys this worker has loaded; add/discard when a handler loads/evicts a model."""
        return self.worker.loaded

    @property
    def artifacts_dir(self) -> Path:
        """This job's own folder (made on first use): its kind's folder rule, e.g. `runs/<run>` for training."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder

    def note_cancel(self) -> None:
        """A cancel was requested (the heartbeat saw it): the next `check_cancelled` raises."""
        self._cancel_requested = True

    def note_lease_lost(self) -> None:
        """Another worker owns the job now: the next `check_cancelled` raises `LeaseLost`."""
        self._lease_lost = True

    def progress(
        self,
        fraction: float,
        step: int | None = None,
        total: int | None = None,
        message: str | None = None,
        eta_s: float | None = None,
    ) -> None:
        """Store a progress event and the job's progress (0..1). Raises `LeaseLost` if the job was taken away.

        `eta_s`: the work's own estimate of the seconds left, where it knows better than the job's
        elapsed time can (a resumed training run, a long setup before the first step)."""
        data: dict[str, Any] = {}
        if eta_s is not None:
            data["eta_s"] = float(eta_s)
        if step is not None:
            data["step"] = step
        if total is not None:
            data["total"] = total
        if message:
            data["message"] = message
        if self.store.progress(self.job_id, self.attempt, fraction, data):
            self.note_cancel()

    def emit(self, event_type: str, data: dict[str, Any] | None = None) -> int:
        """Store any event (e.g. `preview`, `artifact`) for clients; returns its sequence number."""
        return self.store.emit(self.job_id, self.attempt, event_type, data or {})

    def log(self, line: str) -> None:
        self.emit("log", {"line": str(line)})

    def check_cancelled(self) -> None:
        """Call between steps: raises `JobCancelled`, `LeaseLost` or `JobInterrupted` (worker stopping).

        It asks the database every time (one indexed read), so a cancel requested during
        step k stops the job before step k+1, however short the steps are.
        """
        self.check_step(skippable=False)

    def check_step(self, skippable: bool = True) -> bool:
        """`check_cancelled`, and then (`skippable`) `skip_requested`, from ONE database read:
        sampling steps ask both, every step."""
        if self._lease_lost:
            raise LeaseLost(f"job {self.job_id}: lease lost")
        requests = None
        if not self._cancel_requested:
            requests = self.store.stop_requests(self.job_id)
            self._cancel_requested = requests.cancel
        if self._cancel_requested:
            raise JobCancelled(f"job {self.job_id}: cancelled")
        if self.worker.stopping.is_set():
            raise JobInterrupted(f"job {self.job_id}: worker {self.worker_id} is stopping")
        return skippable and self._new_skip(requests.skips)

    def skip_requested(self) -> bool:
        """True once for each skip asked since this attempt started (A1111 /skip): drop the current item."""
        return self._new_skip(self.store.skips_requested(self.job_id))

    def _new_skip(self, skips: int) -> bool:
        if self._skips_seen is None:  # first look: what was asked before counts from here
            self._skips_seen = skips
            return False
        if skips > self._skips_seen:
            self._skips_seen = skips
            return True
        return False
