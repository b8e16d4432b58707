"""Keep the host ahead of the GPU from one training step to the next.

A step's inputs (cached latents, text embeddings, SDXL time ids) live in host memory; a
plain `.to("cuda")` from pageable memory waits for every kernel already queued, and so does
reading the loss as a float for the log. Here copies go from pinned memory without blocking,
and each step's loss is read one step later, when the GPU has finished it long since; the
host queues step n+1 while step n runs. On a CPU both are what they were: plain and at once.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

__all__ = ["LaggedReadout", "to_device"]


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`; a host tensor bound for a GPU goes through pinned memory, asynchronously."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)  # pinned blocks are cached and reused


class LaggedReadout:
    """Device scalars read in order, each once the device has computed it.

    `push(tag, value)` returns the (tag, float) pairs that can be read without waiting on work
    queued after them: a CPU value at once, a CUDA value when the next one is pushed (or at
    `flush`). `tag` rides along (the step's number, its learning rate).
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[Any, torch.Tensor, Any]] = deque()

    def push(self, tag: Any, value: torch.Tensor) -> list[tuple[Any, float]]:
        value = value.detach()
        if value.device.type == "cuda":
            host = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
            host.copy_(value, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            self._pending.append((tag, host, done))
            keep = 1  # the newest is still being computed: read the ones before it
        else:
            self._pending.append((tag, value, None))
            keep = 0
        ready = []
        while len(self._pending) > keep:
            ready.append(self._read(self._pending.popleft()))
        return ready

    def flush(self) -> list[tuple[Any, float]]:
        """Every value still pending (waits for the device): before a checkpoint, at the end."""
        ready = [self._read(item) for item in self._pending]
        self._pending.clear()
        return ready

    @staticmethod
    def _read(item: tuple[Any, torch.Tensor, Any]) -> tuple[Any, float]:
        tag, value, done = item
        if done is not None:
            done.synchronize()
        return tag, float(value)
