"""Registry of model families and detection of a checkpoint's family from its keys."""

from __future__ import annotations

from collections.abc import Iterable

from lorastudio.errors import LorastudioError
from lorastudio.models.families import kolors, sd2, sd15, sdxl
from lorastudio.models.families.base import Family

__all__ = [
    "Family",
    "FAMILIES",
    "get_family",
    "detect_family_from_keys",
    "family_from_diffusers_config",
    "family_of_unet_keys",
]

FAMILIES: dict[str, Family] = {f.name: f for f in (sd15.FAMILY, sd2.FAMILY, sdxl.FAMILY, kolors.FAMILY)}
_ALIASES = {"sd1": "sd15", "sd_v1": "sd15", "sd21": "sd2", "sd_v2": "sd2", "sd_v2_v": "sd2", "xl": "sdxl"}


def get_family(name: str) -> Family:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in FAMILIES:
        raise LorastudioError(f"unknown model family {name!r}; choose one of: {', '.join(FAMILIES)}.")
    return FAMILIES[key]


def detect_family_from_keys(keys: Iterable[str], source: str = "checkpoint") -> Family:
    """Family of an A1111/LDM single-file checkpoint, from the names of its tensors."""
    keyset = set(keys)
    unet_only = family_of_unet_keys(keyset)
    if unet_only is not None:
        return unet_only
    # SDXL first: its first text encoder shares SD1's key names under another prefix.
    for fam in (sdxl.FAMILY, sd2.FAMILY, sd15.FAMILY):
        if any(marker in keyset for marker in fam.single_file_markers):
            return fam
    if any(k.startswith("model.diffusion_model.") for k in keyset):  # a UNet alone cannot make pictures
        raise LorastudioError(
            f"{source}: holds a UNet but no text encoder lorastudio knows; "
            "use the full checkpoint (UNet, text encoder and VAE) it was taken from."
        )
    raise LorastudioError(f"{source}: not a Stable Diffusion checkpoint (no model.diffusion_model.* keys).")


def family_from_diffusers_config(
    model_index: dict, text_encoder_hidden: int | None = None, text_encoder_act: str | None = None
) -> Family:
    """Family of a diffusers folder from model_index.json and its text encoder's config.

    diffusers stores SD 2.x's OpenCLIP encoder as a CLIPTextModel, like SD 1.x's CLIP: it is
    told apart by its exact GELU (OpenAI CLIP uses quick_gelu) or its width (1024, not 768).
    """
    for family in FAMILIES.values():
        if model_index.get("_class_name") in family.pipeline_names:
            return family
    if "text_encoder_2" in model_index or "XL" in model_index.get("_class_name", ""):
        return sdxl.FAMILY
    if text_encoder_act == "gelu" or (text_encoder_hidden is not None and text_encoder_hidden >= 1024):
        return sd2.FAMILY
    return sd15.FAMILY


def family_of_unet_keys(keys: Iterable[str]) -> Family | None:
    """The family a UNet-only file (diffusers names, optionally `unet.`-prefixed) marks, if any.

    Kolors' UNet is told from SDXL's by its text projection `encoder_hid_proj` (4096 -> 2048).
    """
    keyset = set(keys)
    for family in FAMILIES.values():
        marker = family.unet_marker
        if marker and (marker in keyset or f"unet.{marker}" in keyset):
            return family
    return None
