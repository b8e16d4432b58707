"""The REST API: native job routes (`/api/v1`) and the AUTOMATIC1111-compatible subset (`/sdapi/v1`).

`create_app(studio, auth=None, token=None)` builds the FastAPI app; `lorastudio serve`
runs it with an in-process worker. Imported lazily so `lorastudio --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> FastAPI:
    from lorastudio.api.app import create_app as _create_app

    return _create_app(*args, **kwargs)
