"""ComfyUI's own LoRA layout: tensors named after ComfyUI's model state dict, not kohya's.

ComfyUI's LoraSave node (`comfy_extras/nodes_lora_extract.py`) and trainers that follow its
"generic" key map (`comfy/lora.py`) write

- UNet: `diffusion_model.<LDM module path>.<suffix>` (`input_blocks.4.1.proj_in`, as in A1111
  checkpoints: `models.ldm_names` maps them to diffusers paths once the UNet config is known);
- text encoders: `text_encoders.<clip_l|clip_g|clip_h>.transformer.<transformers path>.<suffix>`
  (`clip_l` is SD 1.x's and SDXL's first encoder, `clip_g` SDXL's second, `clip_h` SD 2.x's);

with LyCORIS' per-module suffixes: `lora_up.weight`/`lora_down.weight` (or `lora_B`/`lora_A`),
optional `alpha` (LoraSave writes none: scale 1), `diff` for layers it does not factor (norms, or
every layer in its full-diff mode) and `diff_b` bias differences beside them. A key
`<path>.bias.diff` is the same as `<path>.diff_b`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lorastudio.adapters.comfy_names import comfy_component_and_path, split_comfy_key
from lorastudio.adapters.lora_file import LoraFile
from lorastudio.adapters.lycoris import module_from_parts
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    import torch

__all__ = ["lora_from_comfy_state_dict"]


def lora_from_comfy_state_dict(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, source: str = "LoRA"
) -> LoraFile:
    """Read a ComfyUI-layout LoRA into a `LoraFile` (UNet paths in LDM layout until a config maps them)."""
    pieces: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        split = split_comfy_key(key)
        if split is not None:
            pieces.setdefault(split[0], {})[split[1]] = value
    lora = LoraFile(metadata=dict(metadata or {}), source_format="comfy")
    for base, parts in pieces.items():
        component, path = comfy_component_and_path(base, source)
        lora.add(component, path, module_from_parts(base, parts, source))
    if "unet" in lora.components():
        lora.unet_layout = "ldm"
    if not lora.modules:
        raise LorastudioError(f"{source}: has no diffusion_model./text_encoders. modules; it is not a ComfyUI LoRA.")
    return lora
