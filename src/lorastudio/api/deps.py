"""FastAPI dependencies the routers share.

Its own module so that the routers and `api.app` (which includes them) do not import each
other: `app` -> routers -> `deps`, never back.
"""

from __future__ import annotations

from fastapi import Request

from lorastudio.service import callers
from lorastudio.service.studio import Studio

__all__ = ["get_studio", "request_user", "owner_to_check"]


def get_studio(request: Request) -> Studio:
    """The studio this app serves (set by `create_app`)."""
    return request.app.state.studio


def request_user(request: Request) -> str:
    """The user the security layer authenticated for this request ("" when auth is off)."""
    return callers.caller_name(request.state)


def owner_to_check(request: Request) -> str | None:
    """Whose jobs this caller may cancel or resume (`service.callers.owner_to_check`)."""
    return callers.owner_to_check(request.state)
