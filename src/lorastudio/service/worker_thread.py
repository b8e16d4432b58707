"""The studio's in-process worker: one thread per device that runs queued jobs.

It shares the studio's model cache, name policy and artifact store (a job loads a model once
for every request), tells the job watcher when a job ends so waiting requests wake at once,
and with `preload` loads the default model before it takes the first job (as A1111 does).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from lorastudio.service.job_kinds import install
from lorastudio.service.jobs import Job, JobStore
from lorastudio.service.jobs.registry import default_registry
from lorastudio.service.jobs.worker import Worker, default_worker_id
from lorastudio.service.workspace import Workspace

__all__ = ["WorkerThread"]

logger = logging.getLogger("lorastudio.studio")


class _NotifyingWorker(Worker):
    """A worker that calls `on_job_ended(job_id)` after every job it ran, however it ended."""

    def __init__(self, store: JobStore, workspace: Workspace, on_job_ended: Callable[[str], None], **kwargs: Any):
        super().__init__(store, workspace, **kwargs)
        self.on_job_ended = on_job_ended

    def run_job(self, job: Job) -> str | None:
        try:
            return super().run_job(job)
        finally:
            self.on_job_ended(job.id)


class WorkerThread:
    """Start, readiness and stop of the worker thread; `shared` goes into every job's cache."""

    def __init__(
        self,
        workspace: Workspace,
        device: str | None,
        shared: dict[str, Any],
        on_job_ended: Callable[[str], None],
    ) -> None:
        self.workspace = workspace
        self.device = device
        self.shared = shared
        self.on_job_ended = on_job_ended
        self.worker: Worker | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self, store: JobStore, preload: str | None = None) -> None:
        """Run jobs from `store` in a new thread (after loading model `preload`, if given); idempotent."""
        if self.running:
            return
        worker_id = default_worker_id(f"serve-{self.device or 'default'}")
        registry = install(default_registry.copy())  # the application's kinds, and this process's own
        self.worker = _NotifyingWorker(
            store,
            self.workspace,
            self.on_job_ended,
            worker_id=worker_id,
            device=self.device,
            idle_wait_s=0.5,
            registry=registry,
        )
        self.worker.cache.update(self.shared)
        self._thread = threading.Thread(target=self._run, args=(preload,), name="lorastudio-worker", daemon=True)
        self._thread.start()

    def _run(self, preload: str | None) -> None:
        if preload:
            try:
                self.shared["model_cache"].get(preload, self.device)
                self.worker.loaded.add(preload)
                import lorastudio.adapters  # noqa: F401  (what the first generation would import)
                import lorastudio.generate.conditioning  # noqa: F401
                import lorastudio.generate.pipeline  # noqa: F401
            except Exception as exc:  # a broken default model must not stop the queue
                logger.warning("preloading model %s failed: %s", preload, exc)
        self._ready.set()
        try:
            self.worker.run()
        except Exception:  # the queue database went away for good: log, the API keeps answering
            logger.exception("studio worker stopped")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ready(self) -> bool:
        """The worker runs jobs (and the preloaded model is loaded)."""
        return self._ready.is_set() and self.running

    def stop(self) -> None:
        """Ask the worker to stop (a running job goes back to the queue at its next step)."""
        if self.worker is not None:
            self.worker.stop()

    def close(self, timeout: float = 10.0) -> None:
        """Stop, wait for the thread, give up the worker's identity and close its store."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.worker is not None:
            self.worker.release_identity()
            self.worker.store.close()
