"""The A1111-compatible subset (/sdapi/v1) in-process: responses shaped as A1111 clients expect."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from lorastudio.errors import InvalidRequest, LorastudioError
from lorastudio.generate.infotext import parse_infotext
from lorastudio.service.studio import Studio, StudioSettings

TINY = {"steps": 4, "width": 64, "height": 64}
INFO_KEYS = {
    "prompt",
    "all_prompts",
    "negative_prompt",
    "all_negative_prompts",
    "seed",
    "all_seeds",
    "subseed",
    "all_subseeds",
    "width",
    "height",
    "sampler_name",
    "cfg_scale",
    "steps",
    "batch_size",
    "sd_model_name",
    "sd_model_hash",
    "denoising_strength",
    "clip_skip",
    "infotexts",
    "index_of_first_image",
    "job_timestamp",
    "version",
    "styles",
    "extra_generation_params",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # `studio`, `client`: tests/conftest.py


def decode(b64: str) -> Image.Image:
    assert not b64.startswith("data:")
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def encode(image: Image.Image, prefix: bool = True, info: str | None = None) -> str:
    buffer = io.BytesIO()
    pnginfo = None
    if info is not None:
        pnginfo = PngImagePlugin.PngInfo()
        pnginfo.add_text("parameters", info)
    image.save(buffer, format="PNG", pnginfo=pnginfo)
    data = base64.b64encode(buffer.getvalue()).decode()
    return "data:image/png;base64," + data if prefix else data


def test_txt2img_answers_images_with_parameters_and_info(client):
    body = {
        **TINY,
        "prompt": "red",
        "negative_prompt": "blue",
        "seed": 1234,
        "batch_size": 2,
        "n_iter": 1,
        "sampler_name": "DPM++ 2M Karras",
        "cfg_scale": 5,
        "sampler_index": "Euler",
        "script_args": [],
        "alwayson_scripts": {},
        "some_future_field": {"x": 1},
    }
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data) == {"images", "parameters", "info"} and len(data["images"]) == 2
    assert data["parameters"]["prompt"] == "red" and data["parameters"]["seed"] == 1234
    info = json.loads(data["info"])
    assert INFO_KEYS <= set(info)
    assert info["all_seeds"] == [1234, 1235] and info["seed"] == 1234
    assert info["all_prompts"] == ["red", "red"] and info["sd_model_name"] == "tiny-sd15"
    assert info["sampler_name"] == "DPM++ 2M" and info["extra_generation_params"] == {
        "Schedule type": "Karras"
    }
    for b64, seed, text in zip(data["images"], info["all_seeds"], info["infotexts"], strict=True):
        image = decode(b64)
        params = parse_infotext(image.info["parameters"])
        assert image.format == "PNG" and image.size == (64, 64)
        assert image.info["parameters"] == text
        assert (
            params["Seed"] == str(seed)
            and params["Sampler"] == "DPM++ 2M"
            and params["Schedule type"] == "Karras"
        )
        assert params["Negative prompt"] == "blue" and params["CFG scale"] == "5.0"


def test_txt2img_random_seed_and_n_iter(client):
    data = client.post(
        "/sdapi/v1/txt2img", json={**TINY, "seed": -1, "n_iter": 2, "send_images": False}
    ).json()
    info = json.loads(data["info"])
    assert data["images"] == [] and len(info["all_seeds"]) == 2
    assert info["all_seeds"][1] == info["all_seeds"][0] + 1 and info["all_seeds"][0] >= 0


def test_img2img_accepts_data_urls_raw_base64_and_masks(client):
    red = Image.new("RGB", (64, 64), (220, 20, 20))
    for init in (encode(red, prefix=True), encode(red, prefix=False)):
        data = client.post(
            "/sdapi/v1/img2img",
            json={**TINY, "init_images": [init], "denoising_strength": 0.4, "seed": 5, "prompt": "red"},
        ).json()
        info = json.loads(data["info"])
        assert info["denoising_strength"] == 0.4 and decode(data["images"][0]).size == (64, 64)
        assert data["parameters"]["init_images"] is None
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = {
        **TINY,
        "init_images": [encode(red)],
        "mask": encode(mask.convert("RGB")),
        "mask_blur": 2,
        "inpaint_full_res": True,
        "inpaint_full_res_padding": 8,
        "inpainting_mask_invert": 1,
        "seed": 9,
        "include_init_images": True,
    }
    response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert len(data["images"]) == 2  # the result, then the init image
    params = parse_infotext(decode(data["images"][0]).info["parameters"])
    assert params["Mask blur"] == "2" and params["Inpaint area"] == "Only masked"
    assert params["Masked area padding"] == "8" and params["Mask mode"] == "Inpaint not masked"  # as A1111 1.10
    # inverted mask: the centre is kept, so it stays the init colour exactly
    out = decode(data["images"][0]).convert("RGB")
    assert out.getpixel((32, 32)) == (220, 20, 20)


def test_img2img_refuses_what_is_not_an_image(client):
    response = client.post("/sdapi/v1/img2img", json={**TINY, "init_images": ["bm90IGFuIGltYWdl"]})
    assert response.status_code == 422  # a field that is not a valid image
    assert set(response.json()) == {"error", "detail", "body", "errors"}
    assert "not a readable image" in response.json()["detail"]
    empty = client.post("/sdapi/v1/img2img", json={**TINY, "init_images": []})
    assert empty.status_code == 400
    # A1111 gives each of several images a batch slot; one request here samples one: refused, not dropped
    several = client.post("/sdapi/v1/img2img", json={**TINY, "init_images": [encode(Image.new("RGB", (64, 64)))] * 2})
    assert several.status_code == 400 and "one request per image" in several.json()["detail"]


def test_png_info_reads_parameters(client):
    text = "a cat\nNegative prompt: dog\nSteps: 12, Sampler: Euler a, CFG scale: 6, Seed: 99, Size: 64x64"
    data = client.post(
        "/sdapi/v1/png-info", json={"image": encode(Image.new("RGB", (8, 8)), info=text)}
    ).json()
    assert data["info"] == text
    assert data["parameters"]["Seed"] == "99" and data["parameters"]["Prompt"] == "a cat"
    plain = client.post("/sdapi/v1/png-info", json={"image": encode(Image.new("RGB", (8, 8)))}).json()
    assert plain == {"info": "", "items": {}, "parameters": {}}
    old_hires = "p\nSteps: 20, Size: 0x0, First pass size: 0x0"
    zero = client.post("/sdapi/v1/png-info", json={"image": encode(Image.new("RGB", (8, 8)), info=old_hires)})
    assert zero.status_code == 200 and zero.json()["parameters"]["Size-1"] == "0"


def test_options_switch_the_model_and_sd_models_lists_titles(client):
    models = client.get("/sdapi/v1/sd-models").json()
    by_name = {m["model_name"]: m for m in models}
    assert {"tiny-sd15", "tiny-sdxl"} <= set(by_name)
    xl = by_name["tiny-sdxl"]
    assert xl["title"] == f"tiny-sdxl [{xl['hash']}]" and xl["config"] is None and len(xl["sha256"]) == 64
    options = client.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"] == by_name["tiny-sd15"]["title"]
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": xl["title"]}).json() is None
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == xl["title"]
    info = json.loads(client.post("/sdapi/v1/txt2img", json={**TINY, "seed": 1}).json()["info"])
    assert info["sd_model_name"] == "tiny-sdxl" and info["sd_model_hash"] == xl["hash"]
    override = {**TINY, "override_settings": {"sd_model_checkpoint": "tiny-sd15"}}
    assert (
        json.loads(client.post("/sdapi/v1/txt2img", json=override).json()["info"])["sd_model_name"]
        == "tiny-sd15"
    )
    bad = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope.safetensors [0123456789]"})
    assert bad.status_code == 404 and "nope" in bad.json()["detail"]


@pytest.mark.slow
def test_progress_is_idle_between_jobs_and_busy_during_one(client, studio):
    idle = client.get("/sdapi/v1/progress?skip_current_image=false").json()
    assert idle["progress"] == 0.0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    seen = []
    result = {}

    def generate():
        result["response"] = client.post("/sdapi/v1/txt2img", json={**TINY, "steps": 60, "n_iter": 3})

    thread = threading.Thread(target=generate)
    thread.start()
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline:
        seen.append(client.get("/sdapi/v1/progress").json())
        time.sleep(0.05)
    thread.join()
    assert result["response"].status_code == 200
    busy = [p for p in seen if p["state"]["job_count"] > 0 and p["progress"] > 0]
    assert busy and all(0 < p["progress"] <= 1 for p in busy)
    # As A1111: steps of the batch running (60 of n_iter 3), job_no the batch (0, 1, 2)
    assert all(p["state"]["sampling_steps"] == 60 and 0 <= p["state"]["sampling_step"] <= 60 for p in busy)
    assert {p["state"]["job_no"] for p in busy} <= {0, 1, 2} and max(p["state"]["job_no"] for p in busy) >= 1
    assert client.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0


def test_interrupt_stops_the_running_generation(client, studio):
    result = {}

    def generate():
        result["response"] = client.post("/sdapi/v1/txt2img", json={**TINY, "steps": 150, "n_iter": 16})

    thread = threading.Thread(target=generate)
    thread.start()
    deadline = time.monotonic() + 60
    while client.get("/sdapi/v1/progress").json()["progress"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.post("/sdapi/v1/interrupt").json() == {}
    thread.join(30)
    assert not thread.is_alive() and result["response"].status_code == 200
    assert len(result["response"].json()["images"]) < 50
    assert studio.list_jobs()[0].state == "cancelled"
    assert client.post("/sdapi/v1/skip").json() is None


def test_lists_and_fixed_answers(client, studio):
    assert client.get("/sdapi/v1/scripts").json() == {
        "txt2img": ["x/y/z plot", "controlnet", "controlnet m2m"],
        "img2img": ["controlnet", "controlnet m2m"],
    }
    samplers = client.get("/sdapi/v1/samplers").json()
    assert {"Euler a", "DPM++ 2M", "DDIM"} <= {s["name"] for s in samplers}
    assert all(set(s) == {"name", "aliases", "options"} for s in samplers)
    assert {"automatic", "karras", "sgm_uniform"} <= {
        s["name"] for s in client.get("/sdapi/v1/schedulers").json()
    }
    assert client.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}
    assert client.get("/sdapi/v1/loras").json() == []
    header = json.dumps({"__metadata__": {"ss_output_name": "ink-v1"}}).encode()
    (studio.workspace.loras / "ink.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    loras = client.get("/sdapi/v1/loras").json()
    assert loras == [
        {
            "name": "ink",
            "alias": "ink-v1",
            "path": "loras/ink.safetensors",
            "metadata": {"ss_output_name": "ink-v1"},
        }
    ]
    assert client.post("/sdapi/v1/refresh-loras").json() is None
    assert client.post("/sdapi/v1/refresh-checkpoints").json() is None
    assert client.get("/sdapi/v1/sd-vae").json() == []
    assert client.get("/sdapi/v1/prompt-styles").json() == []
    assert "Lanczos" in {u["name"] for u in client.get("/sdapi/v1/upscalers").json()}
    assert client.get("/sdapi/v1/memory").json()["ram"]["total"] > 0
    upscaled = client.post(
        "/sdapi/v1/extra-single-image",
        json={"image": encode(Image.new("RGB", (8, 4))), "upscaling_resize": 2, "upscaler_1": "Lanczos"},
    )
    assert decode(upscaled.json()["image"]).size == (16, 8)


def test_errors_have_the_a1111_shape(client):
    bad_sampler = client.post("/sdapi/v1/txt2img", json={**TINY, "sampler_name": "Warp Drive"})
    assert bad_sampler.status_code == 400 and "unknown sampler" in bad_sampler.json()["detail"]
    bad_type = client.post("/sdapi/v1/txt2img", json={**TINY, "steps": "many"})
    assert bad_type.status_code == 422
    for tag in ("<lora:x:1:1:inf>", "<lora:x:dyn=nan>"):
        bad_tag = client.post("/sdapi/v1/txt2img", json={**TINY, "prompt": f"red {tag}"})
        assert bad_tag.status_code == 400 and tag in bad_tag.json()["detail"]
    for response in (bad_sampler, bad_type):
        assert set(response.json()) == {"error", "detail", "body", "errors"}
    assert client.get("/sdapi/v1/nothing").status_code == 404


def test_a_lora_this_studio_lacks_is_left_out_as_a1111_does_and_the_native_api_refuses_it(client, studio):
    """A1111 generates without a LoRA it cannot find ("Lora not found"): clients with a fixed prompt
    template keep working. The tag stays in the infotext's prompt, no hash is written for it."""
    answer = client.post("/sdapi/v1/txt2img", json={**TINY, "prompt": "red <lora:not-here:0.8>", "seed": 3})
    assert answer.status_code == 200, answer.text
    infotext = json.loads(answer.json()["info"])["infotexts"][0]
    assert infotext.startswith("red <lora:not-here:0.8>\n") and "Lora hashes" not in infotext
    job = studio.list_jobs(limit=1)[0]
    assert job.result["missing_loras"] == ["not-here"]
    assert any("Lora not found: not-here" in e.data.get("line", "") for e in studio.job_events(job.id))
    plain = client.post("/sdapi/v1/txt2img", json={**TINY, "prompt": "red", "seed": 3}).json()
    same = [np.asarray(decode(image)) for image in (plain["images"][0], answer.json()["images"][0])]
    assert np.array_equal(*same)  # the same picture as without the tag
    native = client.post("/api/v1/jobs/generate", json={**TINY, "prompt": "red <lora:not-here:0.8>"})
    assert native.status_code == 404 and "not-here" in native.json()["detail"]


def test_request_mapping_keeps_a1111_meanings(workspace):
    from lorastudio.api.a1111 import Img2ImgRequest, Txt2ImgRequest, to_generate_config

    studio = Studio(workspace, StudioSettings())
    try:
        # webuiapi always sends scheduler="automatic": the sampler's own suffix must survive it
        cfg = to_generate_config(
            Txt2ImgRequest(sampler_name="DPM++ 2M Karras", scheduler="automatic", width=100, height=70),
            studio,
        )
        assert (cfg.sampler, cfg.schedule, cfg.width, cfg.height) == ("DPM++ 2M", "Karras", 96, 64)
        assert to_generate_config(
            Txt2ImgRequest(sampler_name="Euler", scheduler="sgm_uniform"), studio
        ).schedule == ("SGM Uniform")
        hires = to_generate_config(
            Txt2ImgRequest(
                enable_hr=True,
                width=64,
                height=64,
                hr_resize_x=128,
                hr_resize_y=96,
                hr_second_pass_steps=3,
                denoising_strength=0.4,
                hr_upscaler="Lanczos",
            ),
            studio,
        )
        assert (hires.hires_resize_x, hires.hires_resize_y, hires.hires_scale) == (128, 96, 1.0)  # not a factor
        assert (hires.hires_steps, hires.hires_strength, hires.hires_upscaler) == (3, 0.4, "Lanczos")
        clip = to_generate_config(Txt2ImgRequest(override_settings={"CLIP_stop_at_last_layers": 2}), studio)
        assert clip.clip_skip == 2 and clip.model == "tiny-sd15" and clip.vae is None
        assert clip.pad_conds is False  # A1111's default: prompt and negative prompt in their own calls
        padded = to_generate_config(Txt2ImgRequest(override_settings={"pad_cond_uncond": True}), studio)
        assert padded.pad_conds is True
        with pytest.raises(InvalidRequest, match="pad_cond_uncond"):  # "false" would read as true
            to_generate_config(Txt2ImgRequest(override_settings={"pad_cond_uncond": "false"}), studio)
        old = to_generate_config(
            Txt2ImgRequest(override_settings={"pad_cond_uncond_v0": True, "use_old_scheduling": True}), studio
        )
        assert (old.pad_conds_v0, old.old_prompt_editing, old.pad_conds) == (True, True, False)
        with pytest.raises(InvalidRequest, match="use_old_scheduling"):
            to_generate_config(Txt2ImgRequest(override_settings={"use_old_scheduling": 1}), studio)
        img = to_generate_config(
            Img2ImgRequest(denoising_strength=0.3, inpaint_full_res=0, mask_blur=None),
            studio,
            "in.png",
            "m.png",
        )
        assert (img.init_image, img.mask, img.strength, img.inpaint_only_masked, img.mask_blur) == (
            "in.png",
            "m.png",
            0.3,
            False,
            4,
        )
        assert img.inpainting_fill == 0  # A1111's API: "fill" when a client sends no inpainting_fill
        with pytest.raises(LorastudioError, match="scheduler"):
            to_generate_config(Txt2ImgRequest(scheduler="polyexponential"), studio)
        # What A1111's API models assume when a plain client sends neither: Euler, and 0.75
        bare = to_generate_config(Txt2ImgRequest(enable_hr=True, width=64, height=64, hr_scale=2), studio)
        assert (bare.sampler, bare.schedule, bare.hires_strength) == ("Euler", "Automatic", 0.75)
    finally:
        studio.close()


def test_prompt_styles_from_the_studios_styles_csv_are_listed_and_merged_as_a1111_merges_them(client, studio):
    """A1111 users copy their styles.csv in: /prompt-styles lists it, `styles` merges each style into
    the prompts (at `{prompt}`, else after a comma), and the infotext records the merged prompts."""
    (studio.workspace.root / "styles.csv").write_text(
        "\ufeffname,prompt,negative_prompt\n"
        'Cinematic,"cinematic still of {prompt}, film grain",blurry\n'
        "Red,red theme,\n",
        encoding="utf-8",
    )
    listed = client.get("/sdapi/v1/prompt-styles").json()
    assert [s["name"] for s in listed] == ["Cinematic", "Red"] and listed[0]["negative_prompt"] == "blurry"
    answer = client.post("/sdapi/v1/txt2img", json={**TINY, "prompt": "a fox", "negative_prompt": "ugly",
                                                     "styles": ["Cinematic", "Red"]})  # fmt: skip
    assert answer.status_code == 200, answer.text
    infotext = json.loads(answer.json()["info"])["infotexts"][0]
    assert infotext.startswith("cinematic still of a fox, film grain, red theme\nNegative prompt: ugly, blurry\n")
    unknown = client.post("/sdapi/v1/txt2img", json={**TINY, "prompt": "a fox", "styles": ["Noir"]})
    assert unknown.status_code == 404 and "Cinematic, Red" in unknown.json()["detail"]

