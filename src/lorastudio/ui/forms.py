"""Form controls made from a config model's fields, so the UI, API and CLI cannot drift.

A control takes its default, limits and tooltip from the field (`Field(20, ge=1, le=150,
description=...)`); only the label comes from the UI's table (it is translated), and on the
Chinese page the tooltip from `ui/field_help.py`. Adding a field to `GenerateConfig` and one
line in a tab is all a new control needs (and its Chinese help line, or a test fails).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import annotated_types
from pydantic import BaseModel

from lorastudio.ui.field_help import field_help

if TYPE_CHECKING:
    import gradio as gr

__all__ = ["FieldSpec", "field_spec", "field_control", "optional_number", "plain_type"]


@dataclass(frozen=True)
class FieldSpec:
    """What a form needs to know about one config field."""

    name: str
    kind: str  # "int", "float", "bool", "text", "choice"
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()


def _bounds(metadata: list[Any]) -> tuple[float | None, float | None]:
    low = high = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low = item.gt
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt):
            high = item.lt
    return low, high


def plain_type(annotation: Any) -> Any:
    """`int | None` -> int; `Annotated[int, ...]` -> int."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else str
    return annotation


def field_spec(model: type[BaseModel], name: str) -> FieldSpec:
    """The kind, default, limits, choices and description of `model.name`."""
    info = model.model_fields[name]
    annotation = plain_type(info.annotation)
    low, high = _bounds(list(info.metadata))
    choices: tuple[Any, ...] = ()
    if typing.get_origin(annotation) is typing.Literal:
        kind, choices = "choice", typing.get_args(annotation)
    elif annotation is bool:
        kind = "bool"
    elif annotation is int:
        kind = "int"
    elif annotation is float:
        kind = "float"
    else:
        kind = "text"
    if info.is_required():
        default = None
    elif info.default_factory is not None:
        default = info.default_factory()
    else:
        default = info.default
    return FieldSpec(
        name=name,
        kind=kind,
        default=default,
        description=(info.description or "").strip(),
        minimum=low,
        maximum=high,
        choices=choices,
    )


def field_control(
    model: type[BaseModel],
    name: str,
    label: str,
    *,
    value: Any = None,
    slider: bool = False,
    step: float | None = None,
    maximum: float | None = None,
    **kwargs: Any,
) -> gr.components.Component:
    """A Gradio control for `model.name`: a slider or number box within the field's limits,
    a checkbox, a dropdown of its choices or a text box, with the description as tooltip (in
    the language of the page being built: `field_help`).

    `value` overrides the field's default (a saved preference); `maximum` narrows a limit that
    is too wide for a slider (steps up to 500 are valid, a slider to 150 is usable).
    """
    import gradio as gr

    spec = field_spec(model, name)
    start = spec.default if value is None else value
    common = {"label": label, "info": field_help(model, name) or None, "elem_id": f"field-{name}", **kwargs}
    if spec.kind == "bool":
        return gr.Checkbox(value=bool(start), **common)
    if spec.kind == "choice":
        return gr.Dropdown(choices=list(spec.choices), value=start, **common)
    if spec.kind in ("int", "float"):
        high = maximum if maximum is not None else spec.maximum
        precision = 0 if spec.kind == "int" else None
        if slider and spec.minimum is not None and high is not None:
            default_step = 1 if spec.kind == "int" else 0.05
            return gr.Slider(
                minimum=spec.minimum, maximum=high, value=start, step=step or default_step, **common
            )
        number_step = step or (1 if spec.kind == "int" else 0.01)
        if spec.default is None:
            # An optional number ("empty: the model's own size"): Gradio sends an empty box as 0,
            # so the box takes 0 too and `optional_number` turns it back into None; the limits
            # are checked by the config model.
            return gr.Number(value=start or 0, precision=precision, step=number_step, **common)
        return gr.Number(
            value=start, minimum=spec.minimum, maximum=high, precision=precision, step=number_step, **common
        )
    return gr.Textbox(value="" if start is None else str(start), **common)


def optional_number(value: float | None) -> int | None:
    """An optional number box's value: empty or 0 means "not set" (None)."""
    return None if value in (None, "", 0) else int(value)
