"""A model's LoRA stack, patched by swapping weight tensors and kept until the stack changes.

Like ComfyUI's ModelPatcher, the original tensor of every patched weight is kept aside and
the layer gets a new tensor `original + sum(strength * alpha/rank * up @ down)` (one GEMM over
every pair on the layer; a ComfyUI `diff_b`, beside a pair or alone, is added to a copy of the bias apart);
restoring puts the original tensor back, so it is bit-exact by construction and costs no copy. The
patch stays while the next request asks for the same stack (nothing to do), and a
different stack recomputes only the weights whose contributions changed, from the original.

One `LoraPatcher` per model (found by `patcher_for(components)`, stored beside the model's
modules so it dies with them); its lock serialises the requests that use the model.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lorastudio.adapters.lora_file import COMPONENTS, LoraFile, LoraModule, find_module
from lorastudio.adapters.lycoris import BiasDiffModule, DoraModule
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    import torch

    from lorastudio.adapters.lycoris import AnyModule

__all__ = ["LoraPatcher", "LoraRequest", "add_module_update", "held_bytes", "patcher_for", "release_spares"]

logger = logging.getLogger(__name__)

# (lora, text-encoder weight, unet weight[, dyn]): dyn, A1111's `<lora:name:te:unet:dyn>`, keeps
# the first `dyn` ranks of each LoRA pair (DyLoRA files are ordered so these matter most).
LoraRequest = tuple[LoraFile, float, float] | tuple[LoraFile, float, float, int | None]
Contribution = tuple[Any, float, str]  # (module, strength, "component.path" for messages)

_LAYOUT_CACHE_SIZE = 16


@dataclass
class _Patched:
    """One patched layer: its original tensors and the contributions its weight holds now."""

    layer: Any
    original_weight: torch.Tensor
    original_bias: torch.Tensor | None
    signature: tuple[Contribution, ...] = ()
    weight: torch.Tensor | None = None  # the tensor the layer holds while patched (None: its original)
    bias: torch.Tensor | None = None  # only LyCORIS modules and bias differences change a bias


def _same_contributions(a: tuple[Contribution, ...], b: tuple[Contribution, ...]) -> bool:
    """Same modules (the very objects: a re-read file is another stack) with the same strengths."""
    return len(a) == len(b) and all(x[0] is y[0] and x[1] == y[1] for x, y in zip(a, b, strict=True))


def _first_ranks(module, dyn: int):
    """A LoRA pair cut to its first `dyn` ranks at the full file's alpha / rank, as A1111 rebuilds it.

    A pair inside a DoRA or beside a bias difference is cut the same, its `dora_scale` or `diff_b`
    kept: A1111 cuts a DoRA's up/down before it decomposes the weight. Other module kinds (LoHa,
    LoKr, ...) are whole: A1111 cuts only up/down pairs.
    """
    if isinstance(module, DoraModule | BiasDiffModule) and module.inner is not None:
        cut = _first_ranks(module.inner, dyn)
        return module if cut is module.inner else replace(module, inner=cut)
    if not isinstance(module, LoraModule) or module.rank <= dyn:
        return module
    return LoraModule(module.down[:dyn], module.up[:, :dyn], module.scale * dyn, module.kind)


def _request_parts(request: LoraRequest) -> tuple[LoraFile, float, float, int | None]:
    """(lora, te, unet, dyn); dyn None (or not above 0: the webui's off) keeps every rank."""
    lora, te_weight, unet_weight, *rest = request
    dyn = rest[0] if rest else None
    return lora, te_weight, unet_weight, dyn if dyn is not None and dyn > 0 else None


def _pair_of(module) -> LoraModule | None:
    """The low-rank pair a module adds to the weight by the fused GEMM: a plain pair, or the pair a bias
    difference sits beside (its `diff_b` is added to the bias apart); None for the plain path's kinds."""
    if isinstance(module, BiasDiffModule):
        module = module.inner
    return module if isinstance(module, LoraModule) else None


def _is_lone_bias(module) -> bool:
    """A `diff_b` with no weight update on its layer: it changes the bias alone, so the weight stays the
    original (or the fused pairs' of the other LoRAs on the layer)."""
    return isinstance(module, BiasDiffModule) and module.inner is None


def _fuses(module) -> bool:
    """Whether the fast path takes the module: a pair (with or without a `diff_b`) or a lone `diff_b`."""
    return _pair_of(module) is not None or _is_lone_bias(module)


def _low_rank_factors(module: LoraModule, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(up [rows, r], down [r, cols]) of a LoRA module on a weight viewed as [rows, cols]; None if it does not fit."""
    up = module.up.reshape(module.up.shape[0], -1)
    down = module.down.reshape(module.down.shape[0], -1)
    if up.shape[0] != rows or down.shape[1] != cols or up.shape[1] != down.shape[0]:
        return None
    return up, down


def _stacked(parts: list[torch.Tensor], dim: int, device) -> torch.Tensor:
    """`parts` concatenated along `dim` as float32 on `device`; one op (cast included) when they are there."""
    import torch

    if any(part.device != torch.device(device) for part in parts):
        return torch.cat([part.to(device) for part in parts], dim=dim).float()
    shape = list(parts[0].shape)
    shape[dim] = sum(part.shape[dim] for part in parts)
    return torch.cat(parts, dim=dim, out=torch.empty(shape, dtype=torch.float32, device=device))


def _fused_weight(original: torch.Tensor, contributions, out: torch.Tensor | None) -> torch.Tensor | None:
    """`original + sum(s * up @ down)` as one GEMM over concatenated factors (float32 math).

    None when a module does not fit the weight as a plain [out, in...] matrix (the plain
    path then reshapes or explains the mismatch).
    """
    import torch

    rows = original.shape[0]
    cols = original.numel() // rows if rows else 0
    ups, downs, scales = [], [], []
    for contribution, strength, _ in contributions:
        module = _pair_of(contribution)
        factors = _low_rank_factors(module, rows, cols) if module is not None else None
        if factors is None:
            return None
        ups.append(factors[0])
        downs.append(factors[1])
        scales += [float(strength) * module.scale] * module.rank
    # Few, large ops: on a busy CPU every small op pays a thread hand-off.
    device, f32 = original.device, torch.float32
    if len(ups) == 1:  # the scale rides on the GEMM (`alpha`)
        up, down, alpha = ups[0].to(device, f32), downs[0].to(device, f32), scales[0]
    else:  # one GEMM over every LoRA: [out, r1+r2+..] @ [r1+r2+.., in], scales on up's columns
        up = _stacked(ups, 1, device).mul_(torch.tensor(scales, dtype=f32, device=device))
        down, alpha = _stacked(downs, 0, device), 1.0
    flat = original.reshape(rows, cols)
    if out is not None and not out.is_contiguous():
        out = None
    if original.dtype == torch.float32:
        if out is None:
            return torch.addmm(flat, up, down, alpha=alpha).reshape(original.shape)
        torch.addmm(flat, up, down, alpha=alpha, out=out.view(rows, cols))
        return out
    patched = torch.addmm(flat.float(), up, down, alpha=alpha).to(original.dtype).reshape(original.shape)
    if out is None:
        return patched
    out.copy_(patched)
    return out


def _delta_for(module: LoraModule, weight: torch.Tensor, path: str) -> torch.Tensor:
    delta = module.delta(device=weight.device)
    if delta.shape != weight.shape:
        if delta.numel() != weight.numel():
            raise LorastudioError(
                f"LoRA module {path}: shape {tuple(delta.shape)} does not fit the model's {tuple(weight.shape)}; "
                "the LoRA was trained for another model family or size."
            )
        delta = delta.reshape(weight.shape)  # e.g. 1x1 conv LoRA on a Linear proj_in
    return delta


def _apply_lycoris(module, target: torch.nn.Module, strength: float, path: str) -> None:
    """LoHa / LoKr / (IA)^3 / full / DoRA: the update is computed in float32 from the current weight."""
    import torch

    from lorastudio.adapters import lycoris

    param = target.weight
    expected = lycoris.delta_numel(module)
    if expected is not None and expected != param.numel():
        raise LorastudioError(
            f"LoRA module {path}: {expected} weights do not fit the model's {tuple(param.shape)}; "
            "the LoRA was trained for another model family or size."
        )
    try:
        update = lycoris.update(module, param.detach().float(), strength)
    except RuntimeError as error:  # shapes that multiply but cannot broadcast onto this layer
        raise LorastudioError(
            f"LoRA module {path}: does not fit the model's {tuple(param.shape)} ({error}); "
            "the LoRA was trained for another model family or size."
        ) from None
    param.add_(update.to(dtype=param.dtype))
    bias = getattr(target, "bias", None)
    bias_update = lycoris.bias_update(module, bias, strength) if isinstance(bias, torch.Tensor) else None
    if bias_update is not None:
        bias.add_(bias_update.to(dtype=bias.dtype))


def add_module_update(module: AnyModule, target: torch.nn.Module, strength: float, path: str) -> None:
    """Add one module's update to `target`'s weight in place (the plain path, one module at a time)."""
    if not isinstance(module, LoraModule):
        _apply_lycoris(module, target, strength, path)
        return
    param = target.weight
    delta = _delta_for(module, param, path)
    param.add_(delta.mul_(float(strength) * module.scale).to(dtype=param.dtype))


class LoraPatcher:
    """The LoRA stack one model holds now, and the originals to go back to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owner: int | None = None  # the thread holding `lock` (a nested use is refused, not hung)
        self._patched: dict[int, _Patched] = {}
        self._targets: dict[tuple[int, str], Any] = {}  # (id(component), path) -> layer or None
        self._layouts: OrderedDict[tuple[int, int | None], tuple[LoraFile, LoraFile]] = OrderedDict()
        # Compiled models (CUDA graphs) read each weight at a fixed address: patch those in place,
        # from a kept copy of the original, instead of swapping tensors.
        self.in_place = False
        self.touched = 0  # layers the last `apply` changed (patched, re-patched or restored)
        self.updates = 0  # module updates the last `apply` asked for (one per LoRA per layer)
        # A restored layer's patched CPU tensor, kept as the memory of its next patch: fresh
        # pages cost more than the merge's GEMM on a CPU (CUDA's caching allocator keeps its own).
        self._spares: dict[int, torch.Tensor] = {}

    @property
    def patched_layers(self) -> int:
        return len(self._patched)

    def held_bytes(self) -> int:
        """Memory held beside the model's parameters: the originals of patched layers, and spares.

        Read without the lock (a model cache weighs models while requests patch): from snapshots.
        """
        kept = []
        for state in list(self._patched.values()):
            if self.in_place or state.weight is not None:  # else the layer holds its original weight itself
                kept.append(state.original_weight)
            if self.in_place or state.bias is not None:  # else the layer still holds its own bias
                kept.append(state.original_bias)
        return sum(t.numel() * t.element_size() for t in [*kept, *list(self._spares.values())] if t is not None)

    def release_spares(self) -> None:
        self._spares.clear()

    def apply(
        self, components: dict[str, torch.nn.Module], loras: Sequence[LoraRequest], in_place: bool = False
    ) -> int:
        """Make the weights hold exactly `loras` (none: the originals); returns layers changed.

        Layers whose (module, strength) contributions are the same as now are not touched;
        the others are recomputed from their original. Any failure restores every layer.
        `in_place` keeps every weight at its address (for compiled models; costs a copy per
        patch and per restore).
        """
        import torch

        touched = 0
        if in_place != self.in_place:
            touched += self.restore()  # the layers patched the other way go back first
            self.in_place = in_place
            self._spares.clear()  # in place, patches need no memory of their own
        try:
            wanted = self._plan(components, loras)
            self.updates = sum(len(contributions) for _, contributions in wanted.values())
            with torch.no_grad():
                for key in [k for k in self._patched if k not in wanted]:
                    self._restore(key)
                    touched += 1
                for key, (layer, contributions) in wanted.items():
                    state = self._patched.get(key)
                    if state is not None and _same_contributions(state.signature, contributions):
                        continue
                    self._patch(key, layer, contributions)
                    touched += 1
        except BaseException:
            self.restore()
            raise
        self.touched = touched
        return touched

    def restore(self) -> int:
        """Every patched layer gets its original tensors back (bit-exact); returns how many."""
        count = 0
        for key in list(self._patched):
            self._restore(key)
            count += 1
        return count

    def commit(self) -> None:
        """Keep the patched weights for good (a merge): the originals are let go."""
        self._patched.clear()
        self._spares.clear()

    # -- planning ---------------------------------------------------------------------------

    def _as_patched(self, lora: LoraFile, components: dict[str, torch.nn.Module], dyn: int | None) -> LoraFile:
        """The LoRA with diffusers UNet paths (LDM-named files mapped) and its first `dyn` ranks.

        Kept per (file, dyn): the same stack again finds the very same modules (nothing to
        patch), while another dyn gives other modules, so its layers are patched again.
        """
        to_map = lora.unet_layout == "ldm" and "unet" in components
        if not to_map and dyn is None:
            return lora
        key = (id(lora), dyn)
        cached = self._layouts.get(key)
        if cached is not None and cached[0] is lora:
            self._layouts.move_to_end(key)
            return cached[1]
        prepared = lora.with_diffusers_unet(components["unet"].config) if to_map else lora
        if dyn is not None:
            modules = {where: _first_ranks(module, dyn) for where, module in prepared.modules.items()}
            prepared = replace(prepared, modules=modules)
        self._layouts[key] = (lora, prepared)
        while len(self._layouts) > _LAYOUT_CACHE_SIZE:
            self._layouts.popitem(last=False)
        return prepared

    def _layer(self, component: torch.nn.Module, path: str):
        key = (id(component), path)
        if key not in self._targets:
            self._targets[key] = find_module(component, path)
        return self._targets[key]

    def _plan(self, components, loras: Sequence[LoraRequest]) -> dict[int, tuple[Any, tuple[Contribution, ...]]]:
        """id(layer) -> (layer, contributions in stack order), checking every LoRA fits the model."""
        import torch

        plan: dict[int, tuple[Any, list[Contribution]]] = {}
        for request in loras:
            lora, te_weight, unet_weight, dyn = _request_parts(request)
            lora = self._as_patched(lora, components, dyn)
            matched = missing = 0
            for (component, path), module in lora.modules.items():
                if component not in components:
                    continue
                layer = self._layer(components[component], path)
                if layer is None or not isinstance(getattr(layer, "weight", None), torch.Tensor):
                    missing += 1
                    continue
                matched += 1
                strength = unet_weight if component == "unet" else te_weight
                if strength == 0:
                    continue
                plan.setdefault(id(layer), (layer, []))[1].append((module, strength, f"{component}.{path}"))
            if missing and not matched:
                raise LorastudioError(
                    f"LoRA ({lora.source_format or 'file'}): none of its {missing} modules exist in this model; "
                    "it was made for another model family."
                )
            if missing:
                logger.warning("LoRA: %d of %d modules not found in the model and skipped", missing, missing + matched)
        return {key: (layer, tuple(contributions)) for key, (layer, contributions) in plan.items()}

    # -- patching ---------------------------------------------------------------------------

    def _patch(self, key: int, layer, contributions: tuple[Contribution, ...]) -> None:
        state = self._patched.get(key)
        if state is not None and not self._still_ours(key, state):
            state = None
        if state is None:
            state = self._new_state(layer)
            self._patched[key] = state
        state.signature = ()  # until the new weight is complete
        if all(_fuses(m) for m, _, _ in contributions):
            pairs = tuple(c for c in contributions if _pair_of(c[0]) is not None)
            if not pairs:  # bias differences alone: the original weight, a patched bias
                self._put_back_weight(key, state)
                self._patch_bias(state, contributions)
                state.signature = contributions
                return
            out = state.weight if state.weight is not None else self._spare(key, state.original_weight)
            fused = _fused_weight(state.original_weight, pairs, out)
            if fused is not None:
                self._patch_bias(state, contributions)
                if not self.in_place:
                    layer.weight.data = state.weight = fused
                elif fused is not state.weight:  # written elsewhere (a non-contiguous weight)
                    state.weight.copy_(fused)
                state.signature = contributions
                return
        self._patch_in_order(state, contributions)
        state.signature = contributions

    def _new_state(self, layer) -> _Patched:
        """Swapping: the layer's own tensors are the originals. In place: copies of them are."""
        bias = getattr(layer, "bias", None)
        if not self.in_place:
            return _Patched(layer, layer.weight.data, bias.data if bias is not None else None)
        original_bias = bias.data.clone() if bias is not None else None
        return _Patched(layer, layer.weight.data.clone(), original_bias, weight=layer.weight.data)

    def _patch_in_order(self, state: _Patched, contributions: tuple[Contribution, ...]) -> None:
        """The plain path (LyCORIS modules, reshaped LoRAs): each update in stack order, on copies."""
        layer = state.layer
        if self.in_place:
            layer.weight.data.copy_(state.original_weight)
            if state.original_bias is not None:
                layer.bias.data.copy_(state.original_bias)
                state.bias = layer.bias.data
        else:
            layer.weight.data = state.weight = state.original_weight.clone()
            if state.original_bias is not None:
                layer.bias.data = state.bias = state.original_bias.clone()
        for module, strength, label in contributions:
            add_module_update(module, layer, strength, label)

    def _patch_bias(self, state: _Patched, contributions: tuple[Contribution, ...]) -> None:
        """The bias differences beside the fused pairs, added to a copy of the original bias in stack
        order as the plain path adds them (so bit for bit the same); none: the original bias."""
        from lorastudio.adapters.lycoris import bias_update

        diffs = [(m, strength, label) for m, strength, label in contributions if isinstance(m, BiasDiffModule)]
        if not diffs or state.original_bias is None:  # a layer without a bias: the plain path skips it too
            self._put_back_bias(state)
            return
        if self.in_place:
            bias = state.layer.bias.data
            bias.copy_(state.original_bias)
        else:
            bias = state.original_bias.clone()
            state.layer.bias.data = bias
        state.bias = bias
        for module, strength, label in diffs:
            if module.diff_b.numel() != bias.numel():
                raise LorastudioError(
                    f"LoRA module {label}: a bias difference of {module.diff_b.numel()} values does not fit the "
                    f"model's bias of {bias.numel()}; the LoRA was trained for another model family or size."
                )
            bias.add_(bias_update(module, bias, strength).to(dtype=bias.dtype))

    def _spare(self, key: int, like: torch.Tensor) -> torch.Tensor | None:
        spare = self._spares.pop(key, None)
        if spare is None or (spare.shape, spare.dtype, spare.device) != (like.shape, like.dtype, like.device):
            return None
        return spare

    def _put_back_weight(self, key: int, state: _Patched) -> None:
        """The layer holds its original weight again (its patched tensor, swapped out, kept as a spare)."""
        if self.in_place:
            state.layer.weight.data.copy_(state.original_weight)
            return
        if state.weight is not None and state.weight.device.type == "cpu":
            self._spares[key] = state.weight
        state.layer.weight.data = state.original_weight
        state.weight = None

    def _put_back_bias(self, state: _Patched) -> None:
        if state.bias is not None:
            if self.in_place:
                state.layer.bias.data.copy_(state.original_bias)
            else:
                state.layer.bias.data = state.original_bias
            state.bias = None

    def _still_ours(self, key: int, state: _Patched) -> bool:
        """False when someone else replaced the layer's tensor (e.g. `.to(device)`): forget it."""
        held = state.weight if state.weight is not None else state.original_weight  # None: not patched
        if state.layer.weight.data_ptr() == held.data_ptr():
            return True
        logger.warning("LoRA: a patched weight was replaced behind the patcher; its original is dropped")
        del self._patched[key]
        return False

    def _restore(self, key: int) -> None:
        state = self._patched[key]
        if self._still_ours(key, state):
            if self.in_place:
                state.layer.weight.data.copy_(state.original_weight)
            else:
                state.layer.weight.data = state.original_weight
                if state.weight is not None and state.weight.device.type == "cpu":
                    self._spares[key] = state.weight
            self._put_back_bias(state)
            del self._patched[key]


_PATCHERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PATCHERS_LOCK = threading.Lock()


def _patched_modules(components: dict[str, torch.nn.Module]) -> list[torch.nn.Module]:
    return [components[name] for name in COMPONENTS if name in components]


def _registered(modules: list[torch.nn.Module]) -> LoraPatcher | None:
    """The patcher registered for any of `modules` (the caller holds `_PATCHERS_LOCK`)."""
    return next((_PATCHERS[m] for m in modules if m in _PATCHERS), None)


def _existing_patcher(components: dict[str, torch.nn.Module]) -> LoraPatcher | None:
    with _PATCHERS_LOCK:
        return _registered(_patched_modules(components))


def held_bytes(components: dict[str, torch.nn.Module]) -> int:
    """What the model's patcher holds beside its parameters (0 when none was made for it)."""
    patcher = _existing_patcher(components)
    return patcher.held_bytes() if patcher is not None else 0


def release_spares(components: dict[str, torch.nn.Module]) -> None:
    """Let the model's spare patch memory go (a model cache over its budget, before it evicts models).

    Skipped while a request holds the model (it may be the caller itself, loading a ControlNet).
    """
    patcher = _existing_patcher(components)
    if patcher is not None and patcher.lock.acquire(blocking=False):
        try:
            patcher.release_spares()
        finally:
            patcher.lock.release()


def patcher_for(components: dict[str, torch.nn.Module]) -> LoraPatcher:
    """The model's one `LoraPatcher`, kept beside its UNet / text encoders (dies with them)."""
    modules = _patched_modules(components)
    with _PATCHERS_LOCK:
        patcher = _registered(modules) or LoraPatcher()
        for module in modules:
            _PATCHERS.setdefault(module, patcher)
    return patcher
