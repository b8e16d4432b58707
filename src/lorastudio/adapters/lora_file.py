"""The in-memory LoRA: low-rank pairs keyed by (component, module path), plus metadata.

Every on-disk format (kohya/webui, diffusers/peft, LyCORIS LoCon, HCP) is read into and
written from this one shape, so conversions are `load_x` followed by `save_y` and the
patcher only knows one thing.

Module paths are what `component.get_submodule(path)` takes in a diffusers/transformers
component. Text-encoder paths are stored *without* a leading `text_model.`: transformers 5
flattened `CLIPTextModel` (no `text_model` attribute) but not `CLIPTextModelWithProjection`,
so the same LoRA must name the same layer on either; `find_module` puts the prefix back
when the component needs it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    import torch

__all__ = [
    "COMPONENTS",
    "TEXT_ENCODERS",
    "LoraModule",
    "LoraFile",
    "normalize_module_path",
    "find_module",
]

TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
COMPONENTS = ("unet", *TEXT_ENCODERS)
_TEXT_MODEL = "text_model."


def normalize_module_path(component: str, path: str) -> str:
    """Canonical module path: text-encoder paths lose a leading `text_model.`."""
    if component in TEXT_ENCODERS and path.startswith(_TEXT_MODEL):
        return path[len(_TEXT_MODEL) :]
    return path


@dataclass
class LoraModule:
    """One low-rank update `alpha / rank * up @ down` for one Linear or Conv2d weight.

    down: [rank, in] (conv: [rank, in, k, k]); up: [out, rank] (conv: [out, rank, 1, 1]).
    alpha None or 0 means alpha = rank (scale 1), as kohya and A1111 read it.
    """

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None
    kind: str = "linear"  # "linear" or "conv"

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """The factor kohya applies: alpha / rank."""
        alpha = self.alpha if self.alpha else float(self.rank)
        return float(alpha) / self.rank

    def delta(self, device: torch.device | str | None = None) -> torch.Tensor:
        """`up @ down` in float32, shaped like a Linear ([out, in]) or Conv2d ([out, in, k, k]) weight.

        device: where to compute (the target weight's device, so GPU models patch on the GPU).
        """
        import torch

        down = self.down.to(device=device, dtype=torch.float32)
        up = self.up.to(device=device, dtype=torch.float32)
        if down.dim() == 2 and up.dim() == 2:
            return up @ down
        up2 = up.reshape(up.shape[0], up.shape[1])  # [out, r, 1, 1] -> [out, r]
        if down.dim() == 2:
            down = down[:, :, None, None]
        return (up2 @ down.reshape(down.shape[0], -1)).reshape(up2.shape[0], *down.shape[1:])


@dataclass
class LoraFile:
    """A LoRA in memory: modules, safetensors metadata (str -> str) and bundled embeddings.

    `unet_layout` is "diffusers" (UNet paths like `down_blocks.1.attentions.0...`) or "ldm"
    (`input_blocks.4.1...`, as in SDXL kohya files). LDM paths need the UNet config to map
    to diffusers paths; `with_diffusers_unet(config)` does that once the model is known.
    `embeddings` maps a trigger token to one tensor per text encoder ([n_vectors, dim]).
    """

    modules: dict[tuple[str, str], LoraModule] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    embeddings: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    unet_layout: str = "diffusers"
    source_format: str = ""  # what the file was read from ("kohya", "peft", ...), for messages
    # The UNet config the LoRA was made on (`unet.config`); trainers set it so SDXL exports
    # get LDM block numbers right for non-standard UNets without passing it again.
    unet_config: dict | None = None

    def __post_init__(self) -> None:
        self.modules = {(c, normalize_module_path(c, p)): m for (c, p), m in self.modules.items()}

    def add(self, component: str, path: str, module: LoraModule) -> None:
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")
        self.modules[(component, normalize_module_path(component, path))] = module

    def components(self) -> set[str]:
        return {c for c, _ in self.modules}

    def ranks(self) -> set[int]:
        return {m.rank for m in self.modules.values()}

    def with_diffusers_unet(self, unet_config: dict[str, Any]) -> LoraFile:
        """This LoRA with UNet module paths in diffusers layout (LDM names mapped via the config)."""
        if self.unet_layout == "diffusers":
            return self
        from lorastudio.adapters.ldm import unet_ldm_to_diffusers_path

        modules = {}
        for (component, path), module in self.modules.items():
            if component == "unet":
                path = unet_ldm_to_diffusers_path(path, unet_config)
            modules[(component, path)] = module
        return LoraFile(
            modules,
            dict(self.metadata),
            dict(self.embeddings),
            "diffusers",
            self.source_format,
            self.unet_config,
        )

    def with_ldm_unet(self, unet_config: dict[str, Any]) -> LoraFile:
        """This LoRA with UNet module paths in original LDM layout (for SDXL kohya files)."""
        if self.unet_layout == "ldm":
            return self
        from lorastudio.adapters.ldm import unet_diffusers_to_ldm_path

        modules = {}
        for (component, path), module in self.modules.items():
            if component == "unet":
                path = unet_diffusers_to_ldm_path(path, unet_config)
            modules[(component, path)] = module
        return LoraFile(
            modules, dict(self.metadata), dict(self.embeddings), "ldm", self.source_format, self.unet_config
        )


def find_module(component: torch.nn.Module, path: str) -> torch.nn.Module | None:
    """The submodule at `path`, trying with and without `text_model.`; None if absent."""
    candidates = [path, _TEXT_MODEL + path]
    if path.startswith(_TEXT_MODEL):
        candidates.append(path[len(_TEXT_MODEL) :])
    for candidate in candidates:
        try:
            return component.get_submodule(candidate)
        except AttributeError:
            continue
    return _find_by_flat_name(component, path)


def _find_by_flat_name(component: torch.nn.Module, path: str) -> torch.nn.Module | None:
    """Last resort for names parsed from `a_b_c` keys: match modules by their underscored names.

    One index per component instead of a walk over every module per key; a hit is checked
    against the live module tree and a miss rebuilds the index once (layers added or removed).
    """
    flat = path.replace(".", "_")
    for rebuild in (False, True):
        found = _flat_names(component, rebuild).get(flat)
        if found is not None and _still_there(component, *found):
            return found[1]
    return None


def _still_there(component: torch.nn.Module, name: str, module: torch.nn.Module) -> bool:
    try:
        return component.get_submodule(name) is module
    except AttributeError:
        return False


_FLAT_NAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _flat_names(component: torch.nn.Module, rebuild: bool) -> dict[str, tuple[str, torch.nn.Module]]:
    """Underscored name (also without `text_model_`) -> (dotted name, module), first in module order."""
    index = None if rebuild else _FLAT_NAMES.get(component)
    if index is None:
        index = {}
        for name, module in component.named_modules():
            index.setdefault(name.replace(".", "_"), (name, module))
            if name.startswith(_TEXT_MODEL):
                index.setdefault(name[len(_TEXT_MODEL) :].replace(".", "_"), (name, module))
        _FLAT_NAMES[component] = index
    return index
