"""The hires fix with every A1111 upscaler name, through the A1111 API and the `webuiapi` client."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from PIL import Image

from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.upscalers.names import FIXED_UPSCALERS, LATENT_UPSCALE_MODES
from upscaler_files import compact_state, rrdbnet_state, save

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HIRES = {"prompt": "red", "seed": 7, "steps": 2, "width": 64, "height": 64, "hr_scale": 2, "hr_second_pass_steps": 1}


@pytest.fixture
def upscaler_files(studio):
    folder = studio.workspace.upscalers
    save(rrdbnet_state(4, seed=5), folder / "RealESRGAN_x4plus.pth")
    save(compact_state(2, seed=6), folder / "2x-Compact.safetensors")
    return folder


@pytest.fixture
def webui(client, upscaler_files):
    """The webuiapi client, talking to the in-process app (its session is the TestClient)."""
    import webuiapi

    with socket.socket() as sock:  # a closed port: the client's extension probe fails fast, offline
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port)
    api.session = client
    api.baseurl = "http://testserver/sdapi/v1"
    return api


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def test_config_takes_every_fixed_name_in_any_case_and_model_names_as_written():
    for name in FIXED_UPSCALERS:
        assert GenerateConfig(hires_upscaler=name.upper()).hires_upscaler == name
    assert GenerateConfig(hires_upscaler=" R-ESRGAN 4x+ ").hires_upscaler == "R-ESRGAN 4x+"
    with pytest.raises(ValueError, match="choose an upscaler"):
        GenerateConfig(hires_upscaler="  ")


def test_latent_modes_interpolate_with_a1111s_mode_and_antialias():
    from lorastudio.generate.hires import _upscale_latents

    latents = torch.randn(1, 4, 8, 8)
    for name, (mode, antialias) in LATENT_UPSCALE_MODES.items():
        expected = torch.nn.functional.interpolate(latents, size=(16, 16), mode=mode, antialias=antialias)
        assert torch.equal(_upscale_latents(latents, name, (128, 128), 8), expected)
    # bilinear, bicubic and nearest differ (antialias only acts when shrinking, as in A1111)
    outs = {name: _upscale_latents(latents, name, (96, 96), 8) for name in LATENT_UPSCALE_MODES}
    assert not torch.equal(outs["Latent"], outs["Latent (bicubic)"])
    assert not torch.equal(outs["Latent"], outs["Latent (nearest)"])
    assert not torch.equal(outs["Latent (nearest)"], outs["Latent (nearest-exact)"])  # 1.5x: the rounding differs


def test_every_hires_upscaler_through_webuiapi(webui):
    names = [row["name"] for row in webui.get_latent_upscale_modes()]
    assert names == list(LATENT_UPSCALE_MODES)
    listed = {row["name"]: row for row in webui.get_upscalers()}
    assert {"None", "Lanczos", "Nearest", "R-ESRGAN 4x+", "2x-Compact"} <= set(listed)
    assert listed["R-ESRGAN 4x+"]["scale"] == 4 and listed["2x-Compact"]["scale"] == 2
    assert listed["R-ESRGAN 4x+"]["model_name"] == "RealESRGAN_x4plus"
    assert [row["name"] for row in webui.get_realesrgan_models()] == ["R-ESRGAN 4x+"]
    results = {}
    for name in [*names, "None", "Lanczos", "Nearest", "R-ESRGAN 4x+", "realesrgan_x4plus", "2x-Compact"]:
        result = webui.txt2img(enable_hr=True, hr_upscaler=name, denoising_strength=0.3, **HIRES)
        assert result.image.size == (128, 128), name
        written = result.info["infotexts"][0]
        expected = "R-ESRGAN 4x+" if name == "realesrgan_x4plus" else name
        assert f"Hires upscaler: {expected}," in written, written
        results[name] = _pixels(result.image)
    # the model upscaler changes the result against Lanczos; the stem names the same model as the title
    assert np.abs(results["R-ESRGAN 4x+"] - results["Lanczos"]).mean() > 1.0
    assert np.array_equal(results["R-ESRGAN 4x+"], results["realesrgan_x4plus"])
    assert np.array_equal(results["None"], results["Lanczos"])  # A1111: None resizes with Lanczos
    assert np.abs(results["Nearest"] - results["Lanczos"]).mean() > 0
    assert np.abs(results["Latent (bicubic)"] - results["Latent"]).mean() > 0


def test_a_model_upscaler_in_the_hires_fix_changes_the_result(client, upscaler_files):
    from test_api_a1111 import decode

    def hires(upscaler: str) -> np.ndarray:
        body = {**HIRES, "enable_hr": True, "hr_upscaler": upscaler, "denoising_strength": 0.3}
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        return _pixels(decode(response.json()["images"][0]))

    assert np.abs(hires("R-ESRGAN 4x+") - hires("Lanczos")).mean() > 1.0


def test_unknown_hires_upscaler_is_a_422_listing_the_names(client, upscaler_files):
    body = {**HIRES, "enable_hr": True, "hr_upscaler": "ESRGAN_4x"}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'ESRGAN_4x'" in detail and "Latent (nearest-exact)" in detail and "R-ESRGAN 4x+" in detail
    assert "2x-Compact" in detail
    off = client.post("/sdapi/v1/txt2img", json={**body, "enable_hr": False})
    assert off.status_code == 200  # without hires the name is never used


def test_a_broken_upscaler_file_is_refused_naming_it(client, upscaler_files):
    (upscaler_files / "4x-Broken.pth").write_bytes(b"garbage")
    listed = {row["name"] for row in client.get("/sdapi/v1/upscalers").json()}
    assert "4x-Broken" in listed  # A1111 lists every file
    response = client.post("/sdapi/v1/txt2img", json={**HIRES, "enable_hr": True, "hr_upscaler": "4x-Broken"})
    assert response.status_code == 422 and "4x-Broken.pth: cannot be read" in response.json()["detail"]


def test_cli_generate_takes_a_model_upscaler_for_the_hires_fix(tiny_workspace, tmp_path):
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    save(compact_state(2, seed=6), tiny_workspace.upscalers / "2x-Compact.safetensors")
    _register()
    args = ["generate", "--prompt", "red", "--steps", "2", "--width", "64", "--height", "64", "--seed", "3",
            "--hires-scale", "1.5", "--hires-steps", "1", "--out", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--hires-upscaler", "2x-compact"])
    assert result.exit_code == 0, result.output
    png = next((tmp_path / "out").glob("*.png"))
    assert Image.open(png).size == (96, 96)
    assert "Hires upscaler: 2x-compact" in Image.open(png).text["parameters"]
    bad = CliRunner().invoke(app, [*args, "--hires-upscaler", "nope"])
    assert bad.exit_code == 2 and "upscaler 'nope': not found" in bad.output and "2x-Compact" in bad.output


def test_a_model_upscaler_in_the_hires_fix_stops_at_the_next_tile(sd15, tmp_path):
    from lorastudio.generate import pipeline
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.upscalers.model import load_model_upscaler

    model = load_model_upscaler(save(compact_state(2, seed=6), tmp_path / "2x.pth"))
    tiles: list[int] = []

    class SmallTiles:  # the loaded upscaler, run in 16 px tiles that are counted
        def upscale_to(self, image, size, should_stop=None):
            return model.upscale_to(image, size, tile=16, overlap=4, should_stop=should_stop,
                                    progress=lambda done, total: tiles.append(done))  # fmt: skip

    cfg = GenerateConfig(prompt="red", steps=2, width=64, height=64, seed=1, hires_scale=2.0, hires_steps=1,
                         hires_upscaler="2x-Compact")  # fmt: skip
    plan = pipeline.build_plan(cfg, sd15, cfg.prompt, cfg.negative_prompt)
    with pytest.raises(Exception, match="2x-Compact.*loaded by the service"):
        pipeline.generate_images(sd15, cfg, plan, PromptEncoder(sd15))
    plan.hires_upscaler = SmallTiles()
    assert len(pipeline.generate_images(sd15, cfg, plan, PromptEncoder(sd15))) == 1
    assert len(tiles) == 25  # 64 px in 16 px tiles, stride 12: 5 x 5
    tiles.clear()
    stopped = pipeline.generate_images(sd15, cfg, plan, PromptEncoder(sd15), should_stop=lambda: len(tiles) >= 3)
    # As A1111 (its hires pass returns the first pass's samples when interrupted): the first pass, decoded
    assert [i.image.size for i in stopped] == [(64, 64)] and len(tiles) == 3


def test_hires_resize_to_a_size_crops_as_a1111_and_the_recipe_brings_it_back(client, studio, tmp_path):
    """`hr_resize_x/y` 128x96 from 64x64: upscaled to cover (128x128), the latents cut to 128x96
    centred, `Hires resize: 128x96` written (not a factor); one side alone keeps the aspect ratio.
    The PNG regenerates the same picture."""
    from lorastudio.generate.config import hires_final_size, hires_target
    from lorastudio.generate.infotext import read_infotext
    from lorastudio.service.generation import run_generation
    from lorastudio.service.recipes import config_from_recipe
    from test_api_a1111 import decode

    cfg = GenerateConfig(width=64, height=64, hires_resize_x=128, hires_resize_y=96)
    assert hires_target(cfg, 64, 64) == ((128, 128), (0, 4)) and hires_final_size(cfg, 64, 64) == (128, 96)
    wide = cfg.model_copy(update={"hires_resize_x": 96, "hires_resize_y": 160})  # taller than wide: by height
    assert hires_target(wide, 64, 64) == ((160, 160), (8, 0)) and hires_final_size(wide, 64, 64) == (96, 160)
    assert hires_final_size(cfg.model_copy(update={"hires_resize_y": 0, "hires_resize_x": 100}), 64, 48) == (96, 72)
    from lorastudio.errors import LorastudioError

    with pytest.raises(ValueError, match="at least 64"):
        GenerateConfig(hires_resize_x=4)  # 1-63 made a 0x0 second pass (a 500)
    with pytest.raises(LorastudioError, match="64x8 image"):
        hires_target(GenerateConfig(hires_resize_x=64), 512, 64)

    body = {**HIRES, "enable_hr": True, "hr_scale": 2, "hr_resize_x": 128, "hr_resize_y": 96, "hr_upscaler": "Latent"}
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    image = decode(answer.json()["images"][0])
    infotext = read_infotext_of(answer)
    assert image.size == (128, 96)
    assert "Hires resize: 128x96" in infotext and "Hires upscale:" not in infotext
    assert client.post("/sdapi/v1/txt2img", json={**body, "hr_resize_x": 4}).status_code == 422
    one_side = client.post("/sdapi/v1/txt2img", json={**body, "hr_resize_y": 0, "hr_resize_x": 100})
    assert decode(one_side.json()["images"][0]).size == (96, 96) and "Hires resize: 100x0" in read_infotext_of(one_side)

    png = tmp_path / "resized.png"
    image.save(png, pnginfo=_png_info(infotext))
    again = run_generation(studio.workspace, config_from_recipe(png, studio.workspace)).images[0]
    assert read_infotext(again.path) == infotext
    assert np.array_equal(_pixels(Image.open(again.path)), _pixels(image))


def read_infotext_of(answer) -> str:
    import json

    return json.loads(answer.json()["info"])["infotexts"][0]


def _png_info(text: str):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    return info
