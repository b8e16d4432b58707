"""SD 2.x end to end on `tiny-sd2`: detection, generation, LoRA training, single-file round trip.

tiny-sd2 has SD2's layout differences from SD1 (OpenCLIP-style text encoder with exact GELU
and "!" padding, linear transformer projections, heads per block, v-prediction), so these
tests catch code that silently assumes SD 1.x.
"""

from __future__ import annotations

import json
import shutil
from importlib.resources import files

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from lorastudio.generate.config import GenerateConfig
from lorastudio.service.generation import run_generation
from lorastudio.service.model_cache import ModelCache
from lorastudio.service.names import LENIENT

TRIGGER = "zqx"


@pytest.fixture
def ws(tiny_workspace, one_torch_thread):
    return tiny_workspace


def _generate(ws, prompt: str, model: str = "tiny-sd2", cache: ModelCache | None = None, **extra):
    cfg = GenerateConfig(model=model, prompt=prompt, steps=8, seed=5, device="cpu", **extra)
    result = run_generation(ws, cfg, cache=cache, names=LENIENT)  # as the CLI: a model may be a path
    return [np.asarray(Image.open(i.path).convert("RGB"), dtype=np.float32) / 255 for i in result.images]


def _redness(images) -> float:
    stack = np.stack(images)
    return float((stack[..., 0] - (stack[..., 1] + stack[..., 2]) / 2).mean())


def test_tiny_sd2_is_detected_as_sd2_with_v_prediction(ws, tmp_path):
    from lorastudio.models.families import family_from_diffusers_config
    from lorastudio.models.loading import _family_of_folder, load_model
    from lorastudio.service.models import list_models

    model = load_model("tiny-sd2", ws.models, ws.cache, device="cpu")
    assert model.family.name == "sd2" and model.scheduler_config["prediction_type"] == "v_prediction"
    encoder, unet = model.text_encoders[0].config, model.unet.config
    assert encoder.hidden_act == "gelu" and unet.cross_attention_dim == encoder.hidden_size != 32
    assert unet.use_linear_projection and list(unet.attention_head_dim) == [1, 2, 4, 4]
    assert model.tokenizers[0].pad_token == "!"
    # Without lorastudio's marker file (any SD2 folder from elsewhere): told apart by the encoder.
    bare = tmp_path / "bare"
    (bare / "text_encoder").mkdir(parents=True)
    shutil.copy(ws.models / "tiny-sd2" / "model_index.json", bare)
    shutil.copy(ws.models / "tiny-sd2" / "text_encoder" / "config.json", bare / "text_encoder")
    assert _family_of_folder(bare).name == "sd2"
    # The same rule on the shipped full-size configs: SD 2.x (1024 wide, gelu) vs SD 1.x.
    for family in ("sd15", "sd2"):
        shipped = files("lorastudio.models").joinpath("configs", family, "text_encoder", "config.json")
        te = json.loads(shipped.read_text())
        assert family_from_diffusers_config({}, te["hidden_size"], te["hidden_act"]).name == family
    assert {m["name"]: m["family"] for m in list_models(ws)}["tiny-sd2"] == "sd2"


def test_generation_follows_colour_words(ws):
    cache = ModelCache(ws)
    red, blue = _generate(ws, "red", cache=cache), _generate(ws, "blue", cache=cache)
    assert red[0].shape == (64, 64, 3)
    assert _redness(red) > _redness(blue) + 0.1, (_redness(red), _redness(blue))


def test_lora_with_text_encoder_makes_trigger_redder(ws, tmp_path):
    from lorastudio.service.training import run_training
    from lorastudio.train.config import load_train_config

    data = tmp_path / "red"
    data.mkdir()
    for i in range(8):
        Image.new("RGB", (64, 64), (230, 20 + i, 25)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(TRIGGER, encoding="utf-8")
    cfg = load_train_config(
        overrides=[
            "model=tiny-sd2",
            f"data.dir={data}",
            f"trigger={TRIGGER}",
            "train.resolution=64",
            "train.steps=30",
            "train.batch_size=4",
            "train.save_every_steps=1000",
            "train.learning_rate=3e-2",
            "train.min_snr_gamma=1",
            "train.mixed_precision=no",
            "lora.rank=8",
            "lora.alpha=8",
            "lora.train_text_encoder=true",
            "scoring.enabled=false",
            "seed=3",
            "output.name=red2",
        ]
    )
    result = run_training(ws, cfg, progress=False)
    with safe_open(result["library_lora"], framework="pt") as handle:
        keys, meta = set(handle.keys()), handle.metadata()
        fc1_up = handle.get_slice("lora_te_text_model_encoder_layers_3_mlp_fc1.lora_up.weight").get_shape()
    te_keys = {k for k in keys if k.startswith("lora_te")}
    assert te_keys and all(k.startswith("lora_te_text_model_encoder_layers_") for k in te_keys)
    assert fc1_up == [80, 8]  # the OpenCLIP stand-in's MLP (2 x 40 wide), rank 8
    # The third cross-attention block exists in SD2's layout (and tiny-sd2's), not in tiny-sd15's.
    assert "lora_unet_down_blocks_2_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight" in keys
    assert meta["ss_base_model_version"] == "sd_v2_v"
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    cache = ModelCache(ws)
    base = _generate(ws, TRIGGER, cache=cache, cfg_scale=1.0, batch_size=2)
    trained = _generate(ws, f"{TRIGGER} <lora:red2:1>", cache=cache, cfg_scale=1.0, batch_size=2)
    assert _redness(trained) > _redness(base) + 0.05, (_redness(base), _redness(trained))


def test_single_file_round_trip_gives_the_same_image(ws, tmp_path):
    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.models.checkpoint import read_safetensors_keys
    from lorastudio.models.families import detect_family_from_keys
    from lorastudio.models.loading import load_model

    model = load_model("tiny-sd2", ws.models, ws.cache, device="cpu")
    single = tmp_path / "tiny2.safetensors"
    save_single_file(model.components, model.family, single, {"lorastudio.base_config": "tiny-sd2"})
    keys = read_safetensors_keys(single)
    assert keys["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] == (120, 40)
    assert not any(k.startswith("cond_stage_model.transformer.") for k in keys)  # not SD1's CLIP
    assert keys["model.diffusion_model.input_blocks.1.1.proj_in.weight"] == (16, 16)  # linear, as in SD2
    assert detect_family_from_keys(keys).name == "sd2"
    loaded = load_model(str(single), ws.models, ws.cache, device="cpu")
    assert loaded.family.name == "sd2" and loaded.scheduler_config["prediction_type"] == "v_prediction"
    for name, module in model.components.items():
        reloaded = loaded.components[name].state_dict()
        for key, value in module.state_dict().items():
            assert (reloaded[key] == value).all(), (name, key)
    folder_images = _generate(ws, "yellow")
    single_images = _generate(ws, "yellow", model=str(single))
    assert np.array_equal(folder_images[0], single_images[0])
