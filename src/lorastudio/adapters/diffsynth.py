"""DiffSynth-Studio LoRAs (its Kolors/SDXL trainer's `.ckpt`): `blocks.N.<...>.lora_A/lora_B`.

DiffSynth numbers every UNet block in one flat list (ResNets, attentions, push/pop and
resamplers alike: `blocks.7` is SDXL's `down_blocks.1.attentions.0`) and names `to_out.0`
plain `to_out`. The file holds no alpha: the importer asks for one (DiffSynth's default 4.0).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.adapters.lora_file import LoraFile, LoraModule
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_ALPHA",
    "KOLORS_UNET_LAYOUT",
    "diffsynth_attention_blocks",
    "diffsynth_state_dict",
    "is_diffsynth_state_dict",
    "load_diffsynth_file",
    "lora_from_diffsynth_state_dict",
]

DEFAULT_ALPHA = 4.0  # DiffSynth-Studio's --lora_alpha default
# Kolors' (and SDXL's) UNet, the layout a DiffSynth file's block numbers count.
KOLORS_UNET_LAYOUT = {
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
}
_KEY = re.compile(r"(?:^|\.)blocks\.(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight$")


def diffsynth_attention_blocks(unet_config: dict[str, Any] | None = None) -> dict[int, str]:
    """DiffSynth block number -> diffusers attention block path, counted as DiffSynth builds its list."""
    config = unet_config or KOLORS_UNET_LAYOUT
    layers = config.get("layers_per_block", 2)
    layers = layers if isinstance(layers, int) else layers[0]
    down, up = config["down_block_types"], config["up_block_types"]
    blocks, index = {}, 0
    for i, kind in enumerate(down):
        for j in range(layers):
            index += 1  # ResnetBlock
            if kind.startswith("CrossAttn"):
                blocks[index] = f"down_blocks.{i}.attentions.{j}"
                index += 1
            index += 1  # PushBlock
        if i < len(down) - 1:
            index += 2  # DownSampler, PushBlock
    blocks[index + 1] = "mid_block.attentions.0"
    index += 3  # ResnetBlock, AttentionBlock, ResnetBlock
    for i, kind in enumerate(up):
        for j in range(layers + 1):
            index += 2  # PopBlock, ResnetBlock
            if kind.startswith("CrossAttn"):
                blocks[index] = f"up_blocks.{i}.attentions.{j}"
                index += 1
        if i < len(up) - 1:
            index += 1  # UpSampler
    return blocks


def is_diffsynth_state_dict(keys) -> bool:
    return any(_KEY.search(k) for k in keys)


def load_diffsynth_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a DiffSynth `.ckpt`/`.pt`/`.bin` (weights only: a pickle cannot run code here)
    or `.safetensors`; a Lightning checkpoint's `state_dict` is unwrapped."""
    from lorastudio.models.checkpoint import weights_only_load

    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from lorastudio.models.checkpoint import read_safetensors_private

        return read_safetensors_private(path)[0]
    try:
        state = weights_only_load(path)
    except Exception as exc:  # a pickle with code, or not a checkpoint at all
        raise LorastudioError(f"{path.name}: not a weights-only checkpoint ({exc.__class__.__name__}); re-save it as tensors.") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not is_diffsynth_state_dict(state):
        raise LorastudioError(f"{path.name}: no DiffSynth-Studio LoRA keys (blocks.N....lora_A.weight) found.")
    return {k: v for k, v in state.items() if hasattr(v, "shape")}


def lora_from_diffsynth_state_dict(
    state: dict[str, torch.Tensor], alpha: float = DEFAULT_ALPHA, unet_config: dict[str, Any] | None = None
) -> LoraFile:
    """A UNet LoRA with diffusers module paths; every module gets `alpha` (the file has none)."""
    attention = diffsynth_attention_blocks(unet_config)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        found = _KEY.search(key)
        if not found:
            continue
        number, rest, slot = int(found.group(1)), found.group(2), found.group(3)
        if number not in attention:
            raise LorastudioError(
                f"LoRA key {key}: block {number} is not an attention block of this UNet layout; pass --model."
            )
        rest = re.sub(r"\.to_out$", ".to_out.0", rest)
        pairs.setdefault(f"{attention[number]}.{rest}", {})["down" if slot == "A" else "up"] = value
    lora = LoraFile(metadata={}, source_format="diffsynth")
    for path, parts in sorted(pairs.items()):
        if set(parts) != {"down", "up"}:
            raise LorastudioError(f"LoRA: module {path} lacks lora_A or lora_B; the file is incomplete.")
        lora.add("unet", path, LoraModule(parts["down"], parts["up"], float(alpha), "linear"))
    if not lora.modules:
        raise LorastudioError("LoRA: no DiffSynth-Studio lora_A/lora_B tensors found.")
    return lora


def diffsynth_state_dict(lora: LoraFile, unet_config: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The inverse (for tests and round trips): a UNet LoRA with diffusers paths in DiffSynth's names."""
    numbers = {path: number for number, path in diffsynth_attention_blocks(unet_config).items()}
    out = {}
    for (component, path), module in lora.modules.items():
        block = ".".join(path.split(".")[:4]) if not path.startswith("mid_block") else "mid_block.attentions.0"
        if component != "unet" or block not in numbers:
            raise LorastudioError(f"LoRA module {component}.{path}: has no DiffSynth-Studio name.")
        rest = re.sub(r"\.to_out\.0$", ".to_out", path[len(block) + 1 :])
        out[f"blocks.{numbers[block]}.{rest}.lora_A.default.weight"] = module.down
        out[f"blocks.{numbers[block]}.{rest}.lora_B.default.weight"] = module.up
    return out
