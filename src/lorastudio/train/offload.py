"""What waits in CPU memory during a GPU run: the UNet while the caches fill, the frozen text
encoders while the UNet trains.

Filling the caches (the VAE encoding every image, at 1024 px for SDXL; the text encoders
encoding every caption) does not use the UNet, so it waits in CPU memory meanwhile (5.1 GB of
an SDXL fp16 UNet; the copies there and back take a second or two, not measured yet): that
phase's peak is the VAE's and encoders', not theirs plus the UNet's.

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

__all__ = ["ParkedEncoders", "unet_in_cpu_memory"]


def _bytes(modules: Sequence[Any]) -> int:
    return sum(p.numel() * p.element_size() for module in modules for p in module.parameters())


class ParkedEncoders:
    """Text encoders moved off `device` (`park`), and back for the samples (`back_for_samples`)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.return_for_samples: list[Any] = []

    def park(self, encoders: Sequence[Any], *, chatglm: bool) -> int:
        """Move `encoders` to CPU memory; the bytes freed on the device (0 on a CPU run)."""
        import torch

        if torch.device(self.device).type == "cpu" or not encoders:
            return 0
        for encoder in encoders:
            encoder.to("cpu")
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


@contextlib.contextmanager
def unet_in_cpu_memory(unet: Any, device: Any) -> Iterator[bool]:
    """The UNet in CPU memory meanwhile on a GPU run (True), back on `device` after; a CPU run
    moves nothing (False)."""
    import torch

    if torch.device(device).type == "cpu":
        yield False
        return
    try:
        unet.to("cpu")
        _release_cached_memory()
        yield True
    finally:
        unet.to(device)


def _release_cached_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
