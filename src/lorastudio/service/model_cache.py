"""Models loaded once and kept, least recently used first out.

Loading a real checkpoint takes seconds to minutes; every request would otherwise pay it.
LoRAs are never merged into cached models: they are applied per request and removed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from lorastudio.service.workspace import Workspace

__all__ = ["ModelCache"]


def model_bytes(model) -> int:
    """Bytes of weights a loaded model holds (all components)."""
    return sum(p.numel() * p.element_size() for m in model.components.values() for p in m.parameters())


class ModelCache:
    """At most `max_models` models and (when set) `memory_budget_bytes` of weights; LRU out.

    The newest model always stays, even alone over the budget: a request must be served.
    """

    def __init__(
        self, workspace: Workspace, max_models: int = 1, memory_budget_bytes: int | None = None
    ) -> None:
        self.workspace = workspace
        self.max_models = max_models
        self.memory_budget_bytes = memory_budget_bytes
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
            self._evict_over_budget()
            return model

    def _evict_over_budget(self) -> None:
        if self.memory_budget_bytes is None:
            return
        while (
            len(self._models) > 1
            and sum(model_bytes(m) for m in self._models.values()) > self.memory_budget_bytes
        ):
            self._models.popitem(last=False)

    def loaded_names(self) -> set[str]:
        with self._lock:
            return {key[0] for key in self._models}
