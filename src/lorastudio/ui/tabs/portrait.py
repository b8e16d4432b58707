"""Portrait: EasyPhoto's workflow in one tab — a person from their photos, a template library,
and portraits of the person in the templates, best identity score first.

Person: "Check photos" runs the photo selection alone (kept crops, and each refused file with
its reason); "Train" queues the `portrait-train` job the API queues and follows it (photo
checks, then step, loss, ETA or the queue position); Cancel stops it. A trained person shows
with their reference photo and each checkpoint's identity score.
Templates: the library with each template's face count; add a photo, delete one.
Make: persons x templates (skin retouching on or off, as on the Person tab) queued as a
`portrait-make` job; the results, best score first, show their score in the caption and the
infotext of the picked image.
Every action is a service call (service.portraits, service.templates, service.portrait_make);
a reloaded page follows the user's running portrait job again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from lorastudio.service.portrait_make import PortraitMakeConfig
from lorastudio.service.portraits import PortraitTrainConfig
from lorastudio.ui.context import (
    UiContext,
    cancel_markup,
    error_markup,
    failed_markup,
    owner_to_check,
    poll_job,
    queued_text,
    unfinished_job_of,
    user_of,
)
from lorastudio.ui.field_help import field_help
from lorastudio.ui.forms import field_control, field_spec, optional_number

TAB_ID = "portrait"
LABEL = "tab.portrait"

POLL_S = 0.5
# optional numbers of PortraitTrainConfig (an empty box: the portrait preset's value)
OPTIONAL_NUMBERS = ("steps", "resolution", "save_every_steps", "rank")
ADVANCED = ("resolution", "save_every_steps", "rank", "min_face", "max_photos", "min_photos", "white_background",
            "skin_retouch_strength", "face_backend")  # fmt: skip


def build(ctx: UiContext) -> None:
    t = ctx.t
    with gr.Tabs():
        with gr.Tab(t("portrait.person"), elem_id="portrait-person-tab"):
            people = _build_person(ctx)
        with gr.Tab(t("portrait.templates"), elem_id="portrait-templates-tab"):
            templates = _build_templates(ctx)
        with gr.Tab(t("portrait.make"), elem_id="portrait-make-tab"):
            _build_make(ctx, people, templates)


# --- person: photos, check, train -----------------------------------------------------------


def _build_person(ctx: UiContext) -> dict[str, Any]:
    from lorastudio.service.choices import model_names
    from lorastudio.service.portraits import check_photos

    t, ws = ctx.t, ctx.studio.workspace
    gr.Markdown(t("portrait.photos_help"))
    photos = gr.File(label=t("portrait.photos"), file_count="multiple", type="filepath", elem_id="portrait-photos")
    check = gr.Button(t("portrait.check"), elem_id="portrait-check")
    summary = gr.Markdown(elem_id="portrait-check-summary")
    with gr.Row():
        kept = gr.Gallery(label=t("portrait.kept"), columns=5, height=240, elem_id="portrait-kept", scale=3)
        refused = gr.Dataframe(
            headers=[t("portrait.column.file"), t("portrait.column.reason")],
            interactive=False, wrap=True, elem_id="portrait-refused", label=t("portrait.refused"), scale=2,
        )  # fmt: skip
    fields: dict[str, Any] = {}
    with gr.Row():
        fields["name"] = field_control(PortraitTrainConfig, "name", t("portrait.name"), elem_id="portrait-name")
        fields["trigger"] = field_control(PortraitTrainConfig, "trigger", t("portrait.trigger"), elem_id="portrait-trigger")
        fields["base"] = gr.Dropdown(
            model_names(ws), value=ctx.studio.model, label=t("portrait.base"), allow_custom_value=True,
            info=field_help(PortraitTrainConfig, "base"), elem_id="portrait-base",
        )  # fmt: skip
        fields["steps"] = field_control(PortraitTrainConfig, "steps", t("portrait.steps"), elem_id="portrait-steps")
        fields["skin_retouch"] = field_control(
            PortraitTrainConfig, "skin_retouch", t("portrait.skin_retouch"), elem_id="portrait-skin-retouch"
        )
    with gr.Accordion(t("portrait.advanced"), open=False, elem_id="portrait-advanced"):
        with gr.Row():
            for key in ADVANCED:
                fields[key] = field_control(
                    PortraitTrainConfig, key, t(f"portrait.field.{key}"), elem_id=f"portrait-{key.replace('_', '-')}"
                )
    with gr.Row():
        train = gr.Button(t("portrait.train"), variant="primary", elem_id="portrait-train")
        cancel = gr.Button(t("portrait.cancel"), elem_id="portrait-cancel")
    message = gr.Markdown(elem_id="portrait-train-message")
    job_id = gr.Textbox(label=t("portrait.job"), interactive=False, elem_id="portrait-train-job")
    progress = gr.Markdown(elem_id="portrait-train-progress")
    gr.Markdown(f"### {t('portrait.people')}")
    table = gr.Dataframe(
        headers=_people_headers(ctx), interactive=False, wrap=True, elem_id="portrait-people", label=t("portrait.people")
    )
    with gr.Row():
        person = gr.Dropdown([], label=t("portrait.person_pick"), elem_id="portrait-person-pick", scale=1)
        reference = gr.Image(label=t("portrait.reference"), interactive=False, height=240,
                             elem_id="portrait-reference", scale=1)  # fmt: skip
        scores = gr.Dataframe(
            headers=_score_headers(ctx), interactive=False, elem_id="portrait-scores", label=t("portrait.scores"), scale=2
        )

    def check_files(values: dict) -> tuple:
        try:
            cfg = _train_config(values, fields, placeholder=True)
            report = check_photos(ws, cfg, values[photos] or [])
        except Exception as exc:
            return error_markup(ctx, exc), None, None
        gallery = [(row["crop"], _kept_caption(ctx, row)) for row in report["kept"]]
        rows = [[row["file"], row["reason"]] for row in report["left_out"]]
        head = t("portrait.check_enough" if report["enough"] else "portrait.check_too_few",
                 kept=len(report["kept"]), total=len(report["kept"]) + len(report["left_out"]))  # fmt: skip
        return head, gallery, _frame(rows, [t("portrait.column.file"), t("portrait.column.reason")])

    def train_person(values: dict, request: gr.Request) -> Iterator[tuple]:
        from lorastudio.service.portrait_uploads import submit_portrait_photos

        try:
            cfg = _train_config(values, fields)
            job = submit_portrait_photos(ctx.studio, cfg, values[photos] or [], user=user_of(request))
        except Exception as exc:
            yield error_markup(ctx, exc), *[gr.update()] * (len(follow_outputs) - 1)
            return
        yield from _follow_train(ctx, job.id)

    def cancel_training(job: str, request: gr.Request) -> str:
        return cancel_markup(ctx, job, "portrait.cancelling", owner_to_check(request))

    def show_person(name: str | None) -> tuple:
        return _person_view(ctx, name)

    follow_outputs = [message, job_id, progress, table, person, reference, scores]
    check.click(check_files, {photos, *fields.values()}, [summary, kept, refused])
    train.click(train_person, {photos, *fields.values()}, follow_outputs, concurrency_limit=None)
    cancel.click(cancel_training, job_id, message)
    person.change(show_person, person, [reference, scores])

    def lists() -> tuple:
        return _people_table(ctx), gr.update(choices=_people_names(ctx)), gr.update(choices=model_names(ws))

    def reconnect(request: gr.Request) -> Iterator[tuple]:
        job = unfinished_job_of(ctx, request, ("portrait-train",))
        if job is not None:
            yield from _follow_train(ctx, job.id)

    ctx.on_load.append({"fn": lists, "inputs": None, "outputs": [table, person, fields["base"]]})
    ctx.on_load.append({"fn": reconnect, "inputs": None, "outputs": follow_outputs, "concurrency_limit": None})
    return {"table": table, "person": person}


def _train_config(values: dict, fields: dict[str, Any], placeholder: bool = False) -> PortraitTrainConfig:
    """The form as a PortraitTrainConfig (the photos are added when they are stored as uploads).

    `placeholder`: the photo check needs no name yet."""
    data = {key: values[control] for key, control in fields.items()}
    for key in OPTIONAL_NUMBERS:
        data[key] = optional_number(data[key])
    for key in ("min_face", "max_photos", "min_photos"):
        data[key] = int(data[key]) if data[key] not in (None, "") else field_spec(PortraitTrainConfig, key).default
    data = {key: value.strip() if isinstance(value, str) else value for key, value in data.items()}
    data["base"] = data["base"] or ""
    if placeholder and not data["name"]:
        data["name"] = "person"
    return PortraitTrainConfig.model_validate(data)


def _kept_caption(ctx: UiContext, row: dict) -> str:
    distance = f"{row['distance']:.2f}" if row.get("distance") is not None else "–"
    key = "portrait.kept_reference" if row["reference"] else "portrait.kept_caption"
    return ctx.t(key, file=row["file"], distance=distance)


def _frame(rows: list[list[Any]], columns: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def _people_headers(ctx: UiContext) -> list[str]:
    t = ctx.t
    return [t("portrait.column.name"), t("portrait.column.trigger"), t("portrait.column.lora"), t("portrait.column.photos")]


def _score_headers(ctx: UiContext) -> list[str]:
    t = ctx.t
    return [t("portrait.column.step"), t("portrait.column.identity"), t("portrait.column.best"),
            t("portrait.column.in_library")]  # fmt: skip


def _people_table(ctx: UiContext) -> Any:
    from lorastudio.service.portraits import list_people

    rows = [[p["name"], p["trigger"], "✓" if p["lora"] else "", p["photos"]] for p in list_people(ctx.studio.workspace)]
    return _frame(rows, _people_headers(ctx))


def _people_names(ctx: UiContext, trained_only: bool = False) -> list[str]:
    from lorastudio.service.portraits import list_people

    return [p["name"] for p in list_people(ctx.studio.workspace) if p["lora"] or not trained_only]


def _person_view(ctx: UiContext, name: str | None) -> tuple:
    """(reference photo, identity score per checkpoint) of a recorded person."""
    from lorastudio.service.portraits import person_details

    if not name:
        return None, _frame([], _score_headers(ctx))
    try:
        details = person_details(ctx.studio.workspace, name)
    except Exception:
        return None, _frame([], _score_headers(ctx))
    rows = [
        [row["step"], round(float(row["identity"]), 4) if row["identity"] is not None else "",
         "✓" if row["best"] else "", "✓" if row["in_library"] else ""]
        for row in details["scores"]
    ]  # fmt: skip
    return details["reference_image"], _frame(rows, _score_headers(ctx))


def _follow_train(ctx: UiContext, job_id: str) -> Iterator[tuple]:
    """Yield (message, job id, progress, people, person, reference, scores) every POLL_S until the job ends."""
    studio, t, same = ctx.studio, ctx.t, gr.update()
    seen: dict[str, Any] = {"after": 0, "step": 0, "total": 0, "message": "", "summary": ""}
    run = str(studio.get_job(job_id).payload.get("run") or "")
    for job in poll_job(studio, job_id, POLL_S):
        _read_events(studio, job_id, seen)
        if job.finished:
            break
        yield "", job_id, _train_progress(ctx, job, run, seen), same, same, same, same
    name = str((job.payload.get("config") or {}).get("name") or "")
    if job.state == "succeeded":
        done = t("portrait.trained", name=name)
    elif job.state == "cancelled":
        done = t("portrait.cancelled")
    else:
        done = failed_markup(ctx, job)
    people = _people_names(ctx)
    picked = name if name in people else None
    reference, scores = _person_view(ctx, picked)
    yield (done, job_id, seen["summary"], _people_table(ctx), gr.update(choices=people, value=picked),
           reference, scores)  # fmt: skip


def _read_events(studio: Any, job_id: str, seen: dict[str, Any]) -> None:
    """The newest progress (photo checks, then training steps) and the photo report, from new events only."""
    for event in studio.job_events(job_id, after=seen["after"]):
        seen["after"] = max(seen["after"], event.seq)
        if event.type == "progress" and event.data.get("total"):
            seen["step"], seen["total"] = int(event.data.get("step") or 0), int(event.data["total"])
            seen["message"] = str(event.data.get("message") or "")
        elif event.type == "selection":
            seen["summary"] = str(event.data.get("summary") or "")


def _train_progress(ctx: UiContext, job: Any, run: str, seen: dict[str, Any]) -> str:
    from lorastudio.service.train_runs import run_progress, training_eta

    t = ctx.t
    if job.state == "queued":
        return queued_text(ctx, job)
    if not seen["total"]:
        return t("progress.starting")
    if seen["message"]:  # still checking photos
        return t("portrait.checking", done=seen["step"], total=seen["total"])
    try:
        losses = run_progress(ctx.studio.workspace, run)["loss"] if run else []
    except Exception:
        losses = []
    eta = training_eta(job)
    text = t("portrait.training", step=seen["step"], steps=seen["total"],
             eta=f"{eta:.0f} s" if eta is not None else "…")  # fmt: skip
    if losses:
        text += " — " + t("portrait.loss", loss=f"{losses[-1]['loss']:.4f}")
    return f"{text}\n\n{seen['summary']}" if seen["summary"] else text


# --- templates ------------------------------------------------------------------------------


def _build_templates(ctx: UiContext) -> dict[str, Any]:
    from lorastudio.service.templates import add_template, delete_template

    t, ws = ctx.t, ctx.studio.workspace
    gallery = gr.Gallery(label=t("portrait.template_library"), columns=5, height=320, elem_id="portrait-template-gallery")
    with gr.Row():
        upload = gr.File(label=t("portrait.template_file"), type="filepath", elem_id="portrait-template-file", scale=2)
        with gr.Column(scale=1):
            name = gr.Textbox(label=t("portrait.template_name"), elem_id="portrait-template-name")
            add = gr.Button(t("portrait.template_add"), variant="primary", elem_id="portrait-template-add")
    with gr.Row():
        chosen = gr.Dropdown([], label=t("portrait.template_pick"), elem_id="portrait-template-pick", scale=2)
        delete = gr.Button(t("portrait.template_delete"), variant="stop", elem_id="portrait-template-delete", scale=1)
    message = gr.Markdown(elem_id="portrait-template-message")

    def add_one(path: str | None, wanted: str) -> tuple:
        try:
            if not path:
                raise ValueError(t("portrait.template_none"))
            row = add_template(ws, path, (wanted or "").strip() or None)
        except Exception as exc:
            return error_markup(ctx, exc), *_template_views(ctx)
        return t("portrait.template_added", name=row["name"], faces=row["faces"]), *_template_views(ctx)

    def delete_one(template: str | None) -> tuple:
        try:
            if not template:
                raise ValueError(t("portrait.template_none_picked"))
            delete_template(ws, template)
        except Exception as exc:
            return error_markup(ctx, exc), *_template_views(ctx)
        return t("portrait.template_deleted", name=template), *_template_views(ctx)

    added = add.click(add_one, [upload, name], [message, gallery, chosen])
    deleted = delete.click(delete_one, chosen, [message, gallery, chosen])
    ctx.on_load.append({"fn": lambda: _template_views(ctx), "inputs": None, "outputs": [gallery, chosen]})
    return {"gallery": gallery, "chosen": chosen, "changed": [added, deleted]}


def _template_views(ctx: UiContext) -> tuple:
    """(gallery items with face counts, the template pickers' choices)."""
    from lorastudio.service.templates import list_templates

    rows = list_templates(ctx.studio.workspace)
    items = [(row["path"], _faces_caption(ctx, row)) for row in rows]
    return items, gr.update(choices=[row["name"] for row in rows], value=None)


def _faces_caption(ctx: UiContext, row: dict) -> str:
    faces = row["faces"]
    return ctx.t("portrait.template_caption", name=row["name"], faces="?" if faces is None else faces)


# --- make -----------------------------------------------------------------------------------


def _build_make(ctx: UiContext, people: dict[str, Any], templates: dict[str, Any]) -> None:
    from lorastudio.service.templates import list_templates

    t = ctx.t
    with gr.Row():
        persons = gr.Dropdown([], multiselect=True, label=t("portrait.make_persons"), elem_id="portrait-make-persons",
                              info=field_help(PortraitMakeConfig, "persons"))  # fmt: skip
        chosen = gr.Dropdown([], multiselect=True, label=t("portrait.make_templates"), elem_id="portrait-make-templates",
                             info=field_help(PortraitMakeConfig, "templates"))  # fmt: skip
    with gr.Row():
        count = field_control(PortraitMakeConfig, "count", t("portrait.count"), elem_id="portrait-count")
        seed = field_control(PortraitMakeConfig, "seed", t("portrait.seed"), elem_id="portrait-seed")
        steps = field_control(PortraitMakeConfig, "steps", t("portrait.make_steps"), elem_id="portrait-make-steps")
        retouch = field_control(PortraitMakeConfig, "skin_retouch", t("portrait.skin_retouch"),
                                elem_id="portrait-make-skin-retouch")  # fmt: skip
        strength = field_control(PortraitMakeConfig, "skin_retouch_strength", t("portrait.field.skin_retouch_strength"),
                                 slider=True, elem_id="portrait-make-skin-retouch-strength")  # fmt: skip
    with gr.Row():
        make = gr.Button(t("portrait.make_run"), variant="primary", elem_id="portrait-make-run")
        cancel = gr.Button(t("portrait.cancel"), elem_id="portrait-make-cancel")
        refresh = gr.Button(t("portrait.refresh"), size="sm", elem_id="portrait-make-refresh")
    message = gr.Markdown(elem_id="portrait-make-message")
    job_id = gr.Textbox(label=t("portrait.job"), interactive=False, elem_id="portrait-make-job")
    progress = gr.Markdown(elem_id="portrait-make-progress")
    results = gr.Gallery(label=t("portrait.results"), columns=4, height=360, elem_id="portrait-results")
    paths = gr.State([])
    infotext = gr.Textbox(label=t("portrait.infotext"), lines=4, interactive=False, elem_id="portrait-infotext")

    def make_portraits(values: dict, request: gr.Request) -> Iterator[tuple]:
        from lorastudio.service.job_kinds import submit_job

        try:
            cfg = PortraitMakeConfig(
                persons=values[persons] or [], templates=values[chosen] or [], count=int(values[count]),
                seed=int(values[seed]), steps=int(values[steps]), skin_retouch=bool(values[retouch]),
                skin_retouch_strength=float(values[strength]),
            )  # fmt: skip
            job = submit_job(ctx.studio, "portrait-make", cfg, user=user_of(request))
        except Exception as exc:
            yield error_markup(ctx, exc), *[gr.update()] * (len(outputs) - 1)
            return
        yield from _follow_make(ctx, job.id)

    def stop(job: str, request: gr.Request) -> str:
        return cancel_markup(ctx, job, "portrait.cancelling", owner_to_check(request))

    def picked(shown: list[str], event: gr.SelectData) -> str:
        from lorastudio.service.png_info import png_info

        index = event.index if isinstance(event.index, int) else 0
        return png_info(shown[index])["info"] if 0 <= index < len(shown) else ""

    def choices() -> tuple:
        names = [row["name"] for row in list_templates(ctx.studio.workspace)]
        return gr.update(choices=_people_names(ctx, trained_only=True)), gr.update(choices=names)

    def add_template_pick(current: list[str] | None, event: gr.SelectData) -> Any:
        rows = list_templates(ctx.studio.workspace)
        index = event.index if isinstance(event.index, int) else -1
        if not 0 <= index < len(rows):
            return gr.update()
        return gr.update(value=list(dict.fromkeys([*(current or []), rows[index]["name"]])))

    outputs = [message, job_id, progress, results, paths, infotext]
    make.click(make_portraits, {persons, chosen, count, seed, steps, retouch, strength}, outputs, concurrency_limit=None)
    cancel.click(stop, job_id, message)
    results.select(picked, paths, infotext)
    refresh.click(choices, None, [persons, chosen])
    templates["gallery"].select(add_template_pick, chosen, chosen)
    # a person trained or a template added on this page shows in the pickers at once
    people["table"].change(choices, None, [persons, chosen])
    for event in templates["changed"]:
        event.then(choices, None, [persons, chosen])

    def reconnect(request: gr.Request) -> Iterator[tuple]:
        job = unfinished_job_of(ctx, request, ("portrait-make",))
        if job is not None:
            yield from _follow_make(ctx, job.id)

    ctx.on_load.append({"fn": choices, "inputs": None, "outputs": [persons, chosen]})
    ctx.on_load.append({"fn": reconnect, "inputs": None, "outputs": outputs, "concurrency_limit": None})


def _follow_make(ctx: UiContext, job_id: str) -> Iterator[tuple]:
    """Yield (message, job id, progress, results, their paths, infotext) until the job ends."""
    from lorastudio.service.png_info import png_info

    studio, t, same = ctx.studio, ctx.t, gr.update()
    seen: dict[str, Any] = {"after": 0, "step": 0, "total": 0, "message": "", "summary": ""}
    for job in poll_job(studio, job_id, POLL_S):
        _read_events(studio, job_id, seen)
        if job.finished:
            break
        if job.state == "queued":
            text = queued_text(ctx, job)
        elif seen["total"]:
            text = t("portrait.making", done=seen["step"], total=seen["total"])
        else:
            text = t("progress.starting")
        yield "", job_id, text, same, same, same
    if job.state == "succeeded":
        done = t("portrait.made")
    elif job.state == "cancelled":
        done = t("portrait.cancelled")
    else:
        done = failed_markup(ctx, job)
    paths = [str(path) for path in studio.job_images(job)]  # best score first
    result = job.result or {}
    scores, templates = result.get("scores") or [], result.get("templates") or []
    items = [
        (path, _result_caption(ctx, templates[i] if i < len(templates) else "", scores[i] if i < len(scores) else None))
        for i, path in enumerate(paths)
    ]
    info = png_info(paths[0])["info"] if paths else ""
    yield done, job_id, "", items, paths, info


def _result_caption(ctx: UiContext, template: str, score: float | None) -> str:
    shown = f"{score:.3f}" if isinstance(score, int | float) else "–"
    return ctx.t("portrait.result_caption", template=template, score=shown)
