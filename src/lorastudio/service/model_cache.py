"""Models loaded once and kept, least recently used first out.

Loading a real checkpoint takes seconds to minutes; every request would otherwise pay it.
LoRAs are never merged into cached models: they are applied per request and removed.

Names are resolved with the cache's `NamePolicy` (a server's is strict, see
`service.names`). A model file replaced on disk is noticed at its next use (size and
mtime) and loaded again; the weights are private memory, so the old copy keeps serving
until then and a truncated file never takes the process down.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError
from lorastudio.service.names import STRICT, NamePolicy, find_model, find_vae
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from diffusers import ControlNetModel

    from lorastudio.models.loading import LoadedModel

__all__ = ["ModelCache", "file_stamp"]

logger = logging.getLogger(__name__)

_STAMPED_SUFFIXES = {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".json", ".onnx", ".txt"}


def model_bytes(model: LoadedModel) -> int:
    """Bytes of weights a loaded model holds (all components, the ControlNets cached beside it,
    and what its LoRA patcher keeps: originals of patched layers, spare patch memory)."""
    from lorastudio.adapters.lora_stack import held_bytes

    controlnets = getattr(model, "extra", {}).get("controlnets", {})
    modules = [*model.components.values(), *(entry.model for entry in controlnets.values())]
    weights = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    return weights + held_bytes(model.components)


def file_stamp(path: Path | None) -> tuple:
    """What changes when a file (or any weight/config file of a folder) is replaced: size, mtime, inode."""
    if path is None:
        return ()
    path = Path(path)
    files = [path] if not path.is_dir() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _STAMPED_SUFFIXES
    )
    stamp = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            stamp.append((str(f), None))
            continue
        stamp.append((str(f), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(stamp)


@dataclass
class _Entry:
    model: Any
    stamp: tuple


class ModelCache:
    """At most `max_models` models and (when set) `memory_budget_bytes` of weights; LRU out.

    The newest model always stays, even alone over the budget: a request must be served.
    `compile_backend` ("inductor", or "eager" to trace only) compiles each model as it loads
    (`models.compiled`).
    """

    def __init__(
        self,
        workspace: Workspace,
        max_models: int = 1,
        memory_budget_bytes: int | None = None,
        names: NamePolicy = STRICT,
        compile_backend: str | None = None,
    ) -> None:
        self.workspace = workspace
        self.compile_backend = compile_backend  # None: eager; else torch.compile each loaded model
        self.max_models = max_models
        self.memory_budget_bytes = memory_budget_bytes
        self.names = names
        self._models: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, ref: str, device: str | None = None, vae: str | None = None) -> LoadedModel:
        """The loaded model `ref` (with VAE `vae`), loaded again when its files changed since."""
        from lorastudio.models.loading import load_model

        where = find_model(self.workspace, ref, self.names)
        vae_path = find_vae(self.workspace, vae, self.names) if vae else None
        stamp = (file_stamp(where.path), file_stamp(vae_path))
        key = (ref, device, vae)
        with self._lock:
            entry = self._models.get(key)
            if entry is not None and entry.stamp == stamp:
                self._models.move_to_end(key)
                return entry.model
            if entry is not None:
                logger.info("model %s changed on disk; loading it again", ref)
                del self._models[key]
            while len(self._models) >= self.max_models:
                self._models.popitem(last=False)
            try:
                model = load_model(
                    ref, self.workspace.models, self.workspace.cache, device=device, vae=vae_path, where=where
                )
            except LorastudioError:
                raise
            except Exception as exc:  # a half-written or corrupt file: the request fails, the server stays
                if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
                    raise
                reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                raise LorastudioError(
                    f"model {where.name!r} could not be loaded ({reason}); replace its file with a complete copy."
                ) from None
            if self.compile_backend:
                from lorastudio.models.compiled import compile_model

                compile_model(model, self.workspace.cache, self.compile_backend)
            self._models[key] = _Entry(model, stamp)
            self._evict_over_budget()
            return model

    def get_controlnet(self, path: Path, model: LoadedModel) -> ControlNetModel:
        """The ControlNet at `path` for the loaded `model`, kept beside it (same device and dtype).

        Cached in the base model's entry: it goes when the base model goes, and a file replaced
        on disk is loaded again at its next use.
        """
        from lorastudio.models.controlnet import load_controlnet

        stamp = file_stamp(path)
        with self._lock:
            cached = model.extra.setdefault("controlnets", {})
            entry = cached.get(str(path))
            if entry is not None and entry.stamp == stamp:
                return entry.model
            controlnet = load_controlnet(path, model.family.name, model.dtype, model.device, model.unet.config)
            cached[str(path)] = _Entry(controlnet, stamp)
            self._evict_over_budget()  # its weights count towards the budget with its base model's
            return controlnet

    def _evict_over_budget(self) -> None:
        from lorastudio.adapters.lora_stack import release_spares

        if self.memory_budget_bytes is None:
            return
        if self._over_budget():
            for entry in self._models.values():  # spare LoRA patch memory goes before any model
                release_spares(entry.model.components)
        while len(self._models) > 1 and self._over_budget():
            self._models.popitem(last=False)

    def _over_budget(self) -> bool:
        return sum(model_bytes(e.model) for e in self._models.values()) > self.memory_budget_bytes

    def loaded_names(self) -> set[str]:
        with self._lock:
            return {key[0] for key in self._models}
