"""Tell SwinIR and SCUNet files by their keys and read every size from the tensors' shapes.

No torch import: only key names and `.shape` are read. A file whose keys look like one of these
but whose sizes do not add up is refused naming the file, through the `refuse` callback.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["is_scunet", "is_swinir", "scunet_kwargs", "swin_relative", "swinir_kwargs"]

Refuse = Callable[[Path, str], Exception]

_SWINIR_BLOCK = "layers.0.residual_group.blocks.0"
_SWINIR_FIRST = "conv_first.weight"
# DiffBIR v1's stage-1 SwinIR: `conv_first` is Sequential(PixelUnshuffle(s), Conv2d), its conv at index 1
_SWINIR_UNSHUFFLED_FIRST = "conv_first.1.weight"


# Key parts of SwinIR's relatives, which share its `layers.N.residual_group.blocks.M` names but not
# its maths: HAT's channel attention and overlapping cross-attention, Swin2SR's cosine attention
# (a learned logit scale, a continuous position-bias MLP, a patch-embedding conv).
_RELATIVES: tuple[tuple[str, str], ...] = (
    ("relative_position_index_SA", "HAT"),
    ("conv_block.cab", "HAT"),
    ("overlap_attn", "HAT"),
    ("logit_scale", "Swin2SR"),
    ("cpb_mlp", "Swin2SR"),
    ("patch_embed.proj", "Swin2SR"),
)


def swin_relative(state: dict[str, Any]) -> str | None:
    """The relative (`HAT`, `Swin2SR`) whose own keys `state` holds, else None."""
    for part, name in _RELATIVES:
        if any(part in key for key in state):
            return name
    return None


def is_swinir(state: dict[str, Any]) -> bool:
    """SwinIR's own keys (its attention's bias table) and none of HAT's or Swin2SR's."""
    own = (f"{_SWINIR_BLOCK}.attn.qkv.weight", f"{_SWINIR_BLOCK}.attn.relative_position_bias_table")
    first = _SWINIR_FIRST in state or _SWINIR_UNSHUFFLED_FIRST in state
    return first and all(key in state for key in own) and swin_relative(state) is None


def is_scunet(state: dict[str, Any]) -> bool:
    return "m_head.0.weight" in state and "m_tail.0.weight" in state


def _indices(state: dict[str, Any], pattern: str) -> list[int]:
    """The sorted distinct numbers `pattern`'s one group matches at the start of the keys."""
    return sorted({int(m.group(1)) for key in state if (m := re.match(pattern, key))})


def _shape(state: dict[str, Any], key: str) -> tuple[int, ...]:
    return tuple(int(n) for n in state[key].shape)


# -- SwinIR ---------------------------------------------------------------------------------------


def swinir_kwargs(state: dict[str, Any], path: Path, refuse: Refuse) -> tuple[dict[str, Any], int]:
    """SwinIR's constructor arguments and scale, from the keys and shapes of `state`."""
    first = _SWINIR_UNSHUFFLED_FIRST if _SWINIR_UNSHUFFLED_FIRST in state else _SWINIR_FIRST
    embed_dim, folded = _shape(state, first)[:2]
    in_chans, unshuffle = _swinir_input(state, folded, first != _SWINIR_FIRST, path, refuse)
    layers = _indices(state, r"layers\.(\d+)\.residual_group\.")
    depths = tuple(len(_indices(state, rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.")) for i in layers)
    heads = tuple(_shape(state, f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table")[1] for i in layers)
    table = _shape(state, f"{_SWINIR_BLOCK}.attn.relative_position_bias_table")[0]
    window = (math.isqrt(table) + 1) // 2
    if (2 * window - 1) ** 2 != table or layers != list(range(len(layers))):
        raise refuse(path, f"is a SwinIR-like network with a {table}-row position table")
    img_size = 64  # SwinIR's default training size; a shifted block's saved mask says the real one
    mask_key = next((key for key in state if key.endswith(".attn_mask")), None)
    if mask_key is not None:
        img_size = math.isqrt(_shape(state, mask_key)[0]) * window
    upsampler, upscale, num_feat = _swinir_reconstruction(state, in_chans, path, refuse)
    if unshuffle > 1 and (not upsampler or upscale % unshuffle):
        raise refuse(path, f"is a SwinIR unshuffling its input by {unshuffle} for a {upscale}x reconstruction")
    scale = upscale // unshuffle
    out_chans = _shape(state, "conv_last.weight")[0] if "conv_last.weight" in state else in_chans
    kwargs = {
        "in_chans": in_chans,
        "out_chans": out_chans,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": heads,
        "window_size": window,
        "mlp_ratio": _shape(state, f"{_SWINIR_BLOCK}.mlp.fc1.weight")[0] / embed_dim,
        "img_size": img_size,
        "upscale": upscale,
        "unshuffle": unshuffle,
        "upsampler": upsampler,
        "resi_connection": "1conv" if "conv_after_body.weight" in state else "3conv",
        "num_feat": num_feat,
        "img_range": 255.0 if window == 7 else 1.0,  # the JPEG-artifact models (window 7) work in 0..255
    }
    return kwargs, scale


def _swinir_input(state: dict[str, Any], folded: int, unshuffled: bool, path: Path, refuse: Refuse) -> tuple[int, int]:
    """(image channels, pixel-unshuffle factor) of SwinIR's first conv, which takes `folded` channels.

    An unshuffled first conv takes channels * factor^2: the channels are the output conv's, else RGB's 3.
    """
    if not unshuffled:
        return folded, 1
    channels = _shape(state, "conv_last.weight")[0] if "conv_last.weight" in state else 3
    factor = math.isqrt(folded // channels)
    if factor < 2 or channels * factor * factor != folded:
        raise refuse(path, f"is a SwinIR whose unshuffled first conv takes {folded} channels")
    return channels, factor


def _swinir_reconstruction(state: dict[str, Any], channels: int, path: Path, refuse: Refuse) -> tuple[str, int, int]:
    """(upsampler, upscale, num_feat) of SwinIR's reconstruction head (`channels`: the image's)."""
    if "conv_before_upsample.0.weight" in state:
        num_feat = _shape(state, "conv_before_upsample.0.weight")[0]
        ups = _indices(state, r"conv_up(\d+)\.weight")
        if ups:  # nearest+conv: one nearest 2x + conv per conv_upN (the real-SR x4 models have two)
            return "nearest+conv", 2 ** len(ups), num_feat
        convs = _indices(state, r"upsample\.(\d+)\.weight")
        if not convs:
            raise refuse(path, "is a SwinIR without its upsampler")
        factor = round(math.sqrt(_shape(state, f"upsample.{convs[0]}.weight")[0] / num_feat))
        return "pixelshuffle", 3 if factor == 3 else 2 ** len(convs), num_feat
    if "upsample.0.weight" in state:
        out_ch = _shape(state, "upsample.0.weight")[0]
        return "pixelshuffledirect", round(math.sqrt(out_ch / channels)), 64
    return "", 1, 64


# -- SCUNet ---------------------------------------------------------------------------------------

_SCUNET_STAGES = ("m_down1", "m_down2", "m_down3", "m_body", "m_up3", "m_up2", "m_up1")


def scunet_kwargs(state: dict[str, Any], path: Path, refuse: Refuse) -> dict[str, Any]:
    """SCUNet's constructor arguments (dim, stage block counts, head width, window) from `state`."""
    dim, in_nc = _shape(state, "m_head.0.weight")[:2]
    config = tuple(len(_indices(state, rf"{stage}\.(\d+)\.trans_block\.")) for stage in _SCUNET_STAGES)
    first = next((key for key in state if key.endswith(".msa.relative_position_params")), None)
    if first is None:
        raise refuse(path, "is a SCUNet-like network without transformer blocks")
    heads, span = _shape(state, first)[:2]
    half = _shape(state, first.replace("relative_position_params", "linear.weight"))[0]
    if span % 2 == 0 or half % heads:
        raise refuse(path, f"is a SCUNet-like network with a {span}-wide position table for {heads} heads")
    return {"in_nc": in_nc, "config": config, "dim": dim, "head_dim": half // heads, "window_size": (span + 1) // 2}
