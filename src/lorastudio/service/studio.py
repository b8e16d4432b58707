"""The studio: one object the fronts (REST API, web UI) share.

It owns the workspace, the settings, a model cache, the persistent job queue and one
in-process worker thread per device. Every request that does real work becomes a job,
including the synchronous A1111 routes: they submit a job and wait for it, so only one
generation runs at a time per device and the rest wait in the queue, in order.

It is the composition root: it builds the parts and owns their start and close, and keeps
thin methods for the names the fronts use. The parts, each a module of its own:
`requests` (names in a request -> workspace files, nothing else), `quota` (unfinished jobs
per user, Retry-After), `limits` (work one request may ask for), `uploads` (what clients
send), `job_watcher` (waits, event fan-out, /progress, /interrupt, /skip) and `settings`.
The A1111 dialect (model titles, per-user options) lives in `api/a1111_options.py`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import InvalidRequest, LorastudioError, NotYours
from lorastudio.service import uploads
from lorastudio.service.artifacts import Artifact, open_artifact_store
from lorastudio.service.database import ensure_database_healthy
from lorastudio.service.job_kinds import (
    CaptionJobConfig,
    ImportJobConfig,
    job_control_maps,
    job_folder,
    job_images,
)
from lorastudio.service.job_watcher import JobWatcher
from lorastudio.service.jobs import Event, Job, JobStore, open_store
from lorastudio.service.limits import check_generate_limits, check_output_pixels, check_priority
from lorastudio.service.model_cache import ModelCache
from lorastudio.service.models import default_model, model_on_disk
from lorastudio.service.names import NamePolicy
from lorastudio.service.quota import Quota, StorageFull, is_storage_full
from lorastudio.service.requests import RequestResolver
from lorastudio.service.retention import RetentionThread, start_retention
from lorastudio.service.settings import StudioSettings
from lorastudio.service.unsaved import hold_request_uploads, release_job_files, sweep_unsaved
from lorastudio.service.worker_thread import WorkerThread
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.train.config import TrainConfig

# InvalidRequest and StudioSettings: named here for the fronts that build a Studio.
__all__ = ["InvalidRequest", "Studio", "StudioSettings"]

logger = logging.getLogger("lorastudio.studio")

# Job kinds that A1111's /interrupt reaches (they check for it between sampling steps; what
# they made before it is kept) and those /skip reaches (they can drop one batch or cell).
INTERRUPTIBLE_KINDS = ("generate", "grid", "series", "portrait-make")
SKIPPABLE_KINDS = ("generate", "grid", "series")


class Studio:
    """Workspace + settings + model cache + job queue + the in-process worker.

    The API side and the worker each get their own store (their own database
    connection): a SQLite worker notices new jobs by seeing *another* connection commit.
    """

    def __init__(self, workspace: Workspace | None = None, settings: StudioSettings | None = None) -> None:
        self.workspace = workspace or Workspace.open()
        self.settings = settings or StudioSettings()
        ensure_database_healthy(self.settings.queue_url, self.workspace)  # one clear line, not a traceback
        self.store = self._open_store()
        # Status reads (/progress) get their own connection, so they never wait behind
        # a burst of submissions queued on the main one.
        self._status_store = self._open_store()
        # Every name a request carries is read strictly (service.names): workspace names only.
        self.names = NamePolicy(strict=True, allow_hub_ids=self.settings.allow_hub_ids)
        self.cache = ModelCache(
            self.workspace,
            max_models=self.settings.max_models,
            memory_budget_bytes=self.settings.model_memory_budget_bytes,
            names=self.names,
            compile_backend=self.settings.compile_backend,
        )
        self.artifact_store = open_artifact_store(self.settings.artifacts_url)
        self.requests = RequestResolver(self.workspace, self.names, self.settings.device)
        self.watcher = JobWatcher(self.store, self._status_store)
        self.quota = Quota(self.store, self.settings.max_queued_per_user or 0, self._running_eta)
        self._model = self.settings.model or default_model(self.workspace)
        # Count-then-enqueue under one lock, so concurrent requests of one user cannot overshoot.
        self._submit_lock = threading.Lock()
        shared = {"model_cache": self.cache, "names": self.names, "artifact_store": self.artifact_store}
        self.worker_thread = WorkerThread(self.workspace, self.settings.device, shared, self.watcher.job_ended)
        self.retention: RetentionThread | None = None  # `keep_jobs_days`: started with the worker

    def _open_store(self) -> JobStore:
        return open_store(self.settings.queue_url, self.workspace, lease_s=self.settings.lease_s)

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the in-process worker thread (one per device); idempotent."""
        preload = self.settings.preload and model_on_disk(self.workspace, self._model)
        self.sweep_unsaved()  # answers a stopped server never built
        self.worker_thread.start(self._open_store(), self._model if preload else None)
        if self.retention is None:  # purges at once, then hourly (service.retention)
            self.retention = start_retention(self.workspace, self._open_store, self.settings.keep_jobs_days)

    @property
    def ready(self) -> bool:
        """The worker runs jobs (and the default model is loaded, with `preload`)."""
        return self.worker_thread.ready

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker (a running job goes back to the queue at its next step) and close the store."""
        self.watcher.stop()
        if self.retention is not None:
            self.retention.stop(timeout)
        self.worker_thread.close(timeout)
        self.watcher.close(timeout)
        self._status_store.close()
        self.store.close()

    def __enter__(self) -> Studio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- models -----------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model used when a request names none (A1111's `sd_model_checkpoint`)."""
        return self._model

    # --- uploads ----------------------------------------------------------------------

    @property
    def uploads_dir(self) -> Path:
        return uploads.uploads_dir(self.workspace)

    def discard_uploads(self, names: list[str | None]) -> None:
        """Remove uploads a refused request stored (its images), so a 4xx leaves nothing behind."""
        uploads.discard_uploads(self.workspace, names)

    # --- submitting jobs --------------------------------------------------------------

    def submit(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        user: str = "",
        priority: int = 0,
        affinity: str | None = None,
    ) -> Job:
        """Queue a job; raises `QuotaExceeded` when `user` already has too many unfinished ones."""
        check_priority(priority)
        with self._submit_lock:
            self.check_quota(user)
            try:
                return self.store.enqueue(kind, payload, user=user, priority=priority, affinity=affinity)
            except Exception as exc:
                if is_storage_full(exc):
                    raise StorageFull(
                        "the server's disk or job database is full; try again later.", key="disk_full"
                    ) from exc
                raise

    def check_quota(self, user: str = "") -> None:
        """Refuse a new job of `user` past `max_queued_per_user` unfinished (queued + running) jobs."""
        self.quota.check(user)

    def check_model_name(self, name: str, what: str = "model") -> str:
        """`name` when it names a model in the workspace (or an allowed hub id); else the 404 of a missing one."""
        return self.requests.check_model_name(name, what)

    def resolve_generate(self, cfg: GenerateConfig, missing_loras: str = "refuse") -> GenerateConfig:
        """A request whose names all name workspace files (service.requests); the rest is refused."""
        return self.requests.generate(cfg, self._model, missing_loras)

    def check_generate_limits(self, cfg: GenerateConfig) -> None:
        """Refuse a generation that asks for more work than the server's limits (service.limits)."""
        check_generate_limits(self.settings, cfg, self._init_picture_size(cfg))

    def _init_picture_size(self, cfg: GenerateConfig) -> tuple[int, int] | None:
        """The uploaded init picture's size where the request leaves a side to it (`request_size`)."""
        if not cfg.follows_picture:
            return None
        from lorastudio.generate.images import picture_size

        try:
            path = uploads.upload_path(self.workspace, cfg.init_image)
        except LorastudioError:  # not an upload: resolving the request refuses it next
            return None
        return picture_size(path)

    def check_output_pixels(self, width: int, height: int, what: str) -> None:
        """An upscaled image (/extra-single-image) within `max_output_pixels`."""
        check_output_pixels(self.settings, width, height, what)

    def submit_generate(
        self,
        cfg: GenerateConfig,
        *,
        user: str = "",
        priority: int = 0,
        missing_loras: str = "refuse",
        notes: list[str] | None = None,
        keep: bool = True,
    ) -> Job:
        """Queue a generation. `missing_loras="skip"` (the A1111 API, as A1111): a `<lora:NAME>` no
        file answers to is left out with a "Lora not found" line, not refused. `notes`: what the
        request asked for that is not done (A1111's `restore_faces`), first in the job's notes.
        `keep=False` (A1111's `save_images: false`): the images are answered, not kept — no files in
        outputs/, no library rows; call `release_job_files` once the answer is built (`service.unsaved`)."""
        from lorastudio.generate.plan import hires_sampler_choice
        from lorastudio.generate.samplers import parse_sampler

        first = parse_sampler(cfg.sampler, cfg.schedule)  # a bad name fails now, not in the queue
        if cfg.hires_on:
            hires_sampler_choice(cfg, first)  # the hires pass's too
        self.check_generate_limits(cfg)
        cfg = self.resolve_generate(cfg, missing_loras)
        payload: dict[str, Any] = {"config": cfg.model_dump()}
        if missing_loras == "skip":
            payload["missing_loras"] = "skip"
        if notes:
            payload["notes"] = list(dict.fromkeys(notes))  # each once
        if not keep:
            payload["keep"] = False
            self.sweep_unsaved()
        return self.submit("generate", payload, user=user, priority=priority, affinity=cfg.model)

    def submit_train(self, cfg: TrainConfig, *, user: str = "", priority: int = 0) -> Job:
        """Reserve the run folder now (two queued runs never share one) and queue the run."""
        self.check_quota(user)  # before the run folder is reserved
        cfg, run = self.requests.train(cfg)
        payload = {"config": cfg.model_dump(mode="json"), "run": run}
        return self.submit("train", payload, user=user, priority=priority, affinity=cfg.model)

    def resume_train(self, job_id: str, *, user: str | None, priority: int = 0) -> Job:
        """Queue a cancelled or failed training job again: it resumes from its run's last checkpoint.

        The new job keeps the run folder and the resolved config of the old one; the train
        handler finds the checkpoint there (as after a worker restart). `user` None (auth off)
        resumes any run, under its owner's name.
        """
        # another user's run: it would write into their run folder, on this user's quota
        old = self._owned_job(job_id, user, "resume it", "training run")
        if old.kind != "train" or old.state not in ("cancelled", "failed"):
            raise InvalidRequest(
                f"job {job_id}: only a cancelled or failed training job resumes (this one is a {old.state} {old.kind} job)."
            )
        self._check_not_resumed(old)
        payload = {"config": old.payload["config"], "run": old.payload["run"]}
        return self.submit("train", payload, user=old.user if user is None else user, priority=priority, affinity=old.affinity)

    def _check_not_resumed(self, old: Job, scan: int = 1000) -> None:
        """A run resumes once: a second Resume (a double click, a retried POST) would queue two trainers
        on one run folder, or publish a finished run again over the checkpoint the user picked."""
        run = old.payload.get("run")
        for job in self.list_jobs(limit=scan):  # newest first
            if job.id == old.id or job.created_at < old.created_at:
                break
            if job.kind == "train" and job.payload.get("run") == run and job.state in ("queued", "running", "succeeded"):
                raise InvalidRequest(
                    f"job {old.id}: its run {run!r} was already resumed as job {job.id} ({job.state}); follow that one."
                )

    def pick_checkpoint(self, job_id: str, step: int | str, *, user: str | None) -> dict[str, Any]:
        """"Use this checkpoint": step `step` (20, or its folder's name "step-20") of a training job's run
        replaces the run's LoRA in the library (kohya users pick an earlier epoch when the last one
        overfits). Only the user who queued the run (`user` None: auth off, anyone), as resuming it."""
        from lorastudio.service.training import pick_training_checkpoint

        job = self._owned_job(job_id, user, "pick its checkpoint", "training run")
        run = str(job.payload.get("run") or "") if job.kind == "train" else ""
        if not run:
            raise InvalidRequest(f"job {job_id}: a {job.kind} job; only a training job has checkpoints to pick.")
        self.workspace.safe_child(self.workspace.runs, run, "run")  # a name under runs/, never a path
        return pick_training_checkpoint(self.workspace, run, step, by="user")  # 20 or "step-20"

    def submit_caption(self, cfg: CaptionJobConfig, *, user: str = "", priority: int = 0) -> Job:
        cfg = self.requests.caption(cfg)
        return self.submit("caption", {"config": cfg.model_dump()}, user=user, priority=priority)

    def submit_import(self, cfg: ImportJobConfig, *, user: str = "", priority: int = 0) -> Job:
        self.requests.check_import(cfg)
        return self.submit("import", {"config": cfg.model_dump()}, user=user, priority=priority)

    # --- reading and cancelling jobs --------------------------------------------------

    def list_jobs(self, state: str | None = None, user: str | None = None, limit: int = 100) -> list[Job]:
        return self.store.list_jobs(state=state, user=user, limit=limit)

    def get_job(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def cancel_job(self, job_id: str, user: str | None = None) -> Job:
        """Cancel a job; with `user` (a request's caller, "" for an unnamed token) only that
        user's own job. None (the CLI, or a server with auth off) checks no owner."""
        self._owned_job(job_id, user, "cancel it")
        return self.store.cancel(job_id)

    def _owned_job(self, job_id: str, user: str | None, action: str, what: str = "job") -> Job:
        """The job, when `user` may act on it: their own (`user` None: auth off or the CLI, anyone's)."""
        job = self.get_job(job_id)
        if user is not None and job.user != user:
            raise NotYours(f"job {job_id}: another user's {what}; only the user who queued it can {action}.")
        return job

    def job_events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        return self.store.events(job_id, after_seq=after, limit=limit)

    def queue_position(self, job: Job) -> int | None:
        """How many queued jobs run before this one (0 = next); None once it started."""
        return self.store.queue_position(job)

    def job_folder(self, job: Job) -> Path:
        """Where a job's files are: its kind's folder rule (runs/<run> for training, outputs/<job id> otherwise)."""
        return job_folder(self.workspace, job)

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """The job's files: on this box, and (with an S3 store) those other boxes uploaded."""
        return self.artifact_store.list(job_id, self.job_folder(self.get_job(job_id)))

    def artifact(self, job_id: str, name: str) -> Artifact:
        """One file of the job, from this box's disk if it is here, else from the artifact store.

        Both stores answer a name that is not a job file (traversal included) as a missing one.
        """
        return self.artifact_store.get(job_id, self.job_folder(self.get_job(job_id)), name)

    # --- waiting for jobs -------------------------------------------------------------

    def _running_eta(self) -> float | None:
        return self.progress_state().get("eta")

    def wait_job(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job finishes (woken by the in-process worker, or by polling)."""
        return self.watcher.wait(job_id, timeout)

    async def wait_job_async(self, job_id: str, timeout: float | None = None) -> Job:
        """`wait_job` without holding a thread: many waiting requests cost no threads."""
        return await self.watcher.wait_async(job_id, timeout)

    def job_images(self, job: Job) -> list[Path]:
        """A generate job's PNGs: all of them, or those made before a cancel."""
        return job_images(self.workspace, job)

    def release_job_files(self, job_id: str) -> bool:
        """After a not-kept job's answer is built: remove its files (`service.unsaved`). A kept job keeps
        its files (a succeeded one's request uploads go: its recipes name their copies), one not finished
        yet is left alone (the sweep removes a folder nobody answered from)."""
        return release_job_files(self.workspace, self.get_job(job_id))

    def hold_request_uploads(self, job: Job, names: list[str | None]) -> bool:
        """The uploads a job's request stored go with a not-kept job's files, and once a kept job has
        succeeded (`service.unsaved`). Call it right after submitting, before waiting."""
        return hold_request_uploads(self.workspace, job, names)

    def sweep_unsaved(self) -> list[str]:
        """Remove not-kept jobs' folders whose answer was never built (their client left)."""
        return sweep_unsaved(self.workspace, self.store)

    def job_control_maps(self, job: Job) -> list[Path]:
        """A generate job's ControlNet maps (after the preprocessors), one per unit."""
        return job_control_maps(self.workspace, job)

    # --- streaming clients and A1111's /progress, /interrupt, /skip (service.job_watcher) -----

    def subscribe(self) -> asyncio.Event:
        """An asyncio.Event set whenever jobs may have new events (one database listener per process)."""
        return self.watcher.subscribe()

    def unsubscribe(self, event: asyncio.Event) -> None:
        self.watcher.unsubscribe(event)

    def progress_state(self, user: str | None = None, job_id: str | None = None) -> dict[str, Any]:
        """The running job of `user` (None: of anyone; `job_id`: that one), its step, ETA and preview
        (A1111 /progress)."""
        return self.watcher.progress_state(user, job_id)

    def interrupt(self, user: str | None = None) -> list[str]:
        """Stop every running generation, x/y/z grid and portrait-make of `user` (A1111 /interrupt;
        `None`: of anyone); returns their job ids.

        A grid keeps the cells it rendered: its job ends `cancelled` with the partial grid as result;
        a portrait-make keeps the portraits it finished (in its folder), as a generation its batches.
        """
        return self.watcher.interrupt(user, INTERRUPTIBLE_KINDS)

    def skip(self, user: str | None = None) -> list[str]:
        """Drop the current batch of every running generation, or the current cell of every
        running grid, of `user` (`None`: of anyone), and go on with the next (A1111 /skip)."""
        return self.watcher.skip(user, SKIPPABLE_KINDS)

    def describe(self) -> dict[str, Any]:
        """Settings safe to show a client (no credentials)."""
        url = self.settings.queue_url or ""
        return {
            "workspace": str(self.workspace.root),
            "queue": url.split("@")[-1] if "@" in url else url,
            "model": self._model,
            "device": self.settings.device,
            "worker": self.worker_thread.running,
            "ready": self.ready,
            "pid": os.getpid(),
            "artifacts": self.artifact_store.describe(),
        }

