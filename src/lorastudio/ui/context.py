"""What every tab module gets: the studio, the page's language, and the controls tabs share.

Tabs are built in order (`ui.tabs.TABS`); a tab that offers "send to Generate" finds the
Generate tab's controls in `ctx.shared`, so no tab imports another.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError
from lorastudio.service import callers
from lorastudio.ui.i18n import LABELS, Translator, translator
from lorastudio.ui.i18n_errors import ERROR_WHAT

if TYPE_CHECKING:
    from lorastudio.service.preferences import Preferences
    from lorastudio.service.studio import Studio

__all__ = [
    "UiContext", "user_of", "owner_to_check", "unfinished_job_of", "error_text", "worded_error", "job_error_text",
    "error_markup", "failed_markup", "cancel_markup", "poll_job", "queued_text",
]  # fmt: skip


@dataclass
class UiContext:
    studio: Studio
    language: str
    t: Translator
    preferences: Preferences
    # controls other tabs read or fill: "generate.fields" (config field -> control), "generate.tab"...
    shared: dict[str, Any] = field(default_factory=dict)
    tabs: Any = None  # the gr.Tabs, so a "send to" button can switch tab
    on_load: list[dict[str, Any]] = field(default_factory=list)  # blocks.load(**hook) per page load

    @classmethod
    def create(cls, studio: Studio, language: str) -> UiContext:
        from lorastudio.service.preferences import Preferences, load_preferences

        try:
            preferences = load_preferences(studio.workspace)
        except LorastudioError:
            preferences = Preferences()  # the Settings tab shows the error when it loads
        return cls(studio=studio, language=language, t=translator(language), preferences=preferences)


def _state_of(request: Any) -> Any:
    """The state the security middleware wrote on the HTTP request behind a `gr.Request`."""
    return getattr(getattr(request, "request", None), "state", None)


def user_of(request: Any) -> str:
    """The user the security middleware authenticated for this browser ('' when auth is off)."""
    return callers.caller_name(_state_of(request))


def owner_to_check(request: Any) -> str | None:
    """Whose jobs this browser may cancel or resume (`service.callers.owner_to_check`)."""
    return callers.owner_to_check(_state_of(request))


def unfinished_job_of(
    ctx: UiContext, request: Any, kinds: tuple[str, ...], states: tuple[str, ...] = ("running",)
) -> Any | None:
    """The caller's job of one of these kinds still in one of these states, for a page reload to
    follow again: the same jobs it may cancel (with auth off, the studio's, whoever queued them)."""
    owner = owner_to_check(request)
    for state in states:
        for job in ctx.studio.list_jobs(state=state, user=owner, limit=1000):  # kinds mixed in the queue
            if job.kind in kinds:
                return job
    return None


# where a form's labels are, by the `form` a refused value's params name (`config.validation_key`)
_FORM_LABELS = {"train": "trainform.", "generate": "generate."}


def worded_error(
    ctx: Any, key: str | None, params: dict[str, Any] | None, english: str, prefix: str = "err"
) -> str:
    """An error in the page's language: on the Chinese page its `err.<key>` sentence with `params`
    (a `what` the service names in English put into Chinese, `ERROR_WHAT`; a form's `field` by the
    form's own label for it); the English page, an error without a key or a key without a label (or
    one whose values are missing) get `english`, the service's own line. `prefix`: another table of
    keyed lines (`import`: an import report's reasons)."""
    label = f"{prefix}.{key}" if key else ""
    if getattr(ctx, "language", None) != "zh" or label not in LABELS:
        return english
    values = {name: ERROR_WHAT.get(value, value) if name == "what" else value for name, value in (params or {}).items()}
    form_label = f"{_FORM_LABELS[values['form']]}{values.get('field')}" if values.get("form") in _FORM_LABELS else ""
    if form_label in LABELS:
        values["field"] = LABELS[form_label][1]
    try:
        return LABELS[label][1].format(**values)
    except (KeyError, IndexError, ValueError, AttributeError):
        return english


def job_error_text(ctx: UiContext, job: Any) -> str:
    """What went wrong with a finished job, in the page's language: a failed job by the error key
    its result keeps (`Job.error_key`), a cancelled one as cancelled; else its stored English line."""
    english = job.error or job.state
    if job.state == "cancelled":
        return worded_error(ctx, "job_cancelled", {}, english)
    return worded_error(ctx, getattr(job, "error_key", None), getattr(job, "error_params", None), english)


def error_text(exc: BaseException, ctx: UiContext | None = None) -> str:
    """A readable one-line message for a refused input (never a stack trace on the page); with the
    page's `ctx`, an error that carries a key is worded in the page's language (`worded_error`)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg', 'invalid value')}" if where else str(first.get("msg", exc))
    if isinstance(exc, LorastudioError):
        return worded_error(ctx, exc.key, exc.params, str(exc))
    return f"{type(exc).__name__}: {exc}"


def error_markup(ctx: UiContext, problem: BaseException | str) -> str:
    """A refused input's message, shown next to the control that sent it."""
    text = error_text(problem, ctx) if isinstance(problem, BaseException) else problem
    return f'<span class="error-text">{ctx.t("app.error")}: {text}</span>'


def failed_markup(ctx: UiContext, job: Any) -> str:
    """A job that ended in failure, in the place its progress was shown."""
    return f'<span class="error-text">{ctx.t("progress.failed", error=job_error_text(ctx, job))}</span>'


def cancel_markup(ctx: UiContext, job_id: str, cancelling_label: str, user: str | None) -> str:
    """Ask the job shown in a tab to stop (the caller's own: the id comes back from the browser);
    the tab's "cancelling" text, or why it could not."""
    if not (job_id or "").strip():
        return ""
    try:
        ctx.studio.cancel_job(job_id.strip(), user=user)
    except Exception as exc:
        return error_markup(ctx, exc)
    return ctx.t(cancelling_label)


def queued_text(ctx: UiContext, job: Any) -> str:
    """"Queued, position N", counting from 1 (the store counts the jobs ahead, from 0)."""
    return ctx.t("progress.queued", position=(ctx.studio.queue_position(job) or 0) + 1)


def poll_job(studio: Any, job_id: str, every: float) -> Iterator[Any]:
    """The job, read again every `every` seconds; the last one yielded is finished."""
    while True:
        job = studio.get_job(job_id)
        yield job
        if job.finished:
            return
        time.sleep(every)
