"""LyCORIS files: LoCon (LoRA on ResNet/down/upsample convs too), optionally CP-decomposed.

LoCon uses kohya's names and tensors, plus `lora_mid.weight` for its Tucker/CP variant
(`use_tucker`): down [r, in, 1, 1], mid [r, r, k, k], up [out, r, 1, 1]. Folding mid into
down gives an exactly equal plain pair down' [r, in, k, k], so the rest of lorastudio
sees an ordinary LoRA. LoHa / LoKr / (IA)^3 are other maths and are refused by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lorastudio.adapters.kohya import lora_from_kohya_state_dict
from lorastudio.adapters.lora_file import LoraFile
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    import torch

__all__ = ["is_lycoris_state_dict", "lora_from_lycoris_state_dict", "UNSUPPORTED_LYCORIS_MARKERS"]

UNSUPPORTED_LYCORIS_MARKERS = {
    ".hada_w1_a": "LoHa",
    ".lokr_w1": "LoKr",
    ".diff": "full-diff",
    ".on_input": "(IA)^3",
}


def is_lycoris_state_dict(keys, metadata: dict[str, str] | None = None) -> bool:
    if (metadata or {}).get("ss_network_module", "").startswith("lycoris"):
        return True
    return any(".lora_mid." in k or any(m in k for m in UNSUPPORTED_LYCORIS_MARKERS) for k in keys)


def _fold_tucker(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import torch

    folded = dict(state_dict)
    for key in [k for k in state_dict if k.endswith(".lora_mid.weight")]:
        base = key[: -len(".lora_mid.weight")]
        mid = state_dict[key].float()  # [r, r, k, k]
        down = state_dict[f"{base}.lora_down.weight"].float()  # [r, in, 1, 1]
        full = torch.einsum("abkl,bi->aikl", mid, down.reshape(down.shape[0], down.shape[1]))
        folded[f"{base}.lora_down.weight"] = full.to(state_dict[key].dtype)
        del folded[key]
    return folded


def lora_from_lycoris_state_dict(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, source: str = "LoRA"
) -> LoraFile:
    for marker, name in UNSUPPORTED_LYCORIS_MARKERS.items():
        if any(marker in k for k in state_dict):
            raise LorastudioError(
                f"{source}: is a LyCORIS {name} file; lorastudio applies LoRA and LoCon only. "
                "Use a LoRA/LoCon version of it or merge it in another tool."
            )
    lora = lora_from_kohya_state_dict(_fold_tucker(state_dict), metadata, source)
    lora.source_format = "lycoris"
    return lora
