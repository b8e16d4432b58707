"""What every job handler that renders images shares: the worker's model cache, step progress
with previews and the stop check, and publishing a finished job's files.

Its own module so that handlers in other modules (`service.series`) use them without
importing `service.job_kinds`, which imports every handler.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.generate.config import GenerateConfig
from lorastudio.service.jobs.store import Job, JobCancelled, JobStopped

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from lorastudio.service.jobs.context import JobContext
    from lorastudio.service.model_cache import ModelCache
    from lorastudio.service.names import NamePolicy
    from lorastudio.service.workspace import Workspace

__all__ = ["PREVIEW_EVERY_STEPS", "PROGRESS_EVERY_S", "StepReporter", "generation_config", "json_ready", "keep_partial_result",
           "model_cache_of", "names_policy_of", "noting_loaded_models", "publish_artifacts", "run_folder"]  # fmt: skip

# At most this often a generation step is written to the queue (the last step always is).
PROGRESS_EVERY_S = 0.1


# --- artifacts --------------------------------------------------------------------------


def publish_artifacts(ctx: JobContext, folder: Path) -> list[str]:
    """Upload a finished job's files to the artifact store, when it is not this workspace.

    With several boxes the API that answers a download may not be the box that ran the job.
    """
    from lorastudio.service.artifacts import open_artifact_store

    store = ctx.cache.get("artifact_store")
    if store is None:
        store = ctx.cache["artifact_store"] = open_artifact_store()
    if not store.remote:
        return []
    names = store.publish(ctx.job_id, folder)
    ctx.emit("artifacts", {"names": names, "store": store.describe()})
    return names


def model_cache_of(ctx: JobContext) -> ModelCache:
    """The worker's model cache, kept across jobs so a loaded model is reused; it compiles what it
    loads when the worker was started with a compile backend (`lorastudio worker --compile`)."""
    from lorastudio.service.model_cache import ModelCache

    cache = ctx.cache.get("model_cache")
    if cache is None:
        cache = ctx.cache["model_cache"] = ModelCache(
            ctx.workspace, names=names_policy_of(ctx), compile_backend=ctx.cache.get("compile_backend")
        )
    return cache


def names_policy_of(ctx: JobContext) -> NamePolicy:
    """How this worker finds request names: strict, hub ids only where its starter allows them."""
    from lorastudio.service.names import STRICT

    return ctx.cache.get("names", STRICT)


PREVIEW_EVERY_STEPS = 5  # a preview image every N sampling steps (A1111's default is 10)


class StepReporter:
    """Turns sampler callbacks into throttled progress rows and a non-raising stop check."""

    def __init__(self, ctx: JobContext, skippable: bool = False) -> None:
        self.ctx = ctx
        self.skippable = skippable  # a /skip drops the current batch (generate jobs only)
        self.stopped: JobStopped | None = None
        self._last = 0.0

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            self.ctx.progress(done / max(total, 1), step=done, total=total)

    def preview(self, image: PILImage.Image) -> None:
        """A small PNG of the current estimate as a `preview` event (A1111's current_image)."""
        import base64
        import io

        image = image.copy()
        image.thumbnail((256, 256))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        self.ctx.emit("preview", {"image": base64.b64encode(buffer.getvalue()).decode("ascii")})

    def should_stop(self) -> bool:
        try:
            skip = self.ctx.check_step(self.skippable)  # one database read for both questions
        except JobStopped as exc:
            self.stopped = exc
            if not isinstance(exc, JobCancelled):
                # The worker stops or lost the job: it runs again whole, so nothing of this run is
                # kept (a cancel keeps the batch it stopped, as A1111's interrupt).
                raise
            return True
        if skip:
            from lorastudio.generate.pipeline import SkipBatch

            self.ctx.emit("skipped", {})  # clients (and /progress) see the batch or cell dropped
            raise SkipBatch()
        return False


# --- the frame of an image job ----------------------------------------------------------


def generation_config(ctx: JobContext) -> GenerateConfig:
    """The job's `config` as a GenerateConfig, on this worker's device when it names none."""
    cfg = GenerateConfig.model_validate(ctx.payload.get("config") or {})
    if cfg.device is None and ctx.device:
        cfg = cfg.model_copy(update={"device": ctx.device})
    return cfg


@contextmanager
def noting_loaded_models(ctx: JobContext, cache: Any) -> Iterator[None]:
    """After the work, however it ends, the job reports which models its worker keeps loaded."""
    try:
        yield
    finally:
        ctx.loaded.clear()
        ctx.loaded.update(cache.loaded_names())


def keep_partial_result(ctx: JobContext, reporter: StepReporter, result: dict[str, Any]) -> dict[str, Any]:
    """End a job that keeps what it made when cancelled (a grid, a series), as A1111 ends an
    interrupted x/y/z plot: a worker stop runs it again whole; a cancel ends it `cancelled` with
    `result`; otherwise its files are published and `result` answered. A job whose images are not
    kept (`service.unsaved`) publishes nothing and says so: `kept: false`, and a line in its log."""
    from lorastudio.service.unsaved import NOT_KEPT_LINE, keeps_files

    if reporter.stopped is not None and not isinstance(reporter.stopped, JobCancelled):
        raise reporter.stopped  # the worker stops or lost the job: it runs again, whole
    if keeps_files(ctx.payload):
        publish_artifacts(ctx, ctx.artifacts_dir)
    else:
        result = {**result, "kept": False}
        ctx.log(NOT_KEPT_LINE)
    if reporter.stopped is not None:
        raise JobCancelled(str(reporter.stopped), result=result)
    return result


def json_ready(value: Any) -> Any:
    """A handler's result as the job store keeps it: JSON types only (paths and others as text)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def run_folder(ws: Workspace, job: Job) -> Path:
    """A train job's folder: `runs/<payload.run>` (the name reserved when it was queued)."""
    run = str(job.payload.get("run") or job.id)
    return ws.safe_child(ws.runs, run, "run name")
