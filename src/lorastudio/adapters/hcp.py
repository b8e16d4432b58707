"""HCP-Diffusion LoRA files: separate UNet and text-encoder files with HCP's alpha.

Confirmed from HCP-Diffusion's sources (hcpdiff/models/lora_base.py, ckpt_manager,
tools/lora_convert.py):
- safetensors keys are a nested dict flattened with ':' -> `lora:<module path>.___.layer.lora_down.weight`,
  `...___.layer.lora_up.weight` and `...___.alpha` (older files: `...___.scale`);
  module paths are diffusers paths; SDXL text-encoder paths start with `clip_B.` / `clip_bigG.`.
- the UNet file is usually `unet-<name>.safetensors`, the text encoder `TE-<name>.safetensors`.
- the stored `alpha` buffer is already divided by the rank (`alpha / rank` with
  alpha_auto_scale, the default): the effect is `alpha_stored * up @ down`. So the
  kohya alpha is `alpha_stored * rank`.
Not confirmed: LoRA biases (`lora_up.bias`, refused) and grouped/LoHa layers (refused).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.adapters.lora_file import LoraFile, LoraModule
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    import torch

__all__ = ["is_hcp_state_dict", "lora_from_hcp_state_dicts", "load_hcp", "save_hcp", "hcp_partner_file"]

_SEP = ".___."
_TE_PREFIXES = {"clip_B.": "text_encoder", "clip_bigG.": "text_encoder_2"}


def is_hcp_state_dict(keys) -> bool:
    return any(_SEP in k for k in keys)


def _read_one(
    state_dict: dict[str, torch.Tensor], default_component: str, lora: LoraFile, source: str
) -> None:
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if _SEP not in key:
            continue
        key = key.split(":", 1)[1] if ":" in key.split(_SEP)[0] else key
        path, _, rest = key.partition(_SEP)
        parts.setdefault(path, {})[rest] = value
    for path, tensors in parts.items():
        if "layer.lora_up.bias" in tensors:
            raise LorastudioError(f"{source}: HCP LoRA with biases ({path}) cannot be applied by lorastudio.")
        if "layer.lora_down.weight" not in tensors or "layer.lora_up.weight" not in tensors:
            raise LorastudioError(
                f"{source}: HCP module {path} lacks lora_down/lora_up (LoHa or grouped LoRA?)."
            )
        down, up = tensors["layer.lora_down.weight"], tensors["layer.lora_up.weight"]
        scale = tensors.get("alpha", tensors.get("scale"))
        rank = down.shape[0]
        alpha = float(scale) * rank if scale is not None else None
        component = default_component
        for prefix, name in _TE_PREFIXES.items():
            if path.startswith(prefix):
                component, path = name, path[len(prefix) :]
        lora.add(component, path, LoraModule(down, up, alpha, "conv" if down.dim() == 4 else "linear"))


def lora_from_hcp_state_dicts(
    unet_state: dict[str, torch.Tensor] | None, te_state: dict[str, torch.Tensor] | None, source: str = "LoRA"
) -> LoraFile:
    lora = LoraFile(source_format="hcp")
    if unet_state:
        _read_one(unet_state, "unet", lora, source)
    if te_state:
        _read_one(te_state, "text_encoder", lora, source)
    if not lora.modules:
        raise LorastudioError(f"{source}: no HCP `.___.layer.lora_down` tensors found.")
    return lora


def hcp_partner_file(path: str | Path) -> Path | None:
    """`unet-x.safetensors` <-> `TE-x.safetensors` next to each other."""
    path = Path(path)
    for mine, other in (("unet-", "TE-"), ("TE-", "unet-")):
        if path.name.startswith(mine):
            partner = path.with_name(other + path.name[len(mine) :])
            return partner if partner.is_file() else None
    return None


def load_hcp(path: str | Path, te_path: str | Path | None = None) -> LoraFile:
    """An HCP LoRA from its UNet or TE file; the partner file is found by name when not given."""
    from safetensors.torch import load_file

    path = Path(path)
    partner = Path(te_path) if te_path else hcp_partner_file(path)
    states = {"unet": None, "te": None}
    for file in (path, partner):
        if file is None:
            continue
        states["te" if file.name.startswith("TE-") else "unet"] = load_file(str(file))
    if states["unet"] is None and states["te"] is None:
        states["unet"] = load_file(str(path))
    return lora_from_hcp_state_dicts(states["unet"], states["te"], source=path.name)


def save_hcp(lora: LoraFile, folder: str | Path, name: str, sdxl: bool = False) -> tuple[Path, Path | None]:
    """Write `unet-<name>.safetensors` and `TE-<name>.safetensors` in HCP's layout."""
    import torch
    from safetensors.torch import save_file

    if lora.unet_layout != "diffusers":
        raise LorastudioError(
            "HCP export: map the LoRA's LDM UNet names to diffusers first (pass the model)."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet, te = {}, {}
    for (component, path), module in lora.modules.items():
        target = unet if component == "unet" else te
        if component != "unet":
            path = "text_model." + path
            if sdxl:
                path = ("clip_B." if component == "text_encoder" else "clip_bigG.") + path
        target[f"lora:{path}{_SEP}layer.lora_down.weight"] = module.down.contiguous()
        target[f"lora:{path}{_SEP}layer.lora_up.weight"] = module.up.contiguous()
        target[f"lora:{path}{_SEP}alpha"] = torch.tensor(module.scale, dtype=torch.float32)
    unet_path = folder / f"unet-{name}.safetensors"
    save_file(unet, str(unet_path))
    te_path = None
    if te:
        te_path = folder / f"TE-{name}.safetensors"
        save_file(te, str(te_path))
    return unet_path, te_path
