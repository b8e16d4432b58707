"""Typed configs: defaults < preset < YAML/TOML file(s) < `key=value` overrides.

Every job kind has one pydantic model (`extra="forbid"`): a typo is an error that lists
the valid keys instead of silently training with defaults. The same models are the API
request bodies, so CLI, API and UI cannot drift.

Configs are built from layers (`ConfigLayer`), lowest first; every value remembers the
layer that set it, so `lorastudio train --explain` can say where each setting came from.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lorastudio.errors import LorastudioError

__all__ = [
    "StrictModel",
    "ConfigLayer",
    "KeyGroup",
    "ResolvedConfig",
    "load_config",
    "resolve_config",
    "merge_layers",
    "flatten_keys",
    "file_layers",
    "override_layer",
    "parse_overrides",
    "read_config_file",
    "read_text_file",
    "decode_text",
    "apply_overrides",
    "validation_key",
]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config: unknown keys are rejected, defaults validated, NaN/Infinity refused."""

    model_config = ConfigDict(
        extra="forbid", validate_default=True, protected_namespaces=(), allow_inf_nan=False
    )


def decode_text(data: bytes) -> str:
    """Bytes of a text file users wrote: UTF-16 with its BOM (Notepad's "Unicode"), UTF-8 with or
    without a BOM, else GB18030 (Chinese text saved by Windows tools), else Windows-1252; never fails.
    GB18030 comes first for the Chinese users this serves: a Windows-1252 file whose accented letter
    forms a valid GBK pair with the next byte ("Müller") reads as Chinese; save such files as UTF-8."""
    import codecs

    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    for encoding in ("utf-8-sig", "gb18030", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def read_text_file(path: str | Path, what: str = "file") -> str:
    """A config, prompt list or recipe as text in any of `decode_text`'s encodings; one line naming
    the file when it cannot be read."""
    path = Path(path)
    try:
        return decode_text(path.read_bytes())
    except OSError as exc:
        raise LorastudioError(f"{path}: cannot read this {what} ({exc.strerror or exc}); check the path.") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or TOML file into a dict (empty file -> {})."""
    path = Path(path)
    if not path.is_file():
        raise LorastudioError(f"{path}: config file not found; check the path.")
    text = read_text_file(path, "config file")
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


def _dotted_fields(model: type[BaseModel], leaf: str, prefix: str = "") -> list[str]:
    """Dotted keys of the (nested) model whose last part is `leaf`: `rank` -> ["lora.rank"]."""
    found = []
    for name, info in model.model_fields.items():
        if name == leaf and prefix:
            found.append(f"{prefix}{name}")
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            found += _dotted_fields(nested, leaf, f"{prefix}{name}.")
    return found


# Says what another tool's key is here: (dotted key, value given, layer source, tails) -> one line, or None;
# `tails` false where the key may be lorastudio's own (inside a section), so only the whole key is looked up.
KeyHint = Callable[..., "str | None"]


def _source_of(key: str, sources: Mapping[str, str], default: str) -> str:
    """The layer that set `key` (or the mapping holding it, or a key inside it): `file my.yaml`, ..."""
    if key in sources:
        return sources[key]
    parents = [k for k in sources if key.startswith(f"{k}.")]
    children = [k for k in sources if k.startswith(f"{key}.")]
    found = max(parents, key=len) if parents else (children[0] if children else None)
    return sources[found] if found else default


def explain_validation_error(
    model: type[BaseModel],
    exc: ValidationError,
    source: str = "config",
    sources: Mapping[str, str] | None = None,
    hint: KeyHint | None = None,
) -> str:
    """One line per problem, each named by the file or layer that set it: an unknown key with the
    key it likely is (`hint`: another tool's name; the same name in a section; a close spelling)
    or the valid keys, a bad value with the reason."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        layer = _source_of(key, sources or {}, source)
        if layer.startswith("file "):  # the file that set the key
            source_here = layer[len("file ") :]
        elif source == "config":  # no name from the caller: the layer's ("override", "preset style")
            source_here = layer
        else:
            source_here = source
        foreign = _foreign_lines(key, err, layer, hint)
        if foreign:
            lines += [f"{source_here}: unknown key {name!r}: {line}." for name, line in foreign]
        elif err["type"] == "extra_forbidden":
            valid = _field_names(model, loc)
            close = _dotted_fields(model, str(loc[-1])) or difflib.get_close_matches(str(loc[-1]), valid, n=1)
            did_you_mean = f" Did you mean {close[0]!r}?" if close else ""
            lines.append(f"{source_here}: unknown key {key!r}.{did_you_mean} Valid keys here: {', '.join(valid)}.")
        elif not loc:  # a check across keys (a model validator): its message names the keys itself
            lines.append(f"{source_here}: {_message(err)}.")
        else:
            given = json.dumps(err.get("input"), default=str)[:80]
            lines.append(f"{source_here}: {key} = {given}: {err['msg']}.")
    return "\n".join(lines)


# pydantic's common error types -> the key (`LorastudioError.key`) a form's refused value is worded by
VALIDATION_KEYS = {
    "greater_than_equal": "value_too_small",
    "greater_than": "value_not_above",
    "less_than_equal": "value_too_large",
    "less_than": "value_not_below",
    "int_parsing": "value_not_integer",
    "int_from_float": "value_not_integer",
    "int_type": "value_not_integer",
    "float_parsing": "value_not_number",
    "float_type": "value_not_number",
    "literal_error": "value_not_choice",
    "enum": "value_not_choice",
    "missing": "value_missing",
}
_LIMITS = ("ge", "gt", "le", "lt")


def validation_key(exc: ValidationError, form: str) -> dict[str, Any]:
    """`key` and `params` for the LorastudioError that refuses a form's one bad value (`exc` holds a
    single problem of a common type): the field's dotted key, the `form` it is in ("train",
    "generate": the web UI words it by the field's label there), the limit, the choices and the
    value given. {} for anything else (several problems, a check across fields): English only."""
    errors = exc.errors(include_url=False)
    if len(errors) != 1 or errors[0].get("type") not in VALIDATION_KEYS or not errors[0].get("loc"):
        return {}
    err = errors[0]
    context = err.get("ctx") or {}
    params: dict[str, Any] = {"field": ".".join(str(part) for part in err["loc"]), "form": form}
    limit = next((context[name] for name in _LIMITS if name in context), None)
    if limit is not None:
        params["limit"] = limit
    if "expected" in context:  # "'CPU', 'GPU' or 'NV'"
        params["choices"] = ", ".join(str(context["expected"]).rsplit(" or ", 1))
    given = err.get("input")
    if isinstance(given, (str, int, float, bool)):
        params["input"] = given
    return {"key": VALIDATION_KEYS[err["type"]], "params": params}


def _foreign_lines(key: str, err: Mapping[str, Any], layer: str, hint: KeyHint | None) -> list[tuple[str, str]]:
    """(key, hint line) for another tool's key: the unknown key itself, or the keys inside a mapping given
    where lorastudio has a plain value (HCP's `model.pretrained_model_name_or_path` under `model`)."""
    if hint is None:
        return []
    given = err.get("input")
    line = hint(key, given, layer) if err["type"] == "extra_forbidden" else None
    if line or not isinstance(given, Mapping) or not given:
        return [(key, line)] if line else []
    unknown = err["type"] == "extra_forbidden"  # else a key of ours: the keys inside may be a section's own
    found = [
        (f"{key}.{sub}", hint(f"{key}.{sub}", value, layer, tails=unknown)) for sub, value in flatten_keys(given).items()
    ]
    return [(name, line) for name, line in found if line]


def _message(err: Mapping[str, Any]) -> str:
    """A validator's own words, without pydantic's "Value error, " or "Assertion failed, " prefix."""
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg.rstrip(".")


def flatten_keys(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"steps": 5}} -> {"train.steps": 5}; an empty mapping is a value of its own."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_keys(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def nest_keys(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"train.steps": 5} -> {"train": {"steps": 5}}: the inverse of `flatten_keys`."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *sections, leaf = dotted.split(".")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return nested


def _pop_dotted(data: dict[str, Any], dotted: str) -> None:
    """Remove `a.b.c` from a nested dict (copying the path, so layers are never mutated)."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, Mapping):
            return
        node[part] = child = dict(child)
        node = child
    node.pop(parts[-1], None)


@dataclass(frozen=True)
class ConfigLayer:
    """One source of settings: a label saying where they came from, and the nested keys it sets."""

    source: str  # "preset character", "file my.yaml", "override", "request"
    data: Mapping[str, Any]


@dataclass(frozen=True)
class KeyGroup:
    """Keys that only make sense one at a time, such as the ways to say how long training runs.

    When a layer sets one of `exclusive`, every key of `keys` that a lower layer set is dropped
    (a preset's `epochs_per_image` must not outlive the user's `steps`); one layer setting two
    of `exclusive` is refused, since nothing says which one the user meant.
    """

    exclusive: tuple[str, ...]
    keys: tuple[str, ...]  # exclusive keys plus keys that only belong with them (e.g. a cap)
    what: str  # "set how long training runs", for the messages
    one_per_layer: bool = True  # False: one layer may set several (kohya saves by steps and epochs)


@dataclass
class ResolvedConfig(Generic[M]):
    """A validated config with the source of every value a layer set, and what was dropped."""

    config: M
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> layer source
    dropped: list[str] = field(default_factory=list)  # one line per value a higher layer replaced


def _check_one_per_layer(layer: ConfigLayer, flat: Mapping[str, Any], group: KeyGroup) -> None:
    given = [key for key in group.exclusive if flat.get(key) is not None]
    if len(given) > 1:
        first, second = given[0], given[1]
        raise LorastudioError(
            f"{layer.source}: {first}={flat[first]} and {second}={flat[second]} both {group.what};"
            f" drop one of them ({second} to keep {first}={flat[first]}, or {first} to keep {second})."
        )


def merge_layers(
    layers: Sequence[ConfigLayer], groups: Sequence[KeyGroup] = ()
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Deep-merge layers lowest first: (data, source of every set dotted key, dropped-value lines)."""
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    dropped: list[str] = []
    for layer in layers:
        flat = flatten_keys(layer.data)
        for group in groups:
            setters = [key for key in group.exclusive if key in flat]
            if not setters:
                continue
            if group.one_per_layer:
                _check_one_per_layer(layer, flat, group)
            for key in group.keys:
                if key in sources and key not in flat:
                    value = json.dumps(flatten_keys(data).get(key), default=str, ensure_ascii=False)
                    dropped.append(
                        f"{key}={value} ({sources.pop(key)}) dropped: {layer.source} sets {setters[0]}"
                    )
                    _pop_dotted(data, key)
        # Mappings merge key by key: a layer is the source of the dotted keys it sets, no others.
        data = apply_overrides(data, layer.data)
        sources.update({key: layer.source for key in flat})
    return data, sources, dropped


def _validate(
    model: type[M],
    data: Mapping[str, Any],
    source: str,
    sources: Mapping[str, str] | None = None,
    hint: KeyHint | None = None,
) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise LorastudioError(explain_validation_error(model, exc, source, sources, hint)) from None


def resolve_config(
    model: type[M],
    layers: Sequence[ConfigLayer],
    groups: Sequence[KeyGroup] = (),
    source: str = "config",
    hint: KeyHint | None = None,
) -> ResolvedConfig[M]:
    """Merge the layers (lowest first), validate, and keep where every value came from; `hint` names
    what an unknown key is here when another tool spells it so."""
    data, sources, dropped = merge_layers(layers, groups)
    return ResolvedConfig(_validate(model, data, source, sources, hint), sources, dropped)


def file_layers(files: str | Path | Sequence[str | Path] | None) -> list[ConfigLayer]:
    """One layer per config file, in the order given (a later file wins)."""
    if files is None:
        return []
    paths = [files] if isinstance(files, str | Path) else list(files)
    return [ConfigLayer(f"file {path}", read_config_file(path)) for path in paths]


def override_layer(overrides: Iterable[str] | Mapping[str, Any], source: str = "override") -> ConfigLayer:
    """`key=value` strings (or an already nested mapping) as the top layer."""
    data = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
    return ConfigLayer(source, data)


def load_config(
    model: type[M],
    file: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    base: Mapping[str, Any] | None = None,
) -> M:
    """Build a config: model defaults < base (e.g. a preset) < file < overrides."""
    layers = [ConfigLayer("base", base or {}), *file_layers(file), override_layer(overrides)]
    return resolve_config(model, layers, source=str(file or "config")).config
