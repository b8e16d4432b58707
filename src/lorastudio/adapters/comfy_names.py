"""The names in ComfyUI's own LoRA layout, shared by its reader (`adapters.comfy`) and `adapters.lycoris`.

`diffusion_model.<LDM module path>.<suffix>` for the UNet, `text_encoders.<clip_l|clip_g|clip_h>.transformer.
<transformers path>.<suffix>` for the text encoders (see `adapters.comfy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "CLIP_COMPONENTS",
    "TE_PREFIX",
    "UNET_PREFIX",
    "comfy_component_and_path",
    "is_comfy_state_dict",
    "split_comfy_key",
]

UNET_PREFIX = "diffusion_model."
TE_PREFIX = "text_encoders."
# ComfyUI's name of each text encoder -> the pipeline component it is.
CLIP_COMPONENTS = {"clip_l": "text_encoder", "clip_h": "text_encoder", "clip_g": "text_encoder_2"}
_TRANSFORMER = "transformer."
# The top-level modules of an SD 1.x/2.x/SDXL UNet in LDM names; a ComfyUI LoRA of another
# architecture (Flux `double_blocks`, SD3 `joint_blocks`, ...) names others.
SD_UNET_ROOTS = ("input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb", "out")


def is_comfy_state_dict(keys: Iterable[str]) -> bool:
    return any(k.startswith((UNET_PREFIX, TE_PREFIX)) for k in keys)


def split_comfy_key(key: str) -> tuple[str, str] | None:
    """`diffusion_model.x.proj_in.lora_up.weight` -> (`diffusion_model.x.proj_in`, `lora_up.weight`).

    The suffix is the last name, or the last two when the last is `weight` (`lora_up.weight`); an
    unknown suffix found so is refused by name when the module is read. None: not a ComfyUI key.
    """
    if not key.startswith((UNET_PREFIX, TE_PREFIX)):
        return None
    cut = 2 if key.endswith(".weight") else 1
    parts = key.split(".")
    if len(parts) <= cut + 1:
        return None
    base, suffix = ".".join(parts[:-cut]), ".".join(parts[-cut:])
    if suffix == "diff" and base.endswith(".bias"):  # ComfyUI's generic key for a non-weight tensor
        return base[: -len(".bias")], "diff_b"
    return base, suffix


def comfy_component_and_path(base: str, source: str = "LoRA") -> tuple[str, str] | None:
    """(component, module path) of a module name; None for a name that is not a ComfyUI one."""
    if base.startswith(UNET_PREFIX):
        path = base[len(UNET_PREFIX) :]
        root = path.split(".", 1)[0]
        if root not in SD_UNET_ROOTS:
            raise LorastudioError(
                f"{source}: has layers of a {root!r} diffusion model, which SD 1.x/2.x/SDXL UNets lack "
                f"({', '.join(SD_UNET_ROOTS)}); it was made for another architecture (Flux, SD3, ...)."
            )
        return "unet", path
    if not base.startswith(TE_PREFIX):
        return None
    encoder, _, path = base[len(TE_PREFIX) :].partition(".")
    if encoder not in CLIP_COMPONENTS:
        raise LorastudioError(
            f"{source}: has layers of a {encoder!r} text encoder, which SD 1.x/2.x/SDXL models lack "
            f"({', '.join(CLIP_COMPONENTS)}); it was made for another model family."
        )
    return CLIP_COMPONENTS[encoder], path.removeprefix(_TRANSFORMER)
