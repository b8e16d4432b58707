"""Per-user quota: past `max_queued_per_user` unfinished jobs a submission answers 429 with Retry-After."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lorastudio.api.app import create_app
from lorastudio.errors import LorastudioError
from lorastudio.service.quota import QuotaExceeded
from lorastudio.service.studio import Studio, StudioSettings

ALICE = ("alice", "pw-a")
BOB = ("bob", "pw-b")
GENERATE = {"model": "tiny-sd15", "steps": 1, "width": 64, "height": 64}
TXT2IMG = {"prompt": "x", "steps": 1, "width": 64, "height": 64}


@pytest.fixture
def idle_studio(workspace):
    """No worker: submitted jobs stay queued, so the count only grows."""
    studio = Studio(workspace, StudioSettings(max_queued_per_user=2))
    yield studio
    studio.close()


@pytest.fixture
def client(idle_studio):
    auth = ",".join(":".join(pair) for pair in (ALICE, BOB))
    with TestClient(create_app(idle_studio, auth=auth)) as client:
        yield client


def _assert_429(response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    body = response.json()
    assert body["error"] in ("TooManyRequests", "HTTPError")  # app.py's name for 429, if it has one
    assert "limit is 2" in body["detail"]


def test_native_generate_past_the_quota_answers_429_per_user(client, idle_studio):
    for _ in range(2):
        assert client.post("/api/v1/jobs/generate", json=GENERATE, auth=ALICE).status_code == 200
    _assert_429(client.post("/api/v1/jobs/generate", json=GENERATE, auth=ALICE))
    # another user is not affected
    assert client.post("/api/v1/jobs/generate", json=GENERATE, auth=BOB).status_code == 200
    assert len(idle_studio.list_jobs(user="alice")) == 2  # the refused one was never queued

    # a cancelled (finished) job frees a slot
    queued = idle_studio.list_jobs(user="alice")[0]
    assert client.delete(f"/api/v1/jobs/{queued.id}", auth=ALICE).status_code == 200
    assert client.post("/api/v1/jobs/generate", json=GENERATE, auth=ALICE).status_code == 200
    _assert_429(client.post("/api/v1/jobs/generate", json=GENERATE, auth=ALICE))


def test_a1111_txt2img_past_the_quota_answers_429(client, idle_studio):
    for _ in range(2):
        idle_studio.submit("sleep", {"seconds": 0.1}, user="bob")
    response = client.post("/sdapi/v1/txt2img", json=TXT2IMG, auth=BOB)
    _assert_429(response)
    assert len(idle_studio.list_jobs(user="bob")) == 2
    response = client.post("/sdapi/v1/img2img", json={**TXT2IMG, "init_images": [_png_b64()]}, auth=BOB)
    _assert_429(response)
    assert len(idle_studio.list_jobs(user="bob")) == 2


def _png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_quota_setting_reads_the_environment_and_zero_means_no_limit(workspace, monkeypatch):
    monkeypatch.setenv("LORASTUDIO_MAX_QUEUED_PER_USER", "1")
    assert StudioSettings().max_queued_per_user == 1
    monkeypatch.setenv("LORASTUDIO_MAX_QUEUED_PER_USER", "many")
    with pytest.raises(LorastudioError, match="LORASTUDIO_MAX_QUEUED_PER_USER"):
        StudioSettings()
    monkeypatch.delenv("LORASTUDIO_MAX_QUEUED_PER_USER")
    assert StudioSettings().max_queued_per_user == 100

    with Studio(workspace, StudioSettings(max_queued_per_user=1)) as limited:
        limited.submit("sleep", {"seconds": 0.1})
        with pytest.raises(QuotaExceeded) as raised:
            limited.submit("sleep", {"seconds": 0.1})
        assert raised.value.retry_after_s >= 1
    with Studio(workspace, StudioSettings(max_queued_per_user=0)) as unlimited:
        for _ in range(3):
            unlimited.submit("sleep", {"seconds": 0.1})
        assert len(unlimited.list_jobs(state="queued")) == 4
