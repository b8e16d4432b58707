"""diffusers / peft LoRA layouts.

- diffusers (`pipe.save_lora_weights`): one safetensors file, keys
  `unet.<path>.lora_A.weight` / `text_encoder.<path>.lora_B.weight`, alpha in the
  `lora_adapter_metadata` JSON (`unet.lora_alpha`, `unet.alpha_pattern`, ...). Without that
  metadata alpha is lost and defaults to the rank, so lorastudio always writes it.
- peft (`PeftModel.save_pretrained`): a folder with `adapter_model.safetensors`
  (`base_model.model.<path>.lora_A.weight`) and `adapter_config.json`; one per component.
- old diffusers (LoRACompatibleLinear / attention processors / the text-encoder monkey patch):
  `<path>.lora.down.weight`, `<path>.processor.to_q_lora.down.weight`,
  `<path>.lora_linear_layer.down.weight`; these carry no alpha (alpha = rank).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.adapters.lora_file import COMPONENTS, TEXT_ENCODERS, LoraFile, LoraModule
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    import torch

__all__ = [
    "ADAPTER_METADATA_KEY",
    "is_peft_state_dict",
    "is_old_diffusers_state_dict",
    "lora_from_diffusers_state_dict",
    "lora_from_old_diffusers_state_dict",
    "diffusers_state_dict",
    "save_diffusers",
    "save_peft",
    "load_peft_folder",
]

ADAPTER_METADATA_KEY = "lora_adapter_metadata"
PEFT_PREFIX = "base_model.model."
_OLD_PROCESSOR = re.compile(
    r"^(?P<path>.*)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<which>down|up)\.weight$"
)


def is_peft_state_dict(keys: Iterable[str]) -> bool:
    return any(".lora_A." in k or ".lora_B." in k for k in keys)


_OLD_PAIRS = (
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"),
    (".lora_linear_layer.up.weight", "up"),
)


def is_old_diffusers_state_dict(keys: Iterable[str]) -> bool:
    return any(k.endswith(tuple(m for m, _ in _OLD_PAIRS)) or _OLD_PROCESSOR.match(k) for k in keys)


def _split_component(key: str, default: str | None) -> tuple[str, str]:
    for component in sorted(COMPONENTS, key=len, reverse=True):
        if key.startswith(component + "."):
            return component, key[len(component) + 1 :]
    if key.startswith(PEFT_PREFIX):
        key = key[len(PEFT_PREFIX) :]
    if default is None:
        default = "text_encoder" if (".self_attn." in key or ".mlp." in key) else "unet"
    return default, key


def _pattern_value(path: str, pattern: dict, fallback):
    """peft's rank/alpha_pattern lookup: a key matches the full path or a dotted suffix of it."""
    for key, value in pattern.items():
        if path == key or path.endswith("." + key) or re.fullmatch(key, path):
            return value
    return fallback


def _component_configs(metadata: dict[str, str]) -> dict[str, dict]:
    raw = metadata.get(ADAPTER_METADATA_KEY)
    if not raw:
        return {}
    packed = json.loads(raw)
    configs: dict[str, dict] = {}
    for key, value in packed.items():
        component, _, field = key.partition(".")
        configs.setdefault(component, {})[field] = value
    return configs


def lora_from_diffusers_state_dict(
    state_dict: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
    component: str | None = None,
    adapter_config: dict | None = None,
) -> LoraFile:
    """Read `lora_A`/`lora_B` tensors (diffusers file or peft adapter) into a `LoraFile`."""
    metadata = dict(metadata or {})
    configs = _component_configs(metadata)
    pairs: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        for marker, slot in ((".lora_A.weight", "down"), (".lora_B.weight", "up"), (".alpha", "alpha")):
            if key.endswith(marker):
                comp, path = _split_component(key[: -len(marker)], component)
                pairs.setdefault((comp, path), {})[slot] = value
    if any(
        k.endswith((".lora_B.bias", ".lora_magnitude_vector")) or ".lora_magnitude_vector" in k
        for k in state_dict
    ):
        raise LorastudioError("LoRA: uses LoRA biases or DoRA magnitudes, which lorastudio cannot apply.")
    lora = LoraFile(metadata=metadata, source_format="peft" if component or adapter_config else "diffusers")
    for (comp, path), parts in pairs.items():
        if not {"down", "up"} <= set(parts):
            raise LorastudioError(
                f"LoRA: module {comp}.{path} lacks lora_A or lora_B; the file is incomplete."
            )
        down, up = parts["down"], parts["up"]
        alpha = _module_alpha(path, down, parts.get("alpha"), adapter_config or configs.get(comp, {}))
        lora.add(comp, path, LoraModule(down, up, alpha, "conv" if down.dim() == 4 else "linear"))
    if not lora.modules:
        raise LorastudioError("LoRA: no lora_A/lora_B tensors found; it is not a diffusers/peft LoRA.")
    return lora


def _module_alpha(path: str, down: torch.Tensor, tensor: torch.Tensor | None, config: dict) -> float | None:
    """The module's own `.alpha` tensor, else the adapter config's alpha, else None (= rank)."""
    if tensor is not None:
        return float(tensor)
    if not config:
        return None
    rank = int(_pattern_value(path, config.get("rank_pattern") or {}, config.get("r", down.shape[0])))
    return float(_pattern_value(path, config.get("alpha_pattern") or {}, config.get("lora_alpha", rank)))


def lora_from_old_diffusers_state_dict(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> LoraFile:
    """Old diffusers layouts: `<path>.lora.down.weight`, `lora_linear_layer` and processor `to_q_lora`."""
    pairs: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        match = _OLD_PROCESSOR.match(key)
        if match:
            proj = "to_out.0" if match["proj"] == "to_out" else match["proj"]
            comp, path = _split_component(f"{match['path']}.{proj}", None)
            pairs.setdefault((comp, path), {})[match["which"]] = value
            continue
        for marker, slot in _OLD_PAIRS:
            if key.endswith(marker):
                comp, path = _split_component(key[: -len(marker)], None)
                pairs.setdefault((comp, path), {})[slot] = value
    lora = LoraFile(metadata=dict(metadata or {}), source_format="diffusers-old")
    for (comp, path), parts in pairs.items():
        if set(parts) == {"down", "up"}:
            lora.add(
                comp,
                path,
                LoraModule(
                    parts["down"], parts["up"], None, "conv" if parts["down"].dim() == 4 else "linear"
                ),
            )
    if not lora.modules:
        raise LorastudioError("LoRA: no lora.down/lora.up pairs found; it is not an old diffusers LoRA.")
    return lora


def _peft_config(modules: dict[str, LoraModule]) -> dict:
    """A LoraConfig dict with per-module rank/alpha where they differ from the common value.

    Module names go without `text_model.`: peft matches them as dotted suffixes, so they
    then fit both flattened (transformers 5 CLIPTextModel) and wrapped text encoders.
    """
    modules = {p.removeprefix("text_model."): m for p, m in modules.items()}
    ranks = Counter(m.rank for m in modules.values())
    alphas = Counter(float(m.alpha or m.rank) for m in modules.values())
    r = ranks.most_common(1)[0][0]
    alpha = alphas.most_common(1)[0][0]
    return {
        "r": r,
        "lora_alpha": alpha,
        "rank_pattern": {p: m.rank for p, m in modules.items() if m.rank != r},
        "alpha_pattern": {
            p: float(m.alpha or m.rank) for p, m in modules.items() if float(m.alpha or m.rank) != alpha
        },
        "target_modules": sorted(modules),
        "lora_dropout": 0.0,
        "bias": "none",
        "init_lora_weights": True,
        "use_dora": False,
        "use_rslora": False,
    }


def _export_path(component: str, path: str, style: str) -> str:
    """Text-encoder names as each consumer expects them.

    diffusers files: always `text_model.` (transformers < 5 names; diffusers strips it for
    the flattened transformers-5 CLIPTextModel). peft folders are loaded straight into the
    component, so they use transformers 5's own names: CLIPTextModel is flattened,
    CLIPTextModelWithProjection (SDXL's second encoder) still has `text_model.`.
    """
    if component not in TEXT_ENCODERS:
        return path
    if style == "diffusers" or component == "text_encoder_2":
        return "text_model." + path
    return path


def _by_component(
    lora: LoraFile, unet_config=None, style: str = "diffusers"
) -> dict[str, dict[str, LoraModule]]:
    if lora.unet_layout == "ldm":
        unet_config = unet_config if unet_config is not None else lora.unet_config
        if unet_config is None:
            raise LorastudioError(
                "LoRA: its UNet names are in LDM (SDXL kohya) layout; pass the model (--model) to map them to diffusers."
            )
        lora = lora.with_diffusers_unet(unet_config)
    grouped: dict[str, dict[str, LoraModule]] = {}
    for (component, path), module in lora.modules.items():
        grouped.setdefault(component, {})[_export_path(component, path, style)] = module
    return grouped


def diffusers_state_dict(lora: LoraFile, unet_config: dict[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of the diffusers single-file layout, alpha kept in the metadata."""
    state: dict[str, torch.Tensor] = {}
    packed: dict[str, object] = {}
    for component, modules in _by_component(lora, unet_config).items():
        for path, module in modules.items():
            state[f"{component}.{path}.lora_A.weight"] = module.down.detach().contiguous()
            state[f"{component}.{path}.lora_B.weight"] = module.up.detach().contiguous()
        for field, value in _peft_config(modules).items():
            packed[f"{component}.{field}"] = value
    metadata = {k: v for k, v in lora.metadata.items() if k != ADAPTER_METADATA_KEY}
    metadata[ADAPTER_METADATA_KEY] = json.dumps(packed, indent=2, sort_keys=True)
    metadata.setdefault("format", "pt")
    return state, metadata


def save_diffusers(lora: LoraFile, path: str | Path, unet_config: dict[str, Any] | None = None) -> Path:
    """Write a file `pipe.load_lora_weights(path)` reads with the right alpha."""
    from safetensors.torch import save_file

    state, metadata = diffusers_state_dict(lora, unet_config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path


def save_peft(lora: LoraFile, folder: str | Path, unet_config: dict[str, Any] | None = None) -> Path:
    """One peft adapter folder per component (`<folder>/unet`, `<folder>/text_encoder`, ...)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    for component, modules in _by_component(lora, unet_config, style="peft").items():
        target = folder / component
        target.mkdir(parents=True, exist_ok=True)
        state = {}
        for path, module in modules.items():
            state[f"{PEFT_PREFIX}{path}.lora_A.weight"] = module.down.detach().contiguous()
            state[f"{PEFT_PREFIX}{path}.lora_B.weight"] = module.up.detach().contiguous()
        config = {"peft_type": "LORA", "task_type": None, **_peft_config(modules)}
        # The LoRA's own metadata (ss_*, modelspec.*: family, trigger, training) rides along, so a
        # peft export reads back as what it was (its family without --family).
        metadata = {k: v for k, v in lora.metadata.items() if k != ADAPTER_METADATA_KEY}
        save_file(state, str(target / "adapter_model.safetensors"), metadata={**metadata, "format": "pt"})
        (target / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def load_peft_folder(folder: str | Path) -> LoraFile:
    """A peft adapter folder, or a folder of them named after components (as `save_peft` writes)."""
    from lorastudio.models.checkpoint import read_safetensors_private

    folder = Path(folder)
    adapters = (
        [folder]
        if (folder / "adapter_config.json").is_file()
        else [folder / c for c in COMPONENTS if (folder / c / "adapter_config.json").is_file()]
    )
    if not adapters:
        raise LorastudioError(f"{folder}: no adapter_config.json found; it is not a peft adapter folder.")
    lora = LoraFile(source_format="peft")
    for adapter in adapters:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        weights = adapter / "adapter_model.safetensors"
        if not weights.is_file():
            raise LorastudioError(
                f"{adapter}: adapter_model.safetensors is missing (.bin adapters are not read: unsafe pickle)."
            )
        component = adapter.name if adapter.name in COMPONENTS else None
        tensors, metadata = read_safetensors_private(weights)
        part = lora_from_diffusers_state_dict(tensors, component=component, adapter_config=config)
        lora.modules.update(part.modules)
        for key, value in metadata.items():
            lora.metadata.setdefault(key, value)
    return lora
