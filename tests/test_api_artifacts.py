"""Artifact stores: the workspace by default, an S3-compatible bucket (moto's server on 127.0.0.1) when set."""

from __future__ import annotations

import shutil
import socket

import pytest
from fastapi.testclient import TestClient

from lorastudio.api.app import create_app
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.artifacts import LocalArtifactStore, S3ArtifactStore, open_artifact_store
from lorastudio.service.studio import Studio, StudioSettings

BUCKET = "studio-artifacts"
TINY = {"model": "tiny-sd15", "prompt": "red", "steps": 2, "width": 64, "height": 64, "seed": 5}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_url(monkeypatch):
    """A throwaway S3 server (moto) on 127.0.0.1 with one bucket; fake credentials, no AWS lookups."""
    pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield f"s3://{BUCKET}/team-a?endpoint_url={endpoint}"
    server.stop()


@pytest.fixture(autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_url_setting_picks_the_store(monkeypatch):
    monkeypatch.delenv("LORASTUDIO_ARTIFACTS_URL", raising=False)
    assert type(open_artifact_store()) is LocalArtifactStore
    assert StudioSettings().artifacts_url == ""
    monkeypatch.setenv("LORASTUDIO_ARTIFACTS_URL", "s3://bucket/some/prefix?region=eu-west-1")
    assert StudioSettings().artifacts_url.startswith("s3://bucket/")
    store = open_artifact_store()
    assert isinstance(store, S3ArtifactStore) and store.bucket == "bucket"
    assert store.key("job1", "a.png") == "some/prefix/job1/a.png"
    for bad in ("ftp://x/y", "s3://bucket/p?secret=1"):
        with pytest.raises(LorastudioError, match="artifacts url"):
            open_artifact_store(bad)


@pytest.mark.slow
def test_generation_is_uploaded_and_downloadable_from_a_box_without_the_files(tiny_workspace, s3_url):
    studio = Studio(tiny_workspace, StudioSettings(artifacts_url=s3_url))
    studio.start()
    try:
        with TestClient(create_app(studio)) as client:
            job_id = client.post("/api/v1/jobs/generate", json=TINY).json()["id"]
            job = studio.wait_job(job_id, timeout=120)
            assert job.state == "succeeded", job.error
            image = job.result["images"][0]
            local = (tiny_workspace.outputs / job_id / image).read_bytes()

            store = studio.artifact_store
            keys = [o["Key"] for o in store.client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
            assert f"team-a/{job_id}/{image}" in keys
            uploaded = [e for e in studio.job_events(job_id) if e.type == "artifacts"]
            assert uploaded and image in uploaded[0].data["names"]

            # another box: the job's folder is not on this disk, the bucket answers
            shutil.rmtree(tiny_workspace.outputs / job_id)
            listed = client.get(f"/api/v1/jobs/{job_id}/artifacts").json()["artifacts"]
            assert {"name": image, "size_bytes": len(local)} in listed
            response = client.get(f"/api/v1/jobs/{job_id}/artifacts/{image}")
            assert response.status_code == 200 and response.content == local
            assert response.headers["content-type"] == "image/png"
            missing = client.get(f"/api/v1/jobs/{job_id}/artifacts/nope.png")
            assert missing.status_code == 404
            assert client.get(f"/api/v1/jobs/{job_id}/artifacts/..%2Fx").status_code in (400, 404)
    finally:
        studio.close()


def test_local_store_serves_the_job_folder(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"png")
    (folder / "sub").mkdir()
    store = LocalArtifactStore()
    assert store.publish("j", folder) == ["a.png"]
    assert store.list("j", folder) == [{"name": "a.png", "size_bytes": 3}]
    artifact = store.get("j", folder, "a.png")
    assert b"".join(artifact.chunks()) == b"png" and artifact.path == folder / "a.png"
    with pytest.raises(NotFoundError):
        store.get("j", folder, "b.png")


def _finished_train_job(studio: Studio, run: str):
    """A succeeded train job whose run folder holds a LoRA, its trigger embedding and a checkpoint."""
    job = studio.store.enqueue("train", {"config": {}, "run": run})
    claimed = studio.store.claim("w")
    studio.store.finish(job.id, claimed.attempt, "succeeded", result={})
    folder = studio.workspace.runs / run
    (folder / "embeddings").mkdir(parents=True)
    (folder / "checkpoints" / "step-2").mkdir(parents=True)
    (folder / f"{run}.safetensors").write_bytes(b"lora")
    (folder / "embeddings" / "zq.safetensors").write_bytes(b"embedding")
    (folder / "checkpoints" / "step-2" / f"{run}.safetensors").write_bytes(b"old")
    return job, folder


def test_a_training_jobs_downloads_include_its_trigger_embedding(workspace):
    studio = Studio(workspace, StudioSettings(artifacts_url=""))
    try:
        job, _ = _finished_train_job(studio, "zq")
        client = TestClient(create_app(studio))
        listed = client.get(f"/api/v1/jobs/{job.id}/artifacts").json()["artifacts"]
        assert listed == [
            {"name": "embeddings/zq.safetensors", "size_bytes": 9},
            {"name": "zq.safetensors", "size_bytes": 4},
        ]
        response = client.get(f"/api/v1/jobs/{job.id}/artifacts/embeddings/zq.safetensors")
        assert response.status_code == 200 and response.content == b"embedding"
        assert 'filename="zq.safetensors"' in response.headers["content-disposition"]
        # %2F: the client sends the dots as they are (it would normalise a plain "/../")
        for name in ("checkpoints/step-2/zq.safetensors", "embeddings%2F..%2Fzq.safetensors", "..%2Fx", "%2Fetc%2Fpasswd"):
            refused = client.get(f"/api/v1/jobs/{job.id}/artifacts/{name}")
            assert refused.status_code == 404 and "has no file" in refused.text, name
            assert b"old" not in refused.content
    finally:
        studio.close()


def test_an_uploaded_trigger_embedding_is_served_from_the_bucket(workspace, s3_url):
    studio = Studio(workspace, StudioSettings(artifacts_url=s3_url))
    try:
        job, folder = _finished_train_job(studio, "zq")
        assert studio.artifact_store.publish(job.id, folder) == ["embeddings/zq.safetensors", "zq.safetensors"]
        shutil.rmtree(folder)  # another box: only the bucket has the files
        client = TestClient(create_app(studio))
        names = [a["name"] for a in client.get(f"/api/v1/jobs/{job.id}/artifacts").json()["artifacts"]]
        assert names == ["embeddings/zq.safetensors", "zq.safetensors"]
        response = client.get(f"/api/v1/jobs/{job.id}/artifacts/embeddings/zq.safetensors")
        assert response.status_code == 200 and response.content == b"embedding"
    finally:
        studio.close()
