"""Which function runs a job of each kind, and where its files go: a registry the worker's starter fills.

A handler is `fn(ctx: JobContext) -> dict` (the job's result, stored as JSON). It reads
`ctx.payload`, reports with `ctx.progress(...)`, calls `ctx.check_cancelled()` between
steps and writes files into `ctx.artifacts_dir`, the folder its kind's folder rule names.

The queue knows no application kind: a `HandlerRegistry` starts empty, and whoever starts
a worker fills it (`lorastudio.service.job_kinds.install` for generate, train, grid,
caption and import). The queue's own `sleep` diagnostic lives in `default_registry`, with
whatever `register_handler` adds (e.g. a module named by `lorastudio worker --import`).

Handlers may be registered as "module:function" strings, imported the first time a job
of that kind runs, so a worker (and `lorastudio --help`) never imports torch up front.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from lorastudio.config import StrictModel
from lorastudio.errors import LorastudioError
from lorastudio.service.jobs.store import Job
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from lorastudio.service.jobs.context import JobContext

__all__ = [
    "FolderRule",
    "Handler",
    "HandlerRegistry",
    "SleepConfig",
    "default_registry",
    "output_folder",
    "register_handler",
    "registered_kinds",
    "sleep_handler",
]

Handler = Callable[["JobContext"], "dict[str, Any] | None"]
FolderRule = Callable[[Workspace, Job], Path]


def output_folder(ws: Workspace, job: Job) -> Path:
    """The folder rule of every kind that names no other: `outputs/<job id>`."""
    return ws.safe_child(ws.outputs, job.id, "job id")


class HandlerRegistry:
    """kind -> (handler, folder rule). Starts empty; `register` fills it, `get` loads a handler on first use."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler | str] = {}
        self._folders: dict[str, FolderRule] = {}

    def register(self, kind: str, fn: Handler | str, folder: FolderRule | None = None) -> None:
        """Make workers able to run jobs of `kind`; `fn` is a callable or a "module:function" path.

        `folder` says where a job of this kind writes its files (default `outputs/<job id>`).
        """
        if not kind:
            raise LorastudioError("handler kind: empty; pass a kind such as 'generate'.")
        if isinstance(fn, str) and ":" not in fn:
            raise LorastudioError(f"handler for {kind!r}: {fn!r} must look like 'package.module:function'.")
        self._handlers[kind] = fn
        if folder is not None:
            self._folders[kind] = folder
        else:
            self._folders.pop(kind, None)

    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def get(self, kind: str) -> Handler:
        """The callable for `kind`, importing it on first use."""
        entry = self._handlers.get(kind)
        if entry is None:
            known = ", ".join(self.kinds()) or "none"
            raise LorastudioError(f"job kind {kind!r}: no handler registered; known kinds: {known}.")
        if callable(entry):
            return entry
        module_name, _, attr = entry.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise LorastudioError(
                f"handler for {kind!r}: cannot load {entry} ({exc}); check the install."
            ) from None
        self._handlers[kind] = fn
        return fn

    def folder(self, ws: Workspace, job: Job) -> Path:
        """Where `job` writes its files, by its kind's folder rule."""
        return self._folders.get(job.kind, output_folder)(ws, job)

    def copy(self) -> HandlerRegistry:
        """A registry with the same entries, to fill further without changing this one."""
        other = HandlerRegistry()
        other.update(self)
        return other

    def update(self, other: HandlerRegistry) -> None:
        """Take every entry of `other` (its handler and folder rule win over ours)."""
        for kind in other.kinds():
            self.register(kind, other._handlers[kind], other._folders.get(kind))


# --- the queue's own diagnostic job ------------------------------------------------------


class SleepConfig(StrictModel):
    """A job that only waits: for tests and queue benchmarks."""

    seconds: float = Field(1.0, ge=0, description="Total time to wait, in seconds.")
    steps: int = Field(10, ge=0, description="Progress events to store (0: one wait, no events).")
    fail: str | None = Field(None, description="Raise with this message at the end (a failing job).")
    mark: bool = Field(False, description="Write attempt-N.txt (the worker's id) into the job's folder.")


def sleep_handler(ctx: JobContext) -> dict[str, Any]:
    """payload: `config` (a SleepConfig); a flat payload (queued before `config`) is read the same."""
    config = ctx.payload.get("config", ctx.payload)
    seconds = float(config.get("seconds", 1.0))
    steps = int(config.get("steps", 10))
    if config.get("mark"):
        (ctx.artifacts_dir / f"attempt-{ctx.attempt}.txt").write_text(f"{ctx.worker_id}\n", encoding="utf-8")
    if ctx.resumed:
        ctx.log(f"resumed: attempt {ctx.attempt}")
    if steps <= 0:
        time.sleep(seconds)
    for step in range(steps):
        ctx.check_cancelled()
        time.sleep(seconds / steps)
        ctx.progress((step + 1) / steps, step=step + 1, total=steps)
    if config.get("fail"):
        raise RuntimeError(str(config["fail"]))
    return {"slept": seconds, "steps": steps, "attempt": ctx.attempt, "worker": ctx.worker_id}


# This process's registry: the `sleep` diagnostic and what `register_handler` adds.
default_registry = HandlerRegistry()
default_registry.register("sleep", sleep_handler)


def register_handler(kind: str, fn: Handler | str, folder: FolderRule | None = None) -> None:
    """Add a kind to this process's `default_registry` (what a `worker --import` module calls)."""
    default_registry.register(kind, fn, folder)


def registered_kinds() -> list[str]:
    """The kinds of this process's `default_registry`."""
    return default_registry.kinds()
