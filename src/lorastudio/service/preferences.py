"""Studio preferences the web UI's Settings tab edits: kept in the workspace, so a restart keeps them.

One small JSON file (`preferences.json` in the workspace root) rather than a database table:
it is read when a page is built and written when a user presses Save, and a person can read
or fix it by hand. Unknown keys are refused (a typo would otherwise be saved silently).
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, ValidationError

from lorastudio.config import StrictModel, explain_validation_error
from lorastudio.errors import LorastudioError
from lorastudio.generate.config import CfgScale, SamplerName, SamplingSteps
from lorastudio.service.workspace import Workspace

__all__ = ["LANGUAGES", "Preferences", "load_preferences", "save_preferences"]

# UI languages: code -> the language's own name (what the Settings picker shows).
LANGUAGES: dict[str, str] = {"en": "English", "zh": "简体中文"}

FILE_NAME = "preferences.json"


class Preferences(StrictModel):
    """What a user sets once and expects to find again: the UI language and generation defaults."""

    language: Literal["en", "zh"] = Field("en", description="Language of the web UI's labels.")
    sampler: SamplerName = Field("Euler a", description="Sampler the Generate form starts with.")
    steps: SamplingSteps = Field(20, le=150, description="Sampling steps the Generate form starts with.")
    cfg_scale: CfgScale = Field(7.0, ge=0, le=30, description="CFG scale the Generate form starts with.")
    width: int | None = Field(
        None, ge=64, le=2048, multiple_of=8, description="Width the Generate form starts with (empty or 0: the model's own)."
    )
    height: int | None = Field(
        None, ge=64, le=2048, multiple_of=8, description="Height the Generate form starts with (empty or 0: the model's own)."
    )
    negative_prompt: str = Field("", description="Negative prompt the Generate form starts with.")


def load_preferences(ws: Workspace) -> Preferences:
    """The saved preferences, or the defaults when none were saved; a damaged file is an error naming it."""
    path = ws.root / FILE_NAME
    if not path.is_file():
        return Preferences()
    try:
        return Preferences.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        reason = (
            explain_validation_error(Preferences, exc, str(path))
            if isinstance(exc, ValidationError)
            else f"{path}: not valid JSON ({exc})"
        )
        raise LorastudioError(f"{reason}; fix or delete the file to start from the defaults.") from None


def save_preferences(ws: Workspace, **changes: object) -> Preferences:
    """Validate `changes` on top of the saved preferences and write them atomically."""
    from lorastudio.data.manifest import atomic_write_json

    current = load_preferences(ws).model_dump()
    try:
        updated = Preferences.model_validate({**current, **changes})
    except ValidationError as exc:
        raise LorastudioError(explain_validation_error(Preferences, exc, "preferences")) from None
    ws.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ws.root / FILE_NAME, updated.model_dump())
    return updated
