"""The portrait routes over HTTP: EasyPhoto's `/easyphoto/easyphoto_train_forward` and
`/easyphoto/easyphoto_infer_forward`, the native portrait-make job, people and templates.

Real dlib on the public-domain photos of tests/fixtures/faces, tiny-sd15, a couple of steps.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from test_portrait_make import lora_files, real_faces  # noqa: F401 (fixtures)

FACES = Path(__file__).parent / "fixtures" / "faces"

pytestmark = pytest.mark.skipif(not (FACES / "astronaut.jpg").is_file(), reason="tests/fixtures/faces missing")


def _b64(image: Image.Image, fmt: str = "PNG", **save) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _image(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=np.float32)


def _photo(name: str) -> Image.Image:
    return Image.open(FACES / name).convert("RGB")


def _astronaut_set() -> list[str]:
    """Four usable photos of one person (face 136 px) and Grace Hopper, the outlier."""
    big = _photo("astronaut.jpg").resize((800, 800))  # a 136 px face
    return [
        _b64(big, "JPEG", quality=90),
        _b64(ImageOps.mirror(big), "JPEG", quality=90),
        _b64(big, "JPEG", quality=30),
        _b64(big.crop((30, 0, 770, 740)), "JPEG", quality=90),
        _b64(_photo("grace_hopper.jpg")),
    ]


TINY_TRAIN = {"sd_model_checkpoint": "tiny-sd15", "resolution": 64, "max_train_steps": 2,
              "val_and_checkpointing_steps": 2, "rank": 4, "steps_per_photos": 200}  # fmt: skip


@pytest.fixture
def dlib_ready():
    pytest.importorskip("dlib")


def test_native_portrait_make_job_and_the_template_library(client, studio, real_faces, one_torch_thread):  # noqa: F811
    astronaut = _photo("astronaut.jpg")
    added = client.post("/api/v1/templates/base64", json={"image": _b64(astronaut), "name": "collins"})
    assert added.status_code == 200, added.text
    assert added.json() == {"name": "collins", "file": "collins.png", "faces": 1}
    with (FACES / "grace_hopper.jpg").open("rb") as photo:
        uploaded = client.post("/api/v1/templates", files={"file": ("hopper.jpg", photo, "image/jpeg")})
    assert uploaded.status_code == 200 and uploaded.json()["name"] == "hopper"
    rows = client.get("/api/v1/templates").json()["templates"]
    assert [(r["name"], r["faces"]) for r in rows] == [("collins", 1), ("hopper", 1)]
    assert all("path" not in r for r in rows)

    job = client.post(
        "/api/v1/jobs/portrait-make",
        json={"persons": ["grace"], "templates": ["collins", _b64(astronaut.crop((0, 0, 400, 400)))],
              "steps": 1, "seed": 4, "second_strength": 0},  # fmt: skip
    )
    assert job.status_code == 200, job.text
    queued = job.json()
    assert queued["kind"] == "portrait-make"
    assert queued["payload"]["config"]["templates"][0] == "collins"
    assert queued["payload"]["config"]["templates"][1].startswith("upload-")  # an inline image joined the library
    done = studio.wait_job(queued["id"], timeout=120)
    assert done.state == "succeeded", done.error
    assert sorted(done.result["templates"]) == sorted(queued["payload"]["config"]["templates"])
    assert all(isinstance(s, float) for s in done.result["scores"])
    artifacts = {a["name"] for a in client.get(f"/api/v1/jobs/{queued['id']}/artifacts").json()["artifacts"]}
    assert set(done.result["images"]) <= artifacts

    assert client.delete("/api/v1/templates/hopper").json() == {"deleted": "hopper"}
    assert client.delete("/api/v1/templates/hopper").status_code == 404
    assert client.delete("/api/v1/templates/..%2F..%2Fportraits%2Fgrace.json").status_code == 404
    assert (studio.workspace.root / "portraits" / "grace.json").is_file()


def test_interrupt_stops_a_portrait_make_and_skip_leaves_it_alone(client, studio, real_faces):  # noqa: F811
    import time

    job = client.post(
        "/api/v1/jobs/portrait-make",
        json={"persons": ["grace"], "templates": [_b64(_photo("astronaut.jpg"))], "steps": 500, "count": 3, "seed": 1},
    ).json()
    deadline = time.monotonic() + 60
    while not any(e.type == "progress" for e in studio.job_events(job["id"])):
        assert time.monotonic() < deadline, "the portrait job never started sampling"
        time.sleep(0.05)
    client.post("/sdapi/v1/skip")
    assert studio.get_job(job["id"]).state == "running"  # /skip drops batches of generations only
    assert client.post("/sdapi/v1/interrupt").status_code == 200
    done = studio.wait_job(job["id"], timeout=60)
    assert done.state == "cancelled" and done.progress < 0.5


def test_bad_portrait_requests_are_422s_naming_the_field(client, studio, real_faces):  # noqa: F811
    ws = studio.workspace
    grey = _b64(Image.new("RGB", (256, 256), (128, 128, 128)))
    face = _b64(_photo("astronaut.jpg"))
    infer = {"user_ids": "grace", "selected_template_images": [face], "first_diffusion_steps": 1}

    unknown = client.post("/easyphoto/easyphoto_infer_forward", json={**infer, "user_ids": ["nobody"]})
    assert unknown.status_code == 422
    assert "user_ids" in unknown.text and "'nobody'" in unknown.text and "eileen, grace" in unknown.text

    faceless = client.post("/easyphoto/easyphoto_infer_forward", json={**infer, "selected_template_images": [grey]})
    assert faceless.status_code == 422 and "selected_template_images[0]: no face found" in faceless.text
    assert client.get("/api/v1/templates").json()["templates"] == []  # nothing kept of it

    no_face = client.post("/api/v1/templates/base64", json={"image": grey})
    assert no_face.status_code == 422 and "image: no face found" in no_face.text

    model = client.post("/easyphoto/easyphoto_infer_forward", json={**infer, "sd_model_checkpoint": "chilloutmix.safetensors"})
    assert model.status_code == 422 and "sd_model_checkpoint" in model.text and "tiny-sd15" in model.text

    native = client.post("/api/v1/jobs/portrait-make", json={"persons": ["nobody"], "templates": ["x"]})
    assert native.status_code == 422 and "persons: 'nobody'" in native.text

    broken = client.post("/easyphoto/easyphoto_train_forward", json={"user_id": "x", "instance_images": [face, "%%%"]})
    assert broken.status_code == 422 and "instance_images[1]" in broken.text
    escape = client.post("/easyphoto/easyphoto_train_forward", json={"user_id": "../x", "instance_images": [face]})
    assert escape.status_code == 422 and escape.json()["detail"].startswith("user_id: ")
    empty = client.post("/easyphoto/easyphoto_train_forward", json={"user_id": "x", "instance_images": []})
    assert empty.status_code == 422 and "instance_images" in empty.text

    # photos without a usable face: the job refuses them before training, every photo named with its reason
    small = _b64(_photo("astronaut.jpg").resize((256, 256)))  # a 43 px face
    refused = client.post(
        "/easyphoto/easyphoto_train_forward",
        json={"user_id": "sam", "instance_images": [_astronaut_set()[0], grey, small, grey], **TINY_TRAIN},
    )
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert detail.startswith("instance_images: 1 of 4 photos usable")
    assert "photo-02.png: no face found" in detail and "photo-03.png: face is 43 px, under 128 px" in detail and "need at least 4" in detail
    assert not (ws.loras / "sam.safetensors").exists() and not any((ws.cache / "uploads").iterdir())


def test_easyphoto_trains_a_person_from_base64_photos_and_paints_them_into_a_template(
    client, studio, dlib_ready, one_torch_thread
):
    trained = client.post(
        "/easyphoto/easyphoto_train_forward",
        json={"user_id": "eileen", "instance_images": _astronaut_set(), **TINY_TRAIN,
              "learning_rate": 1e-4, "dataloader_num_workers": 16, "enable_rl": False},  # fmt: skip
    )
    assert trained.status_code == 200, trained.text
    body = trained.json()
    assert body["message"] == "The training has been completed." and body["lora"] == "eileen.safetensors"
    assert sorted(body["kept"]) == ["photo-01.png", "photo-02.png", "photo-03.png", "photo-04.png"]
    assert list(body["left_out"]) == ["photo-05.png"]  # Grace Hopper: not the same person
    job = studio.get_job(body["job"])
    assert job.payload["config"]["steps"] == 2 and job.payload["config"]["rank"] == 4  # min(5 x 200, 2)
    people = client.get("/api/v1/portraits").json()["people"]
    assert people == [{"name": "eileen", "trigger": "eileen", "lora": "loras/eileen.safetensors", "photos": 4}]

    template = _photo("grace_hopper.jpg")
    made = client.post(
        "/easyphoto/easyphoto_infer_forward",
        json={"user_ids": ["eileen"], "sd_model_checkpoint": "tiny-sd15.safetensors",
              "selected_template_images": [_b64(template)], "first_diffusion_steps": 2, "seed": 3,
              "second_denoising_strength": 0.2, "display_score": True, "super_resolution": True,
              "tabs": 1},  # fmt: skip
    )
    assert made.status_code == 200, made.text
    out = made.json()
    assert out["message"] == "Success" and len(out["outputs"]) == 1
    after, before = _image(out["outputs"][0]), np.asarray(template, dtype=np.float32)
    assert after.shape == before.shape
    assert np.abs(after - before)[220:300, 220:300].mean() > 3  # her face repainted
    assert np.abs(after - before)[:20, :20].max() <= 1  # a far corner untouched
    assert out["face_id_outputs"][0][0] == out["outputs"][0] and float(out["face_id_outputs"][0][1]) == pytest.approx(
        out["scores"][0], abs=0.01
    )
    # the template went into the library under its content hash; the same image again reuses it
    names = [row["name"] for row in client.get("/api/v1/templates").json()["templates"]]
    assert len(names) == 1 and names[0].startswith("upload-")


def test_the_easyphoto_routes_are_behind_the_same_authentication(tiny_workspace):
    from fastapi.testclient import TestClient

    from lorastudio.api.app import create_app
    from lorastudio.api.security import parse_tokens
    from lorastudio.service.studio import Studio, StudioSettings

    with Studio(tiny_workspace, StudioSettings()) as studio:  # not started: nothing runs
        client = TestClient(create_app(studio, tokens=parse_tokens(["alice:alice-secret-1"])))
        body = {"user_ids": "nobody", "selected_template_images": ["x"]}
        assert client.post("/easyphoto/easyphoto_infer_forward", json=body).status_code == 401
        assert client.post("/easyphoto/easyphoto_train_forward", json={"user_id": "x"}).status_code == 401
        assert client.get("/api/v1/templates").status_code == 401
        signed = client.post(
            "/easyphoto/easyphoto_infer_forward", json=body, headers={"Authorization": "Bearer alice-secret-1"}
        )
        assert signed.status_code == 422 and "user_ids" in signed.text
