"""Whether an SD 2.x single file predicts v or the noise (epsilon).

SD 2.x comes in both kinds with the same tensors: 768-v and its fine-tunes predict v,
512-base and the 512 inpainting model predict the noise, and sampling with the wrong one
gives grey or burnt pictures. Few files say which (`modelspec.prediction_type`), so the
answer is looked for as A1111 users provide it: the LDM `.yaml` kept beside the file
(`parameterization: "v"`), else a 9-channel UNet (only the epsilon inpainting model has
one), else the UNet itself is asked once (`unet_predicts_v`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["SPEC_PREDICTION", "declared_prediction", "unet_predicts_v", "yaml_beside"]

# SAI model spec values ("epsilon", "v") as diffusers' scheduler names them.
SPEC_PREDICTION = {"v": "v_prediction", "v_prediction": "v_prediction", "epsilon": "epsilon", "eps": "epsilon"}


def yaml_beside(path: Path) -> Path | None:
    """The LDM config A1111 users keep beside a checkpoint (`model.yaml`), if any."""
    for suffix in (".yaml", ".yml"):
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def prediction_from_yaml(path: Path) -> str | None:
    """What the LDM config beside a checkpoint says: "v" parameterisation, else the noise (LDM's
    default); None without a readable yaml."""
    import yaml

    found = yaml_beside(path)
    if found is None:
        return None
    try:
        config = yaml.safe_load(found.read_text(encoding="utf-8", errors="replace")) or {}
        params = config.get("model", {}).get("params", {}) or {}
    except (yaml.YAMLError, AttributeError, OSError):
        return None
    return SPEC_PREDICTION.get(str(params.get("parameterization", "eps")).strip().lower(), "epsilon")


def declared_prediction(path: Path, metadata: dict[str, str], in_channels: int, family_name: str) -> str | None:
    """The prediction type the file or its surroundings declare; None when only the UNet can tell."""
    declared = SPEC_PREDICTION.get(metadata.get("modelspec.prediction_type", "").strip().lower())
    if declared:
        return declared
    if family_name != "sd2":
        return None  # SD 1.x and SDXL base models predict the noise; their configs say so
    from_yaml = prediction_from_yaml(path)
    if from_yaml:
        return from_yaml
    return "epsilon" if in_channels == 9 else None


def unet_predicts_v(unet: Any) -> bool:
    """Ask an SD 2.x UNet which it predicts, with one small forward pass at the last timestep.

    There the sample is almost pure noise: a noise-predicting UNet hands back about its input,
    a v-predicting one about minus the picture it sees, far below the input (A1111 decides
    SD 2.x files the same way, with the same threshold of 1 below the input).
    """
    import torch

    param = next(unet.parameters())
    width = int(unet.config.cross_attention_dim)
    sample = torch.full((1, int(unet.config.in_channels), 8, 8), 0.5, device=param.device, dtype=param.dtype)
    context = torch.full((1, 2, width), 0.5, device=param.device, dtype=param.dtype)
    with torch.no_grad():
        out = unet(sample, torch.tensor([999], device=param.device), encoder_hidden_states=context).sample
    return float((out.float() - 0.5).mean()) < -1.0
