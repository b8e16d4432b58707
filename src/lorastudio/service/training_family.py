"""Training defaults that follow the base model: `train.resolution` at the family's native size.

A config that leaves `train.resolution` out trains at the size the base model was made for:
512 for SD 1.x, 768 for SD 2.x 768-v (512 for the noise-predicting 512-base), 1024 for SDXL and
Kolors. The model is looked at without loading it (a folder's JSON, a file's header); a value a
user, preset or imported file sets always wins, and `train --explain` says where the size came from.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from lorastudio.service.names import NamePolicy
    from lorastudio.service.workspace import Workspace
    from lorastudio.train.config import TrainConfig

__all__ = ["explained_resolution", "native_resolution", "with_native_resolution"]

RESOLUTION_KEY = "train.resolution"


def native_resolution(ws: Workspace, cfg: TrainConfig, names: NamePolicy | None = None) -> tuple[int, str] | None:
    """(size, where it comes from) of the config's base model; None when the model cannot be told."""
    from lorastudio.models.loading import peek_family

    where = _model_ref(ws, cfg.model, names)
    family = peek_family(where) if where is not None else None
    if family is None:
        return None
    if family.name != "sd2":
        return family.default_size, f"{family.label} native size ({cfg.model})"
    prediction = _sd2_prediction(where)
    if prediction == "epsilon":
        return 512, f"SD 2.x 512-base native size ({cfg.model} predicts the noise)"
    if prediction == "v_prediction":
        return family.default_size, f"SD 2.x 768-v native size ({cfg.model} predicts v)"
    return family.default_size, f"SD 2.x 768-v native size ({cfg.model}; a 512-base model: set train.resolution=512)"


def with_native_resolution(ws: Workspace, cfg: TrainConfig, names: NamePolicy | None = None) -> TrainConfig:
    """The config with `train.resolution` at the base model's native size, unless a layer set it."""
    from lorastudio.train.train_section import set_derived

    if "resolution" in cfg.train.model_fields_set:
        return cfg
    found = native_resolution(ws, cfg, names)
    if found is None or found[0] == cfg.train.resolution:
        return cfg
    train = cfg.train.model_copy()
    set_derived(train, "resolution", found[0])  # derived: an API payload keeps it, a layer above still wins
    updated = cfg.model_copy(update={"train": train})
    try:
        updated._check_buckets()
    except ValueError as exc:
        raise LorastudioError(f"config: {exc} (train.resolution {found[0]} is the {found[1]})") from None
    return updated


def explained_resolution(ws: Workspace, resolved: Any) -> Any:
    """`--explain`'s resolved config with the native size in it and its source named."""
    from dataclasses import replace

    if "resolution" in resolved.config.train.model_fields_set:
        return resolved
    found = native_resolution(ws, resolved.config)
    if found is None:
        return resolved
    updated = with_native_resolution(ws, resolved.config)
    return replace(resolved, config=updated, sources={**resolved.sources, RESOLUTION_KEY: f"default: {found[1]}"})


def _model_ref(ws: Workspace, ref: str, names: NamePolicy | None) -> Any:
    """The model without loading it (None when it is not found: the trainer says so later)."""
    from lorastudio.models.loading import resolve_model

    try:
        if names is not None:  # a server's request: its names only, nothing built in the API thread
            from lorastudio.service.names import find_model

            return find_model(ws, ref, names, build=False)
        return resolve_model(ref, ws.models)
    except LorastudioError:
        return None


def _sd2_prediction(where: Any) -> str | None:
    """"v_prediction" or "epsilon" as a folder's scheduler or a file's spec, yaml or UNet shape says; None if silent."""
    from lorastudio.models.checkpoint import read_safetensors_keys, read_safetensors_metadata
    from lorastudio.models.prediction import declared_prediction

    try:
        if where.kind == "folder":
            config = json.loads((where.path / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
            return config.get("prediction_type") or "epsilon"
        if where.kind == "single_file" and where.path.suffix == ".safetensors":
            keys = read_safetensors_keys(where.path)
            in_channels = keys.get("model.diffusion_model.input_blocks.0.0.weight", (0, 4))[1]
            return declared_prediction(where.path, read_safetensors_metadata(where.path), in_channels, "sd2")
    except (LorastudioError, OSError, ValueError, KeyError, IndexError):
        return None
    return None
