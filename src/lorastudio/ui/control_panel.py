"""The Generate tab's ControlNet units: up to three, each an image, a preprocessor and a ControlNet.

Every control is a `ControlUnit` field (choices, limits and tooltips from the model), so the
form offers exactly what a request may carry. "Preview" runs the unit's preprocessor through
the same service function as `lorastudio control detect` and `/controlnet/detect`, so the map
shown is the map the generation will follow.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from lorastudio.generate.config import MAX_CONTROL_UNITS, ControlUnit
from lorastudio.ui.context import UiContext, error_markup
from lorastudio.ui.field_help import field_help
from lorastudio.ui.forms import field_control

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["UNIT_FIELDS", "ControlPanel", "build_control_panel", "units_from_form"]

# ControlUnit fields the panel shows (image and mask are uploads, added by `units_from_form`)
UNIT_FIELDS = (
    "module", "model", "weight", "guidance_start", "guidance_end", "resize_mode", "control_mode",
    "pixel_perfect", "processor_res", "threshold_a", "threshold_b", "hr_option",
)  # fmt: skip


class ControlPanel:
    """The components of every unit: `units[i]` maps "enabled", "image" and each UNIT_FIELDS name to one."""

    def __init__(self) -> None:
        self.units: list[dict[str, Any]] = []

    def components(self) -> set:
        return {component for unit in self.units for component in unit.values()}

    def pickers(self) -> list:
        """The model and module dropdowns of every unit (refreshed with the library)."""
        return [unit[name] for unit in self.units for name in ("model", "module")]


def build_control_panel(ctx: UiContext) -> ControlPanel:
    """An accordion with one sub-tab per unit; call inside the Generate tab's form column."""
    t = ctx.t
    panel = ControlPanel()
    with gr.Accordion(t("control.title"), open=False, elem_id="controlnet"):
        for index in range(MAX_CONTROL_UNITS):
            with gr.Tab(t("control.unit", number=index), elem_id=f"control-unit-{index}"):
                panel.units.append(_unit_controls(ctx, index))
    return panel


def _unit_controls(ctx: UiContext, index: int) -> dict[str, Any]:
    from lorastudio.service.choices import control_module_names, controlnet_titles

    t, ws = ctx.t, ctx.studio.workspace
    unit: dict[str, Any] = {}

    def ids(name: str) -> str:
        return f"control-{index}-{name}"

    with gr.Row():
        unit["enabled"] = gr.Checkbox(False, label=t("control.enabled"), elem_id=ids("enabled"))
        unit["pixel_perfect"] = field_control(
            ControlUnit, "pixel_perfect", t("control.pixel_perfect"), elem_id=ids("pixel_perfect")
        )
    with gr.Row():
        unit["image"] = gr.Image(  # image_mode None: the file as sent (transparency goes on white, as the extension)
            type="filepath", image_mode=None, label=t("control.image"), height=220, elem_id=ids("image"),
            sources=("upload", "clipboard"),
        )
        detected = gr.Image(label=t("control.map"), height=220, interactive=False, elem_id=ids("map"))
    with gr.Row():
        unit["module"] = gr.Dropdown(
            control_module_names(), value="none", label=t("control.module"), elem_id=ids("module"),
            info=field_help(ControlUnit, "module"),
        )  # fmt: skip
        unit["model"] = gr.Dropdown(
            controlnet_titles(ws), value=None, label=t("control.model"), elem_id=ids("model"),
            info=field_help(ControlUnit, "model"),
        )  # fmt: skip
        preview = gr.Button(t("control.preview"), size="sm", elem_id=ids("preview"))
    preview_error = gr.Markdown(elem_id=ids("error"))
    unit["weight"] = field_control(ControlUnit, "weight", t("control.weight"), slider=True, step=0.05, elem_id=ids("weight"))
    with gr.Row():
        unit["guidance_start"] = field_control(
            ControlUnit, "guidance_start", t("control.guidance_start"), slider=True, step=0.01, elem_id=ids("start")
        )
        unit["guidance_end"] = field_control(
            ControlUnit, "guidance_end", t("control.guidance_end"), slider=True, step=0.01, elem_id=ids("end")
        )
    with gr.Row():
        unit["resize_mode"] = field_control(ControlUnit, "resize_mode", t("control.resize_mode"), elem_id=ids("resize"))
        unit["control_mode"] = field_control(ControlUnit, "control_mode", t("control.control_mode"), elem_id=ids("mode"))
        unit["hr_option"] = field_control(ControlUnit, "hr_option", t("control.hr_option"), elem_id=ids("hr"))
    with gr.Row():
        unit["processor_res"] = field_control(
            ControlUnit, "processor_res", t("control.processor_res"), slider=True, maximum=2048, step=8,
            elem_id=ids("res"),
        )  # fmt: skip
        # -1: the preprocessor's default (A1111's convention; Gradio sends an empty box as 0)
        unit["threshold_a"] = gr.Number(-1, label=t("control.threshold_a"), elem_id=ids("threshold-a"),
                                        info=field_help(ControlUnit, "threshold_a"))  # fmt: skip
        unit["threshold_b"] = gr.Number(-1, label=t("control.threshold_b"), elem_id=ids("threshold-b"),
                                        info=field_help(ControlUnit, "threshold_b"))  # fmt: skip

    def show_map(image: str | None, module: str, resolution: float, a: float | None, b: float | None):
        try:
            return detect_preview(ctx, image, module, resolution, _threshold(a), _threshold(b)), ""
        except Exception as exc:
            return None, error_markup(ctx, exc)

    def module_sliders(module: str, with_values: bool = False) -> tuple:
        """The picked preprocessor's parameters: their names as labels (and, when the user picked
        it, their defaults as values; a pasted recipe brings its own values)."""
        from lorastudio.service.choices import control_module_sliders

        updates = []
        for key, slider in zip(("threshold_a", "threshold_b"), control_module_sliders(module), strict=True):
            label = t(f"control.{key}") if slider is None else f"{t(f'control.{key}')}: {slider['name']}"
            value = {"value": -1 if slider is None else slider["value"]} if with_values else {}
            updates.append(gr.update(label=label, interactive=slider is not None, **value))
        return tuple(updates)

    thresholds = [unit["threshold_a"], unit["threshold_b"]]
    unit["module"].change(module_sliders, unit["module"], thresholds)
    unit["module"].input(lambda module: module_sliders(module, with_values=True), unit["module"], thresholds)

    preview.click(
        show_map,
        [unit["image"], unit["module"], unit["processor_res"], unit["threshold_a"], unit["threshold_b"]],
        [detected, preview_error],
    )
    return unit


def _threshold(value: float | None) -> float | None:
    """-1 (or empty) = the preprocessor's default."""
    return None if value is None or value == -1 else float(value)


def detect_preview(
    ctx: UiContext, image: str | None, module: str, resolution: float, a: float | None, b: float | None
) -> PILImage.Image:
    """The unit's control map, as the generation will see it (the service's preprocessor run)."""
    from lorastudio.errors import LorastudioError
    from lorastudio.service.annotate import detect_map, open_control_picture

    if not image:
        raise LorastudioError(ctx.t("control.no_image"))
    source = open_control_picture(image)  # as the unit will read it (EXIF rotation, 16-bit greys)
    return detect_map(
        ctx.studio.workspace, module or "none", source, resolution=int(resolution or 512),
        threshold_a=a, threshold_b=b,
    )  # fmt: skip


def units_from_form(ctx: UiContext, panel: ControlPanel, form: dict) -> list[ControlUnit]:
    """The enabled units of the form as ControlUnits; each image becomes an upload the job names.

    An enabled unit without a ControlNet is refused here, naming the unit, rather than queued.
    """
    from lorastudio.errors import InvalidRequest
    from lorastudio.service.uploads import store_image

    units = []
    for index, controls in enumerate(panel.units):
        if not form[controls["enabled"]]:
            continue
        values = {name: form[controls[name]] for name in UNIT_FIELDS}
        if not values["model"]:
            raise InvalidRequest(ctx.t("control.no_model", number=index))
        values["processor_res"] = int(values["processor_res"])
        values["threshold_a"], values["threshold_b"] = _threshold(values["threshold_a"]), _threshold(values["threshold_b"])
        image = form[controls["image"]]
        if image:
            encoded = base64.b64encode(Path(image).read_bytes()).decode()
            values["image"] = store_image(ctx.studio.workspace, encoded, f"ControlNet unit {index} image")
        units.append(ControlUnit(**values))
    return units
