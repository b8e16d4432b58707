"""The `step-N` folders a run writes (`checkpoints/step-N/`, `samples/step-N/`).

Checkpoint resume, state pruning, scoring and the library all walk these folders; one
reader keeps the naming rule in one place. No torch here: service code imports it cheaply.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["step_folders"]


def step_folders(parent: Path) -> list[tuple[int, Path]]:
    """`parent/step-N` folders as (N, folder), oldest first; other names are ignored."""
    found = []
    for folder in parent.glob("step-*"):
        step = folder.name.removeprefix("step-")
        if step.isdigit() and folder.is_dir():
            found.append((int(step), folder))
    return sorted(found)
