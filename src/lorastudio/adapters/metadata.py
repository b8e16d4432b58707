"""Safetensors metadata for LoRAs and embeddings: kohya `ss_*` keys and SAI `modelspec.*`.

A1111 decides a LoRA's base family from `ss_base_model_version`, shows `ss_output_name`
as its alias and `ss_tag_frequency` as its tags, and civitai reads the model-spec keys,
so these are written the way kohya's sd-scripts writes them (all values strings; dicts
and lists as JSON).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorastudio.models.families import Family

__all__ = ["build_metadata", "family_from_metadata", "metadata_value"]

# Facts that belong to the SAI model spec rather than kohya's ss_* set.
_MODELSPEC_FACTS = (
    "title",
    "trigger_phrase",
    "description",
    "author",
    "license",
    "tags",
    "thumbnail",
    "usage_hint",
)
_SAI_SPEC_VERSION = "1.0.1"
_IMPLEMENTATION_SGM = "https://github.com/Stability-AI/generative-models"
_BASE_VERSIONS = {"sd_v1": "sd15", "sd_v2": "sd2", "sd_v2_v": "sd2", "sdxl_base_v1-0": "sdxl"}


def metadata_value(value: Any) -> str:
    """How kohya stores a value: JSON for containers, `str` for the rest (bools as True/False)."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _resolution(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{int(value)}x{int(value)}"
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"{int(value[0])}x{int(value[1])}"
    return str(value).replace(",", "x").replace(" ", "")


def build_metadata(facts: dict[str, Any], family: Family, kind: str = "lora") -> dict[str, str]:
    """`ss_*` + `modelspec.*` metadata from training facts.

    facts: plain names such as output_name, network_dim, network_alpha, network_module,
    network_args, steps, epoch, resolution, clip_skip, num_train_images, sd_model_name,
    sd_model_hash, dataset_dirs, tag_frequency, bucket_info, training_started_at,
    learning_rate, seed, title, trigger_phrase, description, author. Each non-model-spec
    fact becomes `ss_<name>`; keys already starting with `ss_`/`modelspec.` pass through.
    kind: "lora" or "textual-inversion" (the model-spec architecture suffix).
    """
    meta: dict[str, str] = {
        "ss_base_model_version": family.ss_base_model_version,
        "ss_v2": str(family.name == "sd2"),
        "ss_network_module": "networks.lora",
        "modelspec.sai_model_spec": _SAI_SPEC_VERSION,
        "modelspec.architecture": f"{family.modelspec_architecture}/{kind}",
        "modelspec.implementation": _IMPLEMENTATION_SGM if family.name == "sdxl" else "diffusers",
        "modelspec.date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if kind != "lora":
        meta.pop("ss_network_module")
    if family.name == "sd2" and facts.get("v_parameterization") is False:
        # SD 2.x 512-base predicts noise; only the 768-v models are v-prediction.
        meta["ss_base_model_version"] = "sd_v2"
        meta["modelspec.architecture"] = meta["modelspec.architecture"].replace("v2-768-v", "v2-512")
    for key, value in facts.items():
        if value is None:
            continue
        if key.startswith(("ss_", "modelspec.", "sshs_")):
            meta[key] = metadata_value(value)
        elif key in _MODELSPEC_FACTS:
            meta[f"modelspec.{key}"] = (
                ", ".join(value) if key == "tags" and isinstance(value, list | tuple) else str(value)
            )
        elif key == "resolution":
            meta["ss_resolution"] = metadata_value(tuple(value) if isinstance(value, list) else value)
            meta["modelspec.resolution"] = _resolution(value)
        else:
            meta[f"ss_{key}"] = metadata_value(value)
    if "ss_output_name" in meta:
        meta.setdefault("modelspec.title", meta["ss_output_name"])
    if "modelspec.resolution" not in meta:
        meta["modelspec.resolution"] = _resolution(family.default_size)
    return meta


def family_from_metadata(metadata: dict[str, str]) -> Family | None:
    """The family a file's metadata names (`ss_base_model_version`, `ss_v2`, model spec), if any."""
    from lorastudio.models.families import get_family

    version = metadata.get("ss_base_model_version", "")
    if version in _BASE_VERSIONS:
        return get_family(_BASE_VERSIONS[version])
    if version.startswith("sdxl"):
        return get_family("sdxl")
    architecture = metadata.get("modelspec.architecture", "")
    # Kolors LoRAs share SDXL's keys: the tag is the only thing that tells them apart.
    kolors = get_family("kolors")
    if version == kolors.ss_base_model_version or architecture.split("/")[0] == kolors.modelspec_architecture:
        return kolors
    if architecture.startswith("stable-diffusion-xl"):
        return get_family("sdxl")
    if architecture.startswith("stable-diffusion-v2"):
        return get_family("sd2")
    if architecture.startswith("stable-diffusion-v1"):
        return get_family("sd15")
    if metadata.get("ss_v2") == "True":
        return get_family("sd2")
    return None
