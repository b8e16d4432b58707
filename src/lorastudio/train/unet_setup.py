"""How the UNet runs while it trains: gradient checkpointing, the attention kernel, torch.compile.

Each is a memory/speed trade the config chooses (kohya's `gradient_checkpointing`, `--sdpa` /
`--xformers`, `torch_compile` + `dynamo_backend`); gathered here so the trainer sets them in one call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorastudio.train.attention import ATTENTION_LABELS, apply_attention, resolve_attention
from lorastudio.train.config import TrainConfig

__all__ = ["set_up_unet", "uses_gradient_checkpointing"]


def uses_gradient_checkpointing(cfg: TrainConfig, model: Any, device_type: str) -> bool:
    """The config's choice; left unset, the family's on a GPU (Kolors: on)."""
    train = cfg.train
    if "gradient_checkpointing" in train.model_fields_set:
        return train.gradient_checkpointing
    return train.gradient_checkpointing or (device_type == "cuda" and model.family.train_gradient_checkpointing)


def set_up_unet(
    cfg: TrainConfig, model: Any, device_type: str, text_trains: bool, cache_dir: Path, say: Callable[[str], None]
) -> str:
    """Checkpointing (text encoders too when they train), attention, compile; returns the attention used."""
    if uses_gradient_checkpointing(cfg, model, device_type):
        model.unet.enable_gradient_checkpointing()
        if text_trains:
            for encoder in model.text_encoders:
                encoder.gradient_checkpointing_enable()
                encoder.train()  # transformers checkpoints only in training mode (CLIP has no dropout)
    attention = resolve_attention(cfg.train.attention, device_type)
    apply_attention(model.unet, attention)
    say(f"attention: {ATTENTION_LABELS[attention]}")
    if cfg.train.torch_compile:
        from lorastudio.models.compiled import compile_in_place

        # In place: state-dict names unchanged, so checkpoints and exports read the same.
        compile_in_place(model.unet, cfg.train.dynamo_backend, cache_dir)
        say(f"compile: UNet with torch.compile ({cfg.train.dynamo_backend}); each bucket shape compiles on its first step")
    return attention
