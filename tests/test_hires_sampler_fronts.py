"""The hires pass's own sampler, schedule type and prompts and the img2img noise knobs on every front:
the A1111 API's fields and override settings, the X/Y/Z axes by A1111's label (cells that differ),
the web form's pickers and PNG info's paste; A1111's `restore_faces` is said not done, once."""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.infotext import parse_infotext, read_infotext, save_png
from lorastudio.service.generation import RESTORE_FACES_NOTE

pytestmark = pytest.mark.usefixtures("one_torch_thread")
_register()
runner = CliRunner()

TINY = {"prompt": "red", "negative_prompt": "blue", "seed": 5, "steps": 2, "width": 64, "height": 64}
HIRES = {**TINY, "enable_hr": True, "hr_scale": 2, "hr_second_pass_steps": 1, "denoising_strength": 0.5}


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _answer(client, route: str, body: dict) -> tuple[dict, dict]:
    response = client.post(f"/sdapi/v1/{route}", json=body)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    return parse_infotext(info["infotexts"][0], fill_defaults=False), info


def test_the_a1111_api_takes_the_hires_fields_and_the_noise_settings(client):
    params, info = _answer(client, "txt2img", {
        **HIRES, "hr_sampler_name": "DPM++ 2M", "hr_scheduler": "karras", "hr_prompt": "red, sharp",
        "hr_negative_prompt": "", "override_settings": {"img2img_extra_noise": 0.2},
    })  # fmt: skip
    assert params["Hires sampler"] == "DPM++ 2M" and params["Hires schedule type"] == "Karras"
    assert params["Hires prompt"] == "red, sharp" and "Hires negative prompt" not in params
    assert params["Extra noise"] == "0.2" and "Noise multiplier" not in params
    assert info["extra_generation_params"]["Hires sampler"] == "DPM++ 2M" and info["notes"] == []
    same, _ = _answer(client, "txt2img", {**HIRES, "hr_sampler_name": "Use same sampler", "hr_scheduler": "Use same scheduler"})
    assert not {"Hires sampler", "Hires schedule type", "Hires prompt", "Extra noise"} & set(same)
    picture = _png(Image.new("RGB", (64, 64), "orange"))
    body = {**TINY, "init_images": [picture], "override_settings": {"initial_noise_multiplier": 0.5}}
    params, _ = _answer(client, "img2img", body)
    assert params["Noise multiplier"] == "0.5"
    bad = client.post("/sdapi/v1/img2img", json={**body, "override_settings": {"initial_noise_multiplier": 2}})
    assert bad.status_code == 422 and "initial_noise_multiplier" in bad.json()["detail"]
    unknown = client.post("/sdapi/v1/txt2img", json={**HIRES, "hr_sampler_name": "Wobble"})
    assert unknown.status_code == 400 and "hires sampler: unknown sampler 'Wobble'" in unknown.json()["detail"]
    options = client.get("/sdapi/v1/options").json()
    assert options["initial_noise_multiplier"] == 1.0 and options["img2img_extra_noise"] == 0.0


def test_restore_faces_is_said_not_done_once(client):
    """The job's notes (shown beside "Done", logged) carry it; the answer's info repeats them."""
    _, info = _answer(client, "txt2img", {**TINY, "restore_faces": True, "batch_size": 2})
    assert info["notes"] == [RESTORE_FACES_NOTE] and info["restore_faces"] is False
    _, plain = _answer(client, "txt2img", {**TINY, "restore_faces": False})
    assert plain["notes"] == []


def test_a_hires_prompt_with_other_loras_is_refused_and_styles_reach_it(tiny_workspace):
    from lorastudio.generate.prompt_parser import extract_extra_networks
    from lorastudio.service.generation import check_hires_prompt_loras
    from lorastudio.service.styles import hires_styled

    cfg = GenerateConfig(prompt="red <lora:a:0.5>", hires_scale=2, hires_prompt="red, sharp <lora:a:0.5>")
    check_hires_prompt_loras(cfg, extract_extra_networks(cfg.prompt)[1])  # the same tags: fine
    other = cfg.model_copy(update={"hires_prompt": "red <lora:a:1>"})
    with pytest.raises(LorastudioError, match="^hires prompt: its <lora:…> tags differ from the prompt's"):
        check_hires_prompt_loras(other, extract_extra_networks(other.prompt)[1])
    (tiny_workspace.root / "styles.csv").write_text('name,prompt,negative_prompt\nink,"ink wash",ugly\n', encoding="utf-8")
    fields = {"hires_prompt": "blue", "hires_negative_prompt": ""}
    assert hires_styled(tiny_workspace, fields, ["ink"]) == {"hires_prompt": "blue, ink wash", "hires_negative_prompt": ""}
    assert hires_styled(tiny_workspace, {"hires_prompt": ""}, ["ink"]) == {}  # an empty one is the styled prompt


def _grid(*args: str) -> dict:
    result = runner.invoke(app, ["grid", "--model", "tiny-sd15", "--width", "64", "--height", "64", "--prompt", "red",
                                 "--steps", "2", "--seed", "9", *args, "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _cell_pixels(out: dict) -> list[np.ndarray]:
    return [np.asarray(Image.open(cell["image"]).convert("RGB"), dtype=np.float32) for cell in out["cells"]]


@pytest.mark.slow
def test_the_axes_by_a1111s_label_make_cells_that_differ(tiny_workspace, tmp_path):
    out = _grid("--hires-scale", "2", "--hires-steps", "1", "--x", "Hires sampler=Euler a, DPM++ 2M",
                "--y", "Hires schedule type=Automatic, Karras", "--z", "Extra noise=0, 0.4")  # fmt: skip
    cells = _cell_pixels(out)
    assert len(cells) == 8
    pairs = [(0, 1), (1, 3), (0, 4)]  # X: another sampler; Y: Karras on DPM++ 2M; Z: extra noise
    assert all(np.abs(cells[a] - cells[b]).max() > 2 for a, b in pairs)
    info = parse_infotext(read_infotext(out["cells"][3]["image"]))
    assert info["Hires sampler"] == "DPM++ 2M" and info["Hires schedule type"] == "Karras"
    picture = tmp_path / "in.png"
    Image.new("RGB", (64, 64), "orange").save(picture)
    out = _grid("--init-image", str(picture), "--x", "Initial noise multiplier=0.5, 1")
    first, second = _cell_pixels(out)
    assert np.abs(first - second).max() > 2
    assert parse_infotext(read_infotext(out["cells"][0]["image"]))["Noise multiplier"] == "0.5"


def test_an_axis_no_cell_uses_is_refused(tiny_workspace):
    from lorastudio.service.grid_plan import plan_cells
    from lorastudio.service.grid_request import GridRequest

    base = GenerateConfig(prompt="red", steps=2, width=64, height=64)
    for axis, values, needs in (("Hires sampler", "Euler, DDIM", "the hires fix is off"),
                                ("Initial noise multiplier", "0.5, 1", "give an init picture"),
                                ("Extra noise", "0, 0.2", "turn the hires fix on")):  # fmt: skip
        with pytest.raises(LorastudioError, match=needs):
            plan_cells(tiny_workspace, base, GridRequest(x={"axis": axis, "values": values}))
    with pytest.raises(LorastudioError, match="unknown sampler 'Wobble'"):
        plan_cells(tiny_workspace, base.model_copy(update={"hires_scale": 2}),
                   GridRequest(x={"axis": "hires_sampler", "values": "Euler, Wobble"}))  # fmt: skip


def test_the_hires_axes_offer_the_samplers_and_schedule_types(tiny_workspace):
    from lorastudio.service.choices import axis_offers_choices, grid_axis_value_choices

    assert axis_offers_choices("Hires sampler") and axis_offers_choices("Hires schedule type")
    assert not axis_offers_choices("Extra noise")
    assert "DPM++ 2M" in grid_axis_value_choices(tiny_workspace, "Hires sampler")
    assert grid_axis_value_choices(tiny_workspace, "hr_scheduler")[:2] == ["Automatic", "Uniform"]


def test_the_form_and_png_info_paste_the_hires_pickers(tiny_workspace, tmp_path):
    from lorastudio.ui.generate_run import form_config
    from lorastudio.ui.i18n import translator
    from lorastudio.ui.tabs.generate import hires_sampler_choices, hires_schedule_choices
    from lorastudio.ui.tabs.png_info import _recipe

    zh = translator("zh")
    assert hires_sampler_choices(zh)[0] == ("使用相同采样器", "Use same sampler")
    assert hires_schedule_choices(zh)[:2] == [("使用相同调度器", "Use same scheduler"), ("自动", "Automatic")]
    ctx = SimpleNamespace(studio=SimpleNamespace(workspace=tiny_workspace, model="tiny-sd15"), t=translator("en"))
    values = {"prompt": "red", "model": "tiny-sd15", "hires_scale": 2, "hires_sampler": "Use same sampler",
              "hires_schedule": "Use same scheduler", "initial_noise_multiplier": 0.8, "extra_noise": 0.1}  # fmt: skip
    cfg = form_config(ctx, values)
    assert (cfg.hires_sampler, cfg.hires_schedule, cfg.initial_noise_multiplier, cfg.extra_noise) == (None, None, 0.8, 0.1)
    text = ("red\nSteps: 2, Sampler: Euler, Size: 64x64, Model: tiny-sd15, Denoising strength: 0.5, Hires upscale: 2, "
            'Hires sampler: DPM++ 2M Karras, Hires prompt: "red, sharp", Extra noise: 0.3, RNG: CPU')  # fmt: skip
    values, note = _recipe(ctx, str(save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png", text)))
    assert (values["hires_sampler"], values["hires_schedule"]) == ("DPM++ 2M", "Karras") and not note
    assert values["hires_prompt"] == "red, sharp" and values["extra_noise"] == 0.3
    plain = text.replace("Hires sampler: DPM++ 2M Karras, ", "")
    values, _ = _recipe(ctx, str(save_png(Image.new("RGB", (8, 8)), tmp_path / "b.png", plain)))
    assert (values["hires_sampler"], values["hires_schedule"]) == ("Use same sampler", "Use same scheduler")
    odd = text.replace("DPM++ 2M Karras", "Wobble") + ", Hires schedule type: Align Your Steps"
    values, note = _recipe(ctx, str(save_png(Image.new("RGB", (8, 8)), tmp_path / "c.png", odd)))
    assert "hires_sampler" not in values and "Hires sampler Wobble is not available here" in note
    assert "Schedule type Align Your Steps is not available here" in note
