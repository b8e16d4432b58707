"""A random LoRA on a tiny model's UNet attention, for tests that need a LoRA file with a real effect."""

from __future__ import annotations

import torch

TARGETS = ("attn2.to_k", "attn2.to_v", "attn1.to_q", "attn1.to_out.0")


def random_lora(model, rank: int = 4, alpha: float = 2.0, seed: int = 0, scale: float = 0.2):
    """Seeded random down/up weights on the UNet's attention projections (a kohya-style `LoraFile`).

    A small `scale` stays in the linear regime (weight 0.3 changes less than 1.0).
    """
    from lorastudio.adapters import LoraFile, LoraModule

    g = torch.Generator().manual_seed(seed)
    lora = LoraFile()
    for path, module in model.unet.named_modules():
        if path.endswith(TARGETS):
            down = torch.randn(rank, module.in_features, generator=g) * scale
            up = torch.randn(module.out_features, rank, generator=g) * scale
            lora.add("unet", path, LoraModule(down, up, alpha, "linear"))
    return lora
