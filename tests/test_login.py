"""The login page and its session cookie: one login for UI, API and docs; nothing else gets in."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lorastudio.api.app import create_app
from lorastudio.api.sessions import COOKIE_NAME, sign_session, verify_session


@pytest.fixture
def app(workspace):
    from lorastudio.service.studio import Studio, StudioSettings

    studio = Studio(workspace, StudioSettings())
    yield create_app(studio, auth="alice:s3cret", token="bot:tok-123")
    studio.close()


def test_a_browser_is_sent_to_the_login_page_and_a_script_gets_401(app):
    client = TestClient(app, follow_redirects=False)
    page = client.get("/api/v1/jobs", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fapi%2Fv1%2Fjobs"
    script = client.get("/api/v1/jobs")
    assert script.status_code == 401 and script.headers["www-authenticate"].startswith("Basic")
    assert client.get("/login").status_code == 200


def test_logging_in_sets_a_cookie_that_opens_the_api_and_docs(app):
    client = TestClient(app, follow_redirects=False)
    wrong = client.post("/login", data={"user": "alice", "password": "nope", "next": "/docs"})
    assert wrong.status_code == 401 and COOKIE_NAME not in wrong.cookies
    right = client.post("/login", data={"user": "alice", "password": "s3cret", "next": "/docs"})
    assert right.status_code == 303 and right.headers["location"] == "/docs"
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert client.get("/api/v1/jobs").status_code == 200
    assert client.get("/docs").status_code == 200
    client.get("/logout")
    assert client.get("/api/v1/jobs").status_code == 401


def test_a_bearer_token_logs_in_as_its_user(app):
    client = TestClient(app, follow_redirects=False)
    assert client.post("/login", data={"user": "", "password": "tok-123"}).status_code == 303
    assert verify_session(app.state.credentials.session_key, client.cookies[COOKIE_NAME]) == "bot"


def test_a_forged_expired_or_foreign_cookie_is_refused(app):
    key = app.state.credentials.session_key
    forged = sign_session(b"another key of thirty-two bytes!", "alice")
    expired = sign_session(key, "alice", now=0)
    tampered = sign_session(key, "alice")[:-2] + "AA"
    for value in (forged, expired, tampered, "garbage", ""):
        client = TestClient(app, cookies={COOKIE_NAME: value})
        assert client.get("/api/v1/jobs").status_code == 401, value
    assert TestClient(app, cookies={COOKIE_NAME: sign_session(key, "alice")}).get("/api/v1/jobs").status_code == 200


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)"])
def test_the_login_form_only_returns_to_pages_of_this_server(app, target):
    client = TestClient(app, follow_redirects=False)
    response = client.post("/login", data={"user": "alice", "password": "s3cret", "next": target})
    assert response.headers["location"] == "/"


def test_the_session_key_is_kept_in_the_workspace_and_private(app):
    path = app.state.studio.workspace.cache / "session.key"
    assert path.stat().st_mode & 0o077 == 0
    assert path.read_bytes() == app.state.credentials.session_key
