"""Jobs: the queue and history of every job kind (generate, train, caption, import, grid).

The table refreshes itself every few seconds, so two browser tabs (or a reloaded page) see
the same job's progress; a job can be cancelled by its id, as `lorastudio jobs cancel` does.
"""

from __future__ import annotations

import datetime as dt

import gradio as gr

from lorastudio.ui.context import UiContext, error_markup, job_error_text, owner_to_check, user_of

TAB_ID = "jobs"
LABEL = "tab.jobs"
REFRESH_S = 3.0
COLUMNS = ("id", "kind", "state", "user", "progress", "created", "error")


def build(ctx: UiContext) -> None:
    t = ctx.t
    headers = [t(f"jobs.column.{column}") for column in COLUMNS]
    table = gr.Dataframe(
        headers=headers, value=_rows(ctx), interactive=False, wrap=True, label=t("jobs.table"), elem_id="jobs-table"
    )
    with gr.Row():
        job_id = gr.Textbox(label=t("jobs.job_id"), scale=3, elem_id="jobs-job-id")
        cancel = gr.Button(t("jobs.cancel"), scale=1, elem_id="jobs-cancel")
        refresh = gr.Button(t("jobs.refresh"), scale=1)
    message = gr.Markdown(elem_id="jobs-message")
    files = gr.JSON(label=t("jobs.artifacts"))

    timer = gr.Timer(REFRESH_S)
    timer.tick(lambda: _rows(ctx), None, table)
    refresh.click(lambda: _rows(ctx), None, table)

    def cancel_job(job: str, request: gr.Request) -> tuple:
        try:  # the caller's own jobs only, as in the API
            cancelled = ctx.studio.cancel_job(job.strip(), user=owner_to_check(request))
        except Exception as exc:
            return error_markup(ctx, exc), _rows(ctx)
        return t("jobs.cancelled", job=cancelled.id), _rows(ctx)

    cancel.click(cancel_job, job_id, [message, table])
    job_id.submit(lambda job: _artifacts(ctx, job), job_id, files)
    table.select(_selected_id, None, job_id).then(lambda job: _artifacts(ctx, job), job_id, files)
    ctx.shared["jobs.user_of"] = user_of


def _selected_id(event: gr.SelectData) -> str:
    row = event.row_value or []
    return str(row[0]) if row else ""


def _artifacts(ctx: UiContext, job: str) -> list:
    try:
        return ctx.studio.artifacts(job.strip()) if job and job.strip() else []
    except Exception:
        return []


def _rows(ctx: UiContext) -> list[list]:
    rows = []
    for job in ctx.studio.list_jobs(limit=200):
        created = dt.datetime.fromtimestamp(job.created_at).strftime("%Y-%m-%d %H:%M:%S") if job.created_at else ""
        rows.append([job.id, job.kind, job.state, job.user or "", f"{100 * float(job.progress or 0):.0f}%",
                     created, job_error_text(ctx, job)[:200] if job.error else ""])  # fmt: skip
    return rows
