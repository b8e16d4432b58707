"""A served studio (API + web UI) and a headless Chromium for the UI's end-to-end tests.

Debian's `chromium` with the `playwright` package (never `playwright install`: it downloads a
browser). Without them the tests skip locally and fail under CI (`.ci/run` installs chromium).
Every page records the requests it makes to any other host: a test fails on one (offline).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
USER, PASSWORD = "admin", "secret"


def require_browser() -> None:
    """Skip (locally) or fail (CI) when Chromium or playwright is missing."""
    reason = None
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        reason = "Debian's chromium is not installed (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed (pip install -e '.[dev]')"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set, so this is an error, not a skip)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServedStudio:
    url: str
    studio: Any
    root_path: str = ""


@contextmanager
def served_studio(workspace_root: Path, models_dir: Path, root_path: str = "") -> Iterator[ServedStudio]:
    """`lorastudio serve --auth admin:secret` on a free port, in this process (the tiny models)."""
    import uvicorn

    from lorastudio.api.app import create_app
    from lorastudio.models.tiny import TINY_MODELS
    from lorastudio.service.studio import Studio, StudioSettings
    from lorastudio.service.workspace import Workspace

    workspace = Workspace.open(workspace_root)
    for name in TINY_MODELS:
        if not (workspace.models / name).exists():
            (workspace.models / name).symlink_to(models_dir / name, target_is_directory=True)
    studio = Studio(workspace, StudioSettings(model="tiny-sd15"))
    app = create_app(studio, auth=f"{USER}:{PASSWORD}", ui=True, root_path=root_path)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", root_path=root_path)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    studio.start()
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the UI server did not start")
        time.sleep(0.05)
    try:
        yield ServedStudio(f"http://127.0.0.1:{port}", studio, root_path)
    finally:
        server.should_exit = True
        thread.join(10)
        studio.close()


@dataclass
class Browser:
    """One Chromium; `page()` opens a page that logs what it asks of other hosts."""

    browser: Any
    base: str
    foreign: list[str] = field(default_factory=list)

    def page(self):
        context = self.browser.new_context(viewport={"width": 1400, "height": 1100})
        page = context.new_page()
        page.set_default_timeout(60_000)

        def record(request) -> None:
            if not request.url.startswith((self.base, "data:", "blob:", "about:")):
                self.foreign.append(request.url)

        page.on("request", record)
        return page


@contextmanager
def chromium(base: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield Browser(browser, base)
        finally:
            browser.close()


def log_in(page, base: str, user: str = USER, password: str = PASSWORD) -> None:
    """The login page, as a person fills it in."""
    page.goto(base + "/")
    page.fill("#user", user)
    page.fill("#password", password)
    page.click("button[type=submit]")


def fill_and_keep(page, elem_id: str, value: object) -> None:
    """Type `value` into the control `#elem_id` and leave it; typed again if the box had not settled
    (a control in a just-opened accordion can still be given its start value after it shows, on a
    loaded machine)."""
    box = page.locator(f"#{elem_id}").locator("textarea, input").first
    for _ in range(5):
        box.fill(str(value))
        box.press("Tab")
        page.wait_for_timeout(200)
        if box.input_value() == str(value):
            return
    raise AssertionError(f"#{elem_id} did not keep {value!r}")


@contextmanager
def stripping_proxy(target: str, prefix: str) -> Iterator[str]:
    """A reverse proxy that serves `target` under `prefix` (as nginx `location /prefix/ {proxy_pass
    http://target/;}` does: the prefix is removed before the request goes on). Streams answers (SSE)."""
    import http.server
    import socketserver

    import httpx

    client = httpx.Client(base_url=target, timeout=None)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            if not self.path.startswith(prefix):
                self.send_error(404)
                return
            path = self.path[len(prefix):] or "/"
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            headers["x-forwarded-host"] = self.headers.get("host", "")  # nginx: proxy_set_header
            headers["x-forwarded-proto"] = "http"
            with client.stream(self.command, path, headers=headers, content=body) as answer:
                self.send_response(answer.status_code)
                for key, value in answer.headers.multi_items():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for chunk in answer.iter_bytes():  # decoded: content-encoding is not passed on
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, *args) -> None:
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:
            # The browser closing a stream (an SSE page left) ends a forward half-way: not an error.
            if not isinstance(sys.exc_info()[1], (httpx.TransportError, ConnectionError)):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", _free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    finally:
        server.shutdown()
        client.close()


# --- fixtures for the UI test modules (conftest registers this module as a plugin) ---


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_models_dir):
    """One served studio (tiny models, `--auth`) for the module."""
    require_browser()
    with served_studio(tmp_path_factory.mktemp("ui") / "studio", tiny_models_dir) as studio:
        yield studio


@pytest.fixture(scope="module")
def browser(served):
    """One Chromium for the module."""
    with chromium(served.url) as browser:
        yield browser


@contextmanager
def logged_in_page(served: ServedStudio, browser: Browser, tab: str | None = None) -> Iterator[Any]:
    """A fresh page, logged in, on `tab`; on leaving, it must have asked nothing of another host."""
    page = browser.page()
    log_in(page, served.url)
    page.wait_for_selector("#generate-run")
    if tab:
        page.get_by_role("tab", name=tab, exact=True).click()
    try:
        yield page
    finally:
        page.context.close()
    assert browser.foreign == [], f"the page fetched from other hosts: {browser.foreign[:5]}"


def cancel_unfinished(studio: Any) -> None:
    """After a test: a job it left running (a failed assertion) must not be followed by the next test."""
    for job in studio.list_jobs(limit=50):
        if not job.finished:
            studio.cancel_job(job.id)

