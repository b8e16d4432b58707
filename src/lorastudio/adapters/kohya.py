"""kohya / A1111 webui LoRA files: `lora_unet_*`, `lora_te*_*` keys with `.alpha`.

A module name is prefix + module path with `.` -> `_`. Turning it back needs to know
which underscores belong to a layer's own name (`to_q`, `transformer_blocks`), which is
what `kohya_names._VOCABULARY` is for; a name it cannot split still resolves at patch time through
`find_module`'s underscore fallback. SDXL files name UNet layers after the original LDM
blocks (`input_blocks_4_1_...`): those stay in LDM layout until a UNet config is known.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.adapters.kohya_names import (
    BUNDLE_PREFIX,
    MODULE_PREFIXES,
    UNET_PREFIX,
    component_and_name,
    kohya_to_module_path,
    read_bundled_embeddings,
    uses_ldm_unet_names,
)
from lorastudio.adapters.lora_file import TEXT_ENCODERS, LoraFile, LoraModule
from lorastudio.adapters.lycoris import lycoris_state_dict_of
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    import torch

    from lorastudio.models.families import Family

__all__ = [
    "is_kohya_state_dict",
    "kohya_name",
    "kohya_to_module_path",
    "lora_from_kohya_state_dict",
    "kohya_state_dict",
    "save_kohya",
    "uses_ldm_unet_names",
]

logger = logging.getLogger(__name__)


def kohya_name(component: str, path: str, family: Family) -> str:
    """The kohya module name for a module path (text encoders get `text_model_` back)."""
    if component == "unet":
        return UNET_PREFIX + path.replace(".", "_")
    index = TEXT_ENCODERS.index(component)
    if index >= len(family.kohya_te_prefixes):
        raise LorastudioError(
            f"LoRA: has a {component} part but {family.label} has one text encoder; pick the right family."
        )
    if not path.startswith("text_model."):
        path = "text_model." + path
    return f"{family.kohya_te_prefixes[index]}_" + path.replace(".", "_")


def is_kohya_state_dict(keys: Iterable[str]) -> bool:
    return any(k.startswith(MODULE_PREFIXES) for k in keys)


def _split_module(key: str) -> tuple[str, str] | None:
    """`lora_unet_x.lora_down.weight` -> (`lora_unet_x`, `lora_down.weight`)."""
    if "." not in key:
        return None
    base, _, rest = key.partition(".")
    return base, rest


def lora_from_kohya_state_dict(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, source: str = "LoRA"
) -> LoraFile:
    """Read a kohya/webui (or LyCORIS LoCon) state dict into a `LoraFile`."""
    pieces: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.startswith(BUNDLE_PREFIX):
            continue
        split = _split_module(key)
        if split is None:
            continue
        base, rest = split
        pieces.setdefault(base, {})[rest] = value

    unsupported = sorted(
        {r for parts in pieces.values() for r in parts} - {"lora_down.weight", "lora_up.weight", "alpha"}
    )
    if unsupported:
        raise LorastudioError(
            f"{source}: uses {', '.join(unsupported[:3])} tensors, which a kohya LoRA does not have; "
            "read it with load_lora_file, which detects LyCORIS files."
        )
    ldm = uses_ldm_unet_names(pieces)
    lora = LoraFile(
        metadata=dict(metadata or {}), unet_layout="ldm" if ldm else "diffusers", source_format="kohya"
    )
    for base, parts in pieces.items():
        where = component_and_name(base)
        if where is None:
            continue
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise LorastudioError(
                f"{source}: module {base} lacks lora_down or lora_up; the file is incomplete."
            )
        component, name = where
        down, up = parts["lora_down.weight"], parts["lora_up.weight"]
        alpha = parts.get("alpha")
        kind = "conv" if down.dim() == 4 else "linear"
        lora.add(
            component,
            kohya_to_module_path(name),
            LoraModule(down, up, float(alpha) if alpha is not None else None, kind),
        )
    lora.embeddings = read_bundled_embeddings(state_dict)
    if not lora.modules and not lora.embeddings:
        raise LorastudioError(f"{source}: has no lora_unet_/lora_te_ modules; it is not a kohya-style LoRA.")
    return lora


def kohya_state_dict(lora: LoraFile, family: Family, unet_config: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The kohya/webui tensors for a `LoraFile` (SDXL UNet in LDM names, as A1111 expects)."""
    import torch

    needs_ldm = family.kohya_unet_ldm_names and lora.unet_layout != "ldm" and "unet" in lora.components()
    needs_diffusers = not family.kohya_unet_ldm_names and lora.unet_layout == "ldm"
    if needs_ldm or needs_diffusers:
        config = unet_config if unet_config is not None else lora.unet_config
        if config is None:
            logger.warning(
                "LoRA export: no UNet config given; assuming the standard %s UNet layout", family.label
            )
            config = default_unet_config(family)
        lora = lora.with_ldm_unet(config) if needs_ldm else lora.with_diffusers_unet(config)
    state: dict[str, torch.Tensor] = {}
    for (component, path), module in lora.modules.items():
        name = kohya_name(component, path, family)
        if not isinstance(module, LoraModule):  # LoHa, LoKr, (IA)^3, full, DoRA: LyCORIS' own suffixes
            state.update(lycoris_state_dict_of(name, module))
            continue
        state[f"{name}.lora_down.weight"] = module.down.detach().contiguous()
        state[f"{name}.lora_up.weight"] = module.up.detach().contiguous()
        alpha = module.alpha if module.alpha else float(module.rank)
        state[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=module.down.dtype)
    for token, vectors in lora.embeddings.items():
        if len(vectors) == 2:
            state[f"{BUNDLE_PREFIX}{token}.clip_l"] = vectors[0].detach().contiguous()
            state[f"{BUNDLE_PREFIX}{token}.clip_g"] = vectors[1].detach().contiguous()
        else:
            state[f"{BUNDLE_PREFIX}{token}.string_to_param.*"] = vectors[0].detach().contiguous()
    return state


def default_unet_config(family: Family) -> dict:
    """The family's reference UNet config (shipped under models/configs), used when none is given.

    Kolors ships no configs (its files complete a base folder), but its UNet has SDXL's blocks,
    which is all LoRA names depend on: SDXL's layout serves (a DiffSynth import or an export
    with no `--model` crashed on the missing file)."""
    import json

    from lorastudio.models.families import get_family

    configs = Path(__file__).resolve().parent.parent / "models" / "configs"
    path = configs / family.config_dir / "unet" / "config.json"
    if not path.is_file() and family.kohya_unet_ldm_names:
        path = configs / get_family("sdxl").config_dir / "unet" / "config.json"
    return json.loads(path.read_text(encoding="utf-8"))


def save_kohya(
    lora: LoraFile,
    path: str | Path,
    metadata: dict[str, str] | None = None,
    *,
    family: Family | str | None = None,
    unet_config: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a kohya/webui `.safetensors` LoRA that A1111, ComfyUI and Forge load.

    For diffusers write `lora export --to diffusers` (`save_diffusers`): diffusers' kohya reader
    misapplies alphas that differ per module and fails on a text-encoder LoRA without `out_proj`.
    LyCORIS modules (LoHa, LoKr, (IA)^3, full, DoRA) keep LyCORIS' own tensor names.
    `dtype` casts every floating tensor, as kohya's `--save_precision` does (fp16 is usual).

    family: taken from `metadata["ss_base_model_version"]` when not given. For SDXL pass the
    UNet's config (`unet.config`) so LDM block numbers match non-standard UNets.
    """
    from safetensors.torch import save_file

    from lorastudio.adapters.hashing import add_hashes_to_metadata
    from lorastudio.adapters.metadata import family_from_metadata
    from lorastudio.models.families import get_family

    meta = {**lora.metadata, **(metadata or {})}
    if family is None:
        family = family_from_metadata(meta)
        if family is None:
            raise LorastudioError(
                f"{path}: cannot tell the model family; pass family='sd15'|'sdxl' or set ss_base_model_version."
            )
    elif isinstance(family, str):
        family = get_family(family)
    meta.setdefault("ss_base_model_version", family.ss_base_model_version)
    if any(not isinstance(m, LoraModule) for m in lora.modules.values()):
        meta["ss_network_module"] = "lycoris.kohya"  # what A1111/ComfyUI/kohya read LoHa/LoKr/DoRA as
    state = kohya_state_dict(lora, family, unet_config)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = add_hashes_to_metadata(state, {k: str(v) for k, v in meta.items()})
    save_file(state, str(path), metadata=meta)
    return path
