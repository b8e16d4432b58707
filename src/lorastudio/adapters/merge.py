"""Bake LoRAs into a model's weights for good (the `merge` command, "LoRA fused" checkpoints)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lorastudio.adapters.lora_stack import LoraPatcher, LoraRequest, patcher_for

if TYPE_CHECKING:
    import torch

__all__ = ["merge_loras"]


def merge_loras(components: dict[str, torch.nn.Module], loras: Sequence[LoraRequest]) -> int:
    """Add each LoRA's delta to the components permanently; same math as `applied_loras`.

    Returns the number of module updates made.
    """
    from lorastudio.adapters.patch import holding

    with holding(patcher_for(components)) as serving:  # a nested use is refused, not hung
        serving.restore()  # a stack a request left on the model goes first: the merge adds to the true weights
        patcher = LoraPatcher()  # its own: the model's per-request patcher keeps serving requests
        patcher.apply(components, loras)
        patcher.commit()
    return patcher.updates
