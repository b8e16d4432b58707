"""One user cannot break another: named bearer tokens are separate users (quota, options, jobs),
A1111 options are validated, size-capped and kept per user; two Authorization headers are refused."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from lorastudio.api.app import bearer_tokens, create_app
from lorastudio.api.security import parse_tokens, read_tokens_file
from lorastudio.errors import LorastudioError
from lorastudio.service.studio import Studio, StudioSettings

TINY = {"steps": 1, "width": 64, "height": 64}
ALICE = {"Authorization": "Bearer alice-secret-1"}
BOB = {"Authorization": "Bearer bob-secret-22"}


@pytest.fixture
def idle_studio(tiny_workspace):
    """The tiny models in models/, no worker: submitted jobs stay queued."""
    studio = Studio(tiny_workspace, StudioSettings(max_queued_per_user=1, max_options_bytes=2048))
    yield studio
    studio.close()


@pytest.fixture
def client(idle_studio, tmp_path):
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("# clients\nbob:bob-secret-22\n\n", encoding="utf-8")
    tokens = bearer_tokens(["alice:alice-secret-1"], str(tokens_file))  # what `serve` hands run_server
    app = create_app(idle_studio, tokens=tokens, token="shared-secret")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_named_tokens_are_separate_users_with_their_own_quota(client, idle_studio):
    assert client.post("/api/v1/jobs/generate", json=TINY, headers=ALICE).status_code == 200
    assert client.post("/api/v1/jobs/generate", json=TINY, headers=ALICE).status_code == 429
    assert client.post("/api/v1/jobs/generate", json=TINY, headers=BOB).status_code == 200
    shared = {"Authorization": "Bearer shared-secret"}
    assert client.post("/api/v1/jobs/generate", json=TINY, headers=shared).status_code == 200
    assert sorted(job.user for job in idle_studio.list_jobs()) == ["", "alice", "bob"]
    mine = client.get("/api/v1/jobs", params={"user": "bob"}, headers=BOB).json()["jobs"]
    assert [job["user"] for job in mine] == ["bob"]


def test_wrong_or_missing_tokens_are_refused(client):
    for headers in ({}, {"Authorization": "Bearer alice-secret-"}, {"Authorization": "Bearer alice"}):
        assert client.get("/api/v1/jobs", headers=headers).status_code == 401


def test_two_authorization_headers_answer_400(client):
    headers = [("authorization", ALICE["Authorization"]), ("authorization", BOB["Authorization"])]
    response = client.get("/api/v1/jobs", headers=headers)
    assert response.status_code == 400
    assert "Authorization" in response.json()["detail"]


def test_token_parsing():
    assert parse_tokens(["a:x:y", "plain"]) == [("a", "x:y"), ("", "plain")]
    for bad in ([":secret"], ["name:"], ["a:1", "a:2"]):
        with pytest.raises(LorastudioError):
            parse_tokens(bad)


def test_tokens_file_needs_name_secret_lines(tmp_path):
    path = tmp_path / "tokens"
    path.write_text("justasecret\n", encoding="utf-8")
    with pytest.raises(LorastudioError, match="name:secret"):
        read_tokens_file(path)
    with pytest.raises(LorastudioError, match="cannot read"):
        read_tokens_file(tmp_path / "missing")


def test_options_are_per_user(client, idle_studio):
    assert (
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sdxl"}, headers=ALICE).status_code
        == 200
    )
    assert (
        client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2}, headers=ALICE).status_code
        == 200
    )
    alice = client.get("/sdapi/v1/options", headers=ALICE).json()
    bob = client.get("/sdapi/v1/options", headers=BOB).json()
    assert alice["sd_model_checkpoint"].startswith("tiny-sdxl") and alice["CLIP_stop_at_last_layers"] == 2
    assert bob["sd_model_checkpoint"].startswith("tiny-sd15") and bob["CLIP_stop_at_last_layers"] == 1
    # their generations use their own options
    from lorastudio.api.a1111 import Txt2ImgRequest, to_generate_config

    assert to_generate_config(Txt2ImgRequest(**TINY), idle_studio, user="alice").model == "tiny-sdxl"
    assert to_generate_config(Txt2ImgRequest(**TINY), idle_studio, user="alice").clip_skip == 2
    assert to_generate_config(Txt2ImgRequest(**TINY), idle_studio, user="bob").model == "tiny-sd15"
    assert idle_studio.model == "tiny-sd15"  # the server's default did not move


@pytest.mark.parametrize(
    ("options", "status", "word"),
    [
        ({"CLIP_stop_at_last_layers": "abc"}, 422, "CLIP_stop_at_last_layers"),
        ({"CLIP_stop_at_last_layers": 0}, 422, "CLIP_stop_at_last_layers"),
        ({"CLIP_stop_at_last_layers": True}, 422, "CLIP_stop_at_last_layers"),
        ({"sd_vae": "missing.safetensors"}, 404, "missing.safetensors"),
        ({"sd_vae": ["x"]}, 422, "sd_vae"),
        ({"sd_model_checkpoint": "missing"}, 404, "missing"),
        ({"big": "x" * 4000}, 422, "--max-options-kb"),
    ],
)
def test_bad_options_are_refused_and_break_nobody(client, idle_studio, options, status, word):
    response = client.post("/sdapi/v1/options", json=options, headers=ALICE)
    assert response.status_code == status, response.text
    assert word in response.json()["detail"]
    assert client.get("/sdapi/v1/options", headers=ALICE).json()["CLIP_stop_at_last_layers"] == 1
    for user in ("alice", "bob"):
        from lorastudio.api.a1111 import Txt2ImgRequest, to_generate_config

        cfg = to_generate_config(Txt2ImgRequest(**TINY), idle_studio, user=user)
        assert cfg.vae is None and cfg.clip_skip == 1


def test_options_with_nan_are_refused(client):
    response = client.post(
        "/sdapi/v1/options",
        content='{"something": NaN}',
        headers={**ALICE, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert client.get("/sdapi/v1/options", headers=ALICE).status_code == 200


def test_basic_auth_users_keep_their_own_options(idle_studio):
    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    with TestClient(create_app(idle_studio, auth="ann:pw-1,ben:pw-2")) as client:
        client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 3}, headers=basic("ann", "pw-1"))
        assert (
            client.get("/sdapi/v1/options", headers=basic("ann", "pw-1")).json()["CLIP_stop_at_last_layers"]
            == 3
        )
        assert (
            client.get("/sdapi/v1/options", headers=basic("ben", "pw-2")).json()["CLIP_stop_at_last_layers"]
            == 1
        )


def test_progress_interrupt_and_skip_reach_only_the_callers_own_jobs(tiny_workspace, monkeypatch):
    """Bob sees no progress (nor preview) of Alice's job and cannot stop or skip it; Alice can."""
    import time

    import lorastudio.service.studio as studio_module

    monkeypatch.setattr(studio_module, "INTERRUPTIBLE_KINDS", ("sleep",))  # a job that runs long enough
    monkeypatch.setattr(studio_module, "SKIPPABLE_KINDS", ("sleep",))  # Bob's skip must find it, and be refused
    studio = Studio(tiny_workspace, StudioSettings(max_queued_per_user=0))
    app = create_app(studio, tokens=parse_tokens(["alice:alice-secret-1", "bob:bob-secret-22"]))
    with TestClient(app, raise_server_exceptions=False) as client:
        job = studio.submit("sleep", {"config": {"seconds": 30, "steps": 300}}, user="alice")
        studio.start()
        deadline = time.monotonic() + 30
        while studio.get_job(job.id).state != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/sdapi/v1/progress", headers=BOB).json()["state"]["job"] == ""
        assert client.get("/sdapi/v1/progress", headers=ALICE).json()["state"]["job"] == job.id
        assert client.post("/sdapi/v1/interrupt", headers=BOB).status_code == 200
        assert client.post("/sdapi/v1/skip", headers=BOB).status_code == 200
        time.sleep(0.3)
        assert studio.get_job(job.id).state == "running" and not studio.get_job(job.id).cancel_requested
        assert client.post("/sdapi/v1/interrupt", headers=ALICE).status_code == 200
        done = studio.wait_job(job.id, timeout=30)
    studio.close()
    assert done.state == "cancelled"


def test_with_auth_off_progress_and_interrupt_reach_the_running_job_whoever_queued_it(tiny_workspace, monkeypatch):
    """A1111's single-user view: auth switched off after Alice queued a job, the person at the studio
    still sees it run and can stop it."""
    import time

    import lorastudio.service.studio as studio_module

    monkeypatch.setattr(studio_module, "INTERRUPTIBLE_KINDS", ("sleep",))
    studio = Studio(tiny_workspace, StudioSettings(max_queued_per_user=0))
    with TestClient(create_app(studio), raise_server_exceptions=False) as client:
        job = studio.submit("sleep", {"config": {"seconds": 30, "steps": 300}}, user="alice")
        studio.start()
        deadline = time.monotonic() + 30
        while studio.get_job(job.id).state != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/sdapi/v1/progress").json()["state"]["job"] == job.id
        assert client.post("/sdapi/v1/interrupt").status_code == 200
        done = studio.wait_job(job.id, timeout=30)
    studio.close()
    assert done.state == "cancelled"


def test_a_job_is_cancelled_by_its_owner_only(idle_studio):
    """DELETE /api/v1/jobs/{id} as another user answers 403 and leaves the job queued."""
    app = create_app(idle_studio, tokens=parse_tokens(["alice:alice-secret-1", "bob:bob-secret-22"]))
    job = idle_studio.submit("sleep", {"config": {"seconds": 30}}, user="alice")
    with TestClient(app, raise_server_exceptions=False) as client:
        refused = client.delete(f"/api/v1/jobs/{job.id}", headers=BOB)
        assert refused.status_code == 403 and "another user's job" in refused.json()["detail"]
        assert idle_studio.get_job(job.id).state == "queued"
        assert client.delete(f"/api/v1/jobs/{job.id}", headers=ALICE).status_code == 200
    assert idle_studio.get_job(job.id).state == "cancelled"


def test_an_unnamed_token_cancels_no_named_users_job_and_with_auth_off_anyone_may(idle_studio):
    job = idle_studio.submit("sleep", {"config": {"seconds": 30}}, user="alice")
    shared = {"Authorization": "Bearer shared-secret-33"}
    app = create_app(idle_studio, tokens=parse_tokens(["alice:alice-secret-1"]), token="shared-secret-33")
    with TestClient(app, raise_server_exceptions=False) as client:
        refused = client.delete(f"/api/v1/jobs/{job.id}", headers=shared)  # its caller is "", not alice
        assert refused.status_code == 403 and idle_studio.get_job(job.id).state == "queued"
    with TestClient(create_app(idle_studio), raise_server_exceptions=False) as client:
        # auth switched off later: the person running the studio owns every job, named or not
        assert client.delete(f"/api/v1/jobs/{job.id}").status_code == 200
    assert idle_studio.get_job(job.id).state == "cancelled"
