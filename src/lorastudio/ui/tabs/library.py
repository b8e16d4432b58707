"""Library: LoRAs (characters and styles), models and embeddings; search, details, delete, import.

Each list is what `lorastudio lora list` / `models list` / `embeddings list` print (the same
service functions); a LoRA's card shows its trigger words, base model, the run and step it
came from and its sample images. Delete asks for the name a second time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from lorastudio.ui.context import UiContext, error_markup

TAB_ID = "library"
LABEL = "tab.library"


@dataclass(frozen=True)
class Section:
    key: str  # "loras", "models", "embeddings"
    columns: tuple[str, ...]  # keys of the row dicts, labels "library.column.<key>"
    rows: Callable[[Any], list[dict[str, Any]]]
    delete: Callable[[Any, str], dict[str, Any]]
    rename: Callable[[Any, str, str], dict[str, Any]]
    import_file: Callable[[Any, Path, str], dict[str, Any]]
    file_types: list[str] | None = None  # what the upload's file picker offers (None: any file)


def _sections() -> tuple[Section, ...]:
    from lorastudio.service import embeddings, loras, models

    return (
        Section("loras", ("name", "kind", "base", "trigger", "steps", "error"), _lora_rows, loras.delete_lora, loras.rename_lora,
                lambda ws, path, name: loras.import_lora(ws, path, name=name or None)),
        Section("models", ("name", "kind", "size", "error"), _model_rows, models.delete_model, models.rename_model,
                lambda ws, path, name: models.import_model(ws, path, name=name or None)),
        Section("embeddings", ("name", "kind", "size", "error"), _embedding_rows, embeddings.delete_embedding,
                embeddings.rename_embedding, lambda ws, path, name: embeddings.import_embedding(ws, path, name or None),
                list(embeddings.EMBEDDING_IMPORT_SUFFIXES)),
    )  # fmt: skip


def _lora_rows(ws) -> list[dict[str, Any]]:
    from lorastudio.service.loras import list_loras

    return [{"name": r["name"], "kind": r.get("type") or "LoRA", "base": r.get("base_model") or "",
             "trigger": r.get("trigger") or "", "steps": r.get("step") or "", "error": r.get("error") or "",
             "samples": r.get("samples") or [], "training": r.get("training"),
             "scores": r.get("scores")} for r in list_loras(ws)]  # fmt: skip


def _model_rows(ws) -> list[dict[str, Any]]:
    from lorastudio.service.models import list_models

    return [{"name": r["name"], "kind": r.get("family") or "", "error": r.get("error") or "",
             "size": file_size(r.get("size_bytes"))} for r in list_models(ws)]  # fmt: skip


def file_size(size_bytes: int | None) -> str:
    """A file's size with its unit: an embedding's few KB read "12 KB", not "0.01" MB."""
    if not size_bytes:
        return ""
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{max(1, round(size_bytes / 2**10))} KB"


def _embedding_rows(ws) -> list[dict[str, Any]]:
    from lorastudio.service.embeddings import list_embeddings

    return [{"name": r["name"], "kind": f"{r.get('vectors') or '?'} x {r.get('shape') or '?'}",
             "size": file_size(r.get("size_bytes")), "error": r.get("error") or ""}
            for r in list_embeddings(ws)]  # fmt: skip


def build(ctx: UiContext) -> None:
    with gr.Tabs():
        for section in _sections():
            with gr.Tab(ctx.t(f"library.{section.key}"), id=f"library-{section.key}"):
                _build_section(ctx, section)


def _table(ctx: UiContext, section: Section, query: str = "") -> list[list]:
    needle = (query or "").strip().lower()
    rows = section.rows(ctx.studio.workspace)
    return [[str(row.get(column, "")) for column in section.columns] for row in rows
            if not needle or any(needle in str(value).lower() for value in row.values())]  # fmt: skip


def _build_section(ctx: UiContext, section: Section) -> None:
    t, key = ctx.t, section.key
    with gr.Row():
        search = gr.Textbox(label=t("library.search"), scale=4, elem_id=f"{key}-search")
        refresh = gr.Button(t("library.refresh"), scale=1, elem_id=f"{key}-refresh")
    cards = None
    if key == "loras":  # characters and styles as cards: a sample picture, the name and the trigger
        cards = gr.Gallery(
            value=_cards(ctx, section), columns=6, height=260, allow_preview=False,
            label=t("library.cards"), elem_id="loras-cards",
        )  # fmt: skip
    table = gr.Dataframe(
        headers=[t(f"library.column.{column}") for column in section.columns],
        value=_table(ctx, section),
        interactive=False,
        wrap=True,
        elem_id=f"{key}-table",
    )
    card = gr.Markdown(elem_id=f"{key}-card")
    samples = gr.Gallery(columns=4, height=200, visible=key == "loras", elem_id=f"{key}-samples")
    with gr.Row():
        name = gr.Textbox(label=t("library.name"), scale=2, elem_id=f"{key}-name")
        confirm = gr.Textbox(label=t("library.confirm_delete"), scale=2, elem_id=f"{key}-confirm")
        delete = gr.Button(t("library.delete"), variant="stop", scale=1, elem_id=f"{key}-delete")
    with gr.Row():
        new_name = gr.Textbox(label=t("library.new_name"), scale=4, elem_id=f"{key}-new-name")
        rename = gr.Button(t("library.rename"), scale=1, elem_id=f"{key}-rename")
    with gr.Row():
        upload = gr.File(label=t("library.upload"), type="filepath", file_types=section.file_types, scale=3,
                         elem_id=f"{key}-upload")  # fmt: skip
        import_name = gr.Textbox(label=t("library.name"), scale=2)
        do_import = gr.Button(t("library.import"), scale=1, elem_id=f"{key}-import")
    message = gr.Markdown(elem_id=f"{key}-message")

    def selected(event: gr.SelectData) -> tuple:
        row = event.row_value or []
        chosen = str(row[0]) if row else ""
        return chosen, *_card(ctx, section, chosen)

    # what shows the library: after a rename, delete or import all of it, the details of the name now shown
    shown = [table, *([cards] if cards is not None else []), card, samples]

    def listing(query: str, chosen: str) -> list:
        lists = [_table(ctx, section, query), *([_cards(ctx, section, query)] if cards is not None else [])]
        return [*lists, *_card(ctx, section, chosen)]

    unchanged = [gr.update() for _ in shown]

    def remove(chosen: str, again: str, query: str) -> tuple:
        chosen = (chosen or "").strip()
        if not chosen or chosen != (again or "").strip():
            return t("library.confirm_delete"), gr.update(), gr.update(), *unchanged
        try:
            section.delete(ctx.studio.workspace, chosen)
        except Exception as exc:
            return error_markup(ctx, exc), gr.update(), gr.update(), *unchanged
        return t("library.deleted", name=chosen), "", "", *listing(query, "")

    def give_new_name(chosen: str, wanted: str, query: str) -> tuple:
        chosen, wanted = (chosen or "").strip(), (wanted or "").strip()
        if not chosen or not wanted:
            return t("library.new_name"), gr.update(), *unchanged
        try:
            section.rename(ctx.studio.workspace, chosen, wanted)
        except Exception as exc:
            return error_markup(ctx, exc), gr.update(), *unchanged
        return t("library.renamed", old=chosen, new=wanted), wanted, *listing(query, wanted)

    def add(path: str | None, wanted: str, query: str, chosen: str) -> tuple:
        if not path:
            return t("library.upload"), *unchanged
        try:
            info = section.import_file(ctx.studio.workspace, Path(path), (wanted or "").strip())
        except Exception as exc:
            return error_markup(ctx, exc), *unchanged
        return t("library.imported", name=info.get("name", wanted)), *listing(query, (chosen or "").strip())

    search.change(lambda query: _table(ctx, section, query), search, table)
    refresh.click(lambda query: _table(ctx, section, query), search, table)
    table.select(selected, None, [name, card, samples])
    if cards is not None:
        def picked(event: gr.SelectData) -> tuple:
            chosen = str(event.value.get("caption") or "").split(" · ")[0] if isinstance(event.value, dict) else ""
            return chosen, *_card(ctx, section, chosen)

        cards.select(picked, None, [name, card, samples])
        for trigger in (refresh.click, search.change):
            trigger(lambda query: _cards(ctx, section, query), search, cards)
        ctx.on_load.append({"fn": lambda: _cards(ctx, section), "inputs": None, "outputs": cards})
    delete.click(remove, [name, confirm, search], [message, name, confirm, *shown])
    rename.click(give_new_name, [name, new_name, search], [message, name, *shown])
    do_import.click(add, [upload, import_name, search, name], [message, *shown])
    ctx.on_load.append({"fn": lambda: _table(ctx, section), "inputs": None, "outputs": table})


def _cards(ctx: UiContext, section: Section, query: str = "") -> list[tuple[str, str]]:
    """(picture, "name · trigger") per LoRA: its latest sample, else a blank tile."""
    needle = (query or "").strip().lower()
    cards = []
    for row in section.rows(ctx.studio.workspace):
        if needle and not any(needle in str(value).lower() for value in row.values()):
            continue
        picture = next((str(p) for p in row.get("samples", []) if Path(str(p)).is_file()), None)
        caption = f"{row['name']} · {row['trigger']}" if row.get("trigger") else row["name"]
        cards.append((picture or _blank_tile(ctx), caption))
    return cards


def _blank_tile(ctx: UiContext) -> str:
    """A grey square for a LoRA with no sample yet (in Gradio's own cache folder, which it serves)."""
    from PIL import Image

    path = Path(os.environ.get("GRADIO_TEMP_DIR") or ctx.studio.workspace.cache / "gradio") / "no-sample.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (200, 200, 200)).save(path)
    return str(path)


def _card(ctx: UiContext, section: Section, name: str) -> tuple[str, list[str]]:
    row = next((r for r in section.rows(ctx.studio.workspace) if r["name"] == name), None)
    if row is None:
        return "", []
    lines = [f"### {name}"]
    for column in section.columns[1:]:
        if row.get(column):
            lines.append(f"- {ctx.t(f'library.column.{column}')}: `{row[column]}`")
    training = {k: v for k, v in (row.get("training") or {}).items() if v not in (None, "")}
    if training:
        lines.append(f"- {ctx.t('library.training')}: " + ", ".join(f"{k} `{v}`" for k, v in training.items()))
    scores = row.get("scores") or {}
    if scores.get("best_step") is not None:
        best = ", ".join(f"{k} {v:.3g}" for k, v in (scores.get("best") or {}).items())
        lines.append(f"- {ctx.t('library.scores', step=scores['best_step'])}" + (f": {best}" if best else ""))
    samples = [str(p) for p in row.get("samples", []) if Path(str(p)).is_file()]
    return "\n".join(lines), samples

