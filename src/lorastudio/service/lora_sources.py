"""What `lora export | import | merge` take: LoRAs and models by library name (as `generate` and
`lora delete` do) or by path, and the UNet layout a LoRA's names follow.

A LoRA with LDM names (SDXL, Kolors) can only be renamed with the UNet config of the model it was
made for; a tiny model's UNet differs from its family's standard one. So without `--model` the base
model the LoRA's metadata names is used when the library has it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.names import LENIENT, find_lora, find_model

if TYPE_CHECKING:
    from lorastudio.adapters.lora_file import LoraFile
    from lorastudio.models.families import Family
    from lorastudio.models.loading import ModelRef
    from lorastudio.service.workspace import Workspace

__all__ = ["lora_source", "model_ref", "model_unet_config", "trained_base", "in_diffusers_layout"]


def lora_source(ws: Workspace | None, name: str | Path) -> Path:
    """A LoRA file or peft folder: a name `lora list` shows (or its alias), else a path."""
    if ws is None:
        return Path(name)
    return find_lora(ws, str(name), LENIENT)


def model_ref(ws: Workspace | None, model: str | Path, build: bool = True) -> ModelRef:
    """A model by library name (a built-in tiny one included), diffusers folder or single file."""
    from lorastudio.models.loading import ModelRef

    if ws is not None:
        return find_model(ws, str(model), LENIENT, build=build)
    path = Path(model).expanduser()
    if path.is_dir() and (path / "model_index.json").is_file():
        return ModelRef(path.name, path.resolve(), "folder")
    if path.is_file():
        return ModelRef(path.stem, path.resolve(), "single_file")
    raise NotFoundError(f"model {str(model)!r}: no such diffusers folder or checkpoint file; check the path.")


def _tiny_base_of(path: Path) -> str | None:
    """The tiny model a single file was made from (`lorastudio.base_config`): its configs fit it."""
    from lorastudio.models.checkpoint import read_safetensors_metadata
    from lorastudio.models.tiny import is_tiny_name

    if path.suffix.lower() != ".safetensors":
        return None
    base = (read_safetensors_metadata(path) or {}).get("lorastudio.base_config")
    return base if base and is_tiny_name(base) else None


def _unet_config_of_ref(ws: Workspace | None, ref: ModelRef) -> dict[str, Any] | None:
    """A folder's `unet/config.json`; a single file's is its family's shipped one (None), except for a
    file made from a tiny model, whose folder holds it."""
    folder = ref.path
    if ref.kind == "single_file" and ref.path is not None:
        tiny = _tiny_base_of(ref.path)
        if tiny is None:
            return None
        folder = model_ref(ws, tiny).path if ws is not None else ref.path.parent / tiny
    config = Path(folder or "") / "unet" / "config.json"
    if ref.kind == "hub" or not config.is_file():
        raise NotFoundError(f"{ref.name}: no unet/config.json; pass a diffusers model folder or its library name.")
    return json.loads(config.read_text(encoding="utf-8"))


def model_unet_config(model: str | Path | None, ws: Workspace | None = None) -> dict[str, Any] | None:
    """The UNet config of `--model`: a library name (`tiny-kolors`), a diffusers folder or a single file."""
    if model is None:
        return None
    config = Path(model) / "unet" / "config.json"
    if config.is_file():  # a diffusers folder (or its copy without model_index.json)
        return json.loads(config.read_text(encoding="utf-8"))
    return _unet_config_of_ref(ws, model_ref(ws, model))


def _named_bases(metadata: dict[str, str]) -> list[str]:
    """The base model a LoRA's metadata names: kohya's `ss_sd_model_name` (lorastudio writes the
    library name there), then the `model` of lorastudio's own training config."""
    names = [metadata.get("ss_sd_model_name") or ""]
    try:
        config = json.loads(metadata.get("ss_lorastudio_config") or "{}")
    except ValueError:
        config = {}
    names.append(str(config.get("model") or "") if isinstance(config, dict) else "")
    return [name for name in dict.fromkeys(names) if name]


def _in_library(ws: Workspace, name: str) -> ModelRef | None:
    """The model `name` names when it is on disk already: a library name, a file name whose stem is
    one (kohya writes `sd_xl_base_1.0.safetensors`) or an absolute path; a tiny model is not built."""
    from lorastudio.service.names import STRICT

    candidates = [name, Path(name).stem] if not Path(name).is_absolute() else []
    for candidate in dict.fromkeys(candidates):
        try:
            ref = find_model(ws, candidate, STRICT, build=False)
        except LorastudioError:
            continue
        if ref.path is not None and ref.path.exists():
            return ref
    if Path(name).is_absolute() and Path(name).exists():
        try:
            return model_ref(None, name)
        except LorastudioError:
            return None
    return None


def trained_base(ws: Workspace | None, metadata: dict[str, str]) -> tuple[str | None, dict[str, Any] | None]:
    """The base model the LoRA names and, when the library has it, its UNet config."""
    names = _named_bases(metadata)
    for name in names if ws is not None else []:
        ref = _in_library(ws, name)
        if ref is not None:
            try:
                return ref.name, _unet_config_of_ref(ws, ref)
            except LorastudioError:
                continue
    return (names[0] if names else None), None


def in_diffusers_layout(
    lora: LoraFile,
    unet_config: dict[str, Any] | None,
    source: str,
    family: Family | None,
    base: str | None,
    model_given: bool,
) -> LoraFile:
    """The LoRA with its UNet paths in diffusers' layout. LDM names that do not fit the standard
    UNet of the family belong to a model of another layout (a tiny or pruned one): ask for it."""
    try:
        return lora.with_diffusers_unet(unet_config)
    except LorastudioError:
        if model_given:
            raise
        trained = f" (made for {base!r}, which the library lacks)" if base else ""
        label = family.label if family is not None else "its family's"
        raise LorastudioError(
            f"{source}: its UNet layers do not fit the standard {label} UNet{trained}; "
            "pass --model NAME, the model it was made for."
        ) from None
