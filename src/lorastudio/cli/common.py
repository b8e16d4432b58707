"""Helpers shared by the CLI verbs: JSON output, workspace, error conversion."""

from __future__ import annotations

import json
import unicodedata
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from lorastudio.service.workspace import Workspace


def print_json(obj: Any) -> None:
    """`--json` output: exactly one JSON object on stdout."""
    typer.echo(json.dumps(obj, ensure_ascii=False, default=str))


def padded(text: str, width: int) -> str:
    """`text` left-aligned in `width` terminal columns: CJK and other wide letters take two, so
    `f"{name:<32}"` (which counts characters) would push the following columns out of line."""
    shown = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(width - shown, 0)


def workspace() -> Workspace:
    from lorastudio.service.workspace import Workspace

    return Workspace.open()
