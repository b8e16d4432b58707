"""The tiny models' class layouts: real diffusers/transformers classes, scaled down to a few MB.

Each builder returns a freshly initialised model (the caller seeds torch); `models.tiny` sets or
trains the weights (`models.tiny_colours`) and saves the folders. The layouts keep what loaders and
LoRA code tell families apart by (block types, cross-attention and text widths, linear projections,
SDXL's added time embedding), so a tiny model exercises the same paths as a real one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lorastudio.models.tiny_widths import SD2_TEXT_WIDTH, SD15_WIDTH, SDXL_CROSS_WIDTH

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

__all__ = [
    "SCHEDULER_SD",
    "TINY_SIZE",
    "clip_like",
    "clip_text_config",
    "make_unet_sd15",
    "make_unet_sd2",
    "make_unet_sdxl",
    "make_vae",
]

TINY_SIZE = 64  # native pixel size of the tiny models (latents are 8x8)

SCHEDULER_SD = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    # v-prediction (like SD 2.x 768-v): a few hundred CPU steps of training give a stable
    # denoiser; epsilon-prediction tiny UNets drift to black/white images at this budget.
    "prediction_type": "v_prediction",
    "timestep_spacing": "leading",
}


def clip_text_config(hidden: int, projection: int, act: str) -> CLIPTextConfig:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_attention_heads=4,
        num_hidden_layers=4,  # >= 2 so clip skip has layers to skip
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def clip_like(encoder: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give the final layer norm a bias, as trained CLIP models have.

    A freshly initialised layer norm outputs vectors with mean exactly 0, which makes
    A1111's mean-restoring prompt emphasis ill-defined; real encoders never do that.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    norm = getattr(encoder, "text_model", encoder).final_layer_norm
    with torch.no_grad():
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=generator) * 0.5 + 0.2)
    return encoder


def make_vae() -> AutoencoderKL:
    from diffusers import AutoencoderKL

    # Four blocks -> 8x downsampling like the real VAE, so latent sizes match real models.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,  # groups wide enough for RGB + two reference channels
        sample_size=TINY_SIZE,
    )


def make_unet_sd15() -> UNet2DConditionModel:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=SD15_WIDTH,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def make_unet_sd2() -> UNet2DConditionModel:
    """SD 2.x's UNet layout, scaled down.

    Four blocks (three with cross-attention), linear projections in the transformers, and
    like SD2's (5, 10, 20, 20) heads over (320, 640, 1280, 1280) channels, more heads in
    deeper blocks at a constant head width: 16 here, 64 there.
    """
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(16, 32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=SD2_TEXT_WIDTH,
        attention_head_dim=(1, 2, 4, 4),
        use_linear_projection=True,
        upcast_attention=True,  # as SD 2.1's config says (a no-op in fp32)
        norm_num_groups=8,
    )


def make_unet_sdxl(
    size: int = TINY_SIZE,
    cross_width: int = SDXL_CROSS_WIDTH,  # 32 (CLIP-L stand-in) + 48 (bigG stand-in), concatenated
    pooled_width: int = 48,
    **text_projection: Any,
) -> UNet2DConditionModel:
    """SDXL's block kinds at tiny widths; Kolors' UNet is this one with its `text_proj` from ChatGLM's
    width (`text_projection`: encoder_hid_dim and its type)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=size // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=cross_width,
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + pooled_width,  # 6 time ids + pooled text
        norm_num_groups=8,
        **text_projection,
    )
