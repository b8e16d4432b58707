"""Models loaded once and kept, least recently used first out.

Loading a real checkpoint takes seconds to minutes; every request would otherwise pay it.
LoRAs are never merged into cached models: they are applied per request and removed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from lorastudio.service.workspace import Workspace

__all__ = ["ModelCache"]


class ModelCache:
    def __init__(self, workspace: Workspace, max_models: int = 1) -> None:
        self.workspace = workspace
        self.max_models = max_models
        self._models: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, ref: str, device: str | None = None, vae: str | None = None):
        from lorastudio.models.loading import load_model

        key = (ref, device, vae)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            while len(self._models) >= self.max_models:
                self._models.popitem(last=False)
            model = load_model(ref, self.workspace.models, self.workspace.cache, device=device, vae=vae)
            self._models[key] = model
            return model

    def loaded_names(self) -> set[str]:
        with self._lock:
            return {key[0] for key in self._models}
