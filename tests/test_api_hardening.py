"""Regressions of issue 11: every malformed request gets a 4xx naming the field, never a 500.

The studio here has no worker: a request that passes validation is queued and stays
queued, so each test sees only what the API itself answers.
"""

from __future__ import annotations

import base64
import io
import json
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lorastudio.api.app import create_app
from lorastudio.service.studio import Studio, StudioSettings

TINY = {"steps": 1, "width": 64, "height": 64}


@pytest.fixture
def idle_studio(workspace):
    studio = Studio(workspace, StudioSettings(max_queued_per_user=0))
    yield studio
    studio.close()


@pytest.fixture
def client(idle_studio):
    # raise_server_exceptions=False: a 500 must show up as a status code, never be hidden by a raise
    with TestClient(create_app(idle_studio), raise_server_exceptions=False) as client:
        yield client


def png_b64(size=(8, 8), chunks: list[bytes] = ()) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, format="PNG")
    data = buffer.getvalue()
    for chunk in chunks:  # extra chunks go right after IHDR (before the pixels)
        data = data[:33] + chunk + data[33:]
    return base64.b64encode(data).decode()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")


def text_bomb() -> bytes:
    """A zTXt chunk of ~20 KB that inflates to 20 MB of text."""
    return png_chunk(b"zTXt", b"parameters\x00\x00" + zlib.compress(b"a" * 20 * 1024**2, 9))


def assert_4xx_naming(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()  # strict JSON (no NaN), the A1111 error shape
    assert set(body) == {"error", "detail", "body", "errors"}
    for word in words:
        assert word in body["detail"], (word, body["detail"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cfg_scale", 100),
        ("denoising_strength", 5),
        ("subseed_strength", 2),
        ("resize_mode", 9),
        ("mask_blur", 1000),
        ("inpainting_fill", 9),
        ("seed", 2**63),
        ("hr_scale", 1e308),
    ],
)
def test_a1111_values_outside_the_limits_answer_422_in_the_a1111_name(client, field, value):
    response = client.post("/sdapi/v1/img2img", json={**TINY, "init_images": [png_b64()], field: value})
    assert_4xx_naming(response, 422, field)


def test_clip_skip_that_is_not_a_number_answers_422(client):
    bad = {**TINY, "override_settings": {"CLIP_stop_at_last_layers": "abc"}}
    assert_4xx_naming(client.post("/sdapi/v1/txt2img", json=bad), 422, "CLIP_stop_at_last_layers")
    assert_4xx_naming(
        client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": "abc"}),
        422,
        "CLIP_stop_at_last_layers",
    )


def test_a1111_value_mapped_out_of_generate_configs_limits_names_the_a1111_field(idle_studio):
    """A value that passes the A1111 model but not GenerateConfig is reported in the A1111 name."""
    from lorastudio.api.a1111 import Txt2ImgRequest, to_generate_config
    from lorastudio.service.studio import InvalidRequest

    request = Txt2ImgRequest(**TINY, override_settings={"CLIP_stop_at_last_layers": 13})
    with pytest.raises(InvalidRequest, match="CLIP_stop_at_last_layers"):
        to_generate_config(request, idle_studio)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/sdapi/v1/txt2img", "cfg_scale"),
        ("/sdapi/v1/txt2img", "subseed_strength"),
        ("/api/v1/jobs/generate", "cfg_scale"),
        ("/api/v1/jobs/generate", "hires_scale"),
        ("/sdapi/v1/extra-single-image", "upscaling_resize"),
    ],
)
def test_nan_and_infinity_answer_422_with_strict_json(client, path, field, token):
    body = json.dumps({"image": png_b64(), **TINY, field: 1.5}).replace("1.5", token)
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert_4xx_naming(response, 422, field)


def test_nan_in_a_training_config_answers_422(client, idle_studio):
    body = '{"model": "tiny-sd15", "data": {"dir": "x"}, "train": {"learning_rate": Infinity}}'
    response = client.post("/api/v1/jobs/train", content=body, headers={"content-type": "application/json"})
    assert_4xx_naming(response, 422, "learning_rate")
    assert idle_studio.list_jobs() == []


def test_another_tools_training_keys_answer_422_with_the_clis_hint(client, idle_studio):
    """kohya's network_dim, HCP's train.train_steps, the kohya_ss GUI's lr_warmup: each error of the 422 says
    the lorastudio key to send (as `lorastudio train` does), the shape unchanged; other keys stay bare."""
    body = {"model": "m", "data": {"dir": "x"}, "network_dim": 32, "lr_warmup": 10, "train": {"train_steps": 9}, "nope": 1}
    response = client.post("/api/v1/jobs/train", json=body)
    assert_4xx_naming(response, 422, "train.train_steps", "train.steps")
    errors = {".".join(map(str, error["loc"][1:])): error for error in response.json()["errors"]}
    assert {error["type"] for error in errors.values()} == {"extra_forbidden"}
    assert errors["network_dim"]["msg"].endswith('kohya\'s network_dim is lora.rank here: {"lora": {"rank": 32}}')
    assert '{"train": {"lr_warmup_ratio": 0.1}}' in errors["lr_warmup"]["msg"]
    assert '{"train": {"steps": 9}}' in errors["train.train_steps"]["msg"]
    assert errors["nope"]["msg"] == "Extra inputs are not permitted"
    generate = client.post("/api/v1/jobs/generate", json={**TINY, "network_dim": 32})  # not a training body
    assert generate.json()["errors"][0]["msg"] == "Extra inputs are not permitted"
    assert idle_studio.list_jobs() == []


def test_a_kohya_key_inside_any_section_of_a_training_body_gets_the_hint(client, idle_studio):
    """kohya's keys are flat: `{"lora": {"network_dim": 32}}` or `{"train": {"max_train_steps": 10}}` means what
    the key means at the top; before, only the whole dotted key was looked up and these got no hint."""
    body = {"model": "m", "data": {"dir": "x", "nope": 2}, "lora": {"network_dim": 32},
            "train": {"max_train_steps": 10}, "samples": {"deep": {"unet_lr": 5e-5}}}  # fmt: skip
    response = client.post("/api/v1/jobs/train", json=body)
    errors = {".".join(map(str, error["loc"][1:])): error for error in response.json()["errors"]}
    assert response.status_code == 422 and set(errors) == {"data.nope", "lora.network_dim", "train.max_train_steps",
                                                           "samples.deep"}  # fmt: skip
    assert errors["lora.network_dim"]["msg"].endswith('kohya\'s network_dim is lora.rank here: {"lora": {"rank": 32}}')
    assert errors["train.max_train_steps"]["msg"].endswith('max_train_steps is train.steps here: {"train": {"steps": 10}}')
    assert '{"train": {"learning_rate": 5e-05}}' in errors["samples.deep"]["msg"]
    assert errors["data.nope"]["msg"] == "Extra inputs are not permitted"
    # a section of ours refused as a whole holds our own keys: no kohya hint for train.lr_warmup_steps there
    both = {"model": "m", "data": {"dir": "x"}, "train": {"lr_warmup_ratio": 0.2, "lr_warmup_steps": 5}}
    (error,) = client.post("/api/v1/jobs/train", json=both).json()["errors"]
    assert "both set the warm-up" in error["msg"] and "kohya" not in error["msg"]
    assert idle_studio.list_jobs() == []


def test_extra_single_image_refuses_huge_scales(client):
    response = client.post(
        "/sdapi/v1/extra-single-image", json={"image": png_b64(), "upscaling_resize": 1e308}
    )
    assert_4xx_naming(response, 422, "upscaling_resize")


def test_priority_out_of_range_answers_422(client, idle_studio):
    response = client.post("/api/v1/jobs/generate", params={"priority": 10**30}, json=TINY)
    assert_4xx_naming(response, 422, "priority")
    with pytest.raises(Exception, match="priority"):
        idle_studio.submit("generate", {}, priority=2**63)
    assert idle_studio.list_jobs() == []


def test_event_cursor_out_of_range_answers_422_before_the_stream(client):
    job = client.post("/api/v1/jobs/generate", json=TINY).json()["id"]
    assert_4xx_naming(client.get(f"/api/v1/jobs/{job}/events", params={"after": 10**30}), 422, "after")
    response = client.get(f"/api/v1/jobs/{job}/events", headers={"Last-Event-ID": str(10**30)})
    assert_4xx_naming(response, 422, "Last-Event-ID")
    ok = client.get(f"/api/v1/jobs/{job}/events", params={"follow": False}, headers={"Last-Event-ID": "0"})
    assert ok.status_code == 200 and "event: end" in ok.text


def test_seed_past_the_a1111_range_answers_422(client, idle_studio):
    assert_4xx_naming(client.post("/sdapi/v1/txt2img", json={**TINY, "seed": 2**32}), 422, "seed")
    assert_4xx_naming(client.post("/sdapi/v1/txt2img", json={**TINY, "subseed": 2**63}), 422, "subseed")
    assert_4xx_naming(client.post("/api/v1/jobs/generate", json={**TINY, "seed": 2**63}), 422, "seed")
    assert_4xx_naming(client.post("/api/v1/jobs/generate", json={**TINY, "subseed": 2**32}), 422, "subseed")
    assert client.post("/api/v1/jobs/generate", json={**TINY, "seed": 2**32 - 1}).status_code == 200
    assert len(idle_studio.list_jobs()) == 1


@pytest.mark.parametrize("device", ["meta", "cuda:7", "cpu"])
def test_clients_do_not_choose_the_device(client, idle_studio, device):
    response = client.post("/api/v1/jobs/generate", json={**TINY, "device": device})
    assert_4xx_naming(response, 422, "device", "--device")
    assert idle_studio.list_jobs() == []


def test_the_servers_own_device_is_accepted(workspace):
    studio = Studio(workspace, StudioSettings(device="cpu"))
    try:
        with TestClient(create_app(studio)) as client:
            job = client.post("/api/v1/jobs/generate", json={**TINY, "device": "cpu"}).json()
        assert job["payload"]["config"]["device"] == "cpu"
    finally:
        studio.close()


def test_png_text_bomb_answers_422_everywhere(client, idle_studio):
    bomb = png_b64(chunks=[text_bomb()])
    assert len(bomb) < 40_000
    assert_4xx_naming(client.post("/sdapi/v1/png-info", json={"image": bomb}), 422, "image")
    response = client.post("/sdapi/v1/img2img", json={**TINY, "init_images": [bomb]})
    assert_4xx_naming(response, 422, "init_images[0]")
    response = client.post(
        "/api/v1/jobs/generate", json={**TINY, "init_image": "data:image/png;base64," + bomb}
    )
    assert_4xx_naming(response, 422, "init_image")
    response = client.post(
        "/api/v1/uploads", files={"file": ("bomb.png", base64.b64decode(bomb), "image/png")}
    )
    assert_4xx_naming(response, 422, "bomb.png")
    assert not [p for p in idle_studio.uploads_dir.iterdir()]  # nothing of them was kept
    # an ordinary text chunk still reads
    fine = png_b64(chunks=[png_chunk(b"tEXt", b"parameters\x00a cat\nSteps: 3")])
    assert client.post("/sdapi/v1/png-info", json={"image": fine}).json()["info"].startswith("a cat")


def test_too_many_pixels_answer_422_before_decoding(client):
    header = png_chunk(b"IHDR", (10000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00")
    data = b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IEND", b"")
    response = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(data).decode()})
    assert_4xx_naming(response, 422, "10000x10000", "megapixels")


def test_validation_errors_do_not_echo_megabytes(client):
    response = client.post("/api/v1/jobs/generate", json={**TINY, "steps": "x" * 100_000})
    assert response.status_code == 422 and len(response.content) < 5_000
