"""Data sets: import by upload, filters with a preview of what they drop, captioning and tagging
with progress, a caption editor with bulk edits, and the HTML report.

Every action is a call to `service.datasets` (the functions behind `lorastudio dataset ...`);
captioning or tagging with a model is a queued `caption` job, so its progress shows in every
browser tab, it can be cancelled, and a reload follows it again. A fixed caption or a
template needs no model and works offline.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from lorastudio.data.config import CaptionerConfig, CleanConfig, TaggerConfig
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
    worded_error,
)

TAB_ID = "datasets"
LABEL = "tab.datasets"

POLL_S = 0.5  # how often a following handler reads the caption job
CLEAN_FIELDS = ("min_width", "min_height", "min_ratio", "max_ratio", "dedupe", "phash_threshold", "min_sharpness")
OPTIONAL_CLEAN_FIELDS = ("min_ratio", "max_ratio", "min_sharpness")  # an empty box (0) means "no limit"
LABELLERS = ("tagger", "captioner")
# Gradio copies (and hashes) every image it shows; the table lists all captions, the gallery the
# first ones (a search narrows both).
GALLERY_MAX = 48
IMPORT_LINES_SHOWN = 50  # an import's refused files, skipped files and notes listed each; the rest counted


def build(ctx: UiContext) -> None:
    t = ctx.t
    with gr.Row():
        picker = gr.Dropdown(
            label=t("datasets.picker"), choices=_names(ctx), value=None, scale=4, elem_id="ds-picker"
        )
        refresh = gr.Button(t("datasets.refresh"), scale=1, elem_id="ds-refresh")
    info = gr.Markdown(elem_id="ds-info")
    changes = []  # events that change the chosen data set: the view is read again after each
    with gr.Tabs():
        with gr.Tab(t("datasets.import"), id="ds-import-tab"):
            changes += _build_import(ctx, picker)  # into a new set, or more images into this one
        with gr.Tab(t("datasets.filters"), id="ds-filters-tab"):
            changes += _build_filters(ctx, picker)
        with gr.Tab(t("datasets.captioning"), id="ds-captioning-tab"):
            changes += _build_captioning(ctx, picker)
        with gr.Tab(t("datasets.editor"), id="ds-editor-tab"):
            gallery, table, search, edits = _build_editor(ctx, picker)
            changes += edits
        with gr.Tab(t("datasets.report"), id="ds-report-tab"):
            _build_report(ctx, picker)
    _build_delete(ctx, picker)  # folded, at the foot of the page

    def show(name: str | None, query: str) -> tuple:
        return _info(ctx, name), *_editor_rows(ctx, name, query)

    view = [info, gallery, table]
    picker.change(show, [picker, search], view)
    for event in changes:
        event.then(show, [picker, search], view)
    refresh.click(lambda name: _refreshed_picker(ctx, name), picker, picker).then(show, [picker, search], view)
    ctx.on_load.append({"fn": lambda: gr.update(choices=_names(ctx)), "inputs": None, "outputs": picker})


def _build_delete(ctx: UiContext, picker: gr.Dropdown) -> None:
    """Delete the chosen data set once its name is typed again (its images and captions go)."""
    t = ctx.t
    with gr.Accordion(t("datasets.delete"), open=False, elem_id="ds-delete-box"):
        with gr.Row():
            confirm = gr.Textbox(label=t("datasets.confirm_delete"), scale=3, elem_id="ds-confirm")
            delete = gr.Button(t("datasets.delete"), variant="stop", scale=1, elem_id="ds-delete")
        message = gr.Markdown(elem_id="ds-delete-message")

    def remove(name: str | None, again: str) -> tuple:
        from lorastudio.service.datasets import delete_dataset

        if not name or name != (again or "").strip():
            return t("datasets.confirm_delete"), gr.update()
        try:
            delete_dataset(ctx.studio.workspace, name)
        except Exception as exc:
            return error_markup(ctx, exc), gr.update()
        return t("datasets.deleted", name=name), gr.update(choices=_names(ctx), value=None)

    delete.click(remove, [picker, confirm], [message, picker])


def _refreshed_picker(ctx: UiContext, name: str | None):
    names = _names(ctx)
    return gr.update(choices=names, value=name if name in names else None)


# --- import ---------------------------------------------------------------------------------


def _build_import(ctx: UiContext, picker: gr.Dropdown) -> list:
    t = ctx.t
    gr.Markdown(t("datasets.import_help"))
    with gr.Row():
        files = gr.File(label=t("datasets.files"), file_count="multiple", type="filepath", elem_id="ds-upload")
        folder = gr.File(label=t("datasets.folder"), file_count="directory", type="filepath",
                         elem_id="ds-upload-folder")  # fmt: skip
    with gr.Row():
        name = gr.Textbox(label=t("datasets.new_name"), scale=3, elem_id="ds-new-name")
        background = gr.Textbox(label=t("datasets.background"), value="white", scale=1, elem_id="ds-background")
        caption_ext = gr.Dropdown([(t("datasets.caption_ext_auto"), ""), ".txt", ".caption"], value="", scale=1,
                                  label=t("datasets.caption_ext"), elem_id="ds-caption-ext")  # fmt: skip
        start = gr.Button(t("datasets.import_run"), variant="primary", scale=1, elem_id="ds-import-run")
        cancel = gr.Button(t("datasets.import_cancel"), scale=1, elem_id="ds-import-cancel")
    message = gr.Markdown(elem_id="ds-import-message")
    job_id = gr.State("")

    def import_files(
        paths: list[str] | None, folder_paths: list[str] | None, wanted: str, color: str, extension: str,
        request: gr.Request,
    ) -> Iterator[tuple]:
        """Queue the import as a job (progress, Cancel, the Jobs list) and follow it."""
        from lorastudio.service.job_kinds import submit_dataset_upload

        chosen = [*(paths or []), *(folder_paths or [])]
        try:
            job = submit_dataset_upload(ctx.studio, (wanted or "").strip(), chosen, color or "white",
                                        user=user_of(request), caption_extension=extension or None)  # fmt: skip
        except Exception as exc:
            yield error_markup(ctx, exc), gr.update(), ""
            return
        yield from _follow_import(ctx, job.id)

    def stop(current: str, request: gr.Request) -> str:
        return cancel_markup(ctx, current, "progress.cancelled", owner_to_check(request))

    cancel.click(stop, job_id, message)
    return [start.click(import_files, [files, folder, name, background, caption_ext], [message, picker, job_id],
                        concurrency_limit=None)]  # fmt: skip


def _follow_import(ctx: UiContext, job_id: str) -> Iterator[tuple]:
    """Yield (message, picker, job id) until the import job ends; the new set is then picked."""
    t, studio = ctx.t, ctx.studio
    for job in poll_job(studio, job_id, POLL_S):
        if job.finished:
            break
        if job.state == "queued":
            text = queued_text(ctx, job)
        else:
            text = t("datasets.import_running", percent=int(100 * float(job.progress or 0)))
        yield text, gr.update(), job_id
    if job.state == "succeeded":
        result = job.result or {}
        yield import_result_markup(ctx, result), gr.update(choices=_names(ctx), value=result.get("name")), ""
    elif job.state == "cancelled":
        yield t("progress.cancelled"), gr.update(choices=_names(ctx)), ""
    else:
        yield failed_markup(ctx, job), gr.update(), ""


def import_result_markup(ctx: UiContext, result: dict[str, Any]) -> str:
    """An import's counts, then what `lorastudio dataset import` prints under them: each refused and
    skipped file with its reason, and the notes (which captions were read where there was a choice).
    The Chinese page words a reason and a note that carry a key (`import.<key>`, `importnote.<key>`);
    the English page, and one without a key, show the service's English line."""
    t = ctx.t
    refused, skipped = result.get("failed_files") or [], result.get("skipped_files") or []
    lines = [t("datasets.imported", name=_md(result.get("name", "")), images=result.get("total_images", 0),
               failed=len(refused), skipped=len(skipped))]  # fmt: skip
    notes = result.get("notes") or []
    keys = result.get("note_keys") or []
    keys = keys if len(keys) == len(notes) else [{}] * len(notes)  # a report from before notes had keys
    sections = (
        ("datasets.import_refused", [_row_text(ctx, row) for row in refused]),
        ("datasets.import_skipped", [_row_text(ctx, row) for row in skipped]),
        ("datasets.import_notes", [_md(worded_error(ctx, key.get("key"), key.get("params"), str(note), "importnote"))
                                   for note, key in zip(notes, keys, strict=True)]),
    )  # fmt: skip
    for key, rows in sections:
        if rows:
            lines += ["", f"**{t(key)}**", *(f"- {row}" for row in rows[:IMPORT_LINES_SHOWN])]
            if len(rows) > IMPORT_LINES_SHOWN:
                lines.append(f"- {t('datasets.import_more', count=len(rows) - IMPORT_LINES_SHOWN)}")
    return "\n".join(lines)


def _row_text(ctx: UiContext, row: dict[str, Any]) -> str:
    """`file: reason`, the reason in the page's language where the row has a key (`import.<key>`)."""
    reason = worded_error(ctx, row.get("key"), row.get("params"), str(row.get("reason", "")), "import")
    return f"{_md(row.get('source', ''))}: {_md(reason)}"


def _md(text: Any) -> str:
    """A file name or a service's words as plain text in Markdown (no emphasis, links or HTML)."""
    plain = str(text).replace("\\", "\\\\")
    for char in "`*_[]|~#<>":
        plain = plain.replace(char, "\\" + char)
    return plain


# --- filters --------------------------------------------------------------------------------


def _build_filters(ctx: UiContext, picker: gr.Dropdown) -> list:
    from lorastudio.ui.forms import field_control

    t = ctx.t
    controls = {}
    with gr.Row():
        for name in CLEAN_FIELDS[:4]:
            controls[name] = field_control(CleanConfig, name, t(f"datasets.clean.{name}"), elem_id=f"ds-clean-{name}")
    with gr.Row():
        for name in CLEAN_FIELDS[4:]:
            controls[name] = field_control(CleanConfig, name, t(f"datasets.clean.{name}"), elem_id=f"ds-clean-{name}")
    with gr.Row():
        preview = gr.Button(t("datasets.clean_preview"), elem_id="ds-clean-preview")
        apply = gr.Button(t("datasets.clean_apply"), variant="stop", elem_id="ds-clean-apply")
    message = gr.Markdown(elem_id="ds-clean-message")
    table = gr.Dataframe(
        headers=[t("datasets.column.file"), t("datasets.column.reason")],
        value=[],
        interactive=False,
        wrap=True,
        elem_id="ds-clean-table",
    )
    inputs = {picker, *controls.values()}

    def clean(values: dict, dry_run: bool) -> tuple:
        from lorastudio.service.datasets import clean_dataset

        name = values[picker]
        try:
            config = _clean_config({key: values[control] for key, control in controls.items()})
            result = clean_dataset(ctx.studio.workspace, _chosen(ctx, name), config, dry_run=dry_run)
        except Exception as exc:
            return error_markup(ctx, exc), []
        rows = [[row["file"], row["reason"]] for row in result["dropped"]]
        key = "datasets.clean_would_drop" if dry_run else "datasets.clean_dropped"
        return t(key, dropped=len(rows), kept=result["kept"]), rows

    preview.click(lambda values: clean(values, True), inputs, [message, table])
    return [apply.click(lambda values: clean(values, False), inputs, [message, table])]


def _clean_config(values: dict[str, Any]) -> CleanConfig:
    """The filter form as a CleanConfig: an empty optional box (0) is "no limit"."""
    for name in OPTIONAL_CLEAN_FIELDS:
        if values.get(name) in (None, "", 0):
            values[name] = None
    for name in ("min_width", "min_height", "phash_threshold"):
        values[name] = int(values[name] or 0)
    return CleanConfig(**values)


# --- captioning -----------------------------------------------------------------------------


def _build_captioning(ctx: UiContext, picker: gr.Dropdown) -> list:
    from lorastudio.service.job_kinds import CaptionJobConfig
    from lorastudio.ui.forms import field_control

    t = ctx.t
    gr.Markdown(f"### {t('datasets.fixed_caption')}")
    with gr.Row():
        template = gr.Textbox(label=t("datasets.template"), info=t("datasets.template_help"), scale=3,
                              elem_id="ds-template")  # fmt: skip
        trigger = gr.Textbox(label=t("datasets.trigger"), scale=1, elem_id="ds-trigger")
        only_missing = gr.Checkbox(label=t("datasets.only_missing"), value=False, scale=1, elem_id="ds-only-missing")
    set_captions = gr.Button(t("datasets.template_apply"), elem_id="ds-template-apply")
    template_message = gr.Markdown(elem_id="ds-template-message")

    gr.Markdown(f"### {t('datasets.model_caption')}")
    with gr.Row():
        labeller = gr.Radio(
            [(t(f"datasets.labeller.{kind}"), kind) for kind in LABELLERS],
            value="tagger",
            label=t("datasets.labeller"),
            elem_id="ds-labeller",
        )
        model = gr.Textbox(label=t("datasets.label_model"), info=t("datasets.label_model_help"), scale=3,
                           elem_id="ds-label-model")  # fmt: skip
        mode = field_control(CaptionJobConfig, "mode", t("datasets.label_mode"), elem_id="ds-label-mode")
        threshold = field_control(TaggerConfig, "general_threshold", t("datasets.threshold"), slider=True,
                                  elem_id="ds-threshold")  # fmt: skip
    with gr.Row():
        start = gr.Button(t("datasets.label_start"), variant="primary", elem_id="ds-label-start")
        cancel = gr.Button(t("datasets.label_cancel"), variant="stop", elem_id="ds-label-cancel")
    progress = gr.Markdown(elem_id="ds-label-progress")
    job_id = gr.State("")

    def fixed(name: str, text: str, word: str, missing: bool) -> str:
        from lorastudio.service.datasets import template_captions

        try:
            result = template_captions(
                ctx.studio.workspace, _chosen(ctx, name), text or "", (word or "").strip(), missing
            )
        except Exception as exc:
            return error_markup(ctx, exc)
        return t("datasets.captions_set", changed=result["changed"], images=result["images"])

    def label(name: str, kind: str, model_name: str, how: str, cut: float, request: gr.Request) -> Iterator[tuple]:
        try:
            job = _submit_labelling(ctx, _chosen(ctx, name), kind, model_name, how, cut, user_of(request))
        except Exception as exc:
            yield error_markup(ctx, exc), ""
            return
        yield from _follow(ctx, job.id)

    def cancel_job(current: str, request: gr.Request) -> str:
        return cancel_markup(ctx, current, "progress.cancelled", owner_to_check(request))

    def reconnect(request: gr.Request) -> Iterator[tuple]:
        """A reload during a caption job of this user (running or queued) follows it again."""
        job = unfinished_job_of(ctx, request, ("caption",), ("running", "queued"))
        if job is None:
            yield "", ""
            return
        yield from _follow(ctx, job.id)

    cancel.click(cancel_job, job_id, progress)
    labeller.change(lambda kind: gr.update(visible=kind == "tagger"), labeller, threshold)  # tagger only
    ctx.on_load.append({"fn": reconnect, "inputs": None, "outputs": [progress, job_id], "concurrency_limit": None})
    return [
        set_captions.click(fixed, [picker, template, trigger, only_missing], template_message),
        start.click(label, [picker, labeller, model, mode, threshold], [progress, job_id], concurrency_limit=None),
    ]


def _submit_labelling(ctx: UiContext, name: str, kind: str, model: str, mode: str, threshold: float, user: str):
    """Queue a caption job with the tagger or the captioner named by the form."""
    from lorastudio.errors import LorastudioError
    from lorastudio.service.job_kinds import CaptionJobConfig

    model = (model or "").strip()
    if not model:
        raise LorastudioError(ctx.t("datasets.label_model_missing"))
    if kind == "captioner":
        cfg = CaptionJobConfig(dataset=name, mode=mode, captioner=CaptionerConfig(model=model))
    else:
        tagger = TaggerConfig(model=model, general_threshold=float(threshold))
        cfg = CaptionJobConfig(dataset=name, mode=mode, tagger=tagger)
    return ctx.studio.submit_caption(cfg, user=user)


def _follow(ctx: UiContext, job_id: str) -> Iterator[tuple]:
    """Yield (progress text, job id) until the caption job ends."""
    t, studio = ctx.t, ctx.studio
    started, seen, step, total = time.monotonic(), 0, 0, 0
    for job in poll_job(studio, job_id, POLL_S):
        for event in studio.job_events(job_id, after=seen):
            seen = event.seq
            step, total = event.data.get("step", step), event.data.get("total", total)
        if job.finished:
            break
        if job.state == "queued":
            text = queued_text(ctx, job)
        elif total:
            text = t("datasets.label_running", step=step, total=total)
        else:
            text = t("progress.starting")
        yield text, job_id
    if job.state == "succeeded":
        text = t("datasets.label_done", changed=(job.result or {}).get("written", step),
                 seconds=f"{time.monotonic() - started:.1f}")  # fmt: skip
    elif job.state == "cancelled":
        text = t("progress.cancelled")
    else:
        text = failed_markup(ctx, job)
    yield text, ""


# --- caption editor -------------------------------------------------------------------------


def _build_editor(ctx: UiContext, picker: gr.Dropdown) -> tuple:
    """The images with their captions (gallery + editable table) and bulk add/remove/replace."""
    t = ctx.t
    with gr.Row():
        search = gr.Textbox(label=t("datasets.search"), scale=4, elem_id="ds-caption-search")
        reload = gr.Button(t("datasets.refresh"), scale=1, elem_id="ds-caption-reload")
    gallery = gr.Gallery(columns=6, height=260, label=t("datasets.images", count=GALLERY_MAX),
                         elem_id="ds-gallery")  # fmt: skip
    table = gr.Dataframe(
        headers=[t("datasets.column.file"), t("datasets.column.original"), t("datasets.column.caption")],
        value=[],
        interactive=True,
        static_columns=[0, 1],
        wrap=True,
        elem_id="ds-captions",
    )
    save = gr.Button(t("datasets.captions_save"), variant="primary", elem_id="ds-captions-save")
    save_message = gr.Markdown(elem_id="ds-captions-message")

    gr.Markdown(f"### {t('datasets.bulk')}")
    with gr.Row():
        add = gr.Textbox(label=t("datasets.bulk_add"), elem_id="ds-bulk-add")
        remove = gr.Textbox(label=t("datasets.bulk_remove"), elem_id="ds-bulk-remove")
        replace = gr.Textbox(label=t("datasets.bulk_replace"), info=t("datasets.bulk_replace_help"), lines=2,
                             elem_id="ds-bulk-replace")  # fmt: skip
    with gr.Row():
        preview = gr.Button(t("datasets.bulk_preview"), elem_id="ds-bulk-preview")
        apply = gr.Button(t("datasets.bulk_apply"), variant="primary", elem_id="ds-bulk-apply")
    bulk_message = gr.Markdown(elem_id="ds-bulk-message")
    examples = gr.Dataframe(
        headers=[t("datasets.column.file"), t("datasets.column.before"), t("datasets.column.after")],
        value=[],
        interactive=False,
        wrap=True,
        elem_id="ds-bulk-examples",
    )

    def save_table(name: str, rows: Any) -> str:
        from lorastudio.service.datasets import write_captions

        try:
            captions = {str(row[0]): _cell_text(row[2]) for row in _rows_of(rows) if row and row[0]}
            result = write_captions(ctx.studio.workspace, _chosen(ctx, name), captions)
        except Exception as exc:
            return error_markup(ctx, exc)
        return t("datasets.captions_saved", changed=result["changed"])

    def bulk(name: str, plus: str, minus: str, pairs: str, dry_run: bool) -> tuple:
        from lorastudio.service.datasets import caption_edit, edit_captions, split_tags

        try:
            edit = caption_edit(add=split_tags(plus or ""), remove=split_tags(minus or ""),
                                replace=_replace_lines(pairs))  # fmt: skip
            result = edit_captions(ctx.studio.workspace, _chosen(ctx, name), edit, dry_run=dry_run)
        except Exception as exc:
            return error_markup(ctx, exc), []
        rows = [[row["file"], row["before"], row["after"]] for row in result["examples"]]
        key = "datasets.bulk_would_change" if dry_run else "datasets.bulk_changed"
        return t(key, changed=result["changed"]), rows

    search.change(lambda name, query: _editor_rows(ctx, name, query), [picker, search], [gallery, table])
    reload.click(lambda name, query: _editor_rows(ctx, name, query), [picker, search], [gallery, table])
    bulk_inputs = [picker, add, remove, replace]
    preview.click(lambda *v: bulk(*v, dry_run=True), bulk_inputs, [bulk_message, examples])
    edits = [
        save.click(save_table, [picker, table], save_message),
        apply.click(lambda *v: bulk(*v, dry_run=False), bulk_inputs, [bulk_message, examples]),
    ]
    return gallery, table, search, edits


def _editor_rows(ctx: UiContext, name: str | None, query: str) -> tuple[list, list]:
    """(gallery items, table rows) of the data set's images whose caption matches `query`."""
    from lorastudio.errors import LorastudioError
    from lorastudio.service.datasets import dataset_captions, search_captions

    if not name:
        return [], []
    try:
        items = dataset_captions(ctx.studio.workspace, name)["items"]
        if (query or "").strip():
            wanted = {hit["file"] for hit in search_captions(ctx.studio.workspace, name, query.strip())["matches"]}
            items = [item for item in items if item["file"] in wanted]
    except LorastudioError:  # deleted meanwhile: an empty editor, the picker's refresh says why
        return [], []
    gallery = [(item["path"], item["caption"] or item["original"]) for item in items[:GALLERY_MAX]]
    return gallery, [[item["file"], item["original"], item["caption"]] for item in items]


def _rows_of(table: Any) -> list[list]:
    """A Dataframe's value as rows (Gradio hands a pandas frame or a list)."""
    if hasattr(table, "values") and hasattr(table, "columns"):
        return table.values.tolist()
    if isinstance(table, dict):
        return list(table.get("data") or [])
    return list(table or [])


def _cell_text(value: Any) -> str:
    """A table cell as text: an emptied cell may come back as None or NaN."""
    return "" if value is None or value != value else str(value)


def _replace_lines(text: str) -> list[str]:
    """`OLD=NEW` pairs, one per line or separated by ';' (tags themselves hold commas)."""
    parts = (text or "").replace(";", "\n").splitlines()
    return [part.strip() for part in parts if part.strip()]


# --- report ---------------------------------------------------------------------------------


def _build_report(ctx: UiContext, picker: gr.Dropdown) -> None:
    t = ctx.t
    with gr.Row():
        resolution = gr.Number(label=t("datasets.resolution"), value=1024, precision=0, minimum=64,
                               elem_id="ds-report-resolution")  # fmt: skip
        make = gr.Button(t("datasets.report_make"), variant="primary", elem_id="ds-report-make")
    download = gr.File(label=t("datasets.report_file"), interactive=False, elem_id="ds-report-file")
    shown = gr.HTML(elem_id="ds-report")

    def report(name: str, size: float) -> tuple:
        from lorastudio.service.datasets import dataset_report

        try:
            path = Path(dataset_report(ctx.studio.workspace, _chosen(ctx, name), int(size or 1024))["report"])
        except Exception as exc:
            return None, error_markup(ctx, exc)
        page = html.escape(path.read_text(encoding="utf-8"), quote=True)
        frame = f'<iframe sandbox srcdoc="{page}" style="width:100%;height:720px;border:0"></iframe>'
        return str(path), frame

    make.click(report, [picker, resolution], [download, shown])


# --- shared ---------------------------------------------------------------------------------


def _names(ctx: UiContext) -> list[str]:
    from lorastudio.service.datasets import list_datasets

    return [row["name"] for row in list_datasets(ctx.studio.workspace)["datasets"]]


def _chosen(ctx: UiContext, name: str | None) -> str:
    from lorastudio.errors import LorastudioError

    if not name:
        raise LorastudioError(ctx.t("datasets.none_chosen"))
    return name


def _info(ctx: UiContext, name: str | None) -> str:
    from lorastudio.service.datasets import list_datasets

    row = next((r for r in list_datasets(ctx.studio.workspace)["datasets"] if r["name"] == name), None)
    if row is None:
        return ""
    return ctx.t("datasets.info", name=row["name"], images=row["images"], captioned=row["captioned"])

