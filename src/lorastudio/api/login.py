"""The login page: one form that opens the web UI, the API and /docs for a browser.

Only mounted when `--auth` or `--token` is set. The page is plain HTML with no external
fonts or scripts (the studio works offline); it posts back to itself and, when the
password is right, sets the signed session cookie and returns to the page asked for.
"""

from __future__ import annotations

import html
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from lorastudio.api.sessions import COOKIE_NAME, SESSION_SECONDS, sign_session

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_TEXT = {
    "en": {
        "title": "Log in to lorastudio",
        "user": "User",
        "password": "Password (or token)",
        "submit": "Log in",
        "wrong": "Wrong user or password.",
    },
    "zh": {
        "title": "登录 lorastudio",
        "user": "用户名",
        "password": "密码（或令牌）",
        "submit": "登录",
        "wrong": "用户名或密码错误。",
    },
}

_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f4f5; display: flex; justify-content: center; }}
form {{ background: white; margin-top: 12vh; padding: 2em; border-radius: 8px; width: 20em;
  box-shadow: 0 1px 4px #0002; display: flex; flex-direction: column; gap: .6em; }}
input {{ padding: .5em; font-size: 1em; }} button {{ padding: .6em; font-size: 1em; }}
.error {{ color: #b91c1c; }}
</style></head><body>
<form method="post" action="{action}">
<h2>{title}</h2>
{error}
<label for="user">{user}</label><input id="user" name="user" autocomplete="username" autofocus>
<label for="password">{password}</label>
<input id="password" name="password" type="password" autocomplete="current-password">
<input type="hidden" name="next" value="{next}">
<button type="submit">{submit}</button>
</form></body></html>"""


def _safe_next(target: str, root: str) -> str:
    """Only a path on this server (no scheme or host): the form cannot send a user elsewhere."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return f"{root}/"
    return target


def _language(request: Request) -> str:
    from lorastudio.service.preferences import load_preferences

    try:
        return load_preferences(request.app.state.studio.workspace).language
    except Exception:  # a damaged preferences file must not lock anyone out
        return "en"


def _page(request: Request, next_path: str, error: bool) -> HTMLResponse:
    lang = _language(request)
    text = _TEXT[lang]
    root = request.scope.get("root_path", "")
    body = _PAGE.format(
        lang=lang,
        action=html.escape(f"{root}/login"),
        next=html.escape(next_path),
        error=f'<p class="error" role="alert">{text["wrong"]}</p>' if error else "",
        **{k: html.escape(v) for k, v in text.items() if k != "wrong"},
    )
    return HTMLResponse(body, status_code=401 if error else 200)


@router.get("/login")
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _page(request, _safe_next(next, request.scope.get("root_path", "")), error=False)


@router.post("/login", response_model=None)
def login(
    request: Request, user: str = Form(""), password: str = Form(""), next: str = Form("/")
) -> Response:
    root = request.scope.get("root_path", "")
    target = _safe_next(next, root)
    credentials = request.app.state.credentials
    who = credentials.check_login(user.strip(), password)
    if who is None:
        return _page(request, target, error=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        sign_session(credentials.session_key, who),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        path=f"{root}/" if root else "/",
    )
    return response


@router.get("/logout")
def logout(request: Request) -> RedirectResponse:
    root = request.scope.get("root_path", "")
    response = RedirectResponse(f"{root}/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path=f"{root}/" if root else "/")
    return response
