"""What a run trains: LoRA layers, the trigger embedding or the whole UNet, and their rates.

`setup_trainables` puts the trainable parts into a loaded model (seeded, so two runs start
from the same weights); `param_groups` gives the optimizer one learning rate per part;
`TrainableState` is the custom part of `accelerate`'s resumable state.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch

from lorastudio.errors import LorastudioError
from lorastudio.train.lora_modules import LoraSet, TargetSpec, inject_lora, text_encoder_targets, unet_targets
from lorastudio.train.text import TriggerEmbedding

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lorastudio.models.loading import LoadedModel
    from lorastudio.train.config import TrainConfig

__all__ = ["setup_trainables", "param_groups", "TrainableState", "unet_dtype_bridge"]


def setup_trainables(cfg: TrainConfig, model: LoadedModel) -> tuple[LoraSet | None, TriggerEmbedding | None]:
    """Make the UNet, a trigger embedding and/or LoRA layers trainable; returns (LoRA set, embedding)."""
    _check_text_side(cfg, model.family)
    generator = torch.Generator().manual_seed(cfg.seed)
    lora_set, embedding = None, None
    if cfg.trains_full_unet:
        # fp32 master weights: optimizer updates of 1e-6 vanish in bf16/fp16 weights.
        model.unet.to(torch.float32).requires_grad_(True)
    if cfg.trains_embedding:
        embedding = TriggerEmbedding(
            cfg.trigger,
            cfg.embedding.num_vectors,
            cfg.embedding.init_text,
            model.text_encoders,
            model.tokenizers,
        ).to(model.device)
        embedding.attach(model.text_encoders)
    if cfg.trains_lora:
        lora_set = LoraSet()
        conv_rank = cfg.lora.conv_rank or cfg.lora.rank
        spec = TargetSpec(
            "unet", cfg.lora.rank, conv_rank, cfg.lora.alpha, cfg.lora.targets, cfg.lora.type, cfg.lora.conv_alpha
        )
        inject_lora(
            model.unet,
            spec,
            unet_targets(model.unet, cfg.lora.targets),
            lora_set,
            generator,
            cfg.lora.dropout,
        )
        if cfg.lora.train_text_encoder:
            for component, encoder in zip(model.family.text_encoders, model.text_encoders, strict=True):
                spec = TargetSpec(
                    component, cfg.lora.rank, conv_rank, cfg.lora.alpha, cfg.lora.targets, cfg.lora.type
                )
                inject_lora(
                    encoder,
                    spec,
                    text_encoder_targets(encoder, cfg.lora.targets),
                    lora_set,
                    generator,
                    cfg.lora.dropout,
                )
    return lora_set, embedding


def _check_text_side(cfg: TrainConfig, family) -> None:
    """Kolors' ChatGLM (6 B parameters) is never adapted: its LoRAs and triggers are UNet-only."""
    if family.text_encoder_kind == "clip":
        return
    if cfg.trains_embedding:
        raise LorastudioError(
            f"training: {family.label} has no textual-inversion embeddings; use a LoRA (method=lora) instead."
        )
    if cfg.trains_lora and cfg.lora.train_text_encoder:
        raise LorastudioError(
            f"lora.train_text_encoder: {family.label} LoRAs train the UNet only; set lora.train_text_encoder=false."
        )


def learning_rates(cfg: TrainConfig) -> tuple[float, float, float]:
    """(UNet, text-encoder, trigger-embedding) rates: what the optimizer uses and the file records."""
    te_lr = cfg.train.text_encoder_lr or cfg.train.learning_rate
    return cfg.train.learning_rate, te_lr, cfg.embedding.learning_rate or te_lr


def param_groups(
    cfg: TrainConfig, model: LoadedModel, lora_set: LoraSet | None, embedding: TriggerEmbedding | None
) -> list[dict]:
    """The optimizer's groups: UNet rate, text-encoder rate, embedding rate (no weight decay)."""
    unet_lr, te_lr, emb_lr = learning_rates(cfg)
    groups = []
    if cfg.trains_full_unet:
        groups.append({"params": list(model.unet.parameters()), "lr": unet_lr})
    if lora_set is not None:
        groups.append({"params": lora_set.parameters_of(("unet",)), "lr": unet_lr})
        groups.append({"params": lora_set.parameters_of(("text_encoder", "text_encoder_2")), "lr": te_lr})
    if embedding is not None:
        groups.append({"params": list(embedding.parameters()), "lr": emb_lr, "weight_decay": 0.0})
    return groups


class TrainableState:
    """LoRA tensors, trigger vectors and the step: the custom part of `accelerate`'s state."""

    def __init__(self, trainer: Any):  # the Trainer, read when accelerate saves or loads
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        t = self.trainer
        return {
            "step": t.step,
            "lora": t.lora_set.lora_state_dict() if t.lora_set is not None else {},
            "embedding": t.embedding.as_tensors() if t.embedding is not None else [],
            # Only the main process writes the state; every rank loads that file on resume.
            "unet": _cpu_state(t.model.unet)
            if t.cfg.trains_full_unet and t.accelerator.is_main_process
            else {},
            "ema": t.ema.state_dict() if t.ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        t = self.trainer
        t.step = int(state["step"])
        if t.lora_set is not None:
            t.lora_set.load_lora_state_dict(state["lora"])
        if t.embedding is not None:
            with torch.no_grad():
                for param, saved in zip(t.embedding.vectors, state["embedding"], strict=True):
                    param.copy_(saved)
        if t.cfg.trains_full_unet:
            t.model.unet.load_state_dict(state["unet"])
        if t.ema is not None:
            t.ema.load_state_dict(state["ema"])


@contextlib.contextmanager
def unet_dtype_bridge(
    unet: torch.nn.Module, compute_dtype: torch.dtype, io_dtype: torch.dtype
) -> Iterator[None]:
    """Let a UNet kept in `compute_dtype` take and return the sampler's `io_dtype` tensors.

    A fully fine-tuned UNet trains in fp32 while the VAE, text encoders and the sampling
    loop stay in the model's bf16/fp16; autocast would also reach the VAE's fp32 fallback.
    """
    if compute_dtype == io_dtype:
        yield
        return

    def cast(value, dtype):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(dtype)
        if isinstance(value, dict):
            return {k: cast(v, dtype) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return type(value)(cast(v, dtype) for v in value)
        return value

    def before(_module, args, kwargs):
        return cast(args, compute_dtype), cast(kwargs, compute_dtype)

    def after(_module, _args, output):
        if isinstance(output, tuple):
            return cast(output, io_dtype)
        output.sample = output.sample.to(io_dtype)
        return output

    handles = [
        unet.register_forward_pre_hook(before, with_kwargs=True),
        unet.register_forward_hook(after),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}  # written at once: no clone

