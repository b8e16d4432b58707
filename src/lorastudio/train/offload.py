"""Frozen text encoders kept in CPU memory while the UNet trains on a GPU.

Once every caption's embedding is cached, the training steps never call the text encoders:
on SDXL that is 1.6 GB (fp16) of GPU memory the UNet's activations can use, on Kolors
12.5 GB. kohya does the same with `cache_text_encoder_outputs`. The encode path follows each
encoder's device, so a caption that is not cached after all is still encoded (on the CPU).
Samples bring CLIP encoders back for their few steps (a copy of a second or less, where CPU
encoding of SDXL's bigG would take seconds per prompt); ChatGLM encodes where it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["ParkedEncoders"]


def _bytes(modules: Sequence[Any]) -> int:
    return sum(p.numel() * p.element_size() for module in modules for p in module.parameters())


class ParkedEncoders:
    """Text encoders moved off `device` (`park`), and back for the samples (`back_for_samples`)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.parked: list[Any] = []
        self.return_for_samples: list[Any] = []

    def park(self, encoders: Sequence[Any], *, chatglm: bool) -> int:
        """Move `encoders` to CPU memory; the bytes freed on the device (0 on a CPU run)."""
        import torch

        if torch.device(self.device).type == "cpu" or not encoders:
            return 0
        for encoder in encoders:
            encoder.to("cpu")
        self.parked = list(encoders)
        self.return_for_samples = [] if chatglm else list(encoders)
        _release_cached_memory()
        return _bytes(encoders)

    @contextlib.contextmanager
    def back_for_samples(self) -> Iterator[None]:
        """The CLIP encoders on the device meanwhile, parked again after (also when a move fails)."""
        try:
            for encoder in self.return_for_samples:
                encoder.to(self.device)
            yield
        finally:
            for encoder in self.return_for_samples:
                encoder.to("cpu")
            if self.return_for_samples:
                _release_cached_memory()


def _release_cached_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
