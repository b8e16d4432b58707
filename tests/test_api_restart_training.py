"""Restart recovery with a real training job: SIGKILL the server after a checkpoint, start it again."""

from __future__ import annotations

import time

import httpx
import pytest
from PIL import Image

from lorastudio.service.jobs import open_store
from test_api_serve import AUTH, Server

pytestmark = pytest.mark.slow  # SIGKILLs a served training job (~27 s)

TRIGGER = "zqx"


def _red_dataset(workspace, name: str = "red") -> str:
    folder = workspace.datasets / name
    folder.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (64, 64), (230, 20 + i, 25)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(TRIGGER, encoding="utf-8")
    return name


def _train_body(dataset: str) -> dict:
    return {
        "model": "tiny-sd15",
        "trigger": TRIGGER,
        "seed": 3,
        "data": {"dir": dataset},
        "train": {
            "resolution": 64,
            "steps": 16,  # the kill comes right after step 4's checkpoint: 12 steps to spare
            "save_every_steps": 4,
            "mixed_precision": "no",
        },
        "lora": {"rank": 4, "alpha": 2},
        "output": {"name": "restarted"},
        "scoring": {"enabled": False},  # the resume is asserted: scoring 4 checkpoints would only add time
    }


def test_training_job_resumes_from_its_checkpoint_after_sigkill(tiny_workspace):
    workspace = tiny_workspace
    dataset = _red_dataset(workspace)
    server = Server(workspace).start()
    try:
        response = httpx.post(
            f"{server.url}/api/v1/jobs/train", json=_train_body(dataset), auth=AUTH, timeout=30
        )
        assert response.status_code == 200, response.text
        job_id = response.json()["id"]
        with open_store(None, workspace) as store:
            deadline = time.monotonic() + 120
            checkpoint = None
            while checkpoint is None and time.monotonic() < deadline:
                events = [e for e in store.events(job_id) if e.type == "checkpoint"]
                checkpoint = events[0].data["step"] if events else None
                assert store.get(job_id).state in ("queued", "running"), store.get(job_id).error
                time.sleep(0.05)
            assert checkpoint is not None, "no checkpoint within 120 s"
            server.kill()
            killed = store.get(job_id)
            assert killed.state == "running" and killed.attempt == 1  # nobody recorded anything

            server = Server(workspace).start()
            finished = store.wait_until(job_id, timeout=180)
            assert (finished.state, finished.attempt) == ("succeeded", 2), finished.error
            events = store.events(job_id, limit=10_000)
            resumed = [
                i
                for i, e in enumerate(events)
                if e.type == "log" and "resuming run restarted" in e.data.get("line", "")
            ]
            assert len(resumed) == 1, [e.data for e in events if e.type == "log"]
            second = events[resumed[0] :]
            steps = [e.data["step"] for e in second if e.type == "progress" and "step" in e.data]
            # the second attempt starts after a checkpoint of the first, never from step 1
            assert steps and steps[0] > checkpoint and steps[-1] == 16, steps[:5]
            assert finished.result["finished"] and finished.result["step"] == 16
            assert (workspace.loras / "restarted.safetensors").is_file()

            artifacts = httpx.get(f"{server.url}/api/v1/jobs/{job_id}/artifacts", auth=AUTH, timeout=10)
            names = [a["name"] for a in artifacts.json()["artifacts"]]
            assert "restarted.safetensors" in names, names
            lora = httpx.get(
                f"{server.url}/api/v1/jobs/{job_id}/artifacts/restarted.safetensors", auth=AUTH, timeout=30
            )
            run_lora = workspace.runs / "restarted" / "restarted.safetensors"
            assert lora.status_code == 200 and lora.content == run_lora.read_bytes()
    finally:
        server.stop()
