"""DiffSynth-Studio LoRAs (its Kolors/SDXL trainer's `.ckpt`): `blocks.N.<...>.lora_A/lora_B`.

DiffSynth numbers every UNet block in one flat list (ResNets, attentions, push/pop and
resamplers alike: `blocks.7` is SDXL's `down_blocks.1.attentions.0`) and names `to_out.0`
plain `to_out`. The file holds no alpha: the importer asks for one (DiffSynth's default 4.0).
DiffSynth's trainer targets only the attention projections (`to_q`/`to_k`/`to_v`/`to_out`), and its
loader (`GeneralLoRAFromPeft`) adds `lora_alpha · B @ A` for every pair, skipping the whole file when
one name is not a weight of its UNet: an export keeps those projections only and bakes alpha / rank
into the factors (`ALPHA_BAKED`), so strength 1 there, or peft with `lora_alpha = rank`, is our delta.
The numbering is DiffSynth's for SDXL's UNet (also Kolors') and for SD 1.x's; it has no SD 2.x UNet.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.adapters.lora_file import LoraFile, LoraModule
from lorastudio.adapters.lycoris import BiasDiffModule
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch

    from lorastudio.models.families import Family

__all__ = [
    "ALPHA_BAKED",
    "DEFAULT_ALPHA",
    "DIFFSYNTH_FAMILIES",
    "KOLORS_UNET_LAYOUT",
    "baked_module",
    "diffsynth_attention_blocks",
    "diffsynth_export_state_dict",
    "diffsynth_metadata",
    "diffsynth_state_dict",
    "is_diffsynth_state_dict",
    "load_diffsynth_file",
    "lora_from_diffsynth_state_dict",
    "rank_alpha_metadata",
    "split_for_diffsynth",
]

DEFAULT_ALPHA = 4.0  # DiffSynth-Studio's --lora_alpha default
# Kolors' (and SDXL's) UNet, the layout a DiffSynth file's block numbers count.
KOLORS_UNET_LAYOUT = {
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
}
# Metadata key of an exported .safetensors: its factors already hold alpha / rank (import: alpha = rank).
ALPHA_BAKED = "lorastudio.diffsynth_alpha_baked"
# Families whose UNet DiffSynth-Studio builds with these block numbers (SDXLUNet, SDUNet).
DIFFSYNTH_FAMILIES = ("kolors", "sdxl", "sd15")
_PROJECTION = re.compile(r"\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")
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


def is_diffsynth_state_dict(keys: Iterable[str]) -> bool:
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
    state: dict[str, torch.Tensor], alpha: float | None = DEFAULT_ALPHA, unet_config: dict[str, Any] | None = None
) -> LoraFile:
    """A UNet LoRA with diffusers module paths; every module gets `alpha` (the file has none), or its
    rank when `alpha` is None (a file whose factors already hold it: scale 1, as DiffSynth applies it)."""
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
        module_alpha = float(alpha) if alpha is not None else float(parts["down"].shape[0])
        lora.add("unet", path, LoraModule(parts["down"], parts["up"], module_alpha, "linear"))
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


def _dropped_kind(component: str, path: str, module) -> str:
    """What a module DiffSynth cannot hold is, in the words of the export's warning."""
    from lorastudio.adapters.lycoris import module_type

    if component != "unet":
        return "text-encoder"
    kind = module_type(module)
    if kind not in ("lora", "locon"):
        return kind  # loha, lokr, ia3, full, dora
    if path.endswith((".proj_in", ".proj_out")):
        return "proj_in/proj_out"
    if ".ff." in path:
        return "feed-forward"
    if kind == "locon" or ".resnets." in path or "samplers." in path:
        return "resnet/conv"
    return path.rsplit(".", 1)[-1]  # time_emb_proj, conv_in, ...


def split_for_diffsynth(lora: LoraFile, unet_config: dict[str, Any] | None = None) -> tuple[LoraFile, dict[str, int]]:
    """The modules a DiffSynth-Studio LoRA holds (plain low-rank attention projections in an attention
    block it numbers) and a count of the others by kind; UNet paths must be diffusers' already."""
    blocks = set(diffsynth_attention_blocks(unet_config).values())
    kept = LoraFile(metadata=dict(lora.metadata), source_format=lora.source_format, unet_config=lora.unet_config)
    dropped: dict[str, int] = {}
    for (component, path), module in lora.modules.items():
        block = ".".join(path.split(".")[:4]) if not path.startswith("mid_block") else "mid_block.attentions.0"
        pair = _low_rank_pair(module)
        fits = component == "unet" and pair is not None and pair.kind == "linear"
        if fits and block in blocks and _PROJECTION.search(path[len(block) :]):
            kept.add(component, path, pair)
            if pair is not module:  # ComfyUI's bias difference beside the pair: DiffSynth holds no bias
                dropped["bias difference"] = dropped.get("bias difference", 0) + 1
        else:
            kind = _dropped_kind(component, path, module)
            dropped[kind] = dropped.get(kind, 0) + 1
    return kept, dropped


def _low_rank_pair(module: object) -> LoraModule | None:
    """The plain low-rank pair a module is or wraps (a ComfyUI pair with its `diff_b`); None for others."""
    inner = module.inner if isinstance(module, BiasDiffModule) else module
    return inner if type(inner) is LoraModule else None


def baked_module(module: LoraModule) -> LoraModule:
    """The same delta with alpha / rank folded into the factors (alpha = rank, scale 1), split as a
    square root over both so neither factor leaves fp16's range; a negative alpha's sign goes on `up`."""
    root = abs(module.scale) ** 0.5  # computed in float32, stored in the factors' own dtype
    sign = -1.0 if module.scale < 0 else 1.0
    down = (module.down.float() * root).to(module.down.dtype)
    up = (module.up.float() * (root * sign)).to(module.up.dtype)
    return LoraModule(down, up, float(module.rank), module.kind)


def diffsynth_export_state_dict(lora: LoraFile, unet_config: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """DiffSynth-Studio's names for `lora` (attention projections only; `split_for_diffsynth` first),
    alpha baked in, as contiguous tensors ready to save."""
    baked = LoraFile(source_format=lora.source_format)
    for (component, path), module in lora.modules.items():
        baked.add(component, path, baked_module(module))
    return {k: v.contiguous() for k, v in diffsynth_state_dict(baked, unet_config).items()}


def rank_alpha_metadata(lora: LoraFile) -> dict[str, str]:
    """kohya's `ss_network_dim`/`ss_network_alpha` (what listings and A1111's card show), from the
    modules; "Dynamic", as kohya's resize writes, where they differ per module."""
    ranks = {module.rank for module in lora.modules.values()}
    alphas = {float(module.alpha or module.rank) for module in lora.modules.values()}
    return {
        "ss_network_dim": str(ranks.pop()) if len(ranks) == 1 else "Dynamic",
        "ss_network_alpha": str(alphas.pop()) if len(alphas) == 1 else "Dynamic",
    }


def diffsynth_metadata(lora: LoraFile, family: Family, base_model: str | None = None) -> dict[str, str]:
    """What an exported .safetensors says about itself (DiffSynth reads tensors only): alpha baked,
    kohya's rank and alpha keys (alpha = rank), and for our import the family and the base model
    (kohya's `ss_sd_model_name`, as training writes it), whose UNet layout the block numbers count."""
    baked = LoraFile({key: baked_module(module) for key, module in lora.modules.items()})
    metadata = {ALPHA_BAKED: "true", **rank_alpha_metadata(baked), "ss_base_model_version": family.ss_base_model_version}
    if base_model:
        metadata["ss_sd_model_name"] = base_model
    return metadata
