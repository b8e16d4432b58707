"""The FastAPI application: native routes, the A1111 subset, one error shape, one security layer.

`create_app(studio)` only wires things together; the studio owns the queue and worker,
so tests and `lorastudio serve` decide when the worker runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lorastudio import __version__
from lorastudio.api.security import (
    Credentials,
    SecurityMiddleware,
    error_body,
    parse_auth,
    parse_tokens,
    read_tokens_file,
    spool_uploads_in_workspace,
)
from lorastudio.errors import LorastudioError, NotFoundError, NotYours
from lorastudio.service.quota import (
    DATABASE_DAMAGED_DETAIL,
    QuotaExceeded,
    StorageFull,
    is_database_damaged,
    is_storage_full,
)
from lorastudio.service.studio import InvalidRequest, Studio
from lorastudio.service.train_runs import foreign_key_hints

__all__ = ["bearer_tokens", "create_app", "run_server"]

logger = logging.getLogger("lorastudio.api")

# Routes whose body is a TrainConfig: an unknown key another tool spells so gets the CLI's hint.
TRAIN_BODY_ROUTES = {"/api/v1/jobs/train"}
_STATUS_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    503: "ServiceUnavailable",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    429: "TooManyRequests",
}


def create_app(
    studio: Studio,
    auth: str | None = None,
    token: str | None = None,
    tokens: list[tuple[str, str]] | None = None,
    ui: bool = False,
    root_path: str = "",
) -> FastAPI:
    """The API for `studio`; `auth` ("user:pass[,user2:pass2]") and/or tokens protect every route.

    `token` is one bearer secret (`name:secret` makes it user `name`); `tokens` are
    (user, secret) pairs, each client its own user for quota, options and job lists.
    `ui` mounts the web UI under `/ui` (Gradio, imported only then); with credentials set a
    browser logs in once on `/login` for the UI, the API and the docs. `root_path` is the
    prefix a reverse proxy serves the app under (`--root-path`), for the UI's own links.
    """
    from lorastudio.api import a1111, controlnet, datasets, easyphoto, faces, login, native
    from lorastudio.api.sessions import load_or_create_key

    app = FastAPI(
        title="lorastudio",
        version=__version__,
        description="Native job API (`/api/v1`) and the AUTOMATIC1111-compatible subset (`/sdapi/v1`).",
    )
    app.state.studio = studio
    credentials = Credentials(parse_auth(auth), [*parse_tokens(token), *(tokens or [])])
    if credentials.enabled:
        credentials.session_key = load_or_create_key(studio.workspace.cache / "session.key")
        app.include_router(login.router)
    app.state.credentials = credentials
    app.include_router(native.router)
    app.include_router(datasets.router)
    app.include_router(a1111.router)
    app.include_router(controlnet.router)
    app.include_router(faces.router)
    app.include_router(easyphoto.router)
    _add_error_handlers(app)
    if ui:
        from lorastudio.ui.app import mount_ui

        mount_ui(app, studio, root_path)
    spool_uploads_in_workspace()
    spool_dir = studio.workspace.cache / "spool"
    spool_dir.mkdir(parents=True, exist_ok=True)
    app.add_middleware(
        SecurityMiddleware,
        credentials=credentials,
        max_json_bytes=studio.settings.max_json_bytes,
        max_upload_bytes=studio.settings.max_upload_bytes,
        max_weights_upload_bytes=studio.settings.max_weights_upload_bytes,
        spool_dir=spool_dir,
    )
    return app


def _json_safe(value: Any) -> Any:
    """Error details as strict JSON: NaN/Infinity become strings, objects their repr, long inputs cut."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "..."
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 2**53 else str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in list(value)[:50]]
    return _json_safe(repr(value))


def _validation_response(errors: list[dict[str, Any]], prefix: str = "") -> JSONResponse:
    """422 naming the first bad field (`loc` without the `body` part), errors as strict JSON."""
    errors = [
        {k: _json_safe(v) for k, v in error.items() if k in ("type", "loc", "msg", "input", "ctx")}
        for error in errors
    ]
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    where = f"{prefix}.{where}" if prefix and where else (where or prefix)
    detail = (
        f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
    )
    return JSONResponse(error_body("ValidationError", detail, errors=errors), status_code=422)


def _storage_full(exc: Exception) -> JSONResponse:
    retry = str(getattr(exc, "retry_after_s", StorageFull.retry_after_s))
    detail = (
        str(exc)
        if isinstance(exc, StorageFull)
        else "the server's disk or job database is full; try again later."
    )
    return JSONResponse(
        error_body("ServiceUnavailable", detail), status_code=503, headers={"Retry-After": retry}
    )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QuotaExceeded)
    async def over_quota(request: Request, exc: QuotaExceeded) -> JSONResponse:
        """A user at their job quota: 429 with `Retry-After`, from any route (Starlette picks this by MRO)."""
        return JSONResponse(
            error_body("TooManyRequests", str(exc)),
            status_code=429,
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    @app.exception_handler(LorastudioError)
    async def user_error(request: Request, exc: LorastudioError) -> JSONResponse:
        if isinstance(exc, StorageFull):
            return _storage_full(exc)
        status = 404 if isinstance(exc, NotFoundError) else 422 if isinstance(exc, InvalidRequest) else 400
        status = 403 if isinstance(exc, NotYours) else status
        return JSONResponse(error_body(type(exc).__name__, str(exc)), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if getattr(request.scope.get("route"), "path", None) in TRAIN_BODY_ROUTES:
            errors = foreign_key_hints(errors)  # kohya's network_dim: "is lora.rank here", as the CLI says
        return _validation_response(errors)

    @app.exception_handler(ValidationError)
    async def model_validation_error(request: Request, exc: ValidationError) -> JSONResponse:
        """A config built inside a route (A1111 fields mapped to GenerateConfig) failed its limits."""
        return _validation_response(exc.errors(include_url=False))

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
        if is_storage_full(exc):
            logger.error("%s %s: storage full: %s", request.method, request.url.path, exc)
            return _storage_full(exc)
        if is_database_damaged(exc):
            logger.error("%s %s: the job database is damaged: %s", request.method, request.url.path, exc)
            return JSONResponse(error_body("ServiceUnavailable", DATABASE_DAMAGED_DETAIL), status_code=503)
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(error_body(type(exc).__name__, str(exc)), status_code=500)


def bearer_tokens(token_values: list[str] | None, tokens_file: str | None = None) -> list[tuple[str, str]]:
    """The (name, secret) pairs of `serve --token` values and a `--tokens-file`, read before the studio opens."""
    return parse_tokens(token_values or []) + (read_tokens_file(tokens_file) if tokens_file else [])


def run_server(
    studio: Studio,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: str | None = None,
    token: str | None = None,
    log_level: str = "info",
    tokens: list[tuple[str, str]] | None = None,
    ui: bool = True,
    root_path: str = "",
    announce: Callable[[], None] | None = None,
) -> None:
    """Serve the API with the studio's in-process worker until Ctrl-C / SIGTERM (`announce`: called
    once the app is built, its settings checked).

    On a graceful stop a running job goes back to the queue; after a crash the next
    start requeues it (same worker id), and a training job resumes from its checkpoint.
    """
    import uvicorn

    app = create_app(studio, auth=auth, token=token, tokens=tokens, ui=ui, root_path=root_path)
    if announce is not None:
        announce()
    if host not in ("127.0.0.1", "localhost", "::1") and not (auth or token or tokens):
        logger.warning("serving on %s without --auth or --token: anyone on the network can use it", host)
    studio.start()
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level=log_level,
            timeout_graceful_shutdown=5,
            root_path=root_path,
        )
    finally:
        studio.close()
