"""Auth on every route (docs and /sdapi/v1/loras included), in middleware; credentials parsing."""

from __future__ import annotations

import base64
import re

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from lorastudio.api.app import create_app
from lorastudio.api.security import PUBLIC_PATHS, parse_auth
from lorastudio.errors import LorastudioError
from lorastudio.service.studio import Studio, StudioSettings


@pytest.fixture
def studio(workspace):
    studio = Studio(workspace, StudioSettings())
    yield studio
    studio.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def flat_routes(routes):
    """Routes of the app and of included routers (newer FastAPI keeps those nested)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from flat_routes(inner.routes)
        elif isinstance(route, Route):
            yield route


def every_route(app) -> list[tuple[str, str]]:
    calls = []
    for route in flat_routes(app.routes):
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                calls.append((method, path))
    return calls


def test_every_route_needs_credentials(studio):
    app = create_app(studio, auth="alice:s3cret", token="tok-123")
    client = TestClient(app)
    calls = every_route(app)
    paths = {p for _, p in calls}
    assert {
        "/docs",
        "/openapi.json",
        "/redoc",
        "/sdapi/v1/loras",
        "/sdapi/v1/txt2img",
        "/api/v1/jobs",
    } <= paths
    assert len(calls) > 50
    wrong = [
        {},
        basic("alice", "nope"),
        basic("mallory", "s3cret"),
        {"Authorization": "Bearer tok-12"},
        {"Authorization": "Basic !!!"},
        {"Authorization": "tok-123"},
    ]
    for method, path in calls:
        if path in PUBLIC_PATHS:  # the login page (tests/test_login.py)
            continue
        for headers in wrong:
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"].startswith("Basic")
            assert set(response.json()) == {"error", "detail", "body", "errors"}


@pytest.mark.parametrize(
    "path", ["/docs", "/openapi.json", "/sdapi/v1/loras", "/api/v1/jobs", "/sdapi/v1/progress"]
)
def test_basic_or_bearer_lets_requests_through(studio, path):
    client = TestClient(create_app(studio, auth="alice:s3cret,bob:pw2", token="tok-123"))
    for headers in (basic("alice", "s3cret"), basic("bob", "pw2"), {"Authorization": "Bearer tok-123"}):
        assert client.get(path, headers=headers).status_code == 200, headers


def test_token_only_and_auth_only(studio):
    token_only = TestClient(create_app(studio, token="t"))
    assert token_only.get("/api/v1/jobs", headers={"Authorization": "Bearer t"}).status_code == 200
    assert token_only.get("/api/v1/jobs", headers=basic("t", "t")).status_code == 401
    auth_only = TestClient(create_app(studio, auth="u:p"))
    assert auth_only.get("/api/v1/jobs", headers={"Authorization": "Bearer p"}).status_code == 401
    assert auth_only.get("/api/v1/jobs", headers=basic("u", "p")).status_code == 200
    open_app = TestClient(create_app(studio))
    assert open_app.get("/sdapi/v1/loras").status_code == 200


def test_basic_user_becomes_the_job_user(studio):
    client = TestClient(create_app(studio, auth="alice:s3cret"))
    response = client.post(
        "/api/v1/jobs/generate", json={"prompt": "x", "steps": 1}, headers=basic("alice", "s3cret")
    )
    assert response.status_code == 200 and response.json()["user"] == "alice"


def test_parse_auth():
    assert parse_auth("a:b, c:d:e") == [("a", "b"), ("c", "d:e")]
    assert parse_auth(None) == []
    for bad in ("nouser", ":pw", "user:"):
        with pytest.raises(LorastudioError):
            parse_auth(bad)
