"""Authentication and request-size limits, enforced once for every route.

One ASGI middleware in front of the whole app, so no route (API, docs, OpenAPI schema,
A1111's forgotten `/sdapi/v1/loras`, the UI) can be reached without credentials when
they are configured. HTTP Basic (`--auth user:pass`, what webuiapi and browsers send)
and a bearer token (`--token`) are both accepted; a 401 asks for Basic.

Bodies are counted as they arrive: a request that announces or sends more than the
limit gets 413 before the route sees it. File uploads have their own, larger limit.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hmac
import json
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "Credentials",
    "SecurityMiddleware",
    "parse_auth",
    "parse_tokens",
    "read_tokens_file",
    "error_body",
    "UPLOAD_PATHS",
    "spool_uploads_in_workspace",
]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Routes that take files (multipart); everything else is capped at the JSON limit.
UPLOAD_PATHS = (
    "/api/v1/uploads",
    "/api/v1/models",
    "/api/v1/loras",
    "/api/v1/embeddings",
    "/api/v1/datasets",
)
# The web UI's file uploads (images, data sets) go through Gradio's upload route.
UI_PREFIX = "/ui/"
UI_UPLOAD_SUFFIX = "/gradio_api/upload"
# Weight files (checkpoints are gigabytes) have their own, larger limit.
WEIGHTS_UPLOAD_PATHS = ("/api/v1/models", "/api/v1/loras", "/api/v1/embeddings")

# Where multipart bodies of this request are spooled (the workspace, never the system /tmp).
SPOOL_DIR: contextvars.ContextVar[Any] = contextvars.ContextVar("lorastudio_spool_dir", default=None)


def _spooled_file(*args: Any, **kwargs: Any) -> tempfile.SpooledTemporaryFile:
    """Starlette's multipart spool file, but in the request's workspace folder when one is set."""
    folder = SPOOL_DIR.get()
    if folder is not None and "dir" not in kwargs:
        kwargs["dir"] = str(folder)
    return tempfile.SpooledTemporaryFile(*args, **kwargs)


def spool_uploads_in_workspace() -> None:
    """Make Starlette's form parser spool file parts where `SPOOL_DIR` says (idempotent)."""
    from starlette import formparsers

    formparsers.SpooledTemporaryFile = _spooled_file  # type: ignore[assignment]


def parse_auth(auth: str | None) -> list[tuple[str, str]]:
    """`user:pass` or several, comma-separated (A1111's `--api-auth` format)."""
    pairs = []
    for item in (auth or "").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise LorastudioError(
                f"--auth {user or item!r}: use user:password (several separated by commas)."
            )
        pairs.append((user, password))
    return pairs


def parse_tokens(values: Iterable[str] | str | None, where: str = "--token") -> list[tuple[str, str]]:
    """Bearer tokens as (user, secret): `name:secret` is user `name`; a bare secret is the user ''."""
    if isinstance(values, str):
        values = [values]
    tokens = []
    for value in values or ():
        value = value.strip()
        if not value:
            continue
        name, sep, secret = value.partition(":")
        if not sep:
            name, secret = "", value
        if not secret or (sep and not name):
            raise LorastudioError(
                f"{where} {name or value[:4] + '...'!r}: use name:secret (or a bare secret)."
            )
        tokens.append((name, secret))
    names = [name for name, _ in tokens]
    duplicated = sorted({name for name in names if names.count(name) > 1 and name})
    if duplicated:
        raise LorastudioError(f"{where}: user {duplicated[0]!r} is given twice; give each name one secret.")
    return tokens


def read_tokens_file(path: str | Path) -> list[tuple[str, str]]:
    """`--tokens-file`: one `name:secret` per line; blank lines and `#` comments are skipped."""
    from pathlib import Path

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise LorastudioError(f"--tokens-file {path}: cannot read it ({exc.strerror}).") from None
    values = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    for number, value in enumerate(values, 1):
        if ":" not in value:
            raise LorastudioError(f"--tokens-file {path}: entry {number} is not name:secret.")
    return parse_tokens(values, f"--tokens-file {path}")


def error_body(error: str, detail: str, body: Any = None, errors: Any = None) -> dict[str, Any]:
    """The error shape A1111 answers with (clients print `detail`)."""
    return {
        "error": error,
        "detail": detail,
        "body": body,
        "errors": errors if errors is not None else detail,
    }


class _BodyTooLarge(HTTPException):
    """Raised while the route reads the body; an HTTPException so FastAPI's parsers pass it on."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit} bytes; send a smaller file.")


class Credentials:
    """Who may call: HTTP Basic users, bearer tokens and the login page's session cookie.

    One object for the middleware (every request) and the login route (the form), so a
    password is checked the same way wherever it arrives.
    """

    def __init__(
        self,
        users: Iterable[tuple[str, str]] = (),
        tokens: Iterable[tuple[str, str]] = (),
        session_key: bytes | None = None,
    ) -> None:
        self.users = [(u.encode(), p.encode()) for u, p in users]
        self.tokens = [(name, secret.encode()) for name, secret in tokens]
        self.session_key = session_key

    @property
    def enabled(self) -> bool:
        return bool(self.users or self.tokens)

    def _token_user(self, value: bytes) -> str | None:
        found = None
        for name, secret in self.tokens:
            if hmac.compare_digest(value, secret) and found is None:
                found = name
        return found

    def _password_user(self, user: bytes, password: bytes) -> str | None:
        ok = False
        for known_user, known_password in self.users:
            ok |= hmac.compare_digest(user, known_user) & hmac.compare_digest(password, known_password)
        return user.decode("utf-8", "replace") if ok else None

    def check_login(self, user: str, password: str) -> str | None:
        """The login form: a user's password, or (user name empty) a bearer token as password."""
        if not self.enabled:
            return ""
        if user:
            return self._password_user(user.encode(), password.encode()) if self.users else None
        return self._token_user(password.strip().encode()) if self.tokens else None

    def identify(self, headers: dict[bytes, bytes]) -> str | None:
        """The caller's user name ('' = anonymous or an unnamed token), or None when refused.

        Every known secret is compared, in constant time, so timing reveals neither which
        user nor which token exists.
        """
        if not self.enabled:
            return ""
        header = headers.get(b"authorization", b"")
        if not header:
            return self._session_user(headers.get(b"cookie", b""))
        scheme, _, value = header.partition(b" ")
        scheme = scheme.lower()
        if scheme == b"bearer" and self.tokens:
            return self._token_user(value.strip())
        if scheme == b"basic" and self.users:
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
            user, sep, password = decoded.partition(b":")
            if not sep:
                return None
            return self._password_user(user, password)
        return None

    def _session_user(self, cookie_header: bytes) -> str | None:
        if self.session_key is None or not cookie_header:
            return None
        from http.cookies import CookieError, SimpleCookie

        from lorastudio.api.sessions import COOKIE_NAME, verify_session

        try:
            cookies = SimpleCookie(cookie_header.decode("latin-1"))
        except CookieError:
            return None
        morsel = cookies.get(COOKIE_NAME)
        return verify_session(self.session_key, morsel.value) if morsel is not None else None


# Reachable without credentials: the login page itself.
PUBLIC_PATHS = ("/login", "/logout")


def _route_path(scope: Scope) -> str:
    """The path below the proxy's prefix (`--root-path`), whether or not the server kept it in `path`."""
    path, root = scope.get("path", "") or "/", scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def _wants_html(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    """A browser navigating to a page (not a script calling the API): send it to the login page."""
    return scope.get("method") == "GET" and b"text/html" in headers.get(b"accept", b"")


class SecurityMiddleware:
    """Checks credentials, then caps the request body, for HTTP and WebSocket scopes."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        users: Iterable[tuple[str, str]] = (),
        token: str | None = None,
        tokens: Iterable[tuple[str, str]] = (),
        credentials: Credentials | None = None,
        max_json_bytes: int = 64 * 1024**2,
        max_upload_bytes: int = 16 * 1024**3,
        max_weights_upload_bytes: int | None = None,
        spool_dir: Any = None,
    ) -> None:
        self.app = app
        all_tokens = [*tokens, *(parse_tokens(token) if token else [])]
        self.credentials = credentials or Credentials(users, all_tokens)
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_weights_upload_bytes = max_weights_upload_bytes or max_upload_bytes
        self.spool_dir = spool_dir

    @property
    def enabled(self) -> bool:
        return self.credentials.enabled

    def identify(self, headers: dict[bytes, bytes]) -> str | None:
        return self.credentials.identify(headers)

    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        return self.identify(headers) is not None

    def limit_for(self, path: str) -> int:
        if path.startswith(UI_PREFIX) and path.endswith(UI_UPLOAD_SUFFIX):
            return self.max_upload_bytes
        if path.startswith(WEIGHTS_UPLOAD_PATHS):
            return self.max_weights_upload_bytes
        return self.max_upload_bytes if path.startswith(UPLOAD_PATHS) else self.max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw_headers = scope.get("headers") or []
        headers = dict(raw_headers)
        if sum(1 for key, _ in raw_headers if key.lower() == b"authorization") > 1:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _send_json(
                send, 400, error_body("BadRequest", "two Authorization headers; send exactly one.")
            )
            return
        path = _route_path(scope)
        user = "" if path in PUBLIC_PATHS else self.identify(headers)
        if user is None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            if _wants_html(scope, headers) and self.credentials.session_key is not None:
                await _redirect_to_login(send, scope)
                return
            await _send_json(
                send,
                401,
                error_body("Unauthorized", "missing or wrong credentials; use HTTP Basic or a bearer token."),
                [(b"www-authenticate", b'Basic realm="lorastudio"')],
            )
            return
        state = scope.setdefault("state", {})
        state["auth"] = self.enabled  # off: one person runs the studio, no job has another owner
        if user:
            state["user"] = user
        if self.spool_dir is not None:
            SPOOL_DIR.set(self.spool_dir)
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(path)
        try:
            announced = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            announced = 0
        if announced > limit:
            await _send_json(send, 413, _too_large(limit))
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_json(send, 413, _too_large(limit))


def _too_large(limit: int) -> dict[str, Any]:
    return error_body(
        "PayloadTooLarge", f"request body over the limit of {limit} bytes; send a smaller file."
    )


async def _redirect_to_login(send: Send, scope: Scope) -> None:
    """303 to the login page, which sends the browser back to the page it asked for."""
    from urllib.parse import quote

    root = scope.get("root_path", "")
    target = root + _route_path(scope)
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    location = f"{root}/login?next={quote(target, safe='')}".encode()
    await send({"type": "http.response.start", "status": 303, "headers": [(b"location", location), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def _send_json(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] = ()
) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
