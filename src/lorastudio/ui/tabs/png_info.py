"""PNG info: drop an image made by lorastudio, A1111 or ComfyUI-with-A1111-text and read its recipe.

The text is read by the one infotext reader (`service.png_info`), and "Send to Generate"
fills the Generate form from the same recipe reader the CLI's `generate --from` uses.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from lorastudio.ui.context import UiContext, error_markup
from lorastudio.ui.control_panel import UNIT_FIELDS
from lorastudio.ui.grid_panel import AXIS_LETTERS

TAB_ID = "png_info"
LABEL = "tab.png_info"


def build(ctx: UiContext) -> None:
    t = ctx.t
    with gr.Row():
        with gr.Column():
            image = gr.Image(  # image_mode None: the file itself (a converted copy would lose its text chunks)
                type="filepath", image_mode=None, label=t("png.image"), elem_id="png-image", height=360
            )
        with gr.Column():
            parameters = gr.Textbox(label=t("png.parameters"), lines=6, interactive=False, elem_id="png-parameters")
            fields = gr.JSON(label=t("png.fields"), elem_id="png-fields")
            send = gr.Button(t("png.send_generate"), variant="primary", elem_id="png-send-generate")
            message = gr.Markdown(elem_id="png-message")

    image.change(lambda path: _read(ctx, path), image, [parameters, fields, message])

    generate_fields: dict[str, Any] = ctx.shared["generate.fields"]
    names = [name for name in generate_fields if name != "init_image"]
    outputs = [generate_fields[name] for name in names]
    panel = ctx.shared["generate.control"]
    unit_outputs = [unit[name] for unit in panel.units for name in ("enabled", *UNIT_FIELDS)]
    grid = ctx.shared["generate.grid"]
    grid_outputs = [*(c for letter in AXIS_LETTERS for c in grid.axes[letter]), grid.options["keep_seeds"]]

    def send_to_generate(path: str | None, current_model: str | None) -> tuple:
        recipe = _recipe(ctx, path, current_model)
        if isinstance(recipe, str):  # no recipe: say so, change nothing
            unchanged = [gr.update() for _ in (*names, *unit_outputs, *grid_outputs)]
            return (*unchanged, gr.update(), gr.update(), recipe)
        values, note = recipe
        if note:  # a toast: the click moves to the Generate tab, away from this tab's message line
            gr.Warning(note)
        updates = [gr.update(value=values[name]) if name in values else gr.update() for name in names]
        units = _control_updates(ctx, len(panel.units), values.get("controlnet") or [], values.get("control_slots") or [])
        grid_updates = grid_panel_updates(ctx, values.get("grid"))
        styles = styles_picker_update(ctx, values.get("styles") or [])
        return (*updates, *units, *grid_updates, styles, gr.Tabs(selected="generate"), note)

    send.click(
        send_to_generate,
        [image, generate_fields["model"]],
        [*outputs, *unit_outputs, *grid_outputs, ctx.shared["generate.styles"], ctx.tabs, message],
    )


def styles_picker_update(ctx: UiContext, styles: list[str]) -> Any:
    """The Styles picker as A1111's paste sets it ("Apply if any"): the styles taken out of the pasted
    prompts, picked; none found leaves the picker as it is."""
    from lorastudio.service.choices import style_names

    if not styles:
        return gr.update()
    return gr.update(choices=style_names(ctx.studio.workspace), value=list(styles))


def grid_panel_updates(ctx: UiContext, grid: dict[str, Any] | None) -> list:
    """The X/Y/Z panel as a grid image's infotext sets it (A1111's script paste): each axis' type,
    values text and values dropdown, then "Keep -1 for seeds"; a plain image leaves the panel as it is."""
    from lorastudio.ui.grid_panel import axis_picker_update

    if grid is None:
        return [gr.update() for _ in range(3 * len(AXIS_LETTERS) + 1)]
    updates: list = []
    for letter in AXIS_LETTERS:
        axis = grid.get(letter) or {"axis": "nothing", "values": ""}
        updates += [
            gr.update(value=axis["axis"]),
            gr.update(value=axis["values"]),
            axis_picker_update(ctx, axis["axis"], axis["values"]),
        ]
    keep_seeds = grid.get("keep_seeds")
    updates.append(gr.update() if keep_seeds is None else gr.update(value=keep_seeds))
    return updates


def _control_updates(ctx: UiContext, count: int, units: list[dict[str, Any]], slots: list[int]) -> list:
    """The ControlNet panel as the image's units set it (the extension's paste): each unit of the
    recipe enabled in its own slot (`ControlNet N` is unit N) with its settings, its image left to
    the user; the other units switched off."""
    from lorastudio.service.choices import controlnet_titles

    titles = controlnet_titles(ctx.studio.workspace)  # the picker's choices may predate a new file
    by_slot = dict(zip(slots, units, strict=False)) if len(slots) == len(units) else dict(enumerate(units))
    updates: list = []
    for index in range(count):
        if index not in by_slot:
            updates += [gr.update(value=False), *[gr.update() for _ in UNIT_FIELDS]]
            continue
        unit = by_slot[index]
        updates.append(gr.update(value=True))
        for name in UNIT_FIELDS:
            value = unit.get(name)
            if name == "model":
                updates.append(gr.update(choices=titles, value=value))
            elif name.startswith("threshold_"):
                updates.append(gr.update(value=-1 if value is None else value))  # -1: the preprocessor's default
            else:
                updates.append(gr.update(value=value))
    return updates


def _read(ctx: UiContext, path: str | None) -> tuple:
    from lorastudio.service.png_info import png_info

    if not path:
        return "", None, ""
    try:
        info = png_info(path)
    except Exception as exc:
        return "", None, error_markup(ctx, exc)
    if not info["info"]:
        return "", None, ctx.t("png.no_parameters")
    return info["info"], info["parameters"], ""


# fields a recipe note says this studio lacks: the Generate form keeps its own value
_KEPT_BY_NOTE = {  # (a VAE or schedule type this studio lacks becomes "Automatic", as its note says)
    "sampler_unknown": ("sampler", "schedule"),
    "hires_upscaler_missing": ("hires_upscaler",),
    "hires_sampler_unknown": ("hires_sampler", "hires_schedule"),
}


def _recipe(ctx: UiContext, path: str | None, current_model: str | None = None) -> tuple[dict[str, Any], str] | str:
    """(the image's recipe as Generate form values, a note), or the reason there is none. An image
    whose model is not in this workspace (or that names none) gets the form's model (the studio's
    when the form has none), as A1111 keeps its checkpoint; the note says so, and what else will
    not come back the same (a LoRA found by hash under another name, A1111's GPU noise)."""
    from lorastudio.service.recipes import read_recipe

    if not path:
        return ctx.t("png.no_parameters")
    try:
        recipe = read_recipe(path, ctx.studio.workspace, model=current_model or ctx.studio.model, form=True)
    except Exception as exc:
        return error_markup(ctx, exc)
    values = recipe.config.model_dump()
    values["control_slots"] = recipe.control_slots
    values["grid"] = recipe.grid
    values["styles"] = recipe.styles  # taken out of the prompts, for the Styles picker
    values["schedule"] = values.get("schedule") or "Automatic"
    values["hires_sampler"] = values.get("hires_sampler") or "Use same sampler"  # the hires pickers' first choice
    values["hires_schedule"] = values.get("hires_schedule") or "Use same scheduler"
    values["vae"] = values.get("vae") or ""  # the picker's "Automatic"
    for note in recipe.notes:  # a value this studio lacks: the form keeps its own, as A1111's paste
        for name in _KEPT_BY_NOTE.get(note.key, ()):
            values.pop(name, None)
    return values, " ".join(ctx.t(f"png.{note.key}", **_worded(ctx, note.params)) for note in recipe.notes)


def _worded(ctx: UiContext, params: dict[str, str]) -> dict[str, str]:
    """A note's params in the page's language: the kind of weight a note names (model, VAE, LoRA,
    embedding) by the Generate form's label for it."""
    return {**params, "what": ctx.t(f"generate.{params['kind']}")} if "kind" in params else params
