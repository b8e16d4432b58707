"""The Generate tab's X/Y/Z plot (A1111's script): axes, their value lists and "Generate grid".

The form above is the base request; each axis is one `GridRequest` axis. Its values are typed as
text for every axis type, in A1111's syntax (`1-5`, `1-9 (+2)`, `0.4-1.0 [4]`, `a, "b, c"`, `red,blue`
for Prompt S/R, the terms to permute for Prompt order); an axis with choices (sampler, schedule,
checkpoint, VAE, styles, hires upscaler) also has a values dropdown beside the text, whose picks are
written into the text, so the text is always what runs. The button queues the same grid job as `lorastudio grid` and the API's x/y/z
plot script; the value lists are parsed and checked by the service, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from lorastudio.service.grid_request import GridRequest
from lorastudio.ui.context import UiContext

__all__ = [
    "AXIS_LETTERS",
    "GridPanel",
    "build_grid_panel",
    "grid_request_from_form",
    "shown_choices",
]

AXIS_LETTERS = ("x", "y", "z")
# the checkboxes, A1111's options, with their start values: GridRequest fields but "keep_seeds"
_CHECKBOXES = {
    "draw_legend": True,
    "keep_seeds": False,
    "include_sub_images": False,
    "include_sub_grids": False,
    "vary_seeds_x": False,
    "vary_seeds_y": False,
    "vary_seeds_z": False,
}
_VARY_SEEDS = {"vary_seeds_x", "vary_seeds_y", "vary_seeds_z"}  # the second row of checkboxes


@dataclass
class GridPanel:
    """`axes[letter]` = (type dropdown, values box, values dropdown); the options; the button."""

    axes: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # _CHECKBOXES' names, margin, lora, run
    run: Any = None

    def components(self) -> set:
        return {c for group in self.axes.values() for c in group} | set(self.options.values())


def _described(name: str) -> str | None:
    from lorastudio.ui.field_help import field_help  # in the page's language

    return field_help(GridRequest, name) or None


def _described_values() -> str | None:
    from lorastudio.service.grid_request import AxisRequest
    from lorastudio.ui.field_help import field_help

    return field_help(AxisRequest, "values") or None


def build_grid_panel(ctx: UiContext) -> GridPanel:
    """An accordion "X/Y/Z plot"; call inside the Generate tab's form column."""
    from lorastudio.service.choices import grid_axis_choices

    t, panel = ctx.t, GridPanel()
    with gr.Accordion(t("grid.title"), open=False, elem_id="xyz-plot"):
        for letter in AXIS_LETTERS:
            with gr.Row():
                kind = gr.Dropdown(
                    grid_axis_choices(), value="nothing", label=t(f"grid.{letter}_type"), scale=1,
                    elem_id=f"grid-{letter}-type",
                )  # fmt: skip
                values = gr.Textbox(
                    label=t(f"grid.{letter}_values"), info=_described_values(), scale=3, elem_id=f"grid-{letter}-values"
                )
                picks = gr.Dropdown(
                    [], value=[], multiselect=True, visible=False, label=t("grid.pick_values"), scale=2,
                    elem_id=f"grid-{letter}-picks",
                )  # fmt: skip
            panel.axes[letter] = (kind, values, picks)
        for row in (_CHECKBOXES.keys() - _VARY_SEEDS, _VARY_SEEDS):  # two rows: seven clipped their labels
            with gr.Row():
                for name in (name for name in _CHECKBOXES if name in row):
                    info = _described(name) if name != "keep_seeds" else t("grid.keep_seeds_info")
                    panel.options[name] = gr.Checkbox(
                        value=_CHECKBOXES[name], label=t(f"grid.{name}"), info=info, min_width=200,
                        elem_id=f"grid-{name.replace('_', '-')}",
                    )  # fmt: skip
        with gr.Row():
            panel.options["margin"] = gr.Number(
                value=0, minimum=0, maximum=500, precision=0, label=t("grid.margin"), info=_described("margin"),
                elem_id="grid-margin",
            )  # fmt: skip
            panel.options["lora"] = gr.Textbox(label=t("grid.lora"), info=_described("lora"), elem_id="grid-lora")
            panel.options["run"] = gr.Textbox(label=t("grid.run"), info=_described("run"), elem_id="grid-run-name")
        panel.run = gr.Button(t("grid.run_button"), variant="primary", elem_id="grid-run")
    _wire_value_pickers(ctx, panel)
    return panel


# Axes whose "Automatic" choice reads in the page's language, as the form's own VAE and schedule pickers
_AUTOMATIC_WORDS = {"vae": "generate.vae_automatic", "schedule": "generate.schedule_automatic"}


def shown_choices(ctx: UiContext, axis: str, choices: list[str]) -> list[tuple[str, str]]:
    """The values dropdown's (label, value) pairs: "Automatic" shown translated, while the value
    picked, written into the text and run stays A1111's word."""
    from lorastudio.service.grid import find_axis

    word = _AUTOMATIC_WORDS.get(find_axis(axis or "nothing").name)
    return [(ctx.t(word) if word and choice == "Automatic" else choice, choice) for choice in choices]


def axis_picker_update(ctx: UiContext, axis: str, text: str) -> dict[str, Any]:
    """The values dropdown for a newly chosen axis type: its choices, shown only when it has some,
    with the typed values that are among them picked."""
    from lorastudio.service.choices import grid_axis_value_choices, picks_from_text

    choices = grid_axis_value_choices(ctx.studio.workspace, axis)
    return gr.update(
        choices=shown_choices(ctx, axis, choices), value=picks_from_text(text, choices), visible=bool(choices)
    )


def picked_text(ctx: UiContext, axis: str, text: str, picks: list[str] | None) -> str:
    """The values text after the user picked in the values dropdown (see `text_with_picks`)."""
    from lorastudio.service.choices import grid_axis_value_choices, text_with_picks

    return text_with_picks(text, picks, grid_axis_value_choices(ctx.studio.workspace, axis))


def synced_picks(ctx: UiContext, axis: str, text: str) -> dict[str, Any]:
    """The values dropdown's picks after the text changed (typed, pasted or written by a pick): the
    text's values among its choices, so a later pick adds to what the text says, not to stale picks."""
    from lorastudio.service.choices import grid_axis_value_choices, picks_from_text

    return gr.update(value=picks_from_text(text, grid_axis_value_choices(ctx.studio.workspace, axis)))


def _wire_value_pickers(ctx: UiContext, panel: GridPanel) -> None:
    for kind, values, picks in panel.axes.values():
        kind.change(lambda axis, text: axis_picker_update(ctx, axis, text), [kind, values], picks)
        values.change(lambda axis, text: synced_picks(ctx, axis, text), [kind, values], picks)
        # `.input`: only a person's pick, so the text written back does not fire it again
        picks.input(lambda axis, text, chosen: picked_text(ctx, axis, text, chosen), [kind, values, picks], values)


def grid_request_from_form(panel: GridPanel, form: dict) -> GridRequest:
    """The panel's values as the service's GridRequest (it checks the axes and value lists).

    The text is the values (any axis type, A1111's syntax) and the only thing that runs: the
    dropdown writes its picks into it, so picks the text no longer holds are not values."""
    options = panel.options
    axes = {}
    for letter, (kind, values, _picks) in panel.axes.items():
        axes[letter] = {"axis": form.get(kind) or "nothing", "values": str(form.get(values) or "")}
    return GridRequest.model_validate(
        {
            **axes,
            **{name: bool(form[options[name]]) for name in _CHECKBOXES if name != "keep_seeds"},
            "fixed_seeds": not form[options["keep_seeds"]],  # A1111's "Keep -1 for seeds" is the opposite
            "margin": int(form[options["margin"]] or 0),
            "lora": (form[options["lora"]] or "").strip() or None,
            "run": (form[options["run"]] or "").strip() or None,
        }
    )
