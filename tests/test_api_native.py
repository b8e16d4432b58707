"""The native REST API (/api/v1) in-process: jobs end to end, events, artifacts, resources, names."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lorastudio.api.app import create_app
from lorastudio.generate.infotext import parse_infotext, read_infotext
from lorastudio.service.studio import Studio, StudioSettings

TINY = {"model": "tiny-sd15", "steps": 4, "width": 64, "height": 64}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # `studio`, `client`: tests/conftest.py


@pytest.fixture
def idle_studio(workspace):
    """A studio whose worker is not running: submitted jobs stay queued."""
    studio = Studio(workspace, StudioSettings())
    yield studio
    studio.close()


def read_sse(client: TestClient, url: str, headers: dict | None = None) -> list[dict]:
    events, current = [], {}
    with client.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    events.append(current)
                current = {}
            elif line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
    return events


def png_bytes(color=(200, 30, 30), size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_generate_job_runs_streams_events_and_writes_a_png_with_infotext(client, studio):
    response = client.post(
        "/api/v1/jobs/generate", json={**TINY, "prompt": "red", "seed": 7, "batch_size": 2}
    )
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    assert response.json()["state"] in ("queued", "running", "succeeded")

    events = read_sse(client, f"/api/v1/jobs/{job_id}/events")
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "end" and events[-1]["data"]["state"] == "succeeded"
    assert "progress" in kinds and kinds.count("image") == 2
    steps = [e["data"]["step"] for e in events if e["event"] == "progress"]
    assert steps[-1] == e_total(events) and steps == sorted(steps)
    ids = [e["id"] for e in events if "id" in e]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["result"]["seeds"] == [7, 8]
    names = [a["name"] for a in client.get(f"/api/v1/jobs/{job_id}/artifacts").json()["artifacts"]]
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 2 and any(n.endswith(".yaml") for n in names)

    download = client.get(f"/api/v1/jobs/{job_id}/artifacts/{pngs[0]}")
    assert download.status_code == 200
    image = Image.open(io.BytesIO(download.content))
    params = parse_infotext(image.info["parameters"])
    assert (
        image.size == (64, 64)
        and params["Seed"] == "7"
        and params["Steps"] == "4"
        and params["Prompt"] == "red"
    )

    outputs = client.get("/api/v1/outputs").json()["outputs"]
    assert {o["id"] for o in outputs} >= {f"{job_id}/{n}" for n in pngs}
    info = client.get(f"/api/v1/outputs/{job_id}/{pngs[0]}/info").json()
    assert info["parameters"]["Seed"] == "7" and info["recipe"]["image"]["seed"] == 7
    assert client.get(f"/api/v1/outputs/{job_id}/{pngs[0]}").content == download.content


def e_total(events: list[dict]) -> int:
    return [e["data"]["total"] for e in events if e["event"] == "progress"][-1]


def test_events_resume_after_a_sequence_number(client, studio):
    job_id = client.post("/api/v1/jobs/generate", json={**TINY, "prompt": "blue"}).json()["id"]
    studio.wait_job(job_id, timeout=60)
    everything = read_sse(client, f"/api/v1/jobs/{job_id}/events")
    numbered = [e["id"] for e in everything if "id" in e]
    middle = numbered[len(numbered) // 2]
    by_query = read_sse(client, f"/api/v1/jobs/{job_id}/events?after={middle}")
    by_header = read_sse(client, f"/api/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(middle)})
    for resumed in (by_query, by_header):
        assert [e["id"] for e in resumed if "id" in e] == [n for n in numbered if n > middle]
        assert resumed[-1]["event"] == "end"


@pytest.mark.slow
def test_img2img_job_takes_an_inline_base64_image(client, studio):
    import base64

    data_url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    response = client.post(
        "/api/v1/jobs/generate",
        json={**TINY, "prompt": "red", "init_image": data_url, "strength": 0.5, "seed": 3},
    )
    assert response.status_code == 200, response.text
    job = studio.wait_job(response.json()["id"], timeout=60)
    assert job.state == "succeeded", job.error
    assert "Denoising strength: 0.5" in job.result["infotexts"][0]


def test_queued_job_is_cancelled_and_listed(idle_studio):
    client = TestClient(create_app(idle_studio))
    first = client.post("/api/v1/jobs/generate", json={**TINY, "prompt": "a"}).json()
    second = client.post("/api/v1/jobs/generate", json={**TINY, "prompt": "b"}).json()
    assert (first["queue_position"], second["queue_position"]) == (0, 1)
    cancelled = client.delete(f"/api/v1/jobs/{first['id']}").json()
    assert cancelled["state"] == "cancelled"
    listed = client.get("/api/v1/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [second["id"], first["id"]]
    assert client.get("/api/v1/jobs?state=queued").json()["jobs"][0]["id"] == second["id"]
    events = read_sse(client, f"/api/v1/jobs/{second['id']}/events?follow=false")
    assert (
        events[-1] == {"event": "end", "data": events[-1]["data"]} and events[-1]["data"]["state"] == "queued"
    )
    missing = client.get("/api/v1/jobs/nope")
    assert missing.status_code == 404 and set(missing.json()) == {"error", "detail", "body", "errors"}


@pytest.mark.parametrize(
    "body",
    [
        {"model": "../models/x"},
        {"model": "/etc/passwd"},
        {"init_image": "../../etc/passwd"},
        {"init_image": "/etc/passwd"},
        {"vae": "../secret.safetensors"},
    ],
)
def test_requests_name_things_and_never_carry_paths(idle_studio, body):
    client = TestClient(create_app(idle_studio))
    response = client.post("/api/v1/jobs/generate", json={**TINY, **body})
    assert response.status_code in (400, 404), response.text
    assert response.json()["error"] in ("LorastudioError", "NotFoundError")
    assert idle_studio.list_jobs() == []


def test_typed_configs_reject_unknown_keys(idle_studio):
    client = TestClient(create_app(idle_studio))
    response = client.post("/api/v1/jobs/generate", json={**TINY, "stepz": 3})
    assert response.status_code == 422
    assert "stepz" in json.dumps(response.json()["errors"])


def test_outputs_and_artifacts_refuse_paths(client):
    assert client.get("/api/v1/outputs/..%2F..%2Fstudio.db/x").status_code in (400, 404)
    assert client.get("/api/v1/outputs/%2E%2E/studio.db").status_code in (400, 404)
    assert client.get("/api/v1/jobs/x/artifacts/..%2Fstudio.db").status_code in (400, 404)


def test_uploads_are_type_checked(client, studio):
    ok = client.post("/api/v1/uploads", files={"file": ("face.png", png_bytes(), "image/png")})
    assert ok.status_code == 200 and ok.json()["upload"].endswith(".png")
    assert (studio.uploads_dir / ok.json()["upload"]).read_bytes() == png_bytes()
    fake = client.post("/api/v1/uploads", files={"file": ("face.png", b"#!/bin/sh\nrm -rf /", "image/png")})
    assert fake.status_code == 400 and "not a png" in fake.json()["detail"]
    script = client.post("/api/v1/uploads", files={"file": ("run.py", b"print(1)", "text/x-python")})
    assert script.status_code == 400
    pickle = client.post(
        "/api/v1/models", files={"file": ("model.ckpt", b"\x80\x04K\x01.", "application/octet-stream")}
    )
    assert pickle.status_code == 400
    bogus = client.post(
        "/api/v1/loras", files={"file": ("l.safetensors", b"\x05\x00\x00\x00\x00\x00\x00\x00{]", "x")}
    )
    assert bogus.status_code == 400 and "safetensors" in bogus.json()["detail"]
    assert not [p for p in studio.uploads_dir.iterdir() if p.name.endswith(".part")]


def test_body_size_limit_answers_413(tiny_workspace):
    studio = Studio(tiny_workspace, StudioSettings(max_json_bytes=1000, max_upload_bytes=2000))
    try:
        client = TestClient(create_app(studio))
        big = client.post("/sdapi/v1/png-info", json={"image": "A" * 5000})
        assert big.status_code == 413 and big.json()["error"] == "PayloadTooLarge"

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b"x" * 500

        streamed = client.post(
            "/sdapi/v1/png-info", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413 and streamed.json()["error"] == "PayloadTooLarge"
        small = client.post("/api/v1/uploads", files={"file": ("a.png", png_bytes(size=(8, 8)), "image/png")})
        assert small.status_code == 200
    finally:
        studio.close()


def test_models_loras_embeddings_resources(client, studio):
    models = client.get("/api/v1/models").json()
    assert {"tiny-sd15", "tiny-sdxl"} <= {m["name"] for m in models["models"]}
    assert all("path" not in m for m in models["models"])
    info = client.get("/api/v1/models/tiny-sd15").json()
    assert info["family"] == "sd15" and len(info["hash"]) == 10
    assert client.get("/api/v1/loras").json() == {"loras": []}
    assert client.get("/api/v1/embeddings").json() == {"embeddings": []}
    assert client.get("/api/v1/loras/none").status_code == 404
    assert client.delete("/api/v1/models/nothing-here").status_code == 404
    (studio.workspace.loras / "style.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    assert [r["name"] for r in client.get("/api/v1/loras").json()["loras"]] == ["style"]
    assert client.delete("/api/v1/loras/style").json() == {"name": "style", "deleted": True}
    assert not (studio.workspace.loras / "style.safetensors").exists()


def test_dataset_upload_imports_through_the_queue(client, studio):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, color in enumerate([(255, 0, 0), (0, 0, 255)]):
            archive.writestr(f"img{i}.png", png_bytes(color, (96, 96)))
            archive.writestr(f"img{i}.txt", f"photo {i}")
    response = client.post(
        "/api/v1/datasets",
        data={"name": "cats"},
        files={"file": ("cats.zip", buffer.getvalue(), "application/zip")},
    )
    assert response.status_code == 200, response.text
    job = studio.wait_job(response.json()["id"], timeout=60)
    assert job.state == "succeeded", job.error
    listed = client.get("/api/v1/datasets").json()["datasets"]
    assert [(d["name"], d["images"]) for d in listed] == [("cats", 2)]
    assert client.get("/api/v1/datasets/cats").status_code == 200
    assert not list(studio.uploads_dir.iterdir())  # the upload was consumed
    assert client.delete("/api/v1/datasets/cats").json()["deleted"] is True
    assert client.get("/api/v1/datasets").json()["datasets"] == []


def test_caption_and_train_jobs_check_their_data_set(client, studio):
    caption = client.post(
        "/api/v1/jobs/caption", json={"dataset": "missing", "tagger": {"model": "org/tagger"}}
    )
    assert caption.status_code == 404
    both = client.post("/api/v1/jobs/caption", json={"dataset": "x"})
    assert both.status_code == 422
    train = client.post("/api/v1/jobs/train", json={"model": "tiny-sd15", "data": {"dir": "/etc"}})
    assert train.status_code in (400, 404)
    (studio.workspace.datasets / "ok").mkdir()
    for field, value in (("class_dir", "/tmp/elsewhere"), ("class_dir", "missing")):
        body = {"model": "tiny-sd15", "data": {"dir": "ok"}, "prior": {"class_prompt": "a dog", field: value}}
        refused = client.post("/api/v1/jobs/train", json=body)  # the worker must not write outside datasets/
        assert refused.status_code in (400, 404), refused.text
    body = {"model": "tiny-sd15", "data": {"dir": "ok"}, "scoring": {"validation_dir": "../runs"}}
    assert client.post("/api/v1/jobs/train", json=body).status_code in (400, 404)
    assert not Path("/tmp/elsewhere").exists()
    for key in ("clip_model", "tagger_model"):  # scorer models: names in models/, no paths (404 as if missing)
        body = {"model": "tiny-sd15", "data": {"dir": "ok"}, "scoring": {key: "/etc"}}
        assert client.post("/api/v1/jobs/train", json=body).status_code == 404


def test_status_reports_the_worker_and_counts(client):
    status = client.get("/api/v1/status").json()
    assert status["worker"] is True and status["model"] == "tiny-sd15"
    assert status["jobs"] == {"queued": 0, "running": 0}


def test_cancel_running_generation_stops_it(client, studio):
    job_id = client.post("/api/v1/jobs/generate", json={**TINY, "steps": 150, "count": 16}).json()["id"]
    deadline = time.monotonic() + 60
    while studio.get_job(job_id).progress == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 200
    job = studio.wait_job(job_id, timeout=30)
    assert job.state == "cancelled" and job.progress < 1.0
    # the worker keeps going: the next job runs
    after = client.post("/api/v1/jobs/generate", json={**TINY, "prompt": "x"}).json()["id"]
    assert studio.wait_job(after, timeout=60).state == "succeeded"
    assert read_infotext(studio.job_images(studio.get_job(after))[0])


def make_dataset(workspace, tmp_path, name: str = "reds") -> None:
    from lorastudio.service.datasets import import_dataset

    source = tmp_path / "source"
    source.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 64), (200 + i * 10, 20, 20)).save(source / f"{i}.png")
        (source / f"{i}.txt").write_text("zq, red picture", encoding="utf-8")
    import_dataset(workspace, name, [source])


TRAIN = {
    "model": "tiny-sd15",
    "trigger": "zq",
    "data": {"dir": "reds"},
    "train": {"steps": 6, "batch_size": 2, "learning_rate": 1e-3, "resolution": 64, "save_every_steps": 2},
    "seed": 1,
}


@pytest.mark.slow
def test_train_job_is_stopped_with_the_server_and_resumes_from_its_checkpoint(tiny_workspace, tmp_path):
    make_dataset(tiny_workspace, tmp_path)
    first = Studio(tiny_workspace, StudioSettings())
    first.start()
    client = TestClient(create_app(first))
    response = client.post("/api/v1/jobs/train", json=TRAIN)
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    run = response.json()["payload"]["run"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(e.type == "checkpoint" for e in first.job_events(job_id)):
            break
        assert not first.get_job(job_id).finished, first.get_job(job_id).error
        time.sleep(0.05)
    first.close()  # graceful stop: the running job goes back to the queue
    second = Studio(tiny_workspace, StudioSettings())
    try:
        assert second.get_job(job_id).state in ("queued", "succeeded")
        second.start()
        job = second.wait_job(job_id, timeout=120)
        assert job.state == "succeeded", job.error
        events = second.job_events(job_id)
        assert job.attempt == 2 and any("resuming run" in e.data.get("line", "") for e in events)
        plans = [e.data for e in events if e.type == "plan"]
        assert plans[0]["start_step"] == 0 and plans[-1]["start_step"] >= 2
        client = TestClient(create_app(second))
        assert run in {r["name"] for r in client.get("/api/v1/loras").json()["loras"]}
        assert "config.yaml" in {
            a["name"] for a in client.get(f"/api/v1/jobs/{job_id}/artifacts").json()["artifacts"]
        }
    finally:
        second.close()


def test_generate_job_and_event_stream_on_both_queue_backends(tiny_workspace, queue_url):  # noqa: F811
    studio = Studio(tiny_workspace, StudioSettings(queue_url=queue_url))
    studio.start()
    try:
        client = TestClient(create_app(studio))
        job_id = client.post("/api/v1/jobs/generate", json={**TINY, "prompt": "green", "seed": 11}).json()[
            "id"
        ]
        events = read_sse(client, f"/api/v1/jobs/{job_id}/events")
        assert events[-1]["data"]["state"] == "succeeded" and events[-1]["data"]["result"]["seeds"] == [11]
        assert [e["event"] for e in events if e["event"] in ("queued", "started", "image", "succeeded")] == [
            "queued",
            "started",
            "image",
            "succeeded",
        ]
        assert studio.store.backend == queue_url.split(":")[0]
    finally:
        studio.close()


def test_generate_job_emits_preview_images(client, studio):
    job = client.post("/api/v1/jobs/generate", json={**TINY, "prompt": "red", "steps": 10, "seed": 3}).json()
    job_id = job.get("id") or job.get("job", {}).get("id")
    studio.wait_job(job_id, timeout=120)
    previews = [e for e in studio.job_events(job_id) if e.type == "preview"]
    assert len(previews) == 2  # every 5 of 10 steps
    import base64

    image = Image.open(io.BytesIO(base64.b64decode(previews[0].data["image"])))
    assert image.size == (64, 64)


def test_train_job_resolves_a_scorer_model_name_in_models(client, studio):
    (studio.workspace.datasets / "set").mkdir()
    (studio.workspace.models / "wd14").mkdir()
    body = {
        "model": "tiny-sd15",
        "data": {"dir": "set"},
        "train": {"steps": 1},
        "scoring": {"tagger_model": "wd14"},
    }
    job = client.post("/api/v1/jobs/train", json=body)
    assert job.status_code == 200, job.text
    queued = studio.store.get(job.json()["id"])  # the payload as the worker will read it
    assert queued.payload["config"]["scoring"]["tagger_model"] == str(
        (studio.workspace.models / "wd14").resolve()
    )
