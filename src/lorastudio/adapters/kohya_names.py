"""The kohya names both LoRA readers share: kohya/webui files and LyCORIS files.

A module name is prefix + module path with `.` -> `_`. Turning it back needs to know which
underscores belong to a layer's own name (`to_q`, `transformer_blocks`), which is what
`_VOCABULARY` is for. `adapters.kohya` and `adapters.lycoris` both import from here, so
neither needs the other to read a file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch

__all__ = [
    "BUNDLE_PREFIX",
    "MODULE_PREFIXES",
    "TE_PREFIXES",
    "UNET_PREFIX",
    "component_and_name",
    "kohya_to_module_path",
    "read_bundled_embeddings",
    "uses_ldm_unet_names",
]

UNET_PREFIX = "lora_unet_"
# SimpleTuner's LyCORIS files name UNet layers `lycoris_<diffusers path>` (ComfyUI reads them);
# kohya's OFT network names them `oft_unet_<path>` (A1111 reads them).
_UNET_PREFIXES = (UNET_PREFIX, "lycoris_", "oft_unet_")
TE_PREFIXES = {"lora_te_": "text_encoder", "lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2"}
MODULE_PREFIXES = (*_UNET_PREFIXES, *TE_PREFIXES)  # what a kohya-style module name starts with
BUNDLE_PREFIX = "bundle_emb."

# Layer names that themselves contain underscores (diffusers, LDM, CLIP, LyCORIS targets).
_VOCABULARY = {
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out",
    "proj_in", "proj_out", "conv_shortcut", "time_emb_proj", "conv_in", "conv_out", "conv_norm_out",
    "time_embedding", "linear_1", "linear_2", "add_embedding", "class_embedding", "input_blocks",
    "output_blocks", "middle_block", "in_layers", "out_layers", "emb_layers", "skip_connection",
    "time_embed", "label_emb", "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj",
    "final_layer_norm", "layer_norm1", "layer_norm2", "token_embedding", "position_embedding",
    "text_projection", "add_k_proj", "add_v_proj", "to_add_out", "group_norm",
}  # fmt: skip


def kohya_to_module_path(name: str) -> str:
    """`down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q` -> dotted module path."""
    tokens = name.split("_")
    parts: list[str] = []
    i = 0
    while i < len(tokens):
        for width in (3, 2):
            joined = "_".join(tokens[i : i + width])
            if i + width <= len(tokens) and joined in _VOCABULARY:
                parts.append(joined)
                i += width
                break
        else:
            parts.append(tokens[i])
            i += 1
    return ".".join(parts)


_LDM_BLOCKS = ("input_blocks", "output_blocks", "middle_block")


def uses_ldm_unet_names(keys: Iterable[str]) -> bool:
    starts = tuple(prefix + block for prefix in _UNET_PREFIXES for block in _LDM_BLOCKS)
    return any(k.startswith(starts) for k in keys)


def component_and_name(base: str) -> tuple[str, str] | None:
    for prefix in _UNET_PREFIXES:
        if base.startswith(prefix):
            return "unet", base[len(prefix) :]
    for prefix, component in TE_PREFIXES.items():
        if base.startswith(prefix):
            return component, base[len(prefix) :]
    return None


def read_bundled_embeddings(state_dict: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """`bundle_emb.<token>.string_to_param.*` (SD1) or `bundle_emb.<token>.clip_l|clip_g` (SDXL)."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.startswith(BUNDLE_PREFIX):
            token, _, inner = key[len(BUNDLE_PREFIX) :].partition(".")
            grouped.setdefault(token, {})[inner] = value
    embeddings = {}
    for token, parts in grouped.items():
        if "clip_l" in parts or "clip_g" in parts:
            embeddings[token] = [parts[k] for k in ("clip_l", "clip_g") if k in parts]
        else:
            vectors = next(iter(v for k, v in sorted(parts.items()) if k.startswith("string_to_param")), None)
            if vectors is None:
                vectors = next(iter(parts.values()))
            embeddings[token] = [vectors]
    return embeddings
