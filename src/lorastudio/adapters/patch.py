"""Per-request LoRA patching: add the deltas in place, restore the exact weights afterwards.

Like ComfyUI's ModelPatcher, a LoRA is a patch for one request, never global state: the
shared model is changed inside `applied_loras(...)` only, and every touched weight is
copied back bit-for-bit on exit, also when generation raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from lorastudio.adapters.lora_file import LoraFile, LoraModule, find_module
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    import torch

__all__ = ["applied_loras", "apply_lora_deltas"]

logger = logging.getLogger(__name__)

LoraRequest = tuple[LoraFile, float, float]  # (lora, text-encoder weight, unet weight)


def _in_diffusers_layout(lora: LoraFile, components: dict[str, torch.nn.Module]) -> LoraFile:
    if lora.unet_layout == "ldm" and "unet" in components:
        return lora.with_diffusers_unet(components["unet"].config)
    return lora


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


def _apply_lycoris(
    module, target: torch.nn.Module, strength: float, path: str, before_change: Callable | None
) -> None:
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
    if before_change is not None:
        before_change(param)
    param.add_(update.to(dtype=param.dtype))
    bias = getattr(target, "bias", None)
    bias_update = lycoris.bias_update(module, bias, strength) if isinstance(bias, torch.Tensor) else None
    if bias_update is not None:
        if before_change is not None:
            before_change(bias)
        bias.add_(bias_update.to(dtype=bias.dtype))


def apply_lora_deltas(
    components: dict[str, torch.nn.Module],
    loras: Sequence[LoraRequest],
    before_change: Callable[[torch.Tensor], None] | None = None,
) -> int:
    """Add `weight * alpha/rank * up @ down` to each target weight in place; returns modules touched.

    LyCORIS modules (LoHa, LoKr, (IA)^3, full, DoRA) add their own update (see adapters.lycoris).

    before_change(param) is called before a parameter is first modified (to back it up).
    """
    import torch

    touched = 0
    with torch.no_grad():
        for lora, te_weight, unet_weight in loras:
            lora = _in_diffusers_layout(lora, components)
            matched = missing = 0
            for (component, path), module in lora.modules.items():
                strength = unet_weight if component == "unet" else te_weight
                if component not in components:
                    continue
                target = find_module(components[component], path)
                if target is None or not isinstance(getattr(target, "weight", None), torch.Tensor):
                    missing += 1
                    continue
                matched += 1
                if strength == 0:
                    continue
                param = target.weight
                if not isinstance(module, LoraModule):
                    _apply_lycoris(module, target, strength, f"{component}.{path}", before_change)
                    touched += 1
                    continue
                delta = _delta_for(module, param, f"{component}.{path}")
                if before_change is not None:
                    before_change(param)
                update = delta.mul_(float(strength) * module.scale).to(dtype=param.dtype)
                param.add_(update)
                touched += 1
            if missing and not matched:
                raise LorastudioError(
                    f"LoRA ({lora.source_format or 'file'}): none of its {missing} modules exist in this model; "
                    "it was made for another model family."
                )
            if missing:
                logger.warning(
                    "LoRA: %d of %d modules not found in the model and skipped", missing, missing + matched
                )
    return touched


@contextmanager
def applied_loras(
    components: dict[str, torch.nn.Module], loras: Sequence[LoraRequest]
) -> Iterator[dict[str, torch.nn.Module]]:
    """Apply LoRAs to `components` ("unet", "text_encoder", "text_encoder_2") for one request.

    loras: (LoraFile, te_weight, unet_weight) tuples; several at once add up. On exit
    (normal or exception) every touched weight gets its original bits back.
    """
    import torch

    backups: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def back_up(param: torch.Tensor) -> None:
        if id(param) not in backups:
            backups[id(param)] = (param, param.detach().clone())

    try:
        apply_lora_deltas(components, loras, before_change=back_up)
        yield components
    finally:
        with torch.no_grad():
            for param, original in backups.values():
                param.copy_(original)
