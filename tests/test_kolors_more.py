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


def test_kolors_trains_in_bf16_with_gradient_checkpointing_on_a_gpu_unless_the_config_says_otherwise(
    ws, monkeypatch, tmp_path
):
    from types import SimpleNamespace

    import torch

    from lorastudio.service.training import explain_training
    from lorastudio.train.config import resolve_train_config
    from lorastudio.train.precision import mixed_precision_for as _mixed_precision
    from lorastudio.train.trainer import Trainer

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert _mixed_precision("auto", "cuda", "bf16") == "bf16"
    assert _mixed_precision("auto", "cpu", "bf16") == "no"  # the CPU stays fp32
    assert _mixed_precision("fp16", "cuda", "bf16") == "fp16"  # what the user set wins
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert _mixed_precision("auto", "cuda", "bf16") == "no"  # never fp16 for Kolors
    assert _mixed_precision("auto", "cuda", "auto") == "fp16"  # SD families as before

    def trainer_for(overrides, model):
        cfg = resolve_train_config(overrides=[f"model={model}", *overrides]).config
        paths = SimpleNamespace(models=ws.models, run_dir=tmp_path)
        trainer = Trainer(cfg, paths, "t", progress=False)
        trainer.accelerator = SimpleNamespace(device=torch.device("cuda"))  # a faked GPU
        trainer.model = SimpleNamespace(family=trainer._peek_family())
        return trainer

    assert trainer_for([], "tiny-kolors")._peek_family().name == "kolors"
    assert trainer_for([], "tiny-kolors")._gradient_checkpointing() is True
    assert trainer_for(["train.gradient_checkpointing=false"], "tiny-kolors")._gradient_checkpointing() is False
    assert trainer_for([], "tiny-sdxl")._gradient_checkpointing() is False

    explained = explain_training(ws, resolve_train_config(overrides=["model=tiny-kolors"]))
    assert any("mixed_precision auto -> bf16" in line for line in explained)
    assert any("gradient_checkpointing -> true" in line for line in explained)
    sd = explain_training(ws, resolve_train_config(overrides=["model=tiny-sdxl"]))
    assert not any("on a GPU" in line for line in sd)
