"""Per-request LoRA patching: the model holds the request's LoRAs, then its exact weights again.

Like ComfyUI's ModelPatcher, a LoRA is a patch on a shared model, never merged for good:
`applied_loras(...)` patches for one block and restores every weight bit-for-bit on exit,
also when it raises. `lingering_loras(...)` leaves the stack in place for the next request:
the same stack again costs nothing, another stack costs only the layers that differ, and a
request without LoRAs gets the originals back (see `adapters.lora_stack`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from lorastudio.adapters.lora_stack import LoraPatcher, LoraRequest, patcher_for
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    import torch

__all__ = ["LoraRequest", "applied_loras", "holding", "lingering_loras"]


@contextmanager
def holding(patcher: LoraPatcher) -> Iterator[LoraPatcher]:
    """The model's patcher, for this thread alone (a nested use would change weights under the outer one)."""
    if patcher.owner == threading.get_ident():
        raise LorastudioError(
            "LoRA: this model's LoRAs are already applied by this request; finish it before applying others."
        )
    with patcher.lock:
        patcher.owner = threading.get_ident()
        try:
            yield patcher
        finally:
            patcher.owner = None


@contextmanager
def applied_loras(
    components: dict[str, torch.nn.Module], loras: Sequence[LoraRequest]
) -> Iterator[dict[str, torch.nn.Module]]:
    """Apply LoRAs to `components` ("unet", "text_encoder", "text_encoder_2") for one block.

    loras: (LoraFile, te_weight, unet_weight[, dyn]) tuples; several at once add up. On exit
    (normal or exception) every weight is the original again, bit-exact (also one that a
    `lingering_loras` stack had patched before).
    """
    with holding(patcher_for(components)) as patcher:
        try:
            patcher.apply(components, loras)
            yield components
        finally:
            patcher.restore()


@contextmanager
def lingering_loras(
    components: dict[str, torch.nn.Module], loras: Sequence[LoraRequest], in_place: bool = False
) -> Iterator[LoraPatcher]:
    """Make the model hold exactly `loras` for this block, and leave them for the next request.

    Other users of the model wait until the block ends. The same stack next time touches no
    weight (`patcher.touched == 0`); another stack recomputes only the layers whose LoRAs or
    strengths changed; `loras=[]` restores every weight bit-exact. A failure while patching
    restores every weight before it propagates. `in_place` keeps every weight at its address
    (compiled models: their graphs, CUDA graphs included, read the weights where they are).
    """
    with holding(patcher_for(components)) as patcher:
        patcher.apply(components, loras, in_place=in_place)
        yield patcher
