"""The Generate tab's X/Y/Z plot (A1111's script): axes, their value lists and "Generate grid".

The form above is the base request; each axis is one `GridRequest` axis (A1111's labels, its
value syntax `1-5`, `0.4-1.0 [4]`, `red,blue` for Prompt S/R), so the button queues the same grid
job as `lorastudio grid` and the API's x/y/z plot script. Nothing is computed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from lorastudio.service.grid import GridRequest
from lorastudio.ui.context import UiContext

__all__ = ["AXIS_LETTERS", "GridPanel", "build_grid_panel", "grid_request_from_form"]

AXIS_LETTERS = ("x", "y", "z")


@dataclass
class GridPanel:
    """`axes[letter]` = (type dropdown, values box); the options; the button that queues the grid."""

    axes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # draw_legend, keep_seeds, margin, lora, run
    run: Any = None

    def components(self) -> set:
        return {c for pair in self.axes.values() for c in pair} | set(self.options.values())


def _described(name: str) -> str | None:
    from lorastudio.ui.field_help import field_help  # in the page's language

    return field_help(GridRequest, name) or None


def build_grid_panel(ctx: UiContext) -> GridPanel:
    """An accordion "X/Y/Z plot"; call inside the Generate tab's form column."""
    from lorastudio.service.choices import grid_axis_choices

    t, panel = ctx.t, GridPanel()
    choices = grid_axis_choices()
    with gr.Accordion(t("grid.title"), open=False, elem_id="xyz-plot"):
        for letter in AXIS_LETTERS:
            with gr.Row():
                kind = gr.Dropdown(
                    choices, value="nothing", label=t(f"grid.{letter}_type"), scale=1, elem_id=f"grid-{letter}-type"
                )
                values = gr.Textbox(
                    label=t(f"grid.{letter}_values"), info=_described_values(), scale=3, elem_id=f"grid-{letter}-values"
                )
            panel.axes[letter] = (kind, values)
        with gr.Row():
            panel.options["draw_legend"] = gr.Checkbox(
                value=True, label=t("grid.draw_legend"), info=_described("draw_legend"), elem_id="grid-draw-legend"
            )
            panel.options["keep_seeds"] = gr.Checkbox(
                value=False, label=t("grid.keep_seeds"), info=t("grid.keep_seeds_info"), elem_id="grid-keep-seeds"
            )
            panel.options["margin"] = gr.Number(
                value=0, minimum=0, maximum=500, precision=0, label=t("grid.margin"), info=_described("margin"),
                elem_id="grid-margin",
            )  # fmt: skip
        with gr.Row():
            panel.options["lora"] = gr.Textbox(label=t("grid.lora"), info=_described("lora"), elem_id="grid-lora")
            panel.options["run"] = gr.Textbox(label=t("grid.run"), info=_described("run"), elem_id="grid-run-name")
        panel.run = gr.Button(t("grid.run_button"), variant="primary", elem_id="grid-run")
    return panel


def _described_values() -> str | None:
    from lorastudio.service.grid import AxisRequest
    from lorastudio.ui.field_help import field_help

    return field_help(AxisRequest, "values") or None


def grid_request_from_form(panel: GridPanel, form: dict) -> GridRequest:
    """The panel's values as the service's GridRequest (it checks the axes and value lists)."""
    options = panel.options
    return GridRequest.model_validate(
        {
            **{
                letter: {"axis": form[kind] or "nothing", "values": form[values] or ""}
                for letter, (kind, values) in panel.axes.items()
            },
            "draw_legend": bool(form[options["draw_legend"]]),
            "fixed_seeds": not form[options["keep_seeds"]],  # A1111's "Keep -1 for seeds" is the opposite
            "margin": int(form[options["margin"]] or 0),
            "lora": (form[options["lora"]] or "").strip() or None,
            "run": (form[options["run"]] or "").strip() or None,
        }
    )
