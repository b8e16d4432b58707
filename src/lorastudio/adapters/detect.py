"""Which format and model family a LoRA file is, from its keys and metadata.

A1111 reads `ss_base_model_version`; files without it are judged by their keys and
widths (cross-attention 768 = SD1, 1024 = SD2, 2048 = SDXL; a second text encoder or a
block only SDXL has = SDXL; the built-in tiny models' own widths, `models.tiny_widths`, likewise). LDM UNet names alone tell nothing: SDXL kohya files use them,
but so do SD 1.x files from some trainers, and A1111 and ComfyUI apply those. A LoRA for
another family is refused with one line, never applied half-way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.adapters.lora_file import LoraFile, LoraModule
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.models.tiny_widths import TINY_CROSS_ATTENTION_WIDTHS, TINY_TEXT_WIDTHS

if TYPE_CHECKING:
    from collections.abc import Iterable

    import torch

    from lorastudio.models.families import Family

__all__ = [
    "detect_format",
    "foreign_lora_note",
    "detect_lora_family",
    "check_lora_family",
    "load_lora_file",
    "lora_from_state_dict",
]

_CROSS_ATTENTION_WIDTHS = {768: "sd15", 1024: "sd2", 2048: "sdxl", **TINY_CROSS_ATTENTION_WIDTHS}
_TEXT_WIDTHS = {768: "sd15", 1024: "sd2", **TINY_TEXT_WIDTHS}
# Only SDXL (of SD1/SD2/SDXL) stacks more than one transformer block per attention or has
# the size/crop embedding (`label_emb` in LDM names, `add_embedding` in diffusers names).
_SDXL_ONLY_PATH = re.compile(r"(^|\.)(transformer_blocks\.[1-9]|label_emb|add_embedding)")


def detect_format(keys: Iterable[str], metadata: dict[str, str] | None = None, source: str = "LoRA") -> str:
    """ "kohya", "lycoris", "comfy", "diffusers", "peft", "diffusers-old" or "hcp"."""
    from lorastudio.adapters.comfy_names import is_comfy_state_dict
    from lorastudio.adapters.hcp import is_hcp_state_dict
    from lorastudio.adapters.kohya import is_kohya_state_dict
    from lorastudio.adapters.lycoris import is_lycoris_state_dict
    from lorastudio.adapters.peft_format import is_old_diffusers_state_dict, is_peft_state_dict

    keys = list(keys)
    if is_hcp_state_dict(keys):
        return "hcp"
    if is_kohya_state_dict(keys):
        return "lycoris" if is_lycoris_state_dict(keys, metadata) else "kohya"
    if is_comfy_state_dict(keys):
        return "comfy"
    if is_peft_state_dict(keys):
        return "peft" if any(k.startswith("base_model.model.") for k in keys) else "diffusers"
    if is_old_diffusers_state_dict(keys):
        return "diffusers-old"
    if keys and all(k.startswith("bundle_emb.") for k in keys):
        return "kohya"
    raise LorastudioError(
        f"{source}: no kohya, LyCORIS, ComfyUI, diffusers, peft or HCP LoRA keys found; it is not a LoRA file."
    )


# Layouts `<lora:…>` cannot read from loras/ (a diffusers/peft LoRA can: ComfyUI and this studio read it,
# as many downloads from the hub are, so it is no problem to list).
_FOREIGN_LAYOUTS = {
    "diffsynth": "a DiffSynth-Studio LoRA (blocks.N names), which A1111 and <lora:…> do not read",
}


def _foreign_layout(keys) -> str | None:
    """"diffsynth" for a LoRA written for DiffSynth-Studio (what earlier `lora export`s left in loras/),
    from its tensor names; None for the layouts `<lora:…>` reads."""
    from lorastudio.adapters.diffsynth import is_diffsynth_state_dict

    return "diffsynth" if is_diffsynth_state_dict(list(keys)) else None


def foreign_lora_note(name: str, keys: Iterable[str]) -> str | None:
    """The one line for a file in loras/ that is a LoRA for another tool: what it is, and to move it out
    of loras/ or convert it (`lora import` writes the kohya layout); None for any other file."""
    layout = _foreign_layout(keys)
    if layout is None:
        return None
    return (
        f"{name}: {_FOREIGN_LAYOUTS[layout]}; move it out of loras/, or convert it: "
        f"`lorastudio lora import {name}` (with --name NEW while it is still in loras/)."
    )


def lora_from_state_dict(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, source: str = "LoRA"
) -> LoraFile:
    from lorastudio.adapters.comfy import lora_from_comfy_state_dict
    from lorastudio.adapters.hcp import lora_from_hcp_state_dicts
    from lorastudio.adapters.kohya import lora_from_kohya_state_dict
    from lorastudio.adapters.lycoris import lora_from_lycoris_state_dict
    from lorastudio.adapters.peft_format import (
        lora_from_diffusers_state_dict,
        lora_from_old_diffusers_state_dict,
    )

    fmt = detect_format(state_dict.keys(), metadata, source)
    if fmt == "kohya":
        return lora_from_kohya_state_dict(state_dict, metadata, source)
    if fmt == "lycoris":
        return lora_from_lycoris_state_dict(state_dict, metadata, source)
    if fmt == "comfy":
        return lora_from_comfy_state_dict(state_dict, metadata, source)
    if fmt in ("diffusers", "peft"):
        return lora_from_diffusers_state_dict(state_dict, metadata)
    if fmt == "diffusers-old":
        return lora_from_old_diffusers_state_dict(state_dict, metadata)
    return lora_from_hcp_state_dicts(state_dict, None, source)  # each key says which half it is


def load_lora_file(path: str | Path, data: bytes | bytearray | None = None) -> LoraFile:
    """Read any supported LoRA (file or peft folder) into a `LoraFile`, format detected.

    `data`: the file's bytes when the caller has read them already (it hashes them too).
    """
    from lorastudio.adapters.hcp import is_hcp_state_dict, load_hcp
    from lorastudio.adapters.peft_format import load_peft_folder
    from lorastudio.models.checkpoint import read_safetensors_private

    path = Path(path)
    if path.is_dir():
        return load_peft_folder(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: LoRA file not found.")
    if path.suffix.lower() != ".safetensors":
        raise LorastudioError(
            f"{path.name}: only .safetensors LoRAs are read (.pt/.ckpt are pickles that can run code); "
            "convert it to .safetensors in a trusted environment."
        )
    state, metadata = read_safetensors_private(path, data)  # never memory-mapped: the file may change
    keys = list(state)
    if is_hcp_state_dict(keys):
        return load_hcp(path, state=state)  # the partner half is read by name
    if _foreign_layout(keys) == "diffsynth":  # an export for DiffSynth-Studio copied into loras/, say
        raise LorastudioError(foreign_lora_note(path.name, keys))
    lora = lora_from_state_dict(state, metadata, source=path.name)
    if not lora.source_format:
        lora.source_format = detect_format(keys, metadata)
    return lora


def _input_width(module) -> int | None:
    """The width of the layer's input as the module's tensors tell it (None when they do not)."""
    from lorastudio.adapters.lycoris import (
        BiasDiffModule,
        DoraModule,
        FullModule,
        Ia3Module,
        LohaModule,
        LokrModule,
    )

    while isinstance(module, DoraModule | BiasDiffModule):
        module = module.inner
    if isinstance(module, LoraModule) and module.down.dim() == 2:
        return int(module.down.shape[1])
    if isinstance(module, LohaModule) and module.t1 is None and module.w1_b.dim() == 2:
        return int(module.w1_b.shape[1])
    if isinstance(module, FullModule) and module.diff.dim() == 2:
        return int(module.diff.shape[1])
    if isinstance(module, LokrModule) and module.t2 is None:
        w1_in = module.w1.shape[1] if module.w1 is not None else module.w1_b.shape[1]
        w2 = module.w2 if module.w2 is not None else module.w2_b
        return int(w1_in * w2.shape[1]) if w2.dim() == 2 else None
    if isinstance(module, Ia3Module) and module.on_input:
        return int(module.weight.numel())
    return None


def _family_from_widths(lora: LoraFile) -> str | None:
    for (component, path), module in lora.modules.items():
        width = _input_width(module)
        if component == "unet" and path.endswith("attn2.to_k") and width is not None:
            return _CROSS_ATTENTION_WIDTHS.get(width)
    for (component, path), module in lora.modules.items():
        width = _input_width(module)
        if component == "text_encoder" and path.endswith("self_attn.q_proj") and width is not None:
            return _TEXT_WIDTHS.get(width)
    return None


def _has_sdxl_only_blocks(lora: LoraFile) -> bool:
    return any(component == "unet" and _SDXL_ONLY_PATH.search(path) for component, path in lora.modules)


def detect_lora_family(lora: LoraFile) -> Family | None:
    """The family a LoRA was made for, or None when nothing tells (a LoRA on text encoder layers it
    does not read, a model of other widths).

    Metadata first, then a second text encoder, then widths, then SDXL-only blocks.
    """
    from lorastudio.adapters.metadata import family_from_metadata
    from lorastudio.models.families import get_family

    family = family_from_metadata(lora.metadata)
    if family is not None:
        return family
    if "text_encoder_2" in lora.components():
        return get_family("sdxl")
    name = _family_from_widths(lora) or ("sdxl" if _has_sdxl_only_blocks(lora) else None)
    return get_family(name) if name else None


def check_lora_family(
    lora: LoraFile,
    family: Family | str,
    name: str = "LoRA",
    components: dict[str, torch.nn.Module] | None = None,
) -> None:
    """Refuse, in one line, a LoRA made for another family (e.g. an SDXL LoRA on SD 1.5).

    components: when given, also checks that the LoRA's layers fit this model's shapes.
    """
    from lorastudio.adapters.lora_file import find_module
    from lorastudio.adapters.metadata import family_from_metadata
    from lorastudio.models.families import get_family

    family = get_family(family) if isinstance(family, str) else family
    made_for = detect_lora_family(lora)
    second_encoder = "text_encoder_2" in lora.components()
    if second_encoder and family.lora_te_count < 2:
        made_for = get_family("sdxl")  # a second text encoder, whatever the metadata says
    # Shapes alone cannot tell SDXL's UNet from Kolors' (the same blocks and widths): only metadata can.
    sdxl_shaped = made_for is not None and made_for.name == "sdxl" and not second_encoder
    if sdxl_shaped and family.kohya_unet_ldm_names and family_from_metadata(lora.metadata) is None:
        made_for = family
    if made_for is not None and made_for.name != family.name:
        raise LorastudioError(
            f"{name}: was made for {made_for.label} but the model is {family.label}; "
            f"use a {family.label} LoRA or switch to an {made_for.label} model."
        )
    if components is None:
        return
    checked = (
        lora.with_diffusers_unet(components["unet"].config)
        if lora.unet_layout == "ldm" and "unet" in components
        else lora
    )
    from lorastudio.adapters.lycoris import delta_numel

    for (component, path), module in checked.modules.items():
        if component not in components:
            continue
        target = find_module(components[component], path)
        weight = getattr(target, "weight", None)
        numel = delta_numel(module)
        if weight is None or numel is None:
            continue
        if numel != weight.numel():
            raise LorastudioError(
                f"{name}: layer {component}.{path} does not fit this {family.label} model's shapes; "
                "it was trained for a different base model."
            )
        return  # one layer is enough to tell a mismatch of sizes
