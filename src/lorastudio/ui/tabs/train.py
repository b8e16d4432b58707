"""Train: a preset, a form generated from the training config, and the run followed live.

Choosing a preset fills the form with its values; Start sends the preset plus what the user
changed, the same request `POST /api/v1/jobs/train` takes, so the preset < form layering is
the service's. While the job runs the tab shows step/total and ETA, the loss curve from the
run's log, and each sample image as the trainer writes it; Cancel stops it and Resume queues
it again from its last checkpoint. At the end the checkpoint table shows the scores, and
"Use this checkpoint" puts the chosen step's LoRA into the library under the run's name.
A reloaded page finds the user's running training job and follows it again, or shows their last
run if it was cancelled or failed, so Resume queues it again (also after a server restart).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from lorastudio.ui.config_form import ConfigForm, build_config_form
from lorastudio.ui.context import (
    UiContext,
    cancel_markup,
    error_markup,
    failed_markup,
    owner_to_check,
    poll_job,
    queued_text,
    user_of,
)

TAB_ID = "train"
LABEL = "tab.train"

POLL_S = 0.5
# Shown first, open: what a first run needs; the rest of the config is folded by section.
BASIC_KEYS = (
    "output.name", "model", "data.dir", "method", "trigger", "train.steps", "train.epochs_per_image",
    "lora.rank", "train.learning_rate", "train.resolution",
)  # fmt: skip
# What the user typed here stays when a preset is chosen (a preset rarely names a model or data set).
KEPT_KEYS = ("output.name", "model", "data.dir", "trigger")


def build(ctx: UiContext) -> None:
    from lorastudio.service.choices import model_names
    from lorastudio.service.datasets import list_datasets
    from lorastudio.service.train_runs import form_keys, preset_values
    from lorastudio.service.training import list_presets

    t, ws = ctx.t, ctx.studio.workspace
    presets = list_presets()
    with gr.Row():
        preset = gr.Dropdown(
            [(t("train.no_preset"), "")] + [(p["name"], p["name"]) for p in presets],
            value="",
            label=t("train.preset"),
            elem_id="train-preset",
            scale=2,
        )
        about = gr.Markdown(elem_id="train-preset-about")
    datasets = [row["name"] for row in list_datasets(ws)["datasets"]]
    form = build_config_form(
        t,
        form_keys(),
        {**preset_values(None), "model": ctx.studio.model},
        BASIC_KEYS,
        choices={"model": model_names(ws), "data.dir": datasets},
    )
    with gr.Row():
        start = gr.Button(t("train.start"), variant="primary", elem_id="train-start")
        cancel = gr.Button(t("train.cancel"), elem_id="train-cancel")
        resume = gr.Button(t("train.resume"), elem_id="train-resume")
        refresh = gr.Button(t("train.refresh"), size="sm")
    message = gr.Markdown(elem_id="train-message")
    job_id = gr.Textbox(label=t("train.job"), interactive=False, elem_id="train-job-id")
    run_name = gr.State("")  # the shown job's run: Resume and pick find it by name once the job record is purged
    progress = gr.Markdown(elem_id="train-progress")
    with gr.Row():
        loss = gr.LinePlot(x="step", y="loss", label=t("train.loss"), elem_id="train-loss", height=260)
        samples = gr.Gallery(label=t("train.samples"), columns=3, height=260, elem_id="train-samples")
    with gr.Accordion(t("train.checkpoints"), open=True):
        table = gr.Dataframe(
            headers=[t("train.column.step"), t("train.column.best"), t("train.column.in_library")],
            interactive=False,
            wrap=True,
            elem_id="train-checkpoints",
        )
        with gr.Row():
            step = gr.Number(label=t("train.step"), precision=0, elem_id="train-pick-step", scale=2)
            use = gr.Button(t("train.use_checkpoint"), elem_id="train-use-checkpoint", scale=1)
        picked = gr.Markdown(elem_id="train-picked")

    controls = list(form.controls.values())
    follow_outputs = [message, job_id, progress, loss, samples, table]

    kept = [form.controls[key] for key in KEPT_KEYS]

    def on_preset(name: str, *typed: str) -> list:
        try:
            values = preset_values(name or None)
        except Exception as exc:
            return [error_markup(ctx, exc), *[gr.update() for _ in controls]]
        for key, value in zip(KEPT_KEYS, typed, strict=True):
            values[key] = values[key] or value  # what the user typed stays, unless the preset names it
        description = next((p["description"] for p in presets if p["name"] == name), "")
        return [description, *form.updates(values)]

    def start_run(values: dict, request: gr.Request) -> Iterator[tuple]:
        yield from _start(ctx, form, values[preset], values, user_of(request))

    def resume_run(job: str, run: str, request: gr.Request) -> Iterator[tuple]:
        from lorastudio.service.train_runs import resume_training

        try:
            new = resume_training(ctx.studio, job.strip(), run, user=owner_to_check(request))
        except Exception as exc:
            yield error_markup(ctx, exc), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
            return
        yield from _follow(ctx, new.id)

    def cancel_run(job: str, request: gr.Request) -> str:
        return cancel_markup(ctx, job, "train.cancelling", owner_to_check(request))

    def use_checkpoint(job: str, run: str, chosen: float | None, request: gr.Request) -> str:
        from lorastudio.service.train_runs import pick_training

        try:
            run = _run_of(ctx, job, run)
            result = pick_training(ctx.studio, job.strip(), run, int(chosen or 0), user=owner_to_check(request))
        except Exception as exc:
            return error_markup(ctx, exc)
        return t("train.picked", step=result["step"], name=run)

    preset.change(on_preset, [preset, *kept], [about, *controls])
    start.click(start_run, {preset, *controls}, follow_outputs, concurrency_limit=None)
    resume.click(resume_run, [job_id, run_name], follow_outputs, concurrency_limit=None)
    cancel.click(cancel_run, job_id, message)
    use.click(use_checkpoint, [job_id, run_name, step], picked).then(
        lambda job, run: _checkpoint_table(ctx, job, run), [job_id, run_name], table
    )
    job_id.change(lambda job, run: _run_of(ctx, job, run, quiet=True), [job_id, run_name], run_name)
    table.select(_selected_step, None, step)

    def lists() -> tuple:
        names = [row["name"] for row in list_datasets(ws)["datasets"]]
        return gr.update(choices=model_names(ws)), gr.update(choices=names)

    refresh.click(lists, None, [form.controls["model"], form.controls["data.dir"]])

    def reconnect(request: gr.Request) -> Iterator[tuple]:
        from lorastudio.service.train_runs import latest_training_job

        # the running run followed again, or the last one cancelled or failed, so Resume can queue it
        job = latest_training_job(ctx.studio, owner_to_check(request))
        if job is None:
            yield tuple(gr.update() for _ in follow_outputs)
            return
        yield from _follow(ctx, job.id)

    ctx.on_load.append({"fn": lists, "inputs": None, "outputs": [form.controls["model"], form.controls["data.dir"]]})
    # not queued behind another page's follower: a reload must show the run at once
    ctx.on_load.append({"fn": reconnect, "inputs": None, "outputs": follow_outputs, "concurrency_limit": None})



def _selected_step(event: gr.SelectData) -> Any:
    row = event.row_value or []
    return row[0] if row else gr.update()


def _start(ctx: UiContext, form: ConfigForm, preset: str, values: dict, user: str) -> Iterator[tuple]:
    """Queue the run the form describes, then follow it; a refused form says why next to Start."""
    from lorastudio.service.train_runs import train_request

    try:
        cfg = train_request(preset or None, form.read(values))
        job = ctx.studio.submit_train(cfg, user=user)
    except Exception as exc:
        yield error_markup(ctx, exc), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        return
    yield from _follow(ctx, job.id)


def _run_of(ctx: UiContext, job_id: str, shown: str = "", quiet: bool = False) -> str:
    """The run folder name of a training job (the name its LoRA gets in the library); `shown`, the run
    the tab showed, once the job's record was purged (`quiet`: `shown` for no job, never an error)."""
    from lorastudio.errors import LorastudioError, NotFoundError

    if not job_id or not job_id.strip():
        if quiet or shown:
            return shown
        raise LorastudioError("no training run yet: start one, or reload the page to follow a running one.")
    try:
        job = ctx.studio.get_job(job_id.strip())
    except NotFoundError:
        if quiet or shown:
            return shown
        raise
    return str(job.payload.get("run") or "")


def _follow(ctx: UiContext, job_id: str) -> Iterator[tuple]:
    """Yield (message, job id, progress, loss, samples, checkpoints) every POLL_S until the job ends."""
    from lorastudio.service.train_runs import run_progress

    studio, t = ctx.studio, ctx.t
    run = str(studio.get_job(job_id).payload.get("run") or "")
    shown_samples: list | None = None
    seen = {"after": 0, "step": 0, "total": 0, "points": -1}  # what was read and shown so far
    for job in poll_job(studio, job_id, POLL_S):
        state = run_progress(studio.workspace, run)
        samples = state["samples"] if state["samples"] != shown_samples else gr.update()
        shown_samples = state["samples"]
        _read_progress(studio, job_id, seen)
        text = _progress_text(ctx, job, studio, seen["step"], seen["total"], seen.get("eta"))
        if job.finished:
            break
        points = len(state["loss"])
        loss = _loss_frame(state) if points != seen["points"] else gr.update()
        seen["points"] = points
        yield "", job_id, text, loss, samples, gr.update()
    if job.state == "succeeded":
        done = _done_text(ctx, job.result or {}, run)
    elif job.state == "cancelled":
        done = t("train.cancelled")
    else:
        done = failed_markup(ctx, job)
    yield done, job_id, text, _loss_frame(state), samples, _checkpoint_table(ctx, job_id)


def _done_text(ctx: UiContext, result: dict, run: str) -> str:
    """The finished run's line: which checkpoint became the LoRA (the best-scored one, else the last step)."""
    name = result.get("name") or run
    if result.get("best_step") is not None:
        return ctx.t("train.done_best", name=name, step=result["best_step"], scorer=result.get("decided_by") or "score")
    if result.get("result_step") is not None:
        return ctx.t("train.done_final", name=name, step=result["result_step"])
    return ctx.t("train.done", name=name)


def _progress_text(ctx: UiContext, job: Any, studio: Any, step: int, total: int, reported_eta: float | None = None) -> str:
    from lorastudio.service.train_runs import training_eta

    t = ctx.t
    if job.state == "queued":
        return queued_text(ctx, job)
    if job.finished:  # where it ended, never a running step with an ETA
        if not total:
            return ""
        return t("train.finished_at" if job.state == "succeeded" else "train.stopped_at", step=step, steps=total)
    if not total:
        return t("progress.starting")
    eta = training_eta(job, reported=reported_eta)
    return t(
        "progress.running",
        step=step,
        steps=total,
        percent=int(100 * float(job.progress or 0)),
        eta=f"{eta:.0f} s" if eta is not None else "…",
    )


def _read_progress(studio: Any, job_id: str, seen: dict[str, Any]) -> None:
    """Step and total of the job's newest progress event, reading only the events not seen yet."""
    for event in studio.job_events(job_id, after=seen["after"]):
        seen["after"] = max(seen["after"], event.seq)
        if event.type == "progress" and event.data.get("total"):
            seen["step"], seen["total"] = int(event.data.get("step") or 0), int(event.data["total"])
            seen["eta"] = event.data.get("eta_s")


def _loss_frame(state: dict) -> Any:
    import pandas as pd

    frame = pd.DataFrame(state["loss"] or [], columns=["step", "loss"])
    return frame.astype({"step": "int64", "loss": "float64"})  # numbers, so the plot's axes are scales


def _checkpoint_table(ctx: UiContext, job_id: str, shown: str = "") -> Any:
    """Step, each score, best, and which step is in the library, one row per scored checkpoint."""
    import pandas as pd

    from lorastudio.service.train_runs import run_progress

    t = ctx.t
    try:
        state = run_progress(ctx.studio.workspace, _run_of(ctx, job_id, shown))
    except Exception:
        return gr.update()
    columns = [t("train.column.step"), *state["scorers"], t("train.column.best"), t("train.column.in_library")]
    rows = [
        [
            row["step"],
            *[_score(row.get("scores", {}).get(name)) for name in state["scorers"]],
            "✓" if row["step"] == state["best_step"] else "",
            "✓" if row["step"] == state["result_step"] else "",
        ]
        for row in state["scores"]
    ]
    return pd.DataFrame(rows, columns=columns)


def _score(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, int | float) else ""
