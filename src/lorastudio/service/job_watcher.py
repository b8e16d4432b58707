"""Watching jobs for the fronts: waiting for one to finish, waking streaming clients, and what
A1111's /progress, /interrupt and /skip see.

A waiter holds a `Future` per job that the in-process worker resolves when the job ends, so a
waiting request wakes at once; it re-reads the store every `WAIT_POLL_S` too, for jobs other
processes finish. The blocking and the asyncio waiter share that one core. Streaming clients
(`subscribe`) share one thread that listens to the database and wakes all of them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from lorastudio.service.jobs import Job, JobStore
from lorastudio.service.jobs.store import FINISHED_STATES, QUEUED, RUNNING

__all__ = ["WAIT_POLL_S", "JobWatcher"]

logger = logging.getLogger("lorastudio.studio")

# A waiter re-reads the job from the store this often, for jobs finished by other processes.
WAIT_POLL_S = 0.5
_FOLLOWED_JOBS = 16  # progress cursors kept (one per running job a page follows)


class JobWatcher:
    """Waits, event fan-out and progress over a job store.

    `store` serves waits, the event listener and /interrupt and /skip; `status_store` (its own
    connection) serves /progress, so status reads never wait behind a burst of submissions.
    """

    def __init__(self, store: JobStore, status_store: JobStore) -> None:
        self.store = store
        self.status_store = status_store
        self._lock = threading.Lock()
        self._waiters: dict[str, Future] = {}
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._hub: threading.Thread | None = None
        self._closed = threading.Event()
        # Per running job followed: the last event read and the progress state so far, so a poll
        # reads only the new events (a few jobs at once: two pages following two jobs).
        self._progress_cursors: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()

    def stop(self) -> None:
        """Let the event listener end (it notices within a second)."""
        self._closed.set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the event listener and wait for its thread."""
        self.stop()
        if self._hub is not None:
            self._hub.join(timeout)

    # --- waiting for one job ---------------------------------------------------------------

    def job_ended(self, job_id: str) -> None:
        """Wake the requests waiting for this job (the in-process worker calls it)."""
        with self._lock:
            future = self._waiters.pop(job_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _future_for(self, job_id: str) -> Future:
        with self._lock:
            future = self._waiters.get(job_id)
            if future is None:
                future = self._waiters[job_id] = Future()
            return future

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._waiters.pop(job_id, None)

    @staticmethod
    def _finished(job: Job, deadline: float | None, timeout: float | None) -> Job | None:
        """The job once it finished, None while it runs; past the deadline a `TimeoutError`."""
        if job.state in FINISHED_STATES:
            return job
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job.id}: still {job.state} after {timeout:.0f}s")
        return None

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job finishes (woken by the in-process worker, or by polling)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                future = self._future_for(job_id)  # a fresh one after each wake-up
                job = self._finished(self.store.get(job_id), deadline, timeout)
                if job is not None:
                    return job
                try:
                    future.result(timeout=WAIT_POLL_S)
                except FutureTimeout:
                    pass
        finally:
            self._forget(job_id)

    async def wait_async(self, job_id: str, timeout: float | None = None) -> Job:
        """`wait` without holding a thread: many waiting requests cost no threads."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                future = self._future_for(job_id)  # a fresh one after each wake-up
                job = self._finished(await asyncio.to_thread(self.store.get, job_id), deadline, timeout)
                if job is not None:
                    return job
                try:
                    await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), WAIT_POLL_S)
                except TimeoutError:
                    pass
        finally:
            self._forget(job_id)

    # --- event fan-out for streaming clients -----------------------------------------------

    def subscribe(self) -> asyncio.Event:
        """An asyncio.Event set whenever jobs may have new events (one database listener per process)."""
        event = asyncio.Event()
        with self._lock:
            self._subscribers.add((asyncio.get_running_loop(), event))
            if self._hub is None or not self._hub.is_alive():
                self._hub = threading.Thread(target=self._listen_for_events, name="lorastudio-events", daemon=True)
                self._hub.start()
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        with self._lock:
            self._subscribers = {(loop, ev) for loop, ev in self._subscribers if ev is not event}

    def _listen_for_events(self) -> None:
        while not self._closed.is_set():
            try:
                changed = self.store.wait_for_events(1.0)
            except Exception as exc:  # a database hiccup: clients fall back to their own timeout
                logger.warning("event listener: %s", exc)
                time.sleep(1.0)
                continue
            if changed == set():
                continue
            with self._lock:
                subscribers = list(self._subscribers)
            for loop, event in subscribers:
                try:
                    loop.call_soon_threadsafe(event.set)
                except RuntimeError:  # that client's loop is gone
                    self.unsubscribe(event)

    # --- what the A1111 /progress, /interrupt and /skip routes see ---------------------------

    def progress_state(self, user: str | None = None, job_id: str | None = None) -> dict[str, Any]:
        """The running job (if any), its step and ETA, whether it was interrupted or skipped, and
        how many jobs are active.

        With `user` only that user's running job is shown (its prompt's preview image is theirs);
        `None` shows the oldest running job of anyone (the server's own view). With `job_id`, that
        job while it runs (a page following one job of a user who has several running).
        """
        store = self.status_store
        running = self.running_of(user, store)
        queued = store.list_jobs(state=QUEUED, limit=10_000)
        state: dict[str, Any] = {
            "job": None,
            "job_count": len(running) + len(queued),
            "progress": 0.0,
            "eta": None,
            "step": 0,
            "steps": 0,
            "started_at": None,
            "kind": None,
            "preview": None,
            "interrupted": False,
            "skipped": False,
            "batches": 1,
        }
        if job_id is not None:
            running = [job for job in running if job.id == job_id]
        if not running:
            return state
        job = min(running, key=lambda j: j.started_at or 0.0)
        data = self._latest_progress(job.id)
        now = store.now()
        elapsed = max(now - (job.started_at or now), 0.0)
        eta = elapsed / job.progress - elapsed if job.progress > 0 else None
        if data.get("eta_s") is not None:  # the work's own (a resumed run's pace since its restart)
            eta = float(data["eta_s"])
        state.update(
            job=job.id,
            kind=job.kind,
            progress=float(job.progress),
            eta=eta,
            step=int(data.get("step", 0)),
            steps=int(data.get("total", 0)),
            preview=data.get("preview"),
            started_at=job.started_at,
            interrupted=job.cancel_requested,
            skipped=bool(data.get("skipped", False)),
            # a generation's batches (n_iter): its steps count all of them, A1111 shows one at a time
            batches=int(((job.payload or {}).get("config") or {}).get("count", 1) or 1) if job.kind == "generate" else 1,
        )
        return state

    def _latest_progress(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            seq, data = self._progress_cursors.get(job_id, (0, {}))
        for event in self.status_store.events(job_id, after_seq=seq, limit=10_000):
            seq = event.seq
            if event.type == "progress":
                # A1111 shows `skipped` from the /skip until the next batch (or grid cell) runs.
                skipped = data.get("skipped", False) and not data.get("skip_taken", False)
                data = {**event.data, "preview": data.get("preview"), "skipped": skipped}
            elif event.type == "preview":
                data = {**data, "preview": event.data.get("image")}
            elif event.type == "skip_requested":
                data = {**data, "skipped": True, "skip_taken": False}
            elif event.type == "skipped":  # the worker dropped the batch or cell
                data = {**data, "skip_taken": True}
        with self._lock:
            self._progress_cursors[job_id] = (seq, data)
            self._progress_cursors.move_to_end(job_id)
            while len(self._progress_cursors) > _FOLLOWED_JOBS:
                self._progress_cursors.popitem(last=False)
        return data

    def running_of(self, user: str | None, store: JobStore | None = None) -> list[Job]:
        """Running jobs, only `user`'s when given: one user never sees or stops another's work."""
        running = (store or self.store).list_jobs(state=RUNNING, limit=50)
        return running if user is None else [job for job in running if job.user == user]

    def interrupt(self, user: str | None, kinds: Iterable[str]) -> list[str]:
        """Cancel every running job of these kinds of `user` (`None`: of anyone); their ids."""
        stopped = []
        for job in self.running_of(user):
            if job.kind in kinds:
                self.store.cancel(job.id)
                stopped.append(job.id)
        return stopped

    def skip(self, user: str | None, kinds: Iterable[str]) -> list[str]:
        """Ask every running job of these kinds of `user` to drop its current batch or cell."""
        return [job.id for job in self.running_of(user) if job.kind in kinds and self.store.skip(job.id)]
