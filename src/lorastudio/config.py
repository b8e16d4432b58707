"""Typed configs: defaults < YAML/TOML file < `key=value` overrides.

Every job kind has one pydantic model (`extra="forbid"`): a typo is an error that lists
the valid keys instead of silently training with defaults. The same models are the API
request bodies, so CLI, API and UI cannot drift.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lorastudio.errors import LorastudioError

__all__ = ["StrictModel", "load_config", "parse_overrides", "read_config_file", "apply_overrides"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config: unknown keys are rejected, defaults validated, NaN/Infinity refused."""

    model_config = ConfigDict(
        extra="forbid", validate_default=True, protected_namespaces=(), allow_inf_nan=False
    )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or TOML file into a dict (empty file -> {})."""
    path = Path(path)
    if not path.is_file():
        raise LorastudioError(f"{path}: config file not found; check the path.")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0]
        raise LorastudioError(
            f"{path}: not valid {path.suffix[1:].upper() or 'YAML'} ({first}); fix the syntax."
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LorastudioError(f"{path}: the top level must be a mapping of keys to values.")
    return data


def _parse_value(raw: str) -> Any:
    """`key=value` values are YAML scalars/lists: 1000 -> int, 1e-4 -> float, [a, b] -> list."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    # YAML reads "1e-4" as a string; numbers users type should be numbers.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ["train.steps=1000", "seed=3"] into a nested dict."""
    nested: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise LorastudioError(f"override {item!r} must look like key=value (e.g. train.steps=1000).")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise LorastudioError(f"override {item!r} has an empty key.")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LorastudioError(f"override {item!r} conflicts with another override of {part!r}.")
        node[parts[-1]] = _parse_value(raw)
    return nested


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge overrides into a copy of base."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = apply_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid keys at a location of a (nested) model, for 'did you mean' messages."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def explain_validation_error(model: type[BaseModel], exc: ValidationError, source: str = "config") -> str:
    """One line per problem, with valid keys or choices listed."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            valid = _field_names(model, loc)
            hint = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
            lines.append(f"{source}: unknown key {key!r}.{did_you_mean} Valid keys here: {', '.join(valid)}.")
        else:
            given = json.dumps(err.get("input"), default=str)[:80]
            lines.append(f"{source}: {key} = {given}: {err['msg']}.")
    return " ".join(lines)


def load_config(
    model: type[M],
    file: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    base: Mapping[str, Any] | None = None,
) -> M:
    """Build a config: model defaults < base (e.g. a preset) < file < overrides."""
    data: dict[str, Any] = dict(base or {})
    if file is not None:
        data = apply_overrides(data, read_config_file(file))
    extra = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
    data = apply_overrides(data, extra)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise LorastudioError(explain_validation_error(model, exc, str(file or "config"))) from None
