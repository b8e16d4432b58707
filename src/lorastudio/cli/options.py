"""Typer options made from a config model's fields, so a new field is a new flag with no CLI edit.

Each field becomes `--field-name` with the field's type, default None (unset: the config's
default applies) and the field's description as help. Flags that README, docs and scripts
already use stay as aliases (`--cfg`, `--negative/-n`, `--batch`, `--padding`,
`--only-masked/--whole-picture`, `-p`).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import typer
from pydantic import BaseModel

__all__ = ["LEGACY_FLAGS", "config_options", "option_flags"]

# Field -> extra flags kept beside the generated `--field-name` (documented before it existed).
LEGACY_FLAGS: dict[str, tuple[str, ...]] = {
    "prompt": ("-p",),
    "negative_prompt": ("--negative", "-n"),
    "cfg_scale": ("--cfg",),
    "batch_size": ("--batch",),
    "inpaint_padding": ("--padding",),
    "inpaint_only_masked": ("--only-masked",),
}
# Boolean field -> the flag that sets it False.
OFF_FLAGS: dict[str, str] = {"inpaint_only_masked": "--whole-picture"}


def option_flags(name: str, annotation: Any) -> tuple[str, ...]:
    """`--field-name` (with its off switch for booleans), then the legacy aliases."""
    flag = "--" + name.replace("_", "-")
    if annotation is bool:
        flag = f"{flag}/{OFF_FLAGS.get(name, '--no-' + name.replace('_', '-'))}"
    return (flag, *LEGACY_FLAGS.get(name, ()))


def _plain_type(annotation: Any) -> Any:
    """`int | None` -> int: the CLI type of a field (unset is None anyway)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def _help(field) -> str:
    """The field's description and default; `[` escaped, as Typer's help reads Rich markup."""
    text = (field.description or "").rstrip()
    if field.default not in (None, "") and not callable(field.default):
        text += f" (default: {field.default})"
    return text.replace("[", "\\[")


def _field_parameters(model: type[BaseModel], names: list[str]) -> list[inspect.Parameter]:
    params = []
    for name in names:
        field = model.model_fields[name]
        annotation = _plain_type(field.annotation)
        option = typer.Option(None, *option_flags(name, annotation), help=_help(field), show_default=False)
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation | None)
        )
    return params


def config_options(
    model: type[BaseModel], exclude: Iterable[str] = (), into: str = "fields"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a Typer command one option per field of `model` (less `exclude`).

    The command receives the fields the user set as one dict in its parameter `into`
    (unset options are left out, so the config's defaults and a recipe's values apply).
    """
    excluded = set(exclude)
    names = [n for n in model.model_fields if n not in excluded]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for n, p in inspect.signature(command, eval_str=True).parameters.items()
            if n != into
        ]
        generated = _field_parameters(model, names)

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names}
            kwargs[into] = {name: value for name, value in given.items() if value is not None}
            return command(**kwargs)

        parameters = generated + own
        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # Typer must read the new signature, not the command's
        return wrapper

    return decorate
