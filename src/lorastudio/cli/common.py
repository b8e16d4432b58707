"""Helpers shared by the CLI verbs: JSON output, workspace, error conversion."""

from __future__ import annotations

import json
from typing import Any

import typer


def print_json(obj: Any) -> None:
    """`--json` output: exactly one JSON object on stdout."""
    typer.echo(json.dumps(obj, ensure_ascii=False, default=str))


def workspace():
    from lorastudio.service.workspace import Workspace

    return Workspace.open()
