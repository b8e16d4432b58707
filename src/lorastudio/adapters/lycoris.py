"""LyCORIS files: LoCon, LoHa, LoKr, (IA)^3, OFT, full ("diff") and DoRA-weighted modules.

LyCORIS names modules like kohya (`lora_unet_…`, `lora_te_…`, `lora_te1_/te2_…`; SimpleTuner:
`lycoris_<diffusers path>`) and tells the algorithm by the tensor suffixes of each module:

- LoCon: `lora_down`, `lora_up` (or peft's `lora_A`, `lora_B`; + `lora_mid` for its Tucker/CP conv
  variant), `alpha`.
  Folding mid into down gives an exactly equal plain pair, so it becomes a `LoraModule`.
- LoHa: `hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b` (+ `hada_t1`, `hada_t2` for CP
  convs), `alpha`: ΔW = alpha/dim · (w1_a @ w1_b) ⊙ (w2_a @ w2_b).
- LoKr: `lokr_w1` or `lokr_w1_a`/`lokr_w1_b`, `lokr_w2` or `lokr_w2_a`/`lokr_w2_b` (+ `lokr_t2`),
  `alpha`: ΔW = scale · kron(w1, w2), scale alpha/dim where dim is the rank of whichever half is
  decomposed, and 1 when both halves are full matrices (LyCORIS, A1111 and ComfyUI agree).
- (IA)^3: `weight` (+ `on_input`): ΔW = W · w, per output row (per input column with on_input).
- full: `diff` (+ `diff_b`): ΔW = diff, Δb = diff_b; `train_norm`'s `w_norm`/`b_norm` on norm
  layers are the same thing.
- OFT: `oft_blocks` (kohya, LyCORIS diag-OFT) or `oft_diag`, `alpha` (+ `rescale`): a rotation of the
  output rows, W' = Rᵀ W (`adapters.oft`).
- bias differences: `diff_b` beside a low-rank pair or alone (ComfyUI's LoraSave writes them): Δb = diff_b.
- DoRA: `dora_scale` beside any of the above: W' = m · (W + ΔW) / ‖W + ΔW‖, the norm per
  output row when `dora_scale` is [out, 1, …] (LyCORIS `wd_on_out`) and per input column when
  it is [1, in, …]; at strength s the weight moves by s · (W' − W), as A1111 and ComfyUI do.

Every module offers `update(weight, strength)`: what to add to the (float32) weight, so the
patcher stays one loop and restores the original bits afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lorastudio.adapters.comfy_names import split_comfy_key
from lorastudio.adapters.kohya_names import (
    BUNDLE_PREFIX,
    MODULE_PREFIXES,
    component_and_name,
    kohya_to_module_path,
    read_bundled_embeddings,
    uses_ldm_unet_names,
)
from lorastudio.adapters.lora_file import LoraFile, LoraModule
from lorastudio.adapters.oft import OftModule
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import torch

__all__ = [
    "AnyModule",
    "BiasDiffModule",
    "DoraModule",
    "FullModule",
    "Ia3Module",
    "LohaModule",
    "LokrModule",
    "NETWORK_TYPES",
    "is_lycoris_state_dict",
    "lora_from_lycoris_state_dict",
    "lycoris_state_dict_of",
    "module_from_parts",
    "module_type",
    "network_types",
    "network_types_from_keys",
    "scaled_delta",
]

# Per-module tensor suffixes -> the algorithm they belong to.
_LOHA = {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"}
_LOKR = {"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t1", "lokr_t2"}
_LOCON = {"lora_down.weight", "lora_up.weight", "lora_mid.weight"}
_IA3 = {"weight", "on_input"}
_FULL = {"diff", "diff_b"}
_OFT = {"oft_blocks", "oft_diag", "rescale"}
_COMMON = {"alpha", "dora_scale"}
# Other writers' names for the same tensors, as A1111 and ComfyUI read them: peft's lora_A/B under
# kohya names, and LyCORIS `train_norm`'s norm-layer differences (a full diff on the norm's weight).
_SAME_AS = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight", "w_norm": "diff", "b_norm": "diff_b"}
NETWORK_TYPES = ("lora", "locon", "loha", "lokr", "ia3", "oft", "full", "dora")


def _scale(alpha: float | None, dim: int) -> float:
    """alpha / dim, with a missing or zero alpha meaning alpha = dim (scale 1)."""
    return float(alpha) / dim if alpha else 1.0


def _f32(tensor: torch.Tensor, device) -> torch.Tensor:
    import torch

    return tensor.to(device=device, dtype=torch.float32)


def _tucker(t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """CP/Tucker rebuild: t [r, r, k, k], a [r, out], b [r, in] -> [out, in, k, k]."""
    import torch

    return torch.einsum("i j ..., i p, j r -> p r ...", t, a, b).contiguous()


@dataclass
class LohaModule:
    """LoHa: Hadamard product of two low-rank products (`hada_*` tensors, as LyCORIS saves them)."""

    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    alpha: float | None = None
    kind: str = "linear"
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    type_name = "loha"

    @property
    def rank(self) -> int:
        return int(self.w1_b.shape[0])

    @property
    def scale(self) -> float:
        return _scale(self.alpha, self.rank)

    def delta(self, shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        """(w1_a @ w1_b) ⊙ (w2_a @ w2_b) in float32, shaped like the target weight (no alpha)."""
        if self.t1 is not None and self.t2 is not None:
            first = _tucker(_f32(self.t1, device), _f32(self.w1_a, device), _f32(self.w1_b, device))
            second = _tucker(_f32(self.t2, device), _f32(self.w2_a, device), _f32(self.w2_b, device))
        else:
            first = _f32(self.w1_a, device) @ _f32(self.w1_b, device).reshape(self.rank, -1)
            second = _f32(self.w2_a, device) @ _f32(self.w2_b, device).reshape(self.w2_b.shape[0], -1)
        return (first * second).reshape(shape)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"hada_w1_a": self.w1_a, "hada_w1_b": self.w1_b, "hada_w2_a": self.w2_a, "hada_w2_b": self.w2_b}
        if self.t1 is not None:
            out.update(hada_t1=self.t1, hada_t2=self.t2)
        return out


@dataclass
class LokrModule:
    """LoKr: Kronecker product of w1 and w2, either of which may be a low-rank pair."""

    w1: torch.Tensor | None = None
    w1_a: torch.Tensor | None = None
    w1_b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2_a: torch.Tensor | None = None
    w2_b: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    alpha: float | None = None
    kind: str = "linear"
    type_name = "lokr"

    @property
    def rank(self) -> int:
        """The decomposition's dim (0 when both halves are full matrices)."""
        if self.w1_b is not None:
            return int(self.w1_b.shape[0])
        if self.w2_b is not None:
            return int(self.w2_b.shape[0])
        return 0

    @property
    def scale(self) -> float:
        return _scale(self.alpha, self.rank) if self.rank else 1.0

    def delta(self, shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        import torch

        w1 = _f32(self.w1, device) if self.w1 is not None else _f32(self.w1_a, device) @ _f32(self.w1_b, device)
        if self.w2 is not None:
            w2 = _f32(self.w2, device)
        elif self.t2 is not None:
            w2 = _tucker(_f32(self.t2, device), _f32(self.w2_a, device), _f32(self.w2_b, device))
        else:
            w2 = _f32(self.w2_a, device) @ _f32(self.w2_b, device).reshape(self.w2_b.shape[0], -1)
        while w1.dim() < w2.dim():
            w1 = w1.unsqueeze(-1)
        return torch.kron(w1, w2).reshape(shape)

    def tensors(self) -> dict[str, torch.Tensor]:
        names = {
            "lokr_w1": self.w1,
            "lokr_w1_a": self.w1_a,
            "lokr_w1_b": self.w1_b,
            "lokr_w2": self.w2,
            "lokr_w2_a": self.w2_a,
            "lokr_w2_b": self.w2_b,
            "lokr_t2": self.t2,
        }
        return {k: v for k, v in names.items() if v is not None}


@dataclass
class FullModule:
    """A full weight difference (`diff`, optional bias difference `diff_b`)."""

    diff: torch.Tensor
    diff_b: torch.Tensor | None = None
    kind: str = "linear"
    alpha = None
    rank = 0
    scale = 1.0
    type_name = "full"

    def delta(self, shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        return _f32(self.diff, device).reshape(shape)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"diff": self.diff} | ({"diff_b": self.diff_b} if self.diff_b is not None else {})


@dataclass
class Ia3Module:
    """(IA)^3: a learned per-channel rescale, ΔW = W · w (rows, or input columns with on_input)."""

    weight: torch.Tensor
    on_input: bool = False
    kind: str = "linear"
    alpha = None
    rank = 0
    scale = 1.0
    type_name = "ia3"

    def delta_for(self, weight: torch.Tensor) -> torch.Tensor:
        w = _f32(self.weight, weight.device).flatten()
        view = [1] * weight.dim()
        view[1 if self.on_input else 0] = -1
        return weight * w.reshape(view)

    def tensors(self) -> dict[str, torch.Tensor]:
        import torch

        return {"weight": self.weight, "on_input": torch.tensor(int(self.on_input))}


@dataclass
class DoraModule:
    """Weight-decomposed (DoRA) form of an inner LoRA/LoHa/LoKr module: magnitude `dora_scale`."""

    inner: object
    dora_scale: torch.Tensor

    type_name = "dora"

    def __getattr__(self, name):  # rank, alpha, kind, down/up of the inner module
        if name in {"inner", "dora_scale"}:
            raise AttributeError(name)
        return getattr(self.inner, name)

    def on_output(self, weight: torch.Tensor) -> bool:
        return self.dora_scale.shape[0] == weight.shape[0] and self.dora_scale.shape[0] != 1

    def decomposed(self, merged: torch.Tensor) -> torch.Tensor:
        """m · merged / ‖merged‖, the norm over each output row or each input column (+ eps)."""
        import torch

        if self.on_output(merged):
            norm = merged.reshape(merged.shape[0], -1).norm(dim=1)
            norm = norm.reshape(merged.shape[0], *[1] * (merged.dim() - 1))
        else:
            flat = merged.transpose(0, 1).reshape(merged.shape[1], -1)
            norm = flat.norm(dim=1).reshape(merged.shape[1], *[1] * (merged.dim() - 1)).transpose(0, 1)
        norm = norm + torch.finfo(torch.float32).eps
        magnitude = _f32(self.dora_scale, merged.device).reshape(norm.shape)
        return merged * (magnitude / norm)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**lycoris_tensors(self.inner), "dora_scale": self.dora_scale}


@dataclass
class BiasDiffModule:
    """A bias difference `diff_b` beside another module's weight update, or alone (`inner` None).

    ComfyUI's LoraSave writes one beside nearly every low-rank pair it extracts (a `FullModule`
    holds the `diff_b` that LyCORIS writes beside a `diff`).
    """

    inner: object | None
    diff_b: torch.Tensor

    type_name = "full"

    def __getattr__(self, name):  # rank, alpha, kind, scale of the inner module
        if name in {"inner", "diff_b"}:
            raise AttributeError(name)
        if self.inner is None:
            alone = {"rank": 0, "alpha": None, "scale": 1.0, "kind": "linear"}
            if name in alone:
                return alone[name]
            raise AttributeError(name)
        return getattr(self.inner, name)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {**(lycoris_tensors(self.inner) if self.inner is not None else {}), "diff_b": self.diff_b}


# Any one layer's update, as `module_from_parts` builds it.
AnyModule = LoraModule | LohaModule | LokrModule | FullModule | Ia3Module | DoraModule | BiasDiffModule | OftModule


def module_type(module: AnyModule) -> str:
    """"lora", "locon" (a LoRA on a conv), "loha", "lokr", "ia3", "oft", "full" or "dora"."""
    if isinstance(module, LoraModule):
        return "locon" if module.kind == "conv" else "lora"
    return module.type_name


def _wrapped(module):
    """The module, then what it wraps (a DoRA's or a bias difference's inner module), outermost first."""
    while module is not None:
        yield module
        module = module.inner if isinstance(module, DoraModule | BiasDiffModule) else None


def network_types(lora: LoraFile) -> list[str]:
    """The module types a LoRA holds, in NETWORK_TYPES order (a DoRA file also lists its inner type)."""
    found = {module_type(layer) for module in lora.modules.values() for layer in _wrapped(module)}
    return [t for t in NETWORK_TYPES if t in found]


def network_types_from_keys(keys: Iterable[str]) -> list[str]:
    """The same, from tensor names only (a safetensors header), for listings that load no tensors."""
    found = set()
    for key in keys:
        base, _, rest = key.partition(".")
        if not base.startswith(MODULE_PREFIXES):
            split = split_comfy_key(key)
            if split is None:
                continue
            rest = split[1]
        rest = _SAME_AS.get(rest, rest)
        if rest.startswith("hada_"):
            found.add("loha")
        elif rest.startswith("lokr_"):
            found.add("lokr")
        elif rest in ("diff", "diff_b"):
            found.add("full")
        elif rest in ("oft_blocks", "oft_diag"):
            found.add("oft")
        elif rest == "on_input" or rest == "weight":
            found.add("ia3")
        elif rest == "dora_scale":
            found.add("dora")
        elif rest.startswith("lora_down"):
            found.add("lora")
    return [t for t in NETWORK_TYPES if t in found]


def scaled_delta(module: AnyModule, weight: torch.Tensor) -> torch.Tensor:
    """alpha-scaled ΔW in float32, shaped like `weight` (before the request's strength)."""
    if isinstance(module, LoraModule):  # a DoRA's inner LoRA (plain ones take patch.py's own path)
        return module.delta(device=weight.device).reshape(weight.shape) * module.scale
    if isinstance(module, Ia3Module):
        return module.delta_for(weight)
    return module.delta(weight.shape, device=weight.device) * module.scale


def delta_numel(module: AnyModule) -> int | None:
    """How many weights the module's ΔW has (None when it depends on the target, as for (IA)^3 or OFT)."""
    if isinstance(module, DoraModule | BiasDiffModule):
        return delta_numel(module.inner) if module.inner is not None else None
    if isinstance(module, LoraModule):
        return module.delta().numel()
    if isinstance(module, LohaModule):
        return module.w1_a.shape[0] * module.w1_b[0].numel() if module.t1 is None else None
    if isinstance(module, LokrModule):
        w1 = module.w1 if module.w1 is not None else module.w1_a @ module.w1_b
        if module.w2 is not None:
            return w1.numel() * module.w2.numel()
        if module.t2 is not None:
            return None
        return w1.numel() * module.w2_a.shape[0] * module.w2_b[0].numel()
    if isinstance(module, FullModule):
        return module.diff.numel()
    return None


def update(module: AnyModule, weight: torch.Tensor, strength: float) -> torch.Tensor:
    """What to add to `weight` (float32) for this module at `strength`."""
    import torch

    if isinstance(module, BiasDiffModule):
        return update(module.inner, weight, strength) if module.inner is not None else torch.zeros_like(weight)
    if isinstance(module, OftModule):  # a rotation: the move from W to W' = Rᵀ W
        return (module.rotated(weight) - weight).mul_(float(strength))
    if isinstance(module, DoraModule):
        merged = weight + scaled_delta(module.inner, weight)
        return (module.decomposed(merged) - weight).mul_(float(strength))
    return scaled_delta(module, weight).mul_(float(strength))


def bias_update(module: AnyModule, bias: torch.Tensor, strength: float) -> torch.Tensor | None:
    if isinstance(module, FullModule | BiasDiffModule) and module.diff_b is not None:
        return _f32(module.diff_b, bias.device).reshape(bias.shape) * float(strength)
    return None


def lycoris_tensors(module: AnyModule) -> dict[str, torch.Tensor]:
    """The module's tensors under LyCORIS' suffixes (without alpha)."""
    if isinstance(module, LoraModule):
        return {"lora_down.weight": module.down, "lora_up.weight": module.up}
    return module.tensors()


def lycoris_state_dict_of(name: str, module: AnyModule) -> dict[str, torch.Tensor]:
    """`<name>.<suffix>` tensors of one module in LyCORIS' layout, `alpha` included where it has one."""
    import torch

    state = {f"{name}.{suffix}": t.detach().contiguous() for suffix, t in lycoris_tensors(module).items()}
    inner = list(_wrapped(module))[-1]
    alpha = None
    if isinstance(inner, LoraModule | LohaModule) or (isinstance(inner, LokrModule) and inner.rank):
        alpha = inner.alpha if inner.alpha else float(inner.rank)
    elif isinstance(inner, OftModule):
        alpha = inner.alpha  # the constraint; none written: none read back
    if alpha is not None:
        dtype = next(iter(state.values())).dtype
        state[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=dtype if dtype.is_floating_point else None)
    return state


def is_lycoris_state_dict(keys: Iterable[str], metadata: dict[str, str] | None = None) -> bool:
    if (metadata or {}).get("ss_network_module", "").startswith("lycoris"):
        return True
    for key in keys:
        base, _, rest = key.partition(".")
        if base.startswith(MODULE_PREFIXES) and rest not in ("lora_down.weight", "lora_up.weight", "alpha"):
            return True  # LoHa, LoKr, (IA)^3, full, DoRA, CP LoCon, or something to refuse by name
    return False


def _fold_tucker(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """LoCon's CP conv: mid [r, r, k, k] folded into down [r, in, 1, 1] -> [r, in, k, k], exactly."""
    import torch

    mid = parts["lora_mid.weight"].float()
    down = parts["lora_down.weight"].float()
    full = torch.einsum("abkl,bi->aikl", mid, down.reshape(down.shape[0], down.shape[1]))
    return full.to(parts["lora_mid.weight"].dtype)


def _kind(tensor: torch.Tensor) -> str:
    return "conv" if tensor.dim() == 4 else "linear"


def module_from_parts(base: str, parts: dict[str, torch.Tensor], source: str) -> AnyModule:
    """One module from its suffix -> tensor map, or a one-line error naming what is wrong.

    A `diff_b` without a `diff` is a bias difference of its own, beside whatever else the layer has.
    """
    parts = {_SAME_AS.get(suffix, suffix): tensor for suffix, tensor in parts.items()}
    if "diff_b" not in parts or "diff" in parts:
        return _weight_module(base, parts, source)
    diff_b = parts.pop("diff_b")
    alone = not set(parts) - {"alpha"}
    return BiasDiffModule(None if alone else _weight_module(base, parts, source), diff_b)


def _weight_module(base: str, parts: dict[str, torch.Tensor], source: str):
    suffixes = set(parts)
    unknown = suffixes - (_LOHA | _LOKR | _LOCON | _IA3 | _FULL | _OFT | _COMMON)
    kinds = (("LoRA", _LOCON), ("LoHa", _LOHA), ("LoKr", _LOKR), ("full", _FULL), ("OFT", _OFT))
    families = [name for name, keys in kinds if suffixes & keys]
    if not families and suffixes & _IA3:
        families = ["(IA)^3"]
    if unknown or len(families) != 1:
        what = ", ".join(sorted(unknown)) if unknown else "+".join(families) or "no weights"
        raise LorastudioError(
            f"{source}: module {base} has {what} tensors, which lorastudio cannot apply "
            "(it reads LoRA/LoCon, LoHa, LoKr, (IA)^3, OFT, full diff and DoRA); convert it to one of those first."
        )
    alpha = float(parts["alpha"]) if "alpha" in parts else None
    family = families[0]

    def need(*names):
        missing = [n for n in names if n not in parts]
        if missing:
            raise LorastudioError(f"{source}: {family} module {base} lacks {', '.join(missing)}; the file is incomplete.")

    if family == "LoRA":
        need("lora_down.weight", "lora_up.weight")
        down = _fold_tucker(parts) if "lora_mid.weight" in parts else parts["lora_down.weight"]
        module = LoraModule(down, parts["lora_up.weight"], alpha, _kind(down))
    elif family == "LoHa":
        need("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
        t1, t2 = parts.get("hada_t1"), parts.get("hada_t2")
        if (t1 is None) != (t2 is None):
            raise LorastudioError(f"{source}: LoHa module {base} has only one of hada_t1/hada_t2.")
        module = LohaModule(
            parts["hada_w1_a"], parts["hada_w1_b"], parts["hada_w2_a"], parts["hada_w2_b"],
            alpha, "conv" if t1 is not None else "linear", t1, t2,
        )  # fmt: skip
    elif family == "LoKr":
        if "lokr_w1" not in parts:
            need("lokr_w1_a", "lokr_w1_b")
        if "lokr_w2" not in parts:
            need("lokr_w2_a", "lokr_w2_b")
        if "lokr_t1" in parts:
            raise LorastudioError(f"{source}: LoKr module {base} uses lokr_t1, which no LyCORIS version writes.")
        w2 = parts.get("lokr_w2")
        conv = parts.get("lokr_t2") is not None or (w2 is not None and w2.dim() == 4)
        module = LokrModule(
            parts.get("lokr_w1"), parts.get("lokr_w1_a"), parts.get("lokr_w1_b"),
            w2, parts.get("lokr_w2_a"), parts.get("lokr_w2_b"), parts.get("lokr_t2"),
            alpha, "conv" if conv else "linear",
        )  # fmt: skip
    elif family == "full":
        need("diff")
        module = FullModule(parts["diff"], parts.get("diff_b"), _kind(parts["diff"]))
    elif family == "OFT":
        module = _oft_module(base, parts, alpha, source)
    else:
        need("weight")
        on_input = bool(int(parts["on_input"].flatten()[0])) if "on_input" in parts else False
        module = Ia3Module(parts["weight"], on_input, _kind(parts["weight"]))
    if "dora_scale" in parts:
        if family not in ("LoRA", "LoHa", "LoKr"):
            raise LorastudioError(f"{source}: module {base} has dora_scale on a {family} module; not a DoRA layout.")
        module = DoraModule(module, parts["dora_scale"])
    return module


def _oft_module(base: str, parts: dict[str, torch.Tensor], alpha: float | None, source: str) -> OftModule:
    blocks = parts.get("oft_blocks", parts.get("oft_diag"))
    if blocks is None:
        raise LorastudioError(f"{source}: OFT module {base} lacks oft_blocks; the file is incomplete.")
    if blocks.dim() != 3:
        raise LorastudioError(
            f"{source}: module {base} is BOFT (butterfly OFT, {blocks.dim()}-D oft_blocks), which lorastudio "
            "cannot apply (it reads OFT); merge it into the model with LyCORIS first."
        )
    return OftModule(blocks, alpha, parts.get("rescale"), "oft_blocks" not in parts)


def lora_from_lycoris_state_dict(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, source: str = "LoRA"
) -> LoraFile:
    """Read any LyCORIS file (kohya-style names) into a `LoraFile` with one module per layer."""
    pieces: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.startswith(BUNDLE_PREFIX) or "." not in key:
            continue
        base, _, rest = key.partition(".")
        pieces.setdefault(base, {})[rest] = value
    lora = LoraFile(
        metadata=dict(metadata or {}),
        unet_layout="ldm" if uses_ldm_unet_names(pieces) else "diffusers",
        source_format="lycoris",
    )
    for base, parts in pieces.items():
        where = component_and_name(base)
        if where is None:
            continue
        component, name = where
        lora.add(component, kohya_to_module_path(name), module_from_parts(base, parts, source))
    lora.embeddings = read_bundled_embeddings(state_dict)
    if not lora.modules and not lora.embeddings:
        raise LorastudioError(f"{source}: has no lora_unet_/lora_te_ modules; it is not a LyCORIS file.")
    return lora
