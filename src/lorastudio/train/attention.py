"""Which attention kernel the UNet trains with: PyTorch SDPA, or xformers when installed.

diffusers' UNets use `torch.nn.functional.scaled_dot_product_attention` by default (flash /
memory-efficient kernels on CUDA, a plain kernel on the CPU), which is what kohya's `--sdpa`
selects. xformers is an optional CUDA package; `train.attention=auto` uses it when it is
importable on a CUDA device, `xformers` insists on it, `sdpa` never uses it.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

__all__ = ["resolve_attention", "apply_attention", "ATTENTION_LABELS"]

ATTENTION_LABELS = {
    "sdpa": "sdpa (torch scaled_dot_product_attention)",
    "xformers": "xformers (memory-efficient attention)",
}


def _xformers_installed() -> bool:
    return importlib.util.find_spec("xformers") is not None


def resolve_attention(requested: str, device_type: str) -> str:
    """`auto` | `sdpa` | `xformers` -> the kernel actually used (`sdpa` or `xformers`)."""
    if requested == "sdpa":
        return "sdpa"
    if requested == "xformers":
        if not _xformers_installed():
            raise LorastudioError(
                "train.attention=xformers: the xformers package is not installed;"
                " `pip install xformers` (CUDA) or use train.attention=sdpa."
            )
        if device_type != "cuda":
            raise LorastudioError("train.attention=xformers: needs a CUDA GPU; use train.attention=sdpa.")
        return "xformers"
    if requested != "auto":
        raise LorastudioError(f"train.attention {requested!r}: unknown; choose auto, sdpa or xformers.")
    return "xformers" if device_type == "cuda" and _xformers_installed() else "sdpa"


def apply_attention(unet: UNet2DConditionModel, kind: str) -> None:
    """Switch the UNet's attention processors to `kind` (SDPA is diffusers' default: nothing to do)."""
    if kind == "xformers":
        unet.enable_xformers_memory_efficient_attention()
