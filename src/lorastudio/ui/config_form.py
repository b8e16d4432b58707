"""A form generated from a nested config model (the training config): one control per key.

Every key of the model (`train.learning_rate`, `lora.rank`, ...) gets a control made from its
field: the kind, limits and tooltip come from the field, so a new config field appears in
the form with no UI change. The keys named `basic` come first, open; the others are folded
into one accordion per section. Lists of words are one-per-line text boxes; mappings are JSON.

A label comes from the UI's table (`trainform.<key>`; the key itself where one is missing);
the tooltip starts with the key, the name the YAML files, the CLI's `key=value` and the API use,
followed by the field's description in the page's language (`ui/field_help.py`).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from pydantic import BaseModel

from lorastudio.errors import LorastudioError
from lorastudio.ui.field_help import field_help
from lorastudio.ui.forms import field_spec, plain_type
from lorastudio.ui.i18n import LABELS

__all__ = ["ConfigForm", "build_config_form", "element_id"]


def element_id(key: str, prefix: str = "train") -> str:
    """`train.learning_rate` -> `train-field-train-learning_rate` (a CSS-safe, page-unique id)."""
    return f"{prefix}-field-{key.replace('.', '-')}"


def _shape(model: type[BaseModel], name: str) -> str:
    """"list" for a list of words, "mapping" for a dict, else the field spec's kind."""
    origin = typing.get_origin(plain_type(model.model_fields[name].annotation))
    if origin is list:
        return "list"
    if origin is dict:
        return "mapping"
    return field_spec(model, name).kind


@dataclass
class ConfigForm:
    """The controls of a generated form and how to read them back as config values."""

    controls: dict[str, Any] = field(default_factory=dict)  # dotted key -> Gradio control
    shapes: dict[str, str] = field(default_factory=dict)  # dotted key -> int/float/bool/choice/text/list/mapping
    optional: set[str] = field(default_factory=set)  # numbers whose empty box (0) means "not set"

    def read(self, form: dict[Any, Any]) -> dict[str, Any]:
        """The values of a submitted form (`{control: value}`) as {dotted key: config value}."""
        return {key: self._value(key, form[control]) for key, control in self.controls.items()}

    def _value(self, key: str, value: Any) -> Any:
        shape = self.shapes[key]
        if shape == "list":
            return [line.strip() for line in str(value or "").splitlines() if line.strip()]
        if shape == "mapping":
            return _mapping(key, value)
        if shape in ("int", "float"):
            if value in (None, "") or (key in self.optional and value == 0):
                return None
            return int(value) if shape == "int" else float(value)
        return value

    def updates(self, values: dict[str, Any]) -> list[Any]:
        """`gr.update`s that show `values` in the controls, in the order of `controls`."""
        return [gr.update(value=_shown(self.shapes[key], values.get(key))) for key in self.controls]


def _mapping(key: str, value: Any) -> dict[str, Any]:
    text = str(value or "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LorastudioError(f"{key}: not JSON ({exc.msg}); write it as {{\"name\": value}} or leave it empty.") from None
    if not isinstance(data, dict):
        raise LorastudioError(f"{key}: write it as a JSON object {{\"name\": value}} or leave it empty.")
    return data


def _shown(shape: str, value: Any) -> Any:
    """A config value as its control shows it."""
    if shape == "list":
        return "\n".join(str(item) for item in value or [])
    if shape == "mapping":
        return json.dumps(value, ensure_ascii=False) if value else ""
    if shape in ("int", "float"):
        return 0 if value is None else value
    if shape == "text":
        return "" if value is None else str(value)
    return value


def _label(t: Callable[..., str], key: str) -> str:
    label_key = f"trainform.{key}"
    return t(label_key) if label_key in LABELS else key


def _control(
    model: type[BaseModel], name: str, key: str, label: str, value: Any, shape: str, choices: Sequence[str] | None
):
    """One control for `key`, showing `value`, with the field's limits and description."""
    spec = field_spec(model, name)
    description = field_help(model, name)
    info = f"{key}: {description}" if description else key
    common = {"label": label, "info": info, "elem_id": element_id(key)}
    shown = _shown(shape, value)
    if choices is not None:
        return gr.Dropdown(choices=list(choices), value=shown, allow_custom_value=True, **common)
    if shape == "list":
        return gr.Textbox(value=shown, lines=3, **common)
    if shape == "mapping":
        return gr.Textbox(value=shown, placeholder='{"name": value}', **common)
    if shape == "bool":
        return gr.Checkbox(value=bool(shown), **common)
    if shape == "choice":
        return gr.Dropdown(choices=list(spec.choices), value=shown, **common)
    if shape in ("int", "float"):
        precision = 0 if shape == "int" else None
        step = 1 if shape == "int" else None
        if spec.default is None:  # an optional number: 0 is "not set", the model checks the limits
            return gr.Number(value=shown, precision=precision, step=step, **common)
        return gr.Number(
            value=shown, minimum=spec.minimum, maximum=spec.maximum, precision=precision, step=step, **common
        )
    return gr.Textbox(value=shown, **common)


def build_config_form(
    t: Callable[..., str],
    keys: dict[str, tuple[type[BaseModel], str]],
    values: dict[str, Any],
    basic: Sequence[str],
    choices: dict[str, Sequence[str]] | None = None,
) -> ConfigForm:
    """Controls for every key in `keys` (from `service.train_runs.form_keys`), showing `values`.

    `basic` keys come first in the order given; the rest are grouped by section (the part
    before the dot, "general" for top-level keys), each section in a closed accordion.
    `choices` turns a key into a dropdown of names (models, data sets) that still takes any text.
    """
    choices = choices or {}
    form = ConfigForm()

    def add(key: str) -> None:
        model, name = keys[key]
        shape = _shape(model, name)
        form.shapes[key] = shape
        if shape in ("int", "float") and model.model_fields[name].default is None:
            form.optional.add(key)
        form.controls[key] = _control(model, name, key, _label(t, key), values.get(key), shape, choices.get(key))

    with gr.Group(elem_id="train-basic"):
        for key in basic:
            add(key)
    sections: dict[str, list[str]] = {}
    for key in keys:
        if key not in basic:
            sections.setdefault(key.split(".")[0] if "." in key else "general", []).append(key)
    for section, section_keys in sections.items():
        with gr.Accordion(t(f"trainform.section.{section}"), open=False, elem_id=f"train-section-{section}"):
            for key in section_keys:
                add(key)
    return form
