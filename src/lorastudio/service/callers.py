"""Who sent a request, as the security layer recorded it on the request's state.

`api/security.py` writes `state.user` (absent for an anonymous caller or an unnamed token) and
`state.auth` (whether credentials are required at all); the API and the web UI read them here,
so both fronts apply one rule for whose jobs a caller may stop.
"""

from __future__ import annotations

from typing import Any

__all__ = ["caller_name", "owner_to_check"]


def caller_name(state: Any) -> str:
    """The authenticated user ("" when auth is off, or for an unnamed token)."""
    return str(getattr(state, "user", "") or "")


def owner_to_check(state: Any) -> str | None:
    """Whose jobs the caller may cancel, resume, interrupt or follow: its own ("" for an unnamed
    token), or None when auth is off (whoever runs the studio owns every job). A state the
    security layer did not mark counts as auth on."""
    if getattr(state, "auth", True) is False:
        return None
    return caller_name(state)
