"""A training run over the REST API as in the web UI's Train tab: resume a cancelled run, and
"use this checkpoint" (an earlier step replaces the run's LoRA in the library), each only by the
user who queued the run."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lorastudio.api.app import create_app
from lorastudio.api.security import parse_tokens
from lorastudio.service.studio import Studio, StudioSettings

ALICE = {"Authorization": "Bearer alice-secret-1"}
BOB = {"Authorization": "Bearer bob-secret-22"}
TRAIN = {
    "model": "tiny-sd15",
    "trigger": "zq",
    "data": {"dir": "reds"},
    "train": {"steps": 4, "batch_size": 2, "learning_rate": 1e-3, "resolution": 64, "save_every_steps": 2},
    "scoring": {"enabled": False},
    "seed": 1,
}


def _reds(workspace, tmp_path) -> None:
    from lorastudio.service.datasets import import_dataset

    source = tmp_path / "source"
    source.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 64), (200 + i * 10, 20, 20)).save(source / f"{i}.png")
        (source / f"{i}.txt").write_text("zq, red picture", encoding="utf-8")
    import_dataset(workspace, "reds", [source])


@pytest.fixture
def idle_studio(tiny_workspace, tmp_path):
    """No worker: submitted jobs stay queued."""
    _reds(tiny_workspace, tmp_path)
    studio = Studio(tiny_workspace, StudioSettings())
    yield studio
    studio.close()


def test_a_cancelled_run_is_resumed_over_the_api_by_its_owner_only(idle_studio):
    app = create_app(idle_studio, tokens=parse_tokens(["alice:alice-secret-1", "bob:bob-secret-22"]))
    with TestClient(app, raise_server_exceptions=False) as client:
        first = client.post("/api/v1/jobs/train", json=TRAIN, headers=ALICE).json()
        finished = client.post("/api/v1/jobs/generate", json={"steps": 1}, headers=ALICE).json()
        assert client.post(f"/api/v1/jobs/{first['id']}/resume", headers=ALICE).status_code == 422  # still queued
        client.delete(f"/api/v1/jobs/{first['id']}", headers=ALICE)
        refused = client.post(f"/api/v1/jobs/{first['id']}/resume", headers=BOB)
        assert refused.status_code == 403 and "another user's training run" in refused.json()["detail"]
        again = client.post(f"/api/v1/jobs/{first['id']}/resume", headers=ALICE)
        assert again.status_code == 200, again.text
        resumed = idle_studio.get_job(again.json()["id"])
        assert (resumed.state, resumed.user, resumed.payload["run"]) == ("queued", "alice", first["payload"]["run"])
        twice = client.post(f"/api/v1/jobs/{first['id']}/resume", headers=ALICE)  # a double click
        assert twice.status_code == 422 and f"already resumed as job {resumed.id}" in twice.json()["detail"]
        assert client.post(f"/api/v1/jobs/{first['id']}/checkpoint", json={"step": 2}, headers=BOB).status_code == 403
        by_name = client.post(f"/api/v1/jobs/{first['id']}/checkpoint", json={"step": "step-2"}, headers=BOB)
        assert by_name.status_code == 403  # the folder's name is a step too, as `train pick RUN step-2`
        negative = client.post(f"/api/v1/jobs/{first['id']}/checkpoint", json={"step": -1}, headers=ALICE)
        assert negative.status_code == 422
        not_training = client.post(f"/api/v1/jobs/{finished['id']}/checkpoint", json={"step": 2}, headers=ALICE)
        assert not_training.status_code == 422 and "only a training job" in not_training.json()["detail"]
        assert client.post("/api/v1/jobs/nope/checkpoint", json={"step": 2}, headers=ALICE).status_code == 404


@pytest.mark.slow
def test_an_earlier_checkpoint_replaces_the_runs_lora_in_the_library(studio, tmp_path):
    _reds(studio.workspace, tmp_path)
    client = TestClient(create_app(studio))
    job = client.post("/api/v1/jobs/train", json=TRAIN).json()
    done = studio.wait_job(job["id"], timeout=300)
    assert done.state == "succeeded", done.error
    run = job["payload"]["run"]
    library = studio.workspace.loras / f"{run}.safetensors"
    step2 = studio.workspace.runs / run / "checkpoints" / "step-2" / f"{run}.safetensors"
    assert library.read_bytes() != step2.read_bytes()  # the last step's LoRA went into the library
    result = client.get(f"/api/v1/jobs/{job['id']}").json()["result"]
    assert (result["result_step"], result["picked_by"]) == (4, "final")  # the job says which step it is
    picked = client.post(f"/api/v1/jobs/{job['id']}/checkpoint", json={"step": 2})
    assert picked.status_code == 200, picked.text
    assert picked.json()["step"] == 2 and library.read_bytes() == step2.read_bytes()
    missing = client.post(f"/api/v1/jobs/{job['id']}/checkpoint", json={"step": 3})
    assert missing.status_code == 404 and "saved steps: 2, 4" in missing.json()["detail"]
    by_name = client.post(f"/api/v1/jobs/{job['id']}/checkpoint", json={"step": "step-4"})
    assert by_name.status_code == 200 and by_name.json()["step"] == 4  # the folder's name, as `train pick`
    step4 = studio.workspace.runs / run / "checkpoints" / "step-4" / f"{run}.safetensors"
    assert library.read_bytes() == step4.read_bytes()
    other = client.post(f"/api/v1/jobs/{job['id']}/checkpoint", json={"step": "best"})
    assert other.status_code == 404 and "no checkpoint 'best'; saved steps: 2, 4" in other.json()["detail"]
