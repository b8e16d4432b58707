"""What every tab module gets: the studio, the page's language, and the controls tabs share.

Tabs are built in order (`ui.tabs.TABS`); a tab that offers "send to Generate" finds the
Generate tab's controls in `ctx.shared`, so no tab imports another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError
from lorastudio.ui.i18n import Translator, translator

if TYPE_CHECKING:
    from lorastudio.service.preferences import Preferences
    from lorastudio.service.studio import Studio

__all__ = ["UiContext", "user_of", "error_text"]


@dataclass
class UiContext:
    studio: Studio
    language: str
    t: Translator
    preferences: Preferences
    # controls other tabs read or fill: "generate.fields" (config field -> control), "generate.tab"...
    shared: dict[str, Any] = field(default_factory=dict)
    tabs: Any = None  # the gr.Tabs, so a "send to" button can switch tab
    on_load: list[dict[str, Any]] = field(default_factory=list)  # blocks.load(**hook) per page load

    @classmethod
    def create(cls, studio: Studio, language: str) -> UiContext:
        from lorastudio.service.preferences import Preferences, load_preferences

        try:
            preferences = load_preferences(studio.workspace)
        except LorastudioError:
            preferences = Preferences()  # the Settings tab shows the error when it loads
        return cls(studio=studio, language=language, t=translator(language), preferences=preferences)


def user_of(request: Any) -> str:
    """The user the security middleware authenticated for this browser ('' when auth is off)."""
    inner = getattr(request, "request", None)
    state = getattr(inner, "state", None)
    return str(getattr(state, "user", "") or "")


def error_text(exc: BaseException) -> str:
    """A readable one-line message for a refused input (never a stack trace on the page)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"{where}: {first.get('msg', 'invalid value')}" if where else str(first.get("msg", exc))
    if isinstance(exc, LorastudioError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
