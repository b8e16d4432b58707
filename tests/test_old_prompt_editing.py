"""A1111's pre-1.6 prompt-editing timelines (`old_prompt_editing`, infotext `Old prompt editing
timelines`): a `when` below 1 is a fraction, 1 or more a step, in the first pass and the hires pass."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lorastudio.generate.config import GenerateConfig
from test_generate_core import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def picture(model, prompt: str, **kw) -> np.ndarray:
    image = run(model, prompt=prompt, steps=4, seed=3, width=64, height=64, sampler="Euler", **kw)[0].image
    return np.asarray(image, dtype=np.float32)


def test_old_timelines_read_1_point_0_as_step_one(sd15):
    """Since 1.6 `[red:blue:1.0]` is the whole run (a decimal is a fraction); before, step 1."""
    old = picture(sd15, "[red:blue:1.0]", old_prompt_editing=True)
    assert np.array_equal(old, picture(sd15, "[red:blue:1]"))  # an integer is a step under both rules
    assert np.array_equal(picture(sd15, "[red:blue:1.0]"), picture(sd15, "red"))
    assert np.abs(old - picture(sd15, "red")).mean() > 0.5
    assert np.array_equal(picture(sd15, "[red:blue:0.5]", old_prompt_editing=True), picture(sd15, "[red:blue:0.5]"))


def test_old_timelines_in_the_hires_pass_follow_the_first_pass(sd15):
    """1.6+: in the hires pass a decimal counts from 1.0, so `[red:blue:0.5]` is `blue` throughout
    it; the old rule reads the first pass's timeline again (its two steps: red)."""
    hires = {"hires_scale": 1.5, "hires_steps": 4, "hires_strength": 0.6, "hires_upscaler": "Latent"}
    new = picture(sd15, "[red:blue:0.5]", **hires)
    old = picture(sd15, "[red:blue:0.5]", old_prompt_editing=True, **hires)
    assert old.shape == new.shape == (96, 96, 3)
    assert np.abs(old - new).mean() > 0.2


def test_the_infotext_records_old_timelines_and_old_webui_images_turn_them_on(tiny_workspace):
    from lorastudio.generate.a1111_fields import config_fields_from_infotext
    from lorastudio.generate.infotext import parse_infotext
    from lorastudio.service.generation import run_generation

    base = {"model": "tiny-sd15", "steps": 2, "width": 64, "height": 64}
    text = run_generation(tiny_workspace, GenerateConfig(**base, prompt="[red:blue:1.0]", old_prompt_editing=True)).images[0].infotext
    assert "Old prompt editing timelines: True" in text
    assert config_fields_from_infotext(parse_infotext(text))["old_prompt_editing"] is True
    plain = run_generation(tiny_workspace, GenerateConfig(**base, prompt="[red:blue:1.0]")).images[0].infotext
    assert "Old prompt editing" not in plain
    # As A1111: written only where the old rule gave a prompt another schedule (0.5 of 2 steps is step 1 both ways).
    same = run_generation(tiny_workspace, GenerateConfig(**base, prompt="[red:blue:0.5]", old_prompt_editing=True))
    assert "Old prompt editing" not in same.images[0].infotext
    made_by_150 = "a [cat:dog:0.5]\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Version: v1.5.0"
    assert config_fields_from_infotext(parse_infotext(made_by_150))["old_prompt_editing"] is True
    no_editing = made_by_150.replace("[cat:dog:0.5]", "cat")
    assert "old_prompt_editing" not in config_fields_from_infotext(parse_infotext(no_editing))



def test_regenerating_an_old_webuis_image_uses_its_old_behaviours(tiny_workspace, tmp_path):
    """`--recipe` of a 1.5.1 DDIM image with prompt editing: both flags on, as A1111 reads it."""
    from lorastudio.generate.image_metadata import save_png
    from lorastudio.service.generation import config_from_recipe

    text = "a [cat:dog:1.0]\nSteps: 3, Sampler: DDIM, CFG scale: 7, Seed: 5, Size: 64x64, Version: v1.5.1"
    old = save_png(Image.new("RGB", (64, 64)), tmp_path / "old.png", text)
    cfg = config_from_recipe(old, tiny_workspace, model="tiny-sd15")
    assert (cfg.pad_conds_v0, cfg.old_prompt_editing, cfg.seed) == (True, True, 5)
    newer = save_png(Image.new("RGB", (64, 64)), tmp_path / "new.png", text.replace("v1.5.1", "v1.9.4"))
    cfg = config_from_recipe(newer, tiny_workspace, model="tiny-sd15")
    assert (cfg.pad_conds_v0, cfg.old_prompt_editing) == (False, False)
