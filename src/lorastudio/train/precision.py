"""What `train.mixed_precision: auto` means on this device for this model family."""

from __future__ import annotations

import torch

from lorastudio.errors import LorastudioError

__all__ = ["mixed_precision_for"]


def mixed_precision_for(requested: str, device_type: str, family_precision: str = "auto") -> str:
    """What `train.mixed_precision` means on this device; `auto` follows the family's
    `train_precision` (Kolors: bf16, else fp32 — never fp16)."""
    if requested == "auto":
        if device_type == "cuda":
            fallback = "no" if family_precision == "bf16" else "fp16"
            return "bf16" if torch.cuda.is_bf16_supported() else fallback
        return "no"
    if requested == "fp16" and device_type != "cuda":
        raise LorastudioError("train.mixed_precision=fp16: needs a CUDA GPU; use bf16 or no on the CPU.")
    return requested
