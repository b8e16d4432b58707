"""The FastAPI application: native routes, the A1111 subset, one error shape, one security layer.

`create_app(studio)` only wires things together; the studio owns the queue and worker,
so tests and `lorastudio serve` decide when the worker runs.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lorastudio import __version__
from lorastudio.api.security import SecurityMiddleware, error_body, parse_auth
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.studio import Studio

__all__ = ["create_app", "get_studio"]

logger = logging.getLogger("lorastudio.api")

_STATUS_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    429: "TooManyRequests",
}


def get_studio(request: Request) -> Studio:
    """FastAPI dependency: the studio this app serves."""
    return request.app.state.studio


def create_app(studio: Studio, auth: str | None = None, token: str | None = None) -> FastAPI:
    """The API for `studio`; `auth` ("user:pass[,user2:pass2]") and/or `token` protect every route."""
    from lorastudio.api import a1111, native

    app = FastAPI(
        title="lorastudio",
        version=__version__,
        description="Native job API (`/api/v1`) and the AUTOMATIC1111-compatible subset (`/sdapi/v1`).",
    )
    app.state.studio = studio
    app.include_router(native.router)
    app.include_router(a1111.router)
    _add_error_handlers(app)
    app.add_middleware(
        SecurityMiddleware,
        users=parse_auth(auth),
        token=token,
        max_json_bytes=studio.settings.max_json_bytes,
        max_upload_bytes=studio.settings.max_upload_bytes,
    )
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LorastudioError)
    async def user_error(request: Request, exc: LorastudioError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 400
        return JSONResponse(error_body(type(exc).__name__, str(exc)), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors())
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        detail = (
            f"{where}: {first.get('msg', 'invalid request')}"
            if where
            else first.get("msg", "invalid request")
        )
        return JSONResponse(error_body("ValidationError", detail, errors=errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _STATUS_NAMES.get(exc.status_code, "HTTPError")
        return JSONResponse(
            error_body(name, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(error_body(type(exc).__name__, str(exc)), status_code=500)


def run_server(
    studio: Studio,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: str | None = None,
    token: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve the API with the studio's in-process worker until Ctrl-C / SIGTERM.

    On a graceful stop a running job goes back to the queue; after a crash the next
    start requeues it (same worker id), and a training job resumes from its checkpoint.
    """
    import uvicorn

    app = create_app(studio, auth=auth, token=token)
    if host not in ("127.0.0.1", "localhost", "::1") and not (auth or token):
        logger.warning("serving on %s without --auth or --token: anyone on the network can use it", host)
    studio.start()
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    finally:
        studio.close()
