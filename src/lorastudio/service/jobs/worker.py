"""The worker: claim a job, run its handler, record the outcome; repeat.

One worker per GPU. It stays alive between jobs so a loaded base model is reused: it
tells `claim` which affinity keys (model names) it has loaded, and the queue prefers
jobs for those. While a job runs, a heartbeat thread renews its lease from the database
clock; if the lease is lost (e.g. the box was frozen past the lease), the worker drops
the job without recording anything, because another worker now owns it.

Every worker process claims under its own stored id and holds a lock file for its life
(see `jobs.identity`), so a second process started with the same id never takes the
first one's jobs; a restarted worker requeues at once only what a dead earlier run of
its id left behind.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.service.jobs.context import JobContext, WorkerInfo
from lorastudio.service.jobs.identity import WorkerLock, base_worker_id, owner_is_dead, unique_worker_id
from lorastudio.service.jobs.registry import HandlerRegistry, default_registry
from lorastudio.service.jobs.store import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    Job,
    JobCancelled,
    JobInterrupted,
    JobStore,
    LeaseLost,
    error_result,
)
from lorastudio.service.workspace import Workspace

__all__ = ["JobContext", "Worker", "WorkerInfo", "default_worker_id", "run_worker_process"]

logger = logging.getLogger("lorastudio.jobs")

# Consecutive failed claims (one per second) before the worker gives up and exits.
MAX_CLAIM_FAILURES = 60
STOP_CHECK_S = 0.05  # how soon an idle worker notices stop()


def default_worker_id(device: str | None = None) -> str:
    """`host:device`: stable across restarts, so a restarted worker finds what its dead earlier run left."""
    return f"{socket.gethostname()}:{device or 'default'}"


def worker_locks_dir(workspace: Workspace) -> Path:
    """Where live workers hold their lock files (one per process)."""
    return workspace.cache / "workers"


class _Heartbeat(threading.Thread):
    """Renews the running job's lease every lease/3 seconds and reaps other workers' expired leases."""

    def __init__(self, worker: Worker, ctx: JobContext) -> None:
        super().__init__(name=f"heartbeat-{ctx.job_id[:8]}", daemon=True)
        self.worker = worker
        self.ctx = ctx
        self.done = threading.Event()

    def run(self) -> None:
        interval = self.worker.lease_s / 3
        while not self.done.wait(interval):
            try:
                if not self.worker.store.heartbeat(self.ctx.job_id, self.ctx.attempt, self.worker.lease_s):
                    self.ctx.note_lease_lost()
                    logger.warning("job %s: lease lost; another worker owns it now", self.ctx.job_id)
                    return
                if self.worker.store.is_cancel_requested(self.ctx.job_id):
                    self.ctx.note_cancel()
                self.worker.maybe_reap()
            except Exception as exc:  # a database hiccup: try again next beat
                logger.warning("job %s: heartbeat failed: %s", self.ctx.job_id, exc)

    def stop(self) -> None:
        self.done.set()
        self.join()


class Worker:
    """Runs jobs from one store, one at a time, until `stop()`.

    `registry` says which kinds it can run and where their files go (default: this process's
    `default_registry`, which holds only the `sleep` diagnostic and what `register_handler` added).
    """

    def __init__(
        self,
        store: JobStore,
        workspace: Workspace | None = None,
        *,
        worker_id: str | None = None,
        device: str | None = None,
        kinds: list[str] | None = None,
        lease_s: float | None = None,
        idle_wait_s: float = 1.0,
        registry: HandlerRegistry | None = None,
    ) -> None:
        self.store = store
        self.registry = registry if registry is not None else default_registry
        self.workspace = workspace or Workspace.open()
        self.device = device
        # The id it was given (shared by its restarts) and the one it stores (this process only).
        self.base_id = worker_id or default_worker_id(device)
        self.worker_id = unique_worker_id(self.base_id)
        self._lock_file = WorkerLock(worker_locks_dir(self.workspace), self.worker_id)
        self.kinds = list(kinds) if kinds is not None else self.registry.kinds()
        self.lease_s = float(lease_s if lease_s is not None else store.lease_s)
        self.reap_every_s = max(self.lease_s / 2, 0.1)
        self.idle_wait_s = min(idle_wait_s, self.reap_every_s)
        # What handlers see of this worker (shared objects: a cache entry outlives its job).
        self.info = WorkerInfo(device=device, worker_id=self.worker_id)
        self.loaded = self.info.loaded
        self.cache = self.info.cache
        self._stop = self.info.stopping
        self._reap_lock = threading.Lock()
        self._last_reap = 0.0

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Finish gracefully: an idle worker exits; a running job is handed back at its next check."""
        self._stop.set()

    def maybe_reap(self) -> None:
        with self._reap_lock:
            if time.monotonic() - self._last_reap < self.reap_every_s:
                return
            self._last_reap = time.monotonic()
        for job in self.store.reap():
            logger.info("job %s: lease expired on another worker; now %s", job.id, job.state)

    def recover_dead_incarnations(self) -> list[Job]:
        """Requeue the running jobs of earlier processes with this worker's id that are proved dead.

        A sibling process with the same id holds its lock, so its jobs stay where they are.
        """
        recovered: list[Job] = []
        folder = worker_locks_dir(self.workspace)
        for stored_id in sorted(self.store.running_worker_ids()):
            if stored_id == self.worker_id or base_worker_id(stored_id) != self.base_id:
                continue
            if not owner_is_dead(folder, stored_id):
                continue
            for job in self.store.recover(stored_id):
                logger.info("job %s: left running by %s, which died; now %s", job.id, stored_id, job.state)
                recovered.append(job)
        return recovered

    def release_identity(self) -> None:
        """Drop the lock file (a clean stop); the process exiting drops the lock anyway."""
        self._lock_file.release()

    def run(self, max_jobs: int | None = None, stop_when_idle: bool = False) -> int:
        """The main loop; returns how many jobs this worker ran."""
        self._lock_file.acquire()  # before the first claim: a held lock says "alive"
        self.recover_dead_incarnations()
        ran = 0
        failures = 0
        while not self.stopping and (max_jobs is None or ran < max_jobs):
            try:
                self.maybe_reap()
                job = self.store.claim(
                    self.worker_id, kinds=self.kinds, loaded=self.loaded, lease_s=self.lease_s
                )
                failures = 0
            except Exception as exc:  # a locked or restarting database: back off, give up after a minute
                failures += 1
                if failures > MAX_CLAIM_FAILURES:
                    raise
                logger.warning("worker %s: claim failed (%s); retrying", self.worker_id, exc)
                time.sleep(1.0)
                continue
            if job is None:
                if stop_when_idle:
                    break
                self._wait_idle()
                continue
            self.run_job(job)
            ran += 1
        return ran

    def _wait_idle(self) -> None:
        """Wait for work up to `idle_wait_s`, in short slices: `stop()` ends an idle worker at once
        (a closing server, and every test's teardown, need not sit out the whole wait)."""
        deadline = time.monotonic() + self.idle_wait_s
        while not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0 or self.store.wait_for_work(min(STOP_CHECK_S, left)):
                return

    def run_job(self, job: Job) -> str | None:
        """Run one claimed job to its end; returns the recorded state (None if not recorded)."""
        logger.info("job %s (%s): started, attempt %d", job.id, job.kind, job.attempt)
        ctx = JobContext(job, self.store, self.workspace, self.info, self.registry.folder(self.workspace, job))
        heartbeat = _Heartbeat(self, ctx)
        heartbeat.start()
        result: dict[str, Any] | None = None
        error: str | None = None
        try:
            result = self._call_handler(ctx)
            state = SUCCEEDED
        except JobCancelled as exc:
            state, error, result = CANCELLED, "cancelled by request", exc.result
        except JobInterrupted as exc:
            heartbeat.stop()
            self.store.release(job.id, job.attempt, reason=str(exc))
            logger.info("job %s: handed back to the queue (worker stopping)", job.id)
            return None
        except LeaseLost:
            heartbeat.stop()
            logger.warning("job %s: lease lost; its result is dropped", job.id)
            return None
        except Exception as exc:  # a refused input says only its one line; anything else names its type
            state, error = FAILED, str(exc) if isinstance(exc, LorastudioError) else f"{type(exc).__name__}: {exc}"
            result = error_result(exc)  # its key and params, for a page to word it in its language
            self._log_traceback(ctx)
        finally:
            heartbeat.stop()
        try:
            recorded = self.store.finish(job.id, job.attempt, state, result=result, error=error)
        except LorastudioError as exc:  # e.g. a result that is not JSON
            state = FAILED
            recorded = self.store.finish(job.id, job.attempt, FAILED, error=str(exc))
        if not recorded:
            logger.warning("job %s: lease lost before finishing; outcome %s dropped", job.id, state)
            return None
        if state == SUCCEEDED and job.affinity:
            self.loaded.add(job.affinity)
        logger.info("job %s: %s", job.id, state + (f" ({error})" if error else ""))
        return state

    def _call_handler(self, ctx: JobContext) -> dict[str, Any]:
        result = self.registry.get(ctx.kind)(ctx)
        if result is None:
            return {}
        if not isinstance(result, dict):
            raise TypeError(f"handler for {ctx.kind!r} returned {type(result).__name__}, expected a dict")
        return result

    @staticmethod
    def _log_traceback(ctx: JobContext) -> None:
        try:
            ctx.emit("traceback", {"text": traceback.format_exc(limit=20)})
        except LeaseLost:
            pass


def _import_modules(modules: list[str]) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise LorastudioError(
                f"worker --import {name}: cannot import ({exc}); check the module name."
            ) from None


def run_worker_process(
    queue_url: str | None = None,
    *,
    device: str | None = None,
    worker_id: str | None = None,
    lease_s: float | None = None,
    kinds: list[str] | None = None,
    imports: list[str] | None = None,
    workspace: Workspace | None = None,
    registry: HandlerRegistry | None = None,
    names: Any = None,
    compile_backend: str | None = None,
    keep_jobs_days: float | None = None,
) -> int:
    """`lorastudio worker`: run until SIGTERM/SIGINT, then hand any running job back and exit.

    `compile_backend`: torch.compile each model the worker loads, as `serve --compile` does.
    `keep_jobs_days`: purge finished jobs that old at start and hourly, as `serve --keep-jobs-days`
    (`service.retention`; None reads `LORASTUDIO_KEEP_JOBS_DAYS`, 0 keeps every job).

    The worker runs the kinds of `registry` (filled by the caller) plus this process's
    `default_registry`: the `sleep` diagnostic and what the `imports` modules registered.
    The caller checks the database's health first (`service.database.ensure_database_healthy`).
    """
    from lorastudio.service.jobs import open_store
    from lorastudio.service.retention import start_retention

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _import_modules(imports or [])
    serving = registry.copy() if registry is not None else HandlerRegistry()
    serving.update(default_registry)
    if kinds:
        unknown = sorted(set(kinds) - set(serving.kinds()))
        if unknown:
            raise LorastudioError(
                f"worker --kinds: no handler for {', '.join(unknown)}; known: {', '.join(serving.kinds())}."
            )
    workspace = workspace or Workspace.open()
    store = open_store(queue_url, workspace, lease_s=lease_s)
    worker = Worker(store, workspace, worker_id=worker_id, device=device, kinds=kinds, registry=serving)
    if names is not None:  # how request names are found (service.names.NamePolicy); default strict
        worker.cache["names"] = names
    if compile_backend:  # read by the jobs' model cache (service.job_steps.model_cache_of)
        worker.cache["compile_backend"] = compile_backend

    def on_signal(signum: int, frame: object) -> None:
        logger.info("worker %s: %s received, stopping", worker.worker_id, signal.Signals(signum).name)
        worker.stop()
        signal.signal(signum, signal.SIG_DFL)  # a second signal stops at once

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info(
        "worker %s: serving %s from %s (lease %.1fs)",
        worker.worker_id,
        ", ".join(worker.kinds),
        store.backend,
        worker.lease_s,
    )
    retention = start_retention(workspace, lambda: open_store(queue_url, workspace), keep_jobs_days)
    try:
        return worker.run()
    finally:
        if retention is not None:
            retention.stop()
        worker.release_identity()
        store.close()
