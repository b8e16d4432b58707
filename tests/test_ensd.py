"""ENSD (A1111's `eta_noise_seed_delta`) and `old_step_noise` on every front: the CLI, the infotext and our
YAML recipe, PNG info into the web form, the A1111 API's override_settings and /options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.generate.infotext import parse_infotext, read_infotext, save_png

pytestmark = pytest.mark.usefixtures("one_torch_thread")
_register()
runner = CliRunner()


def _generate(*args: str) -> dict:
    result = runner.invoke(
        app, ["generate", "--model", "tiny-sd15", "--steps", "3", "--width", "64", "--height", "64", "--json", *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_ensd_round_trips_through_the_cli_infotext_and_recipes(tiny_workspace):
    """`--ensd 31337` changes an Euler a picture, writes `ENSD: 31337` (not for Euler, whose noise it does not
    touch) and its PNG, YAML recipe and the web form's paste bring it back."""
    from lorastudio.service.recipes import read_recipe
    from lorastudio.ui.tabs.generate import FORM_FIELDS

    made = _generate("--prompt", "red", "--seed", "4", "--sampler", "Euler a", "--ensd", "31337")
    params = parse_infotext(read_infotext(made["images"][0]))
    assert params["ENSD"] == "31337" and "Old step noise" not in params
    plain = _generate("--prompt", "red", "--seed", "4", "--sampler", "Euler a")
    assert not np.array_equal(_pixels(plain["images"][0]), _pixels(made["images"][0]))
    for source in (made["images"][0], made["recipes"][0]):
        recipe = read_recipe(source, tiny_workspace)
        assert recipe.config.ensd == 31337 and not recipe.config.old_step_noise and recipe.notes == []
    assert read_recipe(made["images"][0], tiny_workspace, form=True).config.ensd == 31337
    assert {"ensd", "old_step_noise"} <= set(FORM_FIELDS)
    again = _generate("--recipe", made["images"][0])
    assert np.array_equal(_pixels(again["images"][0]), _pixels(made["images"][0]))
    euler = _generate("--prompt", "red", "--seed", "4", "--sampler", "Euler", "--ensd", "31337")
    assert "ENSD" not in parse_infotext(read_infotext(euler["images"][0]))


def test_lorastudio_images_from_before_rng_come_back_with_their_old_step_noise(tiny_workspace, tmp_path):
    """A lorastudio image without `RNG` (and a YAML recipe without `rng`) drew its step noise from seed + 1:
    its recipe turns `old_step_noise` on, the remade image says `Old step noise: True` and reads it back;
    A1111's images and today's keep the A1111 way. DPM++ 2S a images of then get a note."""
    from lorastudio.service.recipes import read_recipe

    common = "red\nSteps: 3, Sampler: Euler a, Seed: 4, Size: 64x64, Model: tiny-sd15"
    cases = {
        "before.png": (", Version: lorastudio 0.1.0", True),
        "after.png": (", RNG: CPU, Version: lorastudio 0.1.0", False),
        "a1111.png": (", Version: v1.10.1", False),
        "flagged.png": (", RNG: CPU, Old step noise: True, Version: lorastudio 0.1.0", True),
    }
    for name, (keys, old) in cases.items():
        image = save_png(Image.new("RGB", (8, 8)), tmp_path / name, common + keys)
        assert read_recipe(image, tiny_workspace).config.old_step_noise is old, name
    remade = _generate("--recipe", str(tmp_path / "before.png"))
    assert parse_infotext(read_infotext(remade["images"][0]))["Old step noise"] == "True"
    new = _generate("--recipe", str(tmp_path / "after.png"))
    assert not np.array_equal(_pixels(remade["images"][0]), _pixels(new["images"][0]))
    assert read_recipe(remade["images"][0], tiny_workspace).config.old_step_noise
    recipe = yaml.safe_load(open(remade["recipes"][0], encoding="utf-8"))
    del recipe["request"]["rng"], recipe["request"]["old_step_noise"]  # as written before `rng`
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert read_recipe(tmp_path / "old.yaml", tiny_workspace).config.old_step_noise
    assert not read_recipe(new["recipes"][0], tiny_workspace).config.old_step_noise
    two_s = save_png(Image.new("RGB", (8, 8)), tmp_path / "2s.png", common.replace("Euler a", "DPM++ 2S a") + cases["before.png"][0])
    assert [n.key for n in read_recipe(two_s, tiny_workspace).notes] == ["noise_old_sampler"]


def test_the_a1111_api_takes_eta_noise_seed_delta(client):
    """`override_settings.eta_noise_seed_delta` and /options set ENSD (a whole number >= 0, checked); the
    infotext says it, as A1111, for a sampler it seeds."""
    body = {"prompt": "red", "steps": 2, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler a"}
    assert client.get("/sdapi/v1/options").json()["eta_noise_seed_delta"] == 0
    answer = client.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"eta_noise_seed_delta": 31337}})
    assert answer.status_code == 200, answer.text
    assert "ENSD: 31337" in json.loads(answer.json()["info"])["infotexts"][0]
    for bad in (-1, 1.5, "x"):
        refused = client.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"eta_noise_seed_delta": bad}})
        assert refused.status_code == 422 and "eta_noise_seed_delta" in refused.text, bad
    assert client.post("/sdapi/v1/options", json={"eta_noise_seed_delta": 31337}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["eta_noise_seed_delta"] == 31337
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert "ENSD: 31337" in json.loads(answer.json()["info"])["infotexts"][0]
