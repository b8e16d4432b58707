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
    from lorastudio.train.unet_setup import uses_gradient_checkpointing

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert _mixed_precision("auto", "cuda", "bf16") == "bf16"
    assert _mixed_precision("auto", "cpu", "bf16") == "no"  # the CPU stays fp32
    assert _mixed_precision("fp16", "cuda", "bf16") == "fp16"  # what the user set wins
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert _mixed_precision("auto", "cuda", "bf16") == "no"  # never fp16 for Kolors
    assert _mixed_precision("auto", "cuda", "auto") == "fp16"  # SD families as before

    def checkpointing(overrides, model) -> bool:
        cfg = resolve_train_config(overrides=[f"model={model}", *overrides]).config
        trainer = Trainer(cfg, SimpleNamespace(models=ws.models, run_dir=tmp_path), "t", progress=False)
        family = trainer._peek_family()
        return uses_gradient_checkpointing(cfg, SimpleNamespace(family=family), "cuda")  # a faked GPU

    assert checkpointing([], "tiny-kolors") is True
    assert checkpointing(["train.gradient_checkpointing=false"], "tiny-kolors") is False
    assert checkpointing([], "tiny-sdxl") is False

    explained = explain_training(ws, resolve_train_config(overrides=["model=tiny-kolors"]))
    assert any("mixed_precision auto -> bf16" in line for line in explained)
    assert any("gradient_checkpointing -> true" in line for line in explained)
    sd = explain_training(ws, resolve_train_config(overrides=["model=tiny-sdxl"]))
    assert not any("on a GPU" in line for line in sd)


def _random_kolors_lora(unet, rank: int = 2, alpha: float = 1.0):
    """A lorastudio LoRA on every UNet attention projection, strong enough to change pictures."""
    import torch

    from lorastudio.adapters.lora_file import LoraFile, LoraModule

    generator = torch.Generator().manual_seed(0)
    lora = LoraFile(metadata={})
    for path, module in unet.named_modules():
        if path.endswith(("attn1.to_q", "attn2.to_k", "attn2.to_v", "attn1.to_out.0")):
            down = torch.randn(rank, module.in_features, generator=generator) * 0.5
            up = torch.randn(module.out_features, rank, generator=generator) * 0.5
            lora.add("unet", path, LoraModule(down, up, alpha, "linear"))
    return lora


def test_diffsynth_ckpt_lora_imports_to_the_same_weights_and_pictures(ws, tiny_models_dir, tmp_path):
    import torch

    from lorastudio.adapters import load_lora_file
    from lorastudio.adapters.diffsynth import diffsynth_attention_blocks, diffsynth_state_dict
    from lorastudio.adapters.kohya import save_kohya
    from lorastudio.adapters.metadata import family_from_metadata
    from lorastudio.models.checkpoint import read_safetensors_metadata
    from lorastudio.models.loading import load_model
    from lorastudio.service.loras import import_lora

    # DiffSynth-Studio's own numbering of the real Kolors UNet (diffsynth/models/sdxl_unet.py).
    real = diffsynth_attention_blocks()
    assert real[7] == "down_blocks.1.attentions.0" and real[21] == "mid_block.attentions.0"
    assert real[41] == "up_blocks.1.attentions.2" and len(real) == 11

    folder = tiny_models_dir / "tiny-kolors"
    model = load_model("tiny-kolors", tiny_models_dir, tiny_models_dir / ".cache", device="cpu")
    config = dict(model.unet.config)
    original = _random_kolors_lora(model.unet, rank=2, alpha=4.0)
    save_kohya(original, ws.loras / "hero.safetensors", {}, family="kolors", unet_config=config)
    ckpt = tmp_path / "hero_diffsynth.ckpt"
    state = diffsynth_state_dict(original, config)
    assert all(k.startswith("blocks.") and ".lora_" in k for k in state)
    assert any(".to_out.lora_A.default.weight" in k for k in state)  # DiffSynth drops to_out's ".0"
    torch.save(state, ckpt)

    info = import_lora(ws, ckpt, name="hero-ds", model=folder)  # Kolors and alpha 4.0 by default
    imported = ws.loras / "hero-ds.safetensors"
    assert info["name"] == "hero-ds"
    assert family_from_metadata(read_safetensors_metadata(imported)).name == "kolors"
    back = load_lora_file(imported).with_diffusers_unet(config)
    mine = load_lora_file(ws.loras / "hero.safetensors").with_diffusers_unet(config)
    assert set(back.modules) == set(mine.modules) == {("unet", p) for _, p in original.modules}
    for key, module in mine.modules.items():
        assert torch.equal(back.modules[key].down, module.down) and torch.equal(back.modules[key].up, module.up)
        assert back.modules[key].alpha == module.alpha == 4.0

    cache = ModelCache(ws, names=LENIENT)
    base = dict(model="tiny-kolors", steps=2, seed=1, device="cpu", width=64, height=64)
    plain = run_generation(ws, GenerateConfig(prompt="一个女孩", **base), cache=cache, names=LENIENT)
    pictures = [
        _pixels(run_generation(ws, GenerateConfig(prompt=f"一个女孩 <lora:{n}:1>", **base), cache=cache, names=LENIENT))[0]
        for n in ("hero", "hero-ds")
    ]
    assert np.array_equal(pictures[0], pictures[1])
    assert np.abs(pictures[0] - _pixels(plain)[0]).mean() > 1  # the LoRA does something

    half = import_lora(ws, ckpt, name="hero-a2", model=folder, alpha=2.0)
    assert half["name"] == "hero-a2"
    assert {m.alpha for m in load_lora_file(ws.loras / "hero-a2.safetensors").modules.values()} == {2.0}


def test_the_docs_story_file_renders_eight_pictures_and_a_contact_sheet_on_tiny_kolors(ws, tiny_models_dir):
    from pathlib import Path

    from lorastudio.adapters.kohya import save_kohya
    from lorastudio.models.loading import load_model
    from lorastudio.service.generation import run_series

    story = Path(__file__).resolve().parents[1] / "docs" / "examples" / "kolors-story.yaml"
    model = load_model("tiny-kolors", tiny_models_dir, tiny_models_dir / ".cache", device="cpu")
    lora = _random_kolors_lora(model.unet)
    save_kohya(lora, ws.loras / "kolors-cat.safetensors", {}, family="kolors", unet_config=dict(model.unet.config))
    base = dict(
        model="tiny-kolors", negative_prompt="丑陋、变形、嘈杂、模糊、低对比度", seed=0, steps=2, width=64, height=64, device="cpu"
    )
    result = run_series(ws, base, story, seed_policy="fixed", names=LENIENT)
    assert len(result.images) == 8 and {image.seed for image in result.images} == {0}
    assert result.contact_sheet.name == "contact-sheet-kolors-story.png" and result.contact_sheet.is_file()
    assert [lora["name"] for lora in result.loras] == ["kolors-cat"]
    recipes = [yaml.safe_load(image.recipe_path.read_text(encoding="utf-8"))["request"] for image in result.images]
    assert all(r["prompt"].startswith("卡通，") for r in recipes)
    assert recipes[2]["negative_prompt"].endswith("色情擦边") and recipes[0]["negative_prompt"] == base["negative_prompt"]
    assert len({image.path.read_bytes() for image in result.images}) == 8  # one seed, eight different pictures


def test_web_ui_lists_kolors_moves_its_defaults_and_generates_from_a_chinese_prompt(ws):
    from types import SimpleNamespace

    from lorastudio.service.choices import family_form_defaults, model_names
    from lorastudio.ui.generate_run import form_config

    assert "tiny-kolors" in model_names(ws)
    preferred = {"cfg_scale": 7.0, "sampler": "Euler a"}
    picked = family_form_defaults(ws, "tiny-kolors", dict(preferred), preferred)
    assert picked == {"cfg_scale": 5.0, "sampler": "Euler"}
    assert family_form_defaults(ws, "tiny-kolors", {"cfg_scale": 9.0, "sampler": "DDIM"}, preferred) == {}
    assert family_form_defaults(ws, "tiny-sd15", picked, preferred) == preferred  # back for SD models
    assert family_form_defaults(ws, "tiny-sd15", dict(preferred), preferred) == {}

    ctx = SimpleNamespace(studio=SimpleNamespace(workspace=ws))
    values = dict(
        prompt="一个红色的方块", negative_prompt="丑陋、变形", model="tiny-kolors", vae="", sampler=picked["sampler"],
        schedule="Automatic", steps=2, cfg_scale=picked["cfg_scale"], width=64, height=64, seed=4, batch_size=1,
        device="cpu",
    )
    cfg = form_config(ctx, values)
    result = run_generation(ws, cfg, names=LENIENT)
    assert len(result.images) == 1 and "一个红色的方块" in result.images[0].infotext
    assert "CFG scale: 5.0" in result.images[0].infotext


def test_cli_imports_a_diffsynth_ckpt_with_its_alpha_and_refuses_a_pickle_with_objects(ws, tiny_models_dir, tmp_path):
    import datetime

    import torch
    from typer.testing import CliRunner

    from lorastudio.adapters import load_lora_file
    from lorastudio.adapters.diffsynth import diffsynth_state_dict
    from lorastudio.cli import _register, app
    from lorastudio.models.loading import load_model

    model = load_model("tiny-kolors", tiny_models_dir, tiny_models_dir / ".cache", device="cpu")
    state = diffsynth_state_dict(_random_kolors_lora(model.unet), dict(model.unet.config))
    torch.save({"state_dict": state, "epoch": 0}, tmp_path / "epoch=0-step=500.ckpt")  # Lightning's wrapping
    _register()
    folder = str(tiny_models_dir / "tiny-kolors")
    args = ["lora", "import", str(tmp_path / "epoch=0-step=500.ckpt"), "--name", "cat", "--model", folder]
    done = CliRunner().invoke(app, [*args, "--alpha", "8", "--json"])
    assert done.exit_code == 0, done.output
    assert {m.alpha for m in load_lora_file(ws.loras / "cat.safetensors").modules.values()} == {8.0}

    torch.save({**state, "made": datetime.date(2024, 8, 8)}, tmp_path / "odd.ckpt")  # not tensors only
    refused = CliRunner().invoke(app, ["lora", "import", str(tmp_path / "odd.ckpt"), "--model", folder])
    assert refused.exit_code != 0 and "weights-only" in refused.output
    assert not (ws.loras / "odd.safetensors").exists()


def test_a_diffsynth_ckpt_imports_and_exports_without_a_model_folder_as_the_docs_say(ws, tmp_path):
    """`lora import epoch=0-step=500.ckpt --name kolors-cat` (docs/TRAINING.md) with no --model, and the
    export of that LoRA: Kolors ships no configs, so both crashed on models/configs/kolors; its UNet has
    SDXL's blocks, which is all the names need."""
    import torch
    from typer.testing import CliRunner

    from lorastudio.adapters import load_lora_file
    from lorastudio.cli import _register, app

    prefix = "blocks.7.transformer_blocks.0.attn1.to_q"  # DiffSynth's numbering of down_blocks.1.attentions.0
    state = {f"{prefix}.lora_A.default.weight": torch.randn(4, 640), f"{prefix}.lora_B.default.weight": torch.randn(640, 4)}
    torch.save(state, tmp_path / "epoch=0-step=500.ckpt")
    _register()
    done = CliRunner().invoke(app, ["lora", "import", str(tmp_path / "epoch=0-step=500.ckpt"), "--name", "kolors-cat"])
    assert done.exit_code == 0, done.output
    keys = set(load_lora_file(ws.loras / "kolors-cat.safetensors").modules)
    assert keys == {("unet", "input_blocks.4.1.transformer_blocks.0.attn1.to_q")}  # SDXL's LDM name
    exported = CliRunner().invoke(app, ["lora", "export", str(ws.loras / "kolors-cat.safetensors"), "--to", "peft",
                                        "--out", str(tmp_path / "peft")])  # fmt: skip
    assert exported.exit_code == 0, exported.output


def test_lora_import_takes_a_library_model_name_as_generate_does(ws, tiny_models_dir, tmp_path):
    """`--model tiny-kolors` (a name `generate --model` takes) answered "no unet/config.json"."""
    import torch
    from typer.testing import CliRunner

    from lorastudio.adapters.diffsynth import diffsynth_state_dict
    from lorastudio.cli import _register, app
    from lorastudio.models.loading import load_model

    model = load_model("tiny-kolors", tiny_models_dir, tiny_models_dir / ".cache", device="cpu")
    torch.save(diffsynth_state_dict(_random_kolors_lora(model.unet), dict(model.unet.config)), tmp_path / "cat.ckpt")
    _register()
    done = CliRunner().invoke(app, ["lora", "import", str(tmp_path / "cat.ckpt"), "--model", "tiny-kolors"])
    assert done.exit_code == 0, done.output
    assert (ws.loras / "cat.safetensors").is_file()


def test_an_embedding_word_in_a_kolors_prompt_is_said_to_be_a_plain_word(ws, caplog):
    """ChatGLM takes no textual-inversion vectors: the word stays a word, and the log says so (as for
    an embedding of another family), instead of nothing at all."""
    import logging

    import torch

    from lorastudio.adapters.embeddings import Embedding, save_embedding

    save_embedding(Embedding("mira", [torch.randn(1, 768)]), ws.embeddings / "mira.safetensors", "sd15")
    cfg = GenerateConfig(model="tiny-kolors", prompt="卡通，mira 一只猫", steps=1, seed=1, width=64, height=64)
    with caplog.at_level(logging.WARNING, logger="lorastudio"):
        result = run_generation(ws, cfg, names=LENIENT)
    assert len(result.images) == 1 and "TI hashes" not in result.images[0].infotext
    assert "cannot use textual-inversion embeddings; 'mira' read as plain words" in caplog.text
