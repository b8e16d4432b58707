"""Trainable LoRA wrappers around Linear / Conv2d layers, injected in place.

Own wrappers (not peft) keep the trained tensors exactly in kohya's shape
(`lora_down` [r, in(, k, k)], `lora_up` [out, r(, 1, 1)], `alpha`), so export is a rename.
The wrapped layer keeps its weights frozen; `up` starts at zero, so a fresh LoRA changes
nothing, and `down` is drawn from a seeded generator so runs repeat exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from lorastudio.errors import LorastudioError

__all__ = ["LoraLayer", "TargetSpec", "unet_targets", "text_encoder_targets", "inject_lora", "LoraSet"]

# Module-name patterns (matched on the last path components) for each target set.
_ATTN = ("to_q", "to_k", "to_v", "to_out.0")
_TE_ATTN = ("q_proj", "k_proj", "v_proj", "out_proj")
_TE_MLP = ("fc1", "fc2")


class LoraLayer(nn.Module):
    """`base(x) + multiplier * alpha / rank * up(down(dropout(x)))` for one Linear or Conv2d."""

    def __init__(
        self, base: nn.Module, rank: int, alpha: float, generator: torch.Generator, dropout: float = 0.0
    ):
        super().__init__()
        self.base = base
        self.rank = rank
        self.alpha = float(alpha)
        self.multiplier = 1.0
        if isinstance(base, nn.Linear):
            self.kind = "linear"
            self.lora_down = nn.Linear(base.in_features, rank, bias=False)
            self.lora_up = nn.Linear(rank, base.out_features, bias=False)
        elif isinstance(base, nn.Conv2d):
            self.kind = "conv"
            self.lora_down = nn.Conv2d(
                base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False
            )
            self.lora_up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:  # pragma: no cover - callers only pass the two kinds
            raise TypeError(f"LoRA needs a Linear or Conv2d, got {type(base).__name__}")
        with torch.no_grad():
            bound = 1.0 / math.sqrt(self.lora_down.weight[0].numel())  # kaiming-uniform(a=sqrt(5)), as kohya
            self.lora_down.weight.copy_(
                torch.rand(self.lora_down.weight.shape, generator=generator) * 2 * bound - bound
            )
            nn.init.zeros_(self.lora_up.weight)
        self.lora_down.to(torch.float32)
        self.lora_up.to(torch.float32)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base(x, *args, **kwargs)
        if self.multiplier == 0.0:
            return out
        delta = self.lora_up(self.lora_down(self.dropout(x.to(self.lora_down.weight.dtype))))
        return out + (delta * (self.scale * self.multiplier)).to(out.dtype)


@dataclass(frozen=True)
class TargetSpec:
    """Which layers of a component get a LoRA, and with which rank."""

    component: str  # "unet", "text_encoder", "text_encoder_2"
    rank: int
    conv_rank: int
    alpha: float
    targets: str  # "attn", "kohya", "locon"


def _is_1x1(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)


def unet_targets(unet: nn.Module, targets: str) -> list[str]:
    """Module paths of the UNet layers a target set trains (kohya's rules)."""
    paths = []
    for name, module in unet.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        in_transformer = ".attentions." in f".{name}"
        if targets == "attn":
            if ".attn1." in name or ".attn2." in name:
                if any(name.endswith(t) for t in _ATTN):
                    paths.append(name)
        elif in_transformer and (isinstance(module, nn.Linear) or _is_1x1(module)):
            paths.append(name)  # kohya: every Linear / 1x1 conv in Transformer2DModel
        elif targets == "locon" and (
            ".resnets." in name or ".downsamplers." in name or ".upsamplers." in name
        ):
            paths.append(name)  # LoCon: ResNet convs, time projections, down/upsamplers
    return paths


def text_encoder_targets(encoder: nn.Module, targets: str) -> list[str]:
    """Module paths of the text-encoder layers trained: attention (and MLP unless `attn`)."""
    wanted = _TE_ATTN if targets == "attn" else _TE_ATTN + _TE_MLP
    return [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, nn.Linear) and ".layers." in f".{name}" and name.rsplit(".", 1)[-1] in wanted
    ]


class LoraSet(nn.Module):
    """All injected LoRA layers of a model, keyed by (component, module path).

    A plain container so optimizer, checkpointing and export see only the trainable part.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleDict()
        self.keys: list[tuple[str, str]] = []

    @staticmethod
    def _slot(component: str, path: str) -> str:
        return f"{component}:{path}".replace(".", "/")

    def add(self, component: str, path: str, layer: LoraLayer) -> None:
        self.layers[self._slot(component, path)] = layer
        self.keys.append((component, path))

    def get(self, component: str, path: str) -> LoraLayer:
        return self.layers[self._slot(component, path)]

    def items(self) -> Iterator[tuple[tuple[str, str], LoraLayer]]:
        for key in self.keys:
            yield key, self.get(*key)

    def parameters_of(self, components: tuple[str, ...]) -> list[nn.Parameter]:
        return [
            p
            for (c, _), layer in self.items()
            if c in components
            for p in layer.parameters()
            if p.requires_grad
        ]

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the LoRA tensors (not the frozen base layers the wrappers hold)."""
        state = {}
        for slot, layer in self.layers.items():
            state[f"{slot}.down"] = layer.lora_down.weight.detach().clone()
            state[f"{slot}.up"] = layer.lora_up.weight.detach().clone()
        return state

    def load_lora_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for slot, layer in self.layers.items():
                layer.lora_down.weight.copy_(state[f"{slot}.down"])
                layer.lora_up.weight.copy_(state[f"{slot}.up"])


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)


def inject_lora(
    component: nn.Module,
    spec: TargetSpec,
    paths: list[str],
    lora_set: LoraSet,
    generator: torch.Generator,
    dropout: float = 0.0,
) -> int:
    """Wrap each layer at `paths` in a `LoraLayer`; returns how many were wrapped."""
    for path in paths:
        base = component.get_submodule(path)
        is_conv3 = isinstance(base, nn.Conv2d) and not _is_1x1(base)
        rank = spec.conv_rank if is_conv3 else spec.rank
        alpha = spec.alpha
        limit = _rank_limit(base)
        if rank > limit:
            raise LorastudioError(
                f"lora.rank {rank}: larger than layer {spec.component}.{path} allows ({limit}); "
                f"use lora.rank={limit} or less."
            )
        layer = LoraLayer(base, rank, alpha, generator, dropout).to(base.weight.device)
        _replace(component, path, layer)
        lora_set.add(spec.component, path, layer)
    return len(paths)


def _rank_limit(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return min(layer.in_features, layer.out_features)
    k = layer.kernel_size[0] * layer.kernel_size[1]
    return min(layer.in_channels * k, layer.out_channels)
