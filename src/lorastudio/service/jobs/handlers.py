"""Job handlers: which function runs a job of each kind.

A handler is `fn(ctx: JobContext) -> dict` (the job's result, stored as JSON). It reads
`ctx.payload`, reports with `ctx.progress(...)`, calls `ctx.check_cancelled()` between
steps and writes files into `ctx.artifacts_dir`.

Handlers may be registered as "module:function" strings, imported the first time a job
of that kind runs, so a worker (and `lorastudio --help`) never imports torch up front.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from lorastudio.service.jobs.worker import JobContext

__all__ = [
    "Handler",
    "BUILTIN_HANDLERS",
    "register_handler",
    "get_handler",
    "registered_kinds",
    "sleep_handler",
]

Handler = Callable[["JobContext"], "dict[str, Any] | None"]

# kind -> handler or "module:function". Generate/train/caption/import handlers are added
# here (or with `register_handler`) by the modules that implement them.
BUILTIN_HANDLERS: dict[str, Handler | str] = {
    "sleep": "lorastudio.service.jobs.handlers:sleep_handler",
    "generate": "lorastudio.service.job_handlers:generate_handler",
    "grid": "lorastudio.service.grid:grid_handler",
    "train": "lorastudio.service.job_handlers:train_handler",
    "caption": "lorastudio.service.job_handlers:caption_handler",
    "import": "lorastudio.service.job_handlers:import_handler",
}

_registry: dict[str, Handler | str] = dict(BUILTIN_HANDLERS)


def register_handler(kind: str, fn: Handler | str) -> None:
    """Make workers able to run jobs of `kind`; `fn` is a callable or a "module:function" path."""
    if not kind:
        raise LorastudioError("handler kind: empty; pass a kind such as 'generate'.")
    if isinstance(fn, str) and ":" not in fn:
        raise LorastudioError(f"handler for {kind!r}: {fn!r} must look like 'package.module:function'.")
    _registry[kind] = fn


def registered_kinds() -> list[str]:
    return sorted(_registry)


def get_handler(kind: str) -> Handler:
    """The callable for `kind`, importing it on first use."""
    entry = _registry.get(kind)
    if entry is None:
        raise LorastudioError(
            f"job kind {kind!r}: no handler registered; known kinds: {', '.join(registered_kinds())}."
        )
    if callable(entry):
        return entry
    module_name, _, attr = entry.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise LorastudioError(
            f"handler for {kind!r}: cannot load {entry} ({exc}); check the install."
        ) from None
    _registry[kind] = fn
    return fn


def sleep_handler(ctx: JobContext) -> dict[str, Any]:
    """A job that only waits: for tests and queue benchmarks.

    payload: `seconds` (total, default 1), `steps` (progress events, default 10),
    `fail` (raise with this message), `mark` (write `attempt-N.txt` into artifacts_dir).
    """
    seconds = float(ctx.payload.get("seconds", 1.0))
    steps = int(ctx.payload.get("steps", 10))
    if ctx.payload.get("mark"):
        (ctx.artifacts_dir / f"attempt-{ctx.attempt}.txt").write_text(f"{ctx.worker_id}\n", encoding="utf-8")
    if ctx.resumed:
        ctx.log(f"resumed: attempt {ctx.attempt}")
    if steps <= 0:
        time.sleep(seconds)
    for step in range(steps):
        ctx.check_cancelled()
        time.sleep(seconds / steps)
        ctx.progress((step + 1) / steps, step=step + 1, total=steps)
    if ctx.payload.get("fail"):
        raise RuntimeError(str(ctx.payload["fail"]))
    return {"slept": seconds, "steps": steps, "attempt": ctx.attempt, "worker": ctx.worker_id}
