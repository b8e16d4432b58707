"""Browser sessions: the login page's signed cookie, so one login opens the UI, the API and /docs.

API clients keep sending HTTP Basic or a bearer token; a browser logs in once on `/login` and
then carries `lorastudio_session`, an HMAC-signed "user|expiry" (HttpOnly, SameSite=Lax, so
another site cannot make the browser use it for a POST). The key lives in the workspace
(`cache/session.key`, mode 0600): a restart keeps people logged in, deleting it logs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

__all__ = ["COOKIE_NAME", "SESSION_SECONDS", "load_or_create_key", "sign_session", "verify_session"]

COOKIE_NAME = "lorastudio_session"
SESSION_SECONDS = 7 * 24 * 3600


def load_or_create_key(path: Path) -> bytes:
    """The workspace's session key, made (32 random bytes, owner-only) the first time."""
    if path.is_file():
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def _signature(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def sign_session(key: bytes, user: str, now: float | None = None) -> str:
    """The cookie value for `user`, valid for SESSION_SECONDS."""
    expires = int((now if now is not None else time.time()) + SESSION_SECONDS)
    payload = f"{user}|{expires}".encode()
    token = payload + b"|" + _signature(key, payload)
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


def verify_session(key: bytes, value: str, now: float | None = None) -> str | None:
    """The user a cookie value was signed for, or None when it is forged, damaged or expired."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, TypeError):
        return None
    # "user|expiry" + "|" + a 32-byte digest (which may itself contain "|")
    if len(raw) < 34 or raw[-33:-32] != b"|":
        return None
    payload, signature = raw[:-33], raw[-32:]
    if not hmac.compare_digest(signature, _signature(key, payload)):
        return None
    user, _, expires = payload.decode("utf-8", "replace").rpartition("|")
    try:
        if int(expires) < (now if now is not None else time.time()):
            return None
    except ValueError:
        return None
    return user
