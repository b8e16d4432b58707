"""Shared fixtures: no network, a fresh workspace per test, tiny models built once."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# The web UI's browser fixtures (`served`, `browser`) live in tests/browser.py; the job queue's
# (`pg_server`: one PostgreSQL server for the session, `queue_url`) in tests/pg.py.
pytest_plugins = ("browser", "pg")

_LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", "0.0.0.0", ""}


def _host_of(address) -> str | None:
    if isinstance(address, tuple) and address:
        return str(address[0])
    return None  # unix sockets are local


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Any connection to a non-loopback address fails the test run loudly."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guard(address):
        host = _host_of(address)
        if host is not None and host not in _LOCAL_HOSTS and not host.startswith("127."):
            raise RuntimeError(f"network access attempted during tests: {address!r}")

    def connect(self, address):
        guard(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        guard(address)
        return real_connect_ex(self, address)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    yield
    socket.socket.connect = real_connect
    socket.socket.connect_ex = real_connect_ex


def _tiny_cache_root() -> Path:
    return Path(os.environ.get("LORASTUDIO_TEST_CACHE", Path.home() / ".cache" / "lorastudio-tests"))


@pytest.fixture(scope="session")
def tiny_models_dir():
    """Tiny models built once (a few minutes, side by side) and reused by every test.

    Kept between runs in ~/.cache/lorastudio-tests (the build is seeded, so a cached copy
    equals a fresh one); LORASTUDIO_TEST_CACHE moves it. A file lock lets pytest runs started
    side by side (or parallel workers) build it once and never replace a folder another one reads.
    """
    from filelock import FileLock

    from lorastudio.models.tiny import TINY_MODELS, ensure_tiny_models

    root = _tiny_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".build.lock")):
        return ensure_tiny_models(TINY_MODELS, root)


@pytest.fixture(autouse=True, scope="session")
def tiny_builds_copy_the_cache():
    """A tiny model named in a workspace that lacks it is copied from the test cache, not rebuilt.

    Building one trains its UNet for a minute; the build is seeded, so the cached copy holds the
    same files. Only in-process builds are short-cut: a subprocess still builds for itself.
    """
    from lorastudio.models import tiny

    real_build = tiny.build_tiny_model

    def build_or_copy(name: str, folder, seed: int = 0) -> Path:
        folder = Path(folder)
        cached = _tiny_cache_root() / name
        if seed != 0 or not tiny._is_current(cached) or folder.resolve() == cached.resolve():
            return real_build(name, folder, seed)
        partial = folder.with_name(folder.name + ".copying")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(cached, partial)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
        return folder

    tiny.build_tiny_model = build_or_copy
    yield
    tiny.build_tiny_model = real_build


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace folder; LORASTUDIO_HOME points at it for CLI calls."""
    from lorastudio.service.workspace import Workspace

    root = tmp_path / "studio"
    monkeypatch.setenv("LORASTUDIO_HOME", str(root))
    return Workspace.open(root)


@pytest.fixture(scope="module")
def sd15(tiny_models_dir):
    """tiny-sd15 loaded once per test module (generation tests that need no workspace)."""
    from lorastudio.models.loading import load_model

    return load_model("tiny-sd15", tiny_models_dir, tiny_models_dir / ".cache")


@pytest.fixture(scope="module")
def sdxl(tiny_models_dir):
    """tiny-sdxl loaded once per test module."""
    from lorastudio.models.loading import load_model

    return load_model("tiny-sdxl", tiny_models_dir, tiny_models_dir / ".cache")


@pytest.fixture
def cli(workspace, monkeypatch):
    """`lorastudio ARGS...` in this process on the test's workspace (the local SQLite queue)."""
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    monkeypatch.delenv("LORASTUDIO_QUEUE_URL", raising=False)
    _register()
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture
def tiny_workspace(workspace, tiny_models_dir):
    """A workspace whose models/ already holds the tiny models (symlinked, not rebuilt)."""
    from lorastudio.models.tiny import TINY_MODELS

    for name in TINY_MODELS:
        (workspace.models / name).symlink_to(tiny_models_dir / name, target_is_directory=True)
    return workspace


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a busy 2-core box, torch's spinning threads make tiny models 20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def studio(tiny_workspace):
    """A started Studio (in-process worker) on the tiny workspace."""
    from lorastudio.service.studio import Studio, StudioSettings

    studio = Studio(tiny_workspace, StudioSettings())
    studio.start()
    yield studio
    studio.close()


@pytest.fixture
def client(studio):
    """FastAPI's in-process client for the studio's app."""
    from fastapi.testclient import TestClient

    from lorastudio.api.app import create_app

    with TestClient(create_app(studio)) as client:
        yield client
