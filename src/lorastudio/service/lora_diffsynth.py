"""DiffSynth-Studio LoRA files in and out of the studio (the Kolors walk-through's trainer and loader).

In: a `.ckpt` (read weights-only) or `.safetensors` with `blocks.N` names, Kolors unless the file or
`--family` says otherwise; it holds no alpha, so the import records the one it used. Out: the attention
projections DiffSynth holds, alpha baked into the factors; what it cannot hold is dropped, one line
saying so. `service.loras` resolves families and model folders and calls these.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError, NotFoundError

if TYPE_CHECKING:
    from lorastudio.adapters.lora_file import LoraFile
    from lorastudio.models.families import Family
    from lorastudio.service.workspace import Workspace

__all__ = ["is_diffsynth_file", "read_diffsynth_lora", "save_diffsynth_export"]

def is_diffsynth_file(source: Path) -> bool:
    """A pickled checkpoint (only DiffSynth-Studio's are read) or safetensors with `blocks.N` LoRA names."""
    from lorastudio.adapters.diffsynth import is_diffsynth_state_dict
    from lorastudio.models.checkpoint import PICKLE_SUFFIXES, read_safetensors_keys

    if source.suffix.lower() in PICKLE_SUFFIXES:
        return True
    return source.suffix.lower() == ".safetensors" and source.is_file() and is_diffsynth_state_dict(
        read_safetensors_keys(source)
    )


def _file_metadata(source: Path) -> dict[str, str]:
    """A .safetensors file's metadata (an export of ours says its family and that alpha is baked)."""
    if source.suffix.lower() != ".safetensors":
        return {}
    from lorastudio.models.checkpoint import read_safetensors_metadata

    return read_safetensors_metadata(source) or {}


def read_diffsynth_lora(
    source: Path,
    alpha: float | None,
    family: str | None,
    unet_config: dict[str, Any] | None,
    ws: Workspace | None = None,
) -> tuple[LoraFile, str, dict[str, Any] | None]:
    """The LoRA, its family name and the UNet config its block numbers count. Alpha: the one given, else
    the rank for a file whose factors hold it (our export), else DiffSynth's training default 4.0; rank
    and alpha go into the metadata. Without `unet_config` (`--model`), the base model the file names
    (our export's `ss_sd_model_name`) gives it when the library has that model."""
    from lorastudio.adapters.diffsynth import (
        ALPHA_BAKED,
        DEFAULT_ALPHA,
        load_diffsynth_file,
        lora_from_diffsynth_state_dict,
        rank_alpha_metadata,
    )
    from lorastudio.adapters.kohya import default_unet_config
    from lorastudio.adapters.metadata import family_from_metadata
    from lorastudio.models.families import get_family
    from lorastudio.service.lora_sources import trained_base

    if not source.is_file():
        raise NotFoundError(f"{source}: LoRA file not found.")
    metadata = _file_metadata(source)
    named = family_from_metadata(metadata)
    chosen = get_family(family) if family else named or get_family("kolors")
    base = None
    if unet_config is None:
        base, unet_config = trained_base(ws, metadata)
    standard = unet_config is None  # the family's standard UNet stands in for a base the library lacks
    if standard and chosen.name != "kolors":
        unet_config = default_unet_config(chosen)  # SD 1.x numbers its blocks differently
    baked = metadata.get(ALPHA_BAKED) == "true"
    used = alpha if alpha is not None else (None if baked else DEFAULT_ALPHA)
    try:
        lora = lora_from_diffsynth_state_dict(load_diffsynth_file(source), used, unet_config)
    except LorastudioError as exc:
        if base is None or not standard or "not an attention block" not in str(exc):
            raise
        raise LorastudioError(
            f"{source.name}: its block numbers follow the UNet of {base!r}, which the library lacks; "
            "pass --model NAME, the model it was made for."
        ) from None
    lora.metadata.update(rank_alpha_metadata(lora))
    if metadata.get("ss_sd_model_name"):
        lora.metadata["ss_sd_model_name"] = metadata["ss_sd_model_name"]
    return lora, chosen.name, unet_config


def _refuse_family(source: Path, family) -> None:
    from lorastudio.adapters.diffsynth import DIFFSYNTH_FAMILIES

    if family.name not in DIFFSYNTH_FAMILIES:
        raise LorastudioError(
            f"{source.name}: DiffSynth-Studio has no {family.label} UNet to load this LoRA into (its SD UNet is "
            "SD 1.x's, its SDXL UNet serves Kolors); use --to kohya."
        )


def _dropped_line(source: Path, dropped: dict[str, int], kept: int) -> str:
    """The one warning line: how many modules were left out, of which kinds, and what was kept."""
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0])))
    return (
        f"{source.name}: dropped {sum(dropped.values())} modules a DiffSynth-Studio LoRA cannot hold ({kinds}); "
        f"kept {kept} attention projections (to_q/to_k/to_v/to_out)."
    )


def save_diffsynth_export(
    lora: LoraFile,
    source: Path,
    target: Path,
    family: Family,
    unet_config: dict[str, Any] | None,
    base_model: str | None = None,
) -> tuple[LoraFile, dict[str, Any]]:
    """Write `lora` (UNet paths in diffusers' layout) as a DiffSynth-Studio LoRA: `.safetensors` with
    metadata (the family and `base_model`, whose UNet the block numbers count, for a re-import without
    --model), or a `.ckpt`/`.pt`/`.bin` that the walk-through's `torch.load` reads. Returns the modules
    written and what the summary adds (dropped kinds, warnings, how to load it)."""
    import torch
    from safetensors.torch import save_file

    from lorastudio.adapters.diffsynth import (
        diffsynth_export_state_dict,
        diffsynth_metadata,
        split_for_diffsynth,
    )
    from lorastudio.models.checkpoint import PICKLE_SUFFIXES

    _refuse_family(source, family)
    kept, dropped = split_for_diffsynth(lora, unet_config)
    if not kept.modules:
        kinds = ", ".join(sorted(dropped)) or "none"
        raise LorastudioError(
            f"{source.name}: none of its modules ({kinds}) is an attention projection (to_q/to_k/to_v/to_out), "
            "all a DiffSynth-Studio LoRA holds; use --to kohya."
        )
    state = diffsynth_export_state_dict(kept, unet_config)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix.lower() in PICKLE_SUFFIXES:
        torch.save(state, target)
    else:
        save_file(state, str(target), metadata=diffsynth_metadata(kept, family, base_model))
    ranks = sorted(kept.ranks())
    extra: dict[str, Any] = {
        "dropped": dropped,
        "alpha": "baked into the factors: DiffSynth's load_lora(lora_alpha=1.0), or peft with lora_alpha = rank",
        "warnings": [_dropped_line(source, dropped, len(kept.modules))] if dropped else [],
    }
    if target.suffix.lower() in PICKLE_SUFFIXES:
        extra["reimport"] = f"lorastudio lora import {target} --alpha {ranks[0]}" if len(ranks) == 1 else None
    return kept, extra
