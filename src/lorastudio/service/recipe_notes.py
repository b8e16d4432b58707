"""What a recipe says about itself: one note per thing that will not come back the same."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RecipeNote"]


@dataclass(frozen=True)
class RecipeNote:
    """One thing about a recipe the user should know: `key` names it for a translation, `params`
    fill it, `text` says it in English."""

    key: str
    params: dict[str, str]
    text: str
