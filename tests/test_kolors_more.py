"""Kolors, continued: family defaults applied, training defaults, DiffSynth import, the story, the UI."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from lorastudio.generate.config import GenerateConfig
from lorastudio.service.generation import run_generation, with_family_defaults
from lorastudio.service.model_cache import ModelCache
from lorastudio.service.names import LENIENT


@pytest.fixture
def ws(tiny_workspace, one_torch_thread):
    return tiny_workspace


def _pixels(result):
    return [np.asarray(Image.open(i.path).convert("RGB"), dtype=np.int16) for i in result.images]


def test_family_defaults_fill_only_what_the_request_left_out():
    from lorastudio.models.families import FAMILIES

    kolors, sd15 = FAMILIES["kolors"], FAMILIES["sd15"]
    unset = GenerateConfig(prompt="x")
    filled = with_family_defaults(unset, kolors)
    assert (filled.cfg_scale, filled.sampler) == (5.0, "Euler")
    given = GenerateConfig(prompt="x", cfg_scale=7.0, sampler="Euler a")
    assert with_family_defaults(given, kolors) is given  # what the user asked for stays
    assert with_family_defaults(unset, sd15) is unset  # SD's defaults are GenerateConfig's own


def test_kolors_request_without_cfg_uses_kolors_guidance_and_the_recipe_reproduces_it(ws):
    from lorastudio.service.generation import config_from_recipe

    cache = ModelCache(ws, names=LENIENT)
    base = dict(model="tiny-kolors", prompt="一个红色的方块", steps=4, seed=3, device="cpu", width=64, height=64)
    implicit = run_generation(ws, GenerateConfig(**base), cache=cache, names=LENIENT)
    explicit = run_generation(
        ws, GenerateConfig(**base, cfg_scale=5.0, sampler="Euler"), cache=cache, names=LENIENT
    )
    assert "CFG scale: 5.0" in implicit.images[0].infotext and "Sampler: Euler," in implicit.images[0].infotext
    assert np.array_equal(_pixels(implicit)[0], _pixels(explicit)[0])
    recipe = yaml.safe_load(implicit.images[0].recipe_path.read_text(encoding="utf-8"))
    assert recipe["request"]["cfg_scale"] == 5.0 and recipe["request"]["sampler"] == "Euler"
    again = run_generation(
        ws, config_from_recipe(implicit.images[0].recipe_path, ws), cache=cache, names=LENIENT
    )
    assert np.array_equal(_pixels(again)[0], _pixels(implicit)[0])
