"""Kolors: the family module, tiny-kolors (ChatGLM + Kolors UNet), loading and generation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.service.generation import run_generation
from lorastudio.service.model_cache import ModelCache
from lorastudio.service.names import LENIENT

# Prompts of the Kolors story workflow (DiffSynth-Studio tutorial, ../shared/seeds/004_*).
SEED_PROMPTS = (
    "二次元，一个紫色短发小女孩，在家中沙发上坐着，双手托着腮，很无聊，全身，粉色连衣裙",
    "卡通，一个毛发柔顺的灰色小猫咪，从屋内跑向门口,开心",
    "丑陋、变形、嘈杂、模糊、低对比度",
)


@pytest.fixture
def ws(tiny_workspace, one_torch_thread):
    return tiny_workspace


@pytest.fixture(scope="module")
def kolors(tiny_models_dir):
    from lorastudio.models.loading import load_model

    return load_model("tiny-kolors", tiny_models_dir, tiny_models_dir / ".cache", device="cpu")


def _generate(ws, prompt: str, cache: ModelCache | None = None, **extra):
    cfg = GenerateConfig(model="tiny-kolors", prompt=prompt, steps=8, seed=5, device="cpu", **extra)
    result = run_generation(ws, cfg, cache=cache, names=LENIENT)
    return result, [np.asarray(Image.open(i.path).convert("RGB"), dtype=np.float32) / 255 for i in result.images]


def _redness(images) -> float:
    stack = np.stack(images)
    return float((stack[..., 0] - (stack[..., 1] + stack[..., 2]) / 2).mean())


def test_tiny_kolors_is_a_kolors_diffusers_folder(tiny_models_dir, kolors):
    folder = tiny_models_dir / "tiny-kolors"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "KolorsPipeline"
    assert index["text_encoder"] == ["kolors", "ChatGLMModel"]
    assert kolors.family.name == "kolors" and kolors.family.text_encoder_kind == "chatglm"
    unet = kolors.unet.config
    assert unet.encoder_hid_dim_type == "text_proj" and unet.encoder_hid_dim == kolors.text_encoders[0].config.hidden_size
    assert unet.addition_embed_type == "text_time"
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 12_000_000, size


def test_vocabulary_is_byte_identical_and_round_trips_the_seed_prompts(kolors):
    from lorastudio.models.tiny_kolors import train_vocabulary

    assert train_vocabulary() == train_vocabulary()
    tokenizer = kolors.tokenizers[0]
    for prompt in SEED_PROMPTS + ("a red square, 龍🐱",):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == prompt
        assert len(ids) < len(prompt.encode("utf-8"))  # real pieces, not only byte fallback
    pieces = tokenizer.tokenize("一个红色的方块")
    assert "红" in "".join(pieces) and not any(p.startswith("<0x") for p in pieces)


def test_family_detection_from_folder_and_unet_file(tiny_models_dir, tmp_path):
    from safetensors.torch import save_file

    from lorastudio.models.checkpoint import read_safetensors_keys
    from lorastudio.models.families import family_from_diffusers_config, family_of_unet_keys
    from lorastudio.models.loading import _family_of_folder

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny_models_dir / "tiny-kolors" / "model_index.json", bare)
    assert _family_of_folder(bare).name == "kolors"  # no lorastudio.json: from model_index.json
    assert family_from_diffusers_config({"_class_name": "StableDiffusionXLPipeline"}).name == "sdxl"
    import torch

    unet_file = tmp_path / "kolors-finetune.safetensors"
    save_file({"encoder_hid_proj.weight": torch.zeros(2, 2), "conv_in.weight": torch.zeros(1)}, str(unet_file))
    assert family_of_unet_keys(read_safetensors_keys(unet_file)).name == "kolors"
    assert family_of_unet_keys(["conv_in.weight", "add_embedding.linear_1.weight"]) is None


def test_tokenizer_that_does_not_fit_the_encoder_is_refused(kolors):
    from types import SimpleNamespace

    from lorastudio.models.chatglm import check_vocabulary

    check_vocabulary(kolors.tokenizers[0], kolors.text_encoders[0], "tiny-kolors")  # its own: fine
    real_encoder = SimpleNamespace(config=SimpleNamespace(padded_vocab_size=65024))
    with pytest.raises(LorastudioError, match="tokenizer has .* tokens but text_encoder"):
        check_vocabulary(kolors.tokenizers[0], real_encoder, "Kolors")


def test_text_encoder_follows_the_requested_dtype(tiny_models_dir, tmp_path):
    import torch
    from diffusers import KolorsPipeline

    fp16 = tmp_path / "fp16"
    shutil.copytree(tiny_models_dir / "tiny-kolors", fp16)
    pipe = KolorsPipeline.from_pretrained(str(fp16), dtype=torch.float16, local_files_only=True)
    pipe.text_encoder.save_pretrained(fp16 / "text_encoder")  # an fp16 encoder checkpoint
    from lorastudio.models.loading import load_model

    model = load_model(str(fp16), tmp_path / "models", tmp_path / "cache", device="cpu")
    assert {p.dtype for p in model.text_encoders[0].parameters()} == {torch.float32}
    assert next(model.unet.parameters()).dtype == torch.float32


def test_chinese_prompt_generates_and_colour_words_matter(ws):
    cache = ModelCache(ws)
    result, red = _generate(ws, "一个红色的方块", cache=cache)
    _, blue = _generate(ws, "一个蓝色的方块", cache=cache)
    _, english = _generate(ws, "red", cache=cache)
    _, again = _generate(ws, "一个红色的方块", cache=cache)
    assert red[0].shape == (64, 64, 3)
    assert np.array_equal(red[0], again[0])  # deterministic
    assert _redness(red) > _redness(blue) + 0.05, (_redness(red), _redness(blue))
    assert _redness(english) > _redness(blue)
    info = Image.open(result.images[0].path).info.get("parameters", "")
    assert "一个红色的方块" in info and "tiny-kolors" in info
    skipped, same = _generate(ws, "一个红色的方块", cache=cache, clip_skip=2)
    assert np.array_equal(same[0], red[0])  # clip skip means nothing to ChatGLM: ignored
    assert "Clip skip" not in Image.open(skipped.images[0].path).info["parameters"]


def test_prompt_weights_and_editing_change_kolors_conditioning(kolors):
    import torch

    from lorastudio.generate.conditioning import PromptEncoder

    encoder = PromptEncoder(kolors)
    plain, weighted = encoder.encode("一个红色的方块"), encoder.encode("一个(红色:1.5)的方块")
    assert plain.embeds.shape == (1, 256, kolors.text_encoders[0].config.hidden_size)
    assert plain.pooled.shape == (1, kolors.text_encoders[0].config.hidden_size)
    assert not torch.equal(plain.embeds, weighted.embeds)
    assert torch.equal(plain.pooled, weighted.pooled)  # weights scale the context, not the pooled text
    assert encoder.empty_chunk().shape == plain.embeds.shape


@pytest.mark.slow
def test_lora_trained_on_red_makes_kolors_redder_and_is_tagged_kolors(ws, tmp_path):
    from safetensors import safe_open

    from lorastudio.adapters import check_lora_family, load_lora_file
    from lorastudio.service.training import run_training
    from lorastudio.train.config import load_train_config

    data = tmp_path / "red"
    data.mkdir()
    for i in range(8):
        Image.new("RGB", (64, 64), (230, 20 + i, 25)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text("二次元", encoding="utf-8")
    cfg = load_train_config(
        overrides=[
            "model=tiny-kolors",
            f"data.dir={data}",
            "train.resolution=64",
            "train.steps=30",
            "train.batch_size=4",
            "train.save_every_steps=1000",
            "train.learning_rate=3e-2",
            "train.mixed_precision=no",
            "lora.rank=8",
            "lora.alpha=8",
            "scoring.enabled=false",
            "seed=3",
            "output.name=kred",
        ]
    )
    from diffusers.pipelines.kolors.text_encoder import ChatGLMModel

    calls = []
    forward = ChatGLMModel.forward

    def counted(self, *args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return forward(self, *args, **kwargs)

    ChatGLMModel.forward = counted
    try:
        result = run_training(ws, cfg, progress=False)
    finally:
        ChatGLMModel.forward = forward
    assert 1 <= len(calls) <= 2, calls  # captions encoded once and cached, not at each of the 30 steps
    with safe_open(result["library_lora"], framework="pt") as handle:
        keys, meta = set(handle.keys()), handle.metadata()
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert not any("encoder_hid_proj" in k for k in keys)
    assert meta["ss_base_model_version"] == "kolors"
    cache = ModelCache(ws)
    _, base = _generate(ws, "二次元", cache=cache, cfg_scale=1.0, batch_size=2)
    _, trained = _generate(ws, "二次元 <lora:kred:1>", cache=cache, cfg_scale=1.0, batch_size=2)
    assert _redness(trained) > _redness(base) + 0.05, (_redness(base), _redness(trained))
    # The kohya file works in plain diffusers too (KolorsPipeline reads SDXL's kohya layout).
    import torch
    from diffusers import KolorsPipeline

    pipe = KolorsPipeline.from_pretrained(str(ws.models / "tiny-kolors"), dtype=torch.float32, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def diffusers_redness():
        out = pipe("二次元", height=64, width=64, num_inference_steps=8, guidance_scale=1.0,
                   generator=torch.Generator().manual_seed(5), output_type="np").images
        return _redness(list(out))

    before = diffusers_redness()
    pipe.load_lora_weights(str(result["library_lora"]), unet_config=pipe.unet.config)  # kohya LDM names
    assert diffusers_redness() > before + 0.05
    lora = load_lora_file(result["library_lora"])
    with pytest.raises(LorastudioError, match="made for Kolors but the model is SDXL"):
        check_lora_family(lora, "sdxl")
    lora.metadata["ss_base_model_version"] = "sdxl_base_v1-0"
    with pytest.raises(LorastudioError, match="made for SDXL but the model is Kolors"):
        check_lora_family(lora, "kolors")


def test_unet_only_finetune_loads_over_its_base_folder(ws, tmp_path):
    import torch
    from safetensors.torch import save_file

    from lorastudio.models.loading import load_model

    base = load_model("tiny-kolors", ws.models, ws.cache, device="cpu")
    state = {k: v.clone() for k, v in base.unet.state_dict().items()}
    state["conv_out.bias"] += 0.5
    finetune = tmp_path / "kolors-finetune.safetensors"
    save_file(state, str(finetune), metadata={"lorastudio.base_model": "tiny-kolors"})
    model = load_model(str(finetune), ws.models, ws.cache, device="cpu")
    assert model.family.name == "kolors"
    assert torch.equal(model.unet.conv_out.bias, base.unet.conv_out.bias + 0.5)
    assert model.text_encoders[0].config.padded_vocab_size == base.text_encoders[0].config.padded_vocab_size
    orphan = tmp_path / "orphan.safetensors"
    save_file(state, str(orphan))
    with pytest.raises(LorastudioError, match="needs the Kolors diffusers folder"):
        load_model(str(orphan), tmp_path / "empty-models", ws.cache, device="cpu")


def test_a1111_api_generates_with_tiny_kolors_from_a_chinese_prompt(client):
    import base64
    import io

    request = {
        "prompt": "一个红色的方块",
        "steps": 4,
        "width": 64,
        "height": 64,
        "override_settings": {"sd_model_checkpoint": "tiny-kolors"},
    }
    answer = client.post("/sdapi/v1/txt2img", json=request).json()
    info = json.loads(answer["info"])
    assert info["sd_model_name"] == "tiny-kolors" and info["prompt"] == "一个红色的方块"
    image = Image.open(io.BytesIO(base64.b64decode(answer["images"][0])))
    assert image.size == (64, 64)


def test_pickled_text_encoder_shards_and_a_vae_override_load(tiny_models_dir, tmp_path):
    import torch

    from lorastudio.models.loading import load_model

    folder = tmp_path / "kolors-bin"
    shutil.copytree(tiny_models_dir / "tiny-kolors", folder)
    te = folder / "text_encoder"
    state = {k: v for k, v in load_model(str(folder), tmp_path / "m", tmp_path / "c", device="cpu")
             .text_encoders[0].state_dict().items()}
    for weights in te.glob("*.safetensors"):
        weights.unlink()
    torch.save(state, te / "pytorch_model.bin")  # the original ChatGLM3 checkpoints are pickles
    vae = tmp_path / "sdxl-vae-fp16-fix"
    shutil.copytree(folder / "vae", vae)
    model = load_model(str(folder), tmp_path / "m", tmp_path / "c", device="cpu", vae=str(vae))
    assert model.vae_name == "sdxl-vae-fp16-fix"
    for name, value in model.text_encoders[0].state_dict().items():
        assert torch.equal(value, state[name]), name


def test_kolors_refuses_text_encoder_loras_and_embeddings(kolors):
    from lorastudio.train.config import load_train_config
    from lorastudio.train.trainables import setup_trainables

    cfg = load_train_config(overrides=["model=tiny-kolors", "lora.train_text_encoder=true"])
    with pytest.raises(LorastudioError, match="lora.train_text_encoder: Kolors LoRAs train the UNet only"):
        setup_trainables(cfg, kolors)


def test_a_full_kolors_export_is_its_unet_alone_and_loads_back_over_the_base(ws, kolors, tmp_path):
    """No all-in-one layout holds ChatGLM: the file is what ComfyUI's UNet loader and lorastudio read."""
    import torch
    from safetensors import safe_open

    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.models.loading import load_model

    original = kolors.unet.conv_out.bias.detach().clone()
    with torch.no_grad():
        kolors.unet.conv_out.bias.add_(0.25)  # a change the file must carry
    try:
        path = save_single_file(kolors.components, kolors.family, tmp_path / "kolors-db.safetensors", {"x": "1"},
                                base_model="tiny-kolors")  # fmt: skip
        with safe_open(str(path), "pt") as f:
            keys, metadata = set(f.keys()), f.metadata()
        assert keys == set(kolors.unet.state_dict()) and metadata["lorastudio.base_model"] == "tiny-kolors"
        loaded = load_model(str(path), ws.models, ws.cache, device="cpu")
        assert loaded.family.name == "kolors"
        assert torch.equal(loaded.unet.conv_out.bias, kolors.unet.conv_out.bias)
        with pytest.raises(LorastudioError, match="holds the UNet alone"):
            save_single_file(kolors.components, kolors.family, tmp_path / "no-base.safetensors")
    finally:
        with torch.no_grad():
            kolors.unet.conv_out.bias.copy_(original)  # the module's model, as the other tests see it
