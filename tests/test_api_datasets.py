"""`POST /api/v1/datasets` with loose files (multipart, several `files`), as the web UI's Data sets tab
takes them: images with .txt/.caption captions and kohya's meta_*.json, each refused file reported."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from lorastudio.service.datasets import dataset_captions

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # `studio`, `client`: tests/conftest.py


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _captions(studio, name: str) -> dict[str, str]:
    rows = dataset_captions(studio.workspace, name)["items"]
    return {row["original"].split("/")[-1]: row["caption"] for row in rows}


def test_loose_files_become_a_data_set_with_their_captions_and_each_refusal_reported(client, studio):
    files = [
        ("files", ("blip.png", png(1), "image/png")),
        ("files", ("blip.caption", b"a photo of a cat", "text/plain")),
        ("files", ("both.png", png(2), "image/png")),
        ("files", ("both.txt", "cat, 笑顔".encode(), "text/plain")),
        ("files", ("both.caption", b"a cat sleeping", "text/plain")),
        ("files", ("tagged.png", png(3), "image/png")),
        ("files", ("meta_cap.json", json.dumps({"tagged": {"caption": "a dog", "tags": "dog"}}).encode(), "application/json")),
        ("files", ("config.json", b"{}", "application/json")),  # no kohya metadata: refused, the rest imported
        ("files", ("bad.txt", b"\xff\xfe not utf-8", "text/plain")),
        ("files", ("run.sh", b"#!/bin/sh\n", "text/plain")),
    ]
    answer = client.post("/api/v1/datasets", data={"name": "cats"}, files=files)
    assert answer.status_code == 200, answer.text
    refused = {row["source"]: row["reason"] for row in answer.json()["refused_files"]}
    assert sorted(refused) == ["bad.txt", "config.json", "run.sh"]
    assert "UTF-8" in refused["bad.txt"] and "'meta'" in refused["config.json"] and ".sh" in refused["run.sh"]
    job = studio.wait_job(answer.json()["id"], timeout=120)
    assert job.state == "succeeded", job.error
    assert _captions(studio, "cats") == {"blip.png": "a photo of a cat", "both.png": "cat, 笑顔", "tagged.png": "a dog, dog"}
    assert sorted(row["source"] for row in job.result["failed_files"]) == sorted(refused)
    assert any("had both .txt and .caption" in note for note in job.result["notes"])
    assert not list(studio.uploads_dir.iterdir())  # the uploads are used up, the refused ones never kept

    # kohya's caption_extension: only the .caption beside each image is read
    picked = [files[2], files[3], files[4]]
    answer = client.post("/api/v1/datasets", data={"name": "blips", "caption_extension": ".caption"}, files=picked)
    assert answer.status_code == 200, answer.text
    assert studio.wait_job(answer.json()["id"], timeout=120).state == "succeeded"
    assert _captions(studio, "blips") == {"both.png": "a cat sleeping"}


def test_nothing_usable_or_nothing_sent_is_refused_and_stores_nothing(client, studio):
    answer = client.post("/api/v1/datasets", data={"name": "bad"}, files=[("files", ("meta_lat.json", b"[1, 2]"))])
    assert answer.status_code == 400 and "meta_lat.json" in answer.json()["detail"]
    assert "not kohya metadata" in answer.json()["detail"]
    answer = client.post("/api/v1/datasets", data={"name": "none"})
    assert answer.status_code == 422 and "multipart `files`" in answer.json()["detail"]
    answer = client.post("/api/v1/datasets", data={"name": "../x"}, files=[("files", ("a.png", png(1)))])
    assert answer.status_code == 400 and "data-set name" in answer.json()["detail"]
    assert not list(studio.uploads_dir.iterdir()) and studio.list_jobs() == []
