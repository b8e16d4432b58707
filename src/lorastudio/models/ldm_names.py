"""Diffusers <-> original LDM (A1111 / kohya) names of UNet, VAE and text-encoder tensors.

One table serves every direction: kohya's SDXL LoRA names (module paths), writing single-file
checkpoints (`adapters.ldm`) and reading them tensor by tensor (`models.single_file`). The UNet
block numbering is derived from the UNet config (`down_block_types`, `layers_per_block`, ...),
never from SD's sizes, so tiny and custom UNets map as exactly as real ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "UNET_PREFIX",
    "VAE_PREFIX",
    "OPEN_CLIP_RENAMES",
    "unet_diffusers_to_ldm_path",
    "unet_ldm_to_diffusers_path",
    "vae_path_to_ldm",
    "clip_key_to_ldm",
    "open_clip_key_to_ldm",
    "text_encoder_layout",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

# ResNet sub-layers: diffusers name -> LDM name.
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_RESNET_BACK = {v: k for k, v in _UNET_RESNET.items()}


def _get(config, key: str, default=None):
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def _per_block(value, count: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)] * count


def _unet_table(config) -> list[tuple[str, str, bool]]:
    """(diffusers prefix, LDM prefix, is_resnet) for every block of a UNet2DConditionModel."""
    down_types = list(_get(config, "down_block_types"))
    up_types = list(_get(config, "up_block_types"))
    layers = _per_block(_get(config, "layers_per_block", 2), len(down_types))
    table = [
        ("conv_in", "input_blocks.0.0", False),
        ("time_embedding.linear_1", "time_embed.0", False),
        ("time_embedding.linear_2", "time_embed.2", False),
        ("add_embedding.linear_1", "label_emb.0.0", False),
        ("add_embedding.linear_2", "label_emb.0.2", False),
        ("class_embedding.linear_1", "label_emb.0.0", False),
        ("class_embedding.linear_2", "label_emb.0.2", False),
        ("conv_norm_out", "out.0", False),
        ("conv_out", "out.2", False),
    ]
    index = 1
    for i, block_type in enumerate(down_types):
        for j in range(layers[i]):
            table.append((f"down_blocks.{i}.resnets.{j}", f"input_blocks.{index}.0", True))
            if "CrossAttn" in block_type:
                table.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{index}.1", False))
            index += 1
        if i < len(down_types) - 1:
            table.append((f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{index}.0.op", False))
            index += 1

    mid_type = _get(config, "mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid_type is not None:
        if "CrossAttn" in mid_type:
            table += [
                ("mid_block.resnets.0", "middle_block.0", True),
                ("mid_block.attentions.0", "middle_block.1", False),
                ("mid_block.resnets.1", "middle_block.2", True),
            ]
        else:
            table += [
                ("mid_block.resnets.0", "middle_block.0", True),
                ("mid_block.resnets.1", "middle_block.1", True),
            ]

    up_layers = list(reversed(layers))
    index = 0
    for i, block_type in enumerate(up_types):
        has_attention = "CrossAttn" in block_type
        for j in range(up_layers[i] + 1):
            table.append((f"up_blocks.{i}.resnets.{j}", f"output_blocks.{index}.0", True))
            if has_attention:
                table.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{index}.1", False))
            index += 1
        if i < len(up_types) - 1:
            slot = 2 if has_attention else 1
            table.append(
                (f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{index - 1}.{slot}.conv", False)
            )
    return table


def _config_key(config) -> tuple:
    keys = ("down_block_types", "up_block_types", "layers_per_block", "mid_block_type")
    return tuple(tuple(v) if isinstance(v, list | tuple) else v for v in (_get(config, k) for k in keys))


@lru_cache(maxsize=16)
def _unet_maps(key: tuple) -> tuple[dict, dict]:
    config = dict(
        zip(("down_block_types", "up_block_types", "layers_per_block", "mid_block_type"), key, strict=True)
    )
    if config["mid_block_type"] is None:
        config["mid_block_type"] = "UNetMidBlock2DCrossAttn"
    forward, backward = {}, {}
    for diffusers_prefix, ldm_prefix, is_resnet in _unet_table(config):
        forward.setdefault(diffusers_prefix, (ldm_prefix, is_resnet))
        backward.setdefault(ldm_prefix, (diffusers_prefix, is_resnet))
    return forward, backward


def _map_path(path: str, table: dict, resnet_names: dict) -> str | None:
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in table:
            new_prefix, is_resnet = table[prefix]
            rest = ".".join(parts[cut:])
            if is_resnet and rest:
                for old, new in resnet_names.items():
                    if rest == old or rest.startswith(old + "."):
                        rest = new + rest[len(old) :]
                        break
            return f"{new_prefix}.{rest}" if rest else new_prefix
    return None


def unet_diffusers_to_ldm_path(path: str, unet_config: Mapping[str, Any]) -> str:
    """`down_blocks.1.attentions.0.proj_in` -> `input_blocks.4.1.proj_in` (for this config)."""
    forward, _ = _unet_maps(_config_key(unet_config))
    mapped = _map_path(path, forward, _UNET_RESNET)
    if mapped is None:
        raise LorastudioError(
            f"UNet module {path!r}: has no LDM name in this UNet layout; is it a UNet2DConditionModel path?"
        )
    return mapped


def unet_ldm_to_diffusers_path(path: str, unet_config: Mapping[str, Any]) -> str:
    """`input_blocks.4.1.proj_in` -> `down_blocks.1.attentions.0.proj_in` (for this config)."""
    _, backward = _unet_maps(_config_key(unet_config))
    mapped = _map_path(path, backward, _UNET_RESNET_BACK)
    if mapped is None:
        raise LorastudioError(
            f"UNet module {path!r}: does not exist in this model's UNet layout; the LoRA was made for another model family."
        )
    return mapped


def vae_path_to_ldm(key: str, num_up_blocks: int) -> str:
    parts = key.split(".")
    coder = parts[0]
    if coder in ("quant_conv", "post_quant_conv"):
        return key
    rest = parts[1:]
    head = rest[0]
    if head in ("conv_in", "conv_out"):
        return key
    if head == "conv_norm_out":
        return ".".join([coder, "norm_out", *rest[1:]])
    if head in ("down_blocks", "up_blocks"):
        block = int(rest[1])
        ldm_block = block if head == "down_blocks" else num_up_blocks - 1 - block
        stage = "down" if head == "down_blocks" else "up"
        if rest[2] == "resnets":
            tail = [p if p != "conv_shortcut" else "nin_shortcut" for p in rest[4:]]
            return ".".join([coder, stage, str(ldm_block), "block", rest[3], *tail])
        if rest[2] in ("downsamplers", "upsamplers"):  # downsamplers.0.conv.weight
            name = "downsample" if stage == "down" else "upsample"
            return ".".join([coder, stage, str(ldm_block), name, *rest[4:]])
    if head == "mid_block":
        if rest[1] == "resnets":
            tail = [p if p != "conv_shortcut" else "nin_shortcut" for p in rest[3:]]
            return ".".join([coder, "mid", f"block_{int(rest[2]) + 1}", *tail])
        if rest[1] == "attentions":
            tail = rest[3:]
            names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v"}
            if tail[0] == "to_out":
                tail = ["proj_out", *tail[2:]]
            else:
                tail = [names.get(tail[0], tail[0]), *tail[1:]]
            return ".".join([coder, "mid", "attn_1", *tail])
    raise LorastudioError(f"VAE tensor {key!r}: has no LDM name; is this an AutoencoderKL?")


# Where each family keeps its text encoders in a single file: (layout, key prefix).
_TEXT_ENCODERS = {
    ("sd15", "text_encoder"): ("clip", "cond_stage_model.transformer."),
    ("sd2", "text_encoder"): ("open_clip", "cond_stage_model.model."),
    ("sdxl", "text_encoder"): ("clip", "conditioner.embedders.0.transformer."),
    ("sdxl", "text_encoder_2"): ("open_clip", "conditioner.embedders.1.model."),
}


def text_encoder_layout(family_name: str, component: str) -> tuple[str, str]:
    """("clip" | "open_clip", key prefix) of a family's text encoder in a single file.

    A family without a single-file layout of its own (Kolors) gets SD1.x's, as the writer has
    always done.
    """
    return _TEXT_ENCODERS.get((family_name, component), _TEXT_ENCODERS[("sd15", "text_encoder")])


def clip_key_to_ldm(key: str, prefix: str) -> str:
    """A CLIP ViT-L tensor name in the file: `<prefix>text_model.*` (transformers 5 dropped `text_model.`)."""
    return prefix + (key if key.startswith("text_model.") else "text_model." + key)


# OpenCLIP resblock sub-layers: transformers name -> OpenCLIP name (per weight/bias).
OPEN_CLIP_RENAMES = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPEN_CLIP_SINGLE = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
    "text_projection.weight": "text_projection",
}
_QKV = ("q_proj", "k_proj", "v_proj")


def open_clip_key_to_ldm(key: str, prefix: str) -> tuple[str, int | None]:
    """Where an OpenCLIP text-encoder tensor lives in the file, and which third of a fused `in_proj`.

    Returns (file key, part): part 0/1/2 is the q/k/v third of `attn.in_proj_weight|bias`,
    None a whole tensor (`text_projection` is stored transposed: the caller transposes).
    """
    name = key.removeprefix("text_model.")
    if name in _OPEN_CLIP_SINGLE:
        return prefix + _OPEN_CLIP_SINGLE[name], None
    parts = name.split(".")
    if len(parts) >= 5 and parts[:2] == ["encoder", "layers"]:
        layer, rest = parts[2], ".".join(parts[3:])
        dst = f"{prefix}transformer.resblocks.{layer}."
        module, _, kind = rest.rpartition(".")
        if module.startswith("self_attn.") and module.removeprefix("self_attn.") in _QKV:
            return f"{dst}attn.in_proj_{kind}", _QKV.index(module.removeprefix("self_attn."))
        if module in OPEN_CLIP_RENAMES:
            return f"{dst}{OPEN_CLIP_RENAMES[module]}.{kind}", None
    raise LorastudioError(f"text-encoder tensor {key!r}: has no OpenCLIP name; is this a CLIP text model?")
