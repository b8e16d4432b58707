"""FastAPI dependencies the routers share.

Its own module so that the routers and `api.app` (which includes them) do not import each
other: `app` -> routers -> `deps`, never back.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from lorastudio.service import callers
from lorastudio.service.jobs import Job
from lorastudio.service.studio import Studio

__all__ = ["get_studio", "job_json", "request_user", "owner_to_check"]


def get_studio(request: Request) -> Studio:
    """The studio this app serves (set by `create_app`)."""
    return request.app.state.studio


def request_user(request: Request) -> str:
    """The user the security layer authenticated for this request ("" when auth is off)."""
    return callers.caller_name(request.state)


def owner_to_check(request: Request) -> str | None:
    """Whose jobs this caller may cancel or resume (`service.callers.owner_to_check`)."""
    return callers.owner_to_check(request.state)


def job_json(studio: Studio, job: Job) -> dict[str, Any]:
    """A job as the native routes answer it: its record, queue position and events URL."""
    data = job.to_dict()
    data["queue_position"] = studio.queue_position(job)
    data["events_url"] = f"/api/v1/jobs/{job.id}/events"
    return data
