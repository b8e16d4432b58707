"""HCP-Diffusion LoRA files: separate UNet and text-encoder files with HCP's alpha.

Confirmed from HCP-Diffusion's sources (hcpdiff/models/lora_base.py, ckpt_manager,
tools/lora_convert.py):
- safetensors keys are a nested dict flattened with ':' -> `lora:<module path>.___.layer.lora_down.weight`,
  `...___.layer.lora_up.weight` and `...___.alpha` (older files: `...___.scale`);
  module paths are diffusers paths; SDXL text-encoder paths start with `clip_B.` / `clip_bigG.`.
- the UNet file is `unet-<N>.safetensors`, the text encoder `text_encoder-<N>.safetensors`
  (HCP-Diffusion's checkpoints folder; older versions wrote `TE-<N>`). Which half a file holds
  is read from its keys (`text_model.`/`clip_B.`/`clip_bigG.` vs diffusers UNet paths), never
  from its name, so a text-encoder file alone becomes `lora_te_` modules; a key that names
  neither half is refused, naming the file and the key.
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
    from collections.abc import Iterable

    import torch

__all__ = ["is_hcp_state_dict", "lora_from_hcp_state_dicts", "load_hcp", "save_hcp", "hcp_partner_file"]

_SEP = ".___."
_TE_PREFIXES = {"clip_B.": "text_encoder", "clip_bigG.": "text_encoder_2"}
# Where a diffusers UNet path starts, and where a CLIP text-encoder path starts.
_UNET_ROOTS = (
    "down_blocks.", "up_blocks.", "mid_block.", "conv_in", "conv_out", "conv_norm_out",
    "time_embedding.", "add_embedding.", "class_embedding.",
)  # fmt: skip
_TE_ROOTS = ("text_model.", "encoder.layers.", "embeddings.", "final_layer_norm")
_TENSORS = {"layer.lora_down.weight": "down", "layer.lora_up.weight": "up", "alpha": "alpha", "scale": "alpha"}
# The file names HCP-Diffusion writes: `unet-<N>` with `text_encoder-<N>` (older: `TE-<N>`).
_NAME_PREFIXES = ("unet-", "text_encoder-", "TE-")


def is_hcp_state_dict(keys: Iterable[str]) -> bool:
    return any(_SEP in k for k in keys)


def _component_of(path: str) -> tuple[str, str] | None:
    """(component, module path) for an HCP module path, or None when it names neither half."""
    for wrapper in ("unet.", "text_encoder."):  # a whole-pipeline file nests each half by name
        if path.startswith(wrapper) and _component_of(path[len(wrapper) :]) is not None:
            path = path[len(wrapper) :]
    for prefix, component in _TE_PREFIXES.items():
        if path.startswith(prefix):
            return component, path[len(prefix) :]
    if path.startswith(_TE_ROOTS):
        return "text_encoder", path
    if path.startswith(_UNET_ROOTS):
        return "unet", path
    return None


def _read_one(state_dict: dict[str, torch.Tensor], lora: LoraFile, source: str) -> None:
    """Add one HCP file's modules; each half goes to its component by its own key names."""
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state_dict.items():
        group, colon, inner = key.partition(":")
        name = inner if colon and group == "lora" else key
        path, sep, rest = name.partition(_SEP)
        if rest == "layer.lora_up.bias":
            raise LorastudioError(f"{source}: HCP LoRA with biases ({path}) cannot be applied by lorastudio.")
        where = _component_of(path) if sep and not (colon and group != "lora") else None
        if where is None or rest not in _TENSORS:
            unknown.append(key)
            continue
        parts.setdefault(where, {})[_TENSORS[rest]] = value
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else "")
        raise LorastudioError(
            f"{source}: {len(unknown)} keys are not HCP-Diffusion LoRA keys of the UNet or a text encoder: {shown}."
        )
    for (component, path), tensors in parts.items():
        if "down" not in tensors or "up" not in tensors:
            raise LorastudioError(
                f"{source}: HCP module {path} lacks lora_down/lora_up (LoHa or grouped LoRA?)."
            )
        down, up = tensors["down"], tensors["up"]
        rank = down.shape[0]
        alpha = float(tensors["alpha"]) * rank if "alpha" in tensors else None
        lora.add(component, path, LoraModule(down, up, alpha, "conv" if down.dim() == 4 else "linear"))


def lora_from_hcp_state_dicts(
    unet_state: dict[str, torch.Tensor] | None, te_state: dict[str, torch.Tensor] | None, source: str = "LoRA"
) -> LoraFile:
    """An HCP LoRA from its two halves (either may be None); keys decide UNet vs text encoder."""
    lora = LoraFile(source_format="hcp")
    for state in (unet_state, te_state):
        if state:
            _read_one(state, lora, source)
    if not lora.modules:
        raise LorastudioError(f"{source}: no HCP `.___.layer.lora_down` tensors found.")
    return lora


def hcp_partner_file(path: str | Path) -> Path | None:
    """The other half next to it: `unet-N` <-> `text_encoder-N` (or the older `TE-N`)."""
    path = Path(path)
    for mine in _NAME_PREFIXES:
        if path.name.startswith(mine):
            rest = path.name[len(mine) :]
            for other in _NAME_PREFIXES:
                partner = path.with_name(other + rest)
                if other != mine and partner.is_file():
                    return partner
    return None


def load_hcp(
    path: str | Path, te_path: str | Path | None = None, state: dict[str, torch.Tensor] | None = None
) -> LoraFile:
    """An HCP LoRA from its UNet or text-encoder file; the other half is found by name when not given.

    state: `path`'s tensors when the caller has read them already (format detection), so the
    file is not read twice.
    """
    from lorastudio.models.checkpoint import read_safetensors_private

    path = Path(path)
    partner = Path(te_path) if te_path else hcp_partner_file(path)
    lora = LoraFile(source_format="hcp")
    _read_one(state if state is not None else read_safetensors_private(path)[0], lora, path.name)
    if partner is not None:
        _read_one(read_safetensors_private(partner)[0], lora, partner.name)
    if not lora.modules:
        raise LorastudioError(f"{path.name}: no HCP `.___.layer.lora_down` tensors found.")
    return lora


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
