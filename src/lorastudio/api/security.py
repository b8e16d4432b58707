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
import hmac
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import HTTPException

from lorastudio.errors import LorastudioError

__all__ = ["SecurityMiddleware", "parse_auth", "error_body", "UPLOAD_PATHS"]

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


class SecurityMiddleware:
    """Checks credentials, then caps the request body, for HTTP and WebSocket scopes."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        users: Iterable[tuple[str, str]] = (),
        token: str | None = None,
        max_json_bytes: int = 64 * 1024**2,
        max_upload_bytes: int = 16 * 1024**3,
    ) -> None:
        self.app = app
        self.users = [(u.encode(), p.encode()) for u, p in users]
        self.token = token.encode() if token else None
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes

    @property
    def enabled(self) -> bool:
        return bool(self.users or self.token)

    def authorized(self, headers: dict[bytes, bytes]) -> bool:
        if not self.enabled:
            return True
        header = headers.get(b"authorization", b"")
        scheme, _, value = header.partition(b" ")
        scheme = scheme.lower()
        if scheme == b"bearer" and self.token is not None:
            return hmac.compare_digest(value.strip(), self.token)
        if scheme == b"basic" and self.users:
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, password = decoded.partition(b":")
            if not sep:
                return False
            # Compare against every pair so timing does not reveal which user exists.
            ok = False
            for known_user, known_password in self.users:
                ok |= hmac.compare_digest(user, known_user) & hmac.compare_digest(password, known_password)
            return ok
        return False

    def user_of(self, headers: dict[bytes, bytes]) -> str:
        """The Basic-auth user name (for per-user fair share in the queue), or ''."""
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        if not self.users or scheme.lower() != b"basic":
            return ""
        try:
            return base64.b64decode(value.strip()).partition(b":")[0].decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return ""

    def limit_for(self, path: str) -> int:
        return self.max_upload_bytes if path.startswith(UPLOAD_PATHS) else self.max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if not self.authorized(headers):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _send_json(
                send,
                401,
                error_body("Unauthorized", "missing or wrong credentials; use HTTP Basic or a bearer token."),
                [(b"www-authenticate", b'Basic realm="lorastudio"')],
            )
            return
        user = self.user_of(headers)
        if user:
            scope.setdefault("state", {})["user"] = user
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
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


async def _send_json(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] = ()
) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


# --- type checks for what clients send ---------------------------------------------------

IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF"}
# Largest image a request may carry (width x height), against decompression bombs.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
_MAGIC = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".webp": (b"RIFF",),
    ".zip": (b"PK\x03\x04", b"PK\x05\x06"),
}
UPLOAD_SUFFIXES = (*_MAGIC, ".safetensors")


def decode_image(data: str, what: str = "image"):
    """A base64 image, with or without a `data:image/...;base64,` prefix -> (PIL image, format).

    Only real images of the usual formats pass; the pixel count is capped.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    text = (data or "").strip()
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise LorastudioError(f"{what}: a data URL must be base64 (data:image/png;base64,...).")
    try:
        raw = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise LorastudioError(f"{what}: not valid base64; send a PNG or JPEG as base64.") from None
    if not raw:
        raise LorastudioError(f"{what}: empty; send a PNG or JPEG as base64.")
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise LorastudioError(
                f"{what}: {image.width}x{image.height} is too large; send at most 64 megapixels."
            )
        fmt = image.format
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise LorastudioError(f"{what}: not a readable image ({exc}); send a PNG, JPEG or WebP.") from None
    if fmt not in IMAGE_FORMATS:
        raise LorastudioError(f"{what}: format {fmt} is not accepted; send a PNG, JPEG or WebP.")
    return image, fmt


def safetensors_header(path) -> dict[str, Any]:
    """The JSON header of a .safetensors file (tensor shapes + `__metadata__`), without loading tensors."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise LorastudioError(f"{path.name}: not a safetensors file (too short).")
        size = int.from_bytes(head, "little")
        if size <= 1 or size > 100 * 1024**2:
            raise LorastudioError(f"{path.name}: not a safetensors file (bad header size).")
        try:
            header = json.loads(f.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LorastudioError(f"{path.name}: not a safetensors file (header is not JSON).") from None
    if not isinstance(header, dict):
        raise LorastudioError(f"{path.name}: not a safetensors file (header is not a mapping).")
    return header


def check_upload(path, filename: str, allowed: Iterable[str] = UPLOAD_SUFFIXES) -> None:
    """The upload's suffix is one we accept and its first bytes match it (no pickles, no scripts)."""
    from pathlib import Path

    suffix = Path(filename or "").suffix.lower()
    allowed = tuple(allowed)
    if suffix not in allowed:
        raise LorastudioError(
            f"upload {filename!r}: type {suffix or '(none)'} is not accepted; send one of {', '.join(allowed)}."
        )
    if suffix == ".safetensors":
        safetensors_header(Path(path))
        return
    with open(path, "rb") as f:
        head = f.read(16)
    if not any(head.startswith(magic) for magic in _MAGIC[suffix]):
        raise LorastudioError(f"upload {filename!r}: its content is not a {suffix[1:]} file.")
