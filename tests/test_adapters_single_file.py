"""Single-file (A1111 / LDM) checkpoints: diffusers' from_single_file must load them back bit-exact."""

from __future__ import annotations

import shutil

import torch

from lorastudio.adapters import save_single_file
from lorastudio.adapters.ldm import unet_diffusers_to_ldm_path, unet_ldm_to_diffusers_path
from lorastudio.models.families import get_family


def _modules(pipe):
    return {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}


def _assert_bit_exact(original: torch.nn.Module, loaded: torch.nn.Module, name: str):
    a, b = original.state_dict(), loaded.state_dict()
    assert set(a) == set(b), f"{name}: different keys"
    for key, value in a.items():
        assert not b[key].is_meta, f"{name}.{key} was not loaded"
        assert b[key].dtype == value.dtype and torch.equal(b[key], value), f"{name}.{key} differs"


def test_sd15_single_file_round_trip_is_bit_exact(tiny_models_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    folder = tiny_models_dir / "tiny-sd15"
    pipe = StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    path = save_single_file(_modules(pipe), get_family("sd15"), tmp_path / "m.safetensors", {"title": "x"})
    back = StableDiffusionPipeline.from_single_file(str(path), config=str(folder), local_files_only=True)
    for name in ("unet", "vae", "text_encoder"):
        _assert_bit_exact(getattr(pipe, name), getattr(back, name), name)

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        assert handle.metadata()["title"] == "x"
    assert "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" in keys
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in keys


def _sdxl_with_distinct_text_widths(folder, target):
    """tiny-sdxl with a 48-wide second text encoder, like real SDXL (768 vs 1280).

    diffusers tells SDXL's two encoders apart by width; with equal widths it loads the
    CLIP-L weights into both, so the full round trip needs distinct widths.
    """
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    shutil.copytree(folder, target)
    torch.manual_seed(0)
    config = CLIPTextConfig.from_pretrained(str(folder / "text_encoder_2"))
    config.hidden_size, config.intermediate_size = 48, 96
    CLIPTextModelWithProjection(config).save_pretrained(str(target / "text_encoder_2"))
    unet_config = dict(UNet2DConditionModel.load_config(str(folder / "unet")))
    unet_config["cross_attention_dim"] = 32 + 48
    UNet2DConditionModel.from_config(unet_config).save_pretrained(str(target / "unet"))
    return target


def test_sdxl_single_file_round_trip_is_bit_exact(tiny_models_dir, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    folder = _sdxl_with_distinct_text_widths(tiny_models_dir / "tiny-sdxl", tmp_path / "tiny-sdxl-wide")
    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder), local_files_only=True)
    path = save_single_file(_modules(pipe), get_family("sdxl"), tmp_path / "xl.safetensors")
    back = StableDiffusionXLPipeline.from_single_file(str(path), config=str(folder), local_files_only=True)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        _assert_bit_exact(getattr(pipe, name), getattr(back, name), name)


def test_tiny_sdxl_single_file_parts_are_bit_exact(tiny_models_dir, tmp_path):
    """The stock tiny-sdxl: UNet/VAE/CLIP-L through from_single_file, OpenCLIP through diffusers' converter."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from safetensors.torch import load_file

    folder = tiny_models_dir / "tiny-sdxl"
    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder), local_files_only=True)
    path = save_single_file(_modules(pipe), get_family("sdxl"), tmp_path / "xl.safetensors")
    back = StableDiffusionXLPipeline.from_single_file(str(path), config=str(folder), local_files_only=True)
    for name in ("unet", "vae", "text_encoder"):
        _assert_bit_exact(getattr(pipe, name), getattr(back, name), name)
    checkpoint = load_file(str(path))
    converted = convert_open_clip_checkpoint(
        pipe.text_encoder_2, checkpoint, prefix="conditioner.embedders.1.model."
    )
    expected = pipe.text_encoder_2.state_dict()
    assert set(converted) == set(expected)
    for key, value in expected.items():
        assert torch.equal(converted[key], value), key


def test_unet_ldm_names_follow_the_config():
    """Block numbers come from the config: SDXL's real layout and a 4-block, 1-layer UNet."""
    sdxl = {
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 2,
    }
    pairs = {
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
        "down_blocks.2.attentions.1.proj_out": "input_blocks.8.1.proj_out",
        "up_blocks.1.attentions.2.proj_out": "output_blocks.5.1.proj_out",
        "mid_block.attentions.0.proj_in": "middle_block.1.proj_in",
        "down_blocks.0.resnets.1.conv1": "input_blocks.2.0.in_layers.2",
        "down_blocks.0.downsamplers.0.conv": "input_blocks.3.0.op",
        "up_blocks.0.upsamplers.0.conv": "output_blocks.2.2.conv",
        "up_blocks.2.resnets.0.conv_shortcut": "output_blocks.6.0.skip_connection",
        "mid_block.resnets.1.time_emb_proj": "middle_block.2.emb_layers.1",
    }
    for diffusers_path, ldm_path in pairs.items():
        assert unet_diffusers_to_ldm_path(diffusers_path, sdxl) == ldm_path
        assert unet_ldm_to_diffusers_path(ldm_path, sdxl) == diffusers_path
    small = {
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "layers_per_block": 1,
    }
    assert (
        unet_diffusers_to_ldm_path("down_blocks.2.attentions.0.proj_in", small) == "input_blocks.5.1.proj_in"
    )
    assert unet_diffusers_to_ldm_path("up_blocks.0.upsamplers.0.conv", small) == "output_blocks.1.1.conv"
    assert (
        unet_diffusers_to_ldm_path("up_blocks.3.attentions.1.proj_in", small) == "output_blocks.7.1.proj_in"
    )
