"""Trainable LoRA wrappers around Linear / Conv2d layers, injected in place.

Own wrappers (not peft) keep the trained tensors exactly in kohya's shape
(`lora_down` [r, in(, k, k)], `lora_up` [out, r(, 1, 1)], `alpha`), so export is a rename.
The wrapped layer keeps its weights frozen; `up` starts at zero, so a fresh LoRA changes
nothing, and `down` is drawn from a seeded generator so runs repeat exactly.

`lora.type=loha|lokr` trains LyCORIS' LoHa / LoKr instead (`LohaLayer`, `LokrLayer`): the
tensors carry LyCORIS' names and shapes (`hada_w1_a`…, `lokr_w1`, `lokr_w2_a`…) and LyCORIS'
initialisation (one factor zero, so a fresh layer changes nothing either); the layer adds
`op(x, scale · ΔW)`, the same ΔW that `adapters.lycoris` adds to the weight at generation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from typing import Any

    from lorastudio.train.sections import LoraConfig

__all__ = [
    "LoraLayer",
    "LohaLayer",
    "LokrLayer",
    "TargetSpec",
    "unet_targets",
    "text_encoder_targets",
    "inject_lora",
    "LoraSet",
    "factorization",
    "conv_network_args",
    "lycoris_network_args",
]

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

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.base(x, *args, **kwargs)
        if self.multiplier == 0.0:
            return out
        delta = self.lora_up(self.lora_down(self.dropout(x.to(self.lora_down.weight.dtype))))
        return out + (delta * (self.scale * self.multiplier)).to(out.dtype)

    def trainable_tensors(self) -> dict[str, torch.Tensor]:
        """The trained tensors by checkpoint name (`down`/`up`, as resume states have always held)."""
        return {"down": self.lora_down.weight, "up": self.lora_up.weight}

    def to_module(self) -> nn.Module:
        """The trained update as an `adapters` module (float32 copies on the CPU)."""
        from lorastudio.adapters.lora_file import LoraModule

        down = self.lora_down.weight.detach().float().cpu().clone()
        up = self.lora_up.weight.detach().float().cpu().clone()
        return LoraModule(down, up, self.alpha, self.kind)


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """(m, n) with m * n = dimension, m <= n, as balanced as `factor` allows (LyCORIS' LoKr split).

    factor > 0 dividing the dimension gives (factor, dimension / factor), ordered; otherwise m
    grows through the divisors while m + n shrinks and m stays <= factor (-1: no bound).
    """
    if factor > 0 and dimension % factor == 0:
        m, n = factor, dimension // factor
        return (m, n) if m <= n else (n, m)
    bound = dimension if factor < 0 else factor
    m, n = 1, dimension
    for candidate in range(2, dimension + 1):
        if candidate > bound:
            break
        if dimension % candidate:
            continue
        other = dimension // candidate
        if candidate + other > m + n:
            break
        m, n = candidate, other
        if m >= n:
            break
    return (m, n) if m <= n else (n, m)


class _LycorisLayer(nn.Module):
    """Shared by LoHa / LoKr: `base(x) + multiplier * op(dropout(x), scale * ΔW)`."""

    type_name = ""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.base = base
        self.rank = rank
        self.alpha = float(alpha)
        self.multiplier = 1.0
        if isinstance(base, nn.Linear):
            self.kind = "linear"
            self.shape = (base.out_features, base.in_features)
        elif isinstance(base, nn.Conv2d):
            self.kind = "conv"
            self.shape = (base.out_channels, base.in_channels // base.groups, *base.kernel_size)
        else:  # pragma: no cover - callers only pass the two kinds
            raise TypeError(f"{type(self).__name__} needs a Linear or Conv2d, got {type(base).__name__}")
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta_weight(self) -> torch.Tensor:  # pragma: no cover - subclasses
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base(x, *args, **kwargs)
        if self.multiplier == 0.0:
            return out
        weight = self.delta_weight() * (self.scale * self.multiplier)
        h = self.dropout(x.to(weight.dtype))
        if self.kind == "linear":
            delta = nn.functional.linear(h, weight)
        else:
            base = self.base
            delta = nn.functional.conv2d(h, weight, None, base.stride, base.padding, base.dilation, base.groups)
        return out + delta.to(out.dtype)

    def trainable_tensors(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.named_parameters(recurse=False)}

    def to_module(self):
        from lorastudio.adapters import lycoris

        tensors = {name: p.detach().float().cpu().clone() for name, p in self.trainable_tensors().items()}
        return self._adapter_module(lycoris, tensors)


class LohaLayer(_LycorisLayer):
    """LoHa: ΔW = (w1_a @ w1_b) ⊙ (w2_a @ w2_b), scaled by alpha / rank; convs flattened to [out, in·k·k]."""

    type_name = "loha"

    def __init__(
        self, base: nn.Module, rank: int, alpha: float, generator: torch.Generator, dropout: float = 0.0
    ):
        super().__init__(base, rank, alpha, dropout)
        out, flat = self.shape[0], math.prod(self.shape[1:])
        # LyCORIS' init: w1_a ~ N(0, 0.1), w1_b ~ N(0, 1), w2_b ~ N(0, 1), w2_a = 0 (ΔW starts at 0).
        self.hada_w1_a = nn.Parameter(torch.randn(out, rank, generator=generator) * 0.1)
        self.hada_w1_b = nn.Parameter(torch.randn(rank, flat, generator=generator))
        self.hada_w2_a = nn.Parameter(torch.zeros(out, rank))
        self.hada_w2_b = nn.Parameter(torch.randn(rank, flat, generator=generator))

    def delta_weight(self) -> torch.Tensor:
        return ((self.hada_w1_a @ self.hada_w1_b) * (self.hada_w2_a @ self.hada_w2_b)).reshape(self.shape)

    def _adapter_module(self, lycoris, t):
        return lycoris.LohaModule(
            t["hada_w1_a"], t["hada_w1_b"], t["hada_w2_a"], t["hada_w2_b"], self.alpha, self.kind
        )


class LokrLayer(_LycorisLayer):
    """LoKr: ΔW = kron(w1, w2) with out = a·b, in = c·d split by `factorization`.

    As LyCORIS does by default: w1 [a, c] is a full matrix; w2 [b, d(·k·k)] is the low-rank pair
    w2_a @ w2_b when rank < max(b, d) / 2 (scale alpha / rank), else a full matrix (scale 1).
    """

    type_name = "lokr"

    def __init__(
        self,
        base: nn.Module,
        rank: int,
        alpha: float,
        generator: torch.Generator,
        dropout: float = 0.0,
        factor: int = -1,
    ):
        super().__init__(base, rank, alpha, dropout)
        out, inp, *k = self.shape
        (a, b), (c, d) = factorization(out, factor), factorization(inp, factor)
        self.kron_shape = (a, b, c, d)
        self.w2_full = rank >= max(b, d) / 2
        self.lokr_w1 = nn.Parameter(self._kaiming(torch.empty(a, c), generator))
        if self.w2_full:
            self.lokr_w2 = nn.Parameter(torch.zeros(b, d, *k))
        else:
            self.lokr_w2_a = nn.Parameter(self._kaiming(torch.empty(b, rank), generator))
            self.lokr_w2_b = nn.Parameter(torch.zeros(rank, d * math.prod(k)))

    @staticmethod
    def _kaiming(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        bound = 1.0 / math.sqrt(tensor.shape[1])  # kaiming-uniform(a=sqrt(5)), as LyCORIS
        return torch.rand(tensor.shape, generator=generator) * 2 * bound - bound

    @property
    def scale(self) -> float:
        return 1.0 if self.w2_full else self.alpha / self.rank

    def delta_weight(self) -> torch.Tensor:
        if self.w2_full:
            w2 = self.lokr_w2
        else:
            w2 = self.lokr_w2_a @ self.lokr_w2_b
        w1 = self.lokr_w1
        while w1.dim() < w2.dim():
            w1 = w1.unsqueeze(-1)
        return torch.kron(w1, w2).reshape(self.shape)

    def _adapter_module(self, lycoris, t):
        # a full w2 keeps no alpha (LyCORIS writes none that matters: scale is 1)
        alpha = None if self.w2_full else self.alpha
        return lycoris.LokrModule(
            w1=t["lokr_w1"], w2=t.get("lokr_w2"), w2_a=t.get("lokr_w2_a"), w2_b=t.get("lokr_w2_b"),
            alpha=alpha, kind=self.kind,
        )  # fmt: skip


_LAYER_TYPES = {"lora": LoraLayer, "loha": LohaLayer, "lokr": LokrLayer}


def lycoris_network_args(lora_cfg: LoraConfig) -> dict[str, str]:
    """`ss_network_args` entries LyCORIS' kohya loader reads (`algo`; `conv_dim`, `conv_alpha` only where
    the convs are trained: LyCORIS adds conv layers for a conv_dim); none for LoRA."""
    if lora_cfg.type == "lora":
        return {}
    args = {"algo": lora_cfg.type}
    if lora_cfg.targets == "locon":
        args.update(conv_network_args(lora_cfg))
    return args


def conv_network_args(lora_cfg: LoraConfig) -> dict[str, str]:
    """`conv_dim` and `conv_alpha` as kohya writes them into `ss_network_args`: the strings of its
    `network_args` ("conv_dim=4", "conv_alpha=1"), so loaders that read them scale the convs alike."""
    conv_alpha = lora_cfg.conv_alpha if lora_cfg.conv_alpha is not None else lora_cfg.alpha
    return {"conv_dim": str(lora_cfg.conv_rank or lora_cfg.rank), "conv_alpha": f"{conv_alpha:g}"}


@dataclass(frozen=True)
class TargetSpec:
    """Which layers of a component get a LoRA, and with which rank."""

    component: str  # "unet", "text_encoder", "text_encoder_2"
    rank: int
    conv_rank: int
    alpha: float
    targets: str  # "attn", "kohya", "locon"
    algo: str = "lora"  # "lora", "loha", "lokr" (lora.type)
    conv_alpha: float | None = None  # the 3x3 convs' alpha (kohya conv_alpha); None: alpha


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
            for name, tensor in layer.trainable_tensors().items():
                state[f"{slot}.{name}"] = tensor.detach().clone()
        return state

    def load_lora_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for slot, layer in self.layers.items():
                for name, tensor in layer.trainable_tensors().items():
                    tensor.copy_(state[f"{slot}.{name}"])


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
    """Wrap each layer at `paths` in a `LoraLayer` (`LohaLayer`/`LokrLayer` for spec.algo); returns how many."""
    for path in paths:
        base = component.get_submodule(path)
        is_conv3 = isinstance(base, nn.Conv2d) and not _is_1x1(base)
        rank = spec.conv_rank if is_conv3 else spec.rank
        alpha = spec.conv_alpha if is_conv3 and spec.conv_alpha is not None else spec.alpha
        limit = _rank_limit(base)
        if rank > limit:
            raise LorastudioError(
                f"lora.rank {rank}: larger than layer {spec.component}.{path} allows ({limit}); "
                f"use lora.rank={limit} or less."
            )
        layer = _LAYER_TYPES[spec.algo](base, rank, alpha, generator, dropout).to(base.weight.device)
        _replace(component, path, layer)
        lora_set.add(spec.component, path, layer)
    return len(paths)


def _rank_limit(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return min(layer.in_features, layer.out_features)
    k = layer.kernel_size[0] * layer.kernel_size[1]
    return min(layer.in_channels * k, layer.out_channels)
