"""What waits in CPU memory during a GPU run: the UNet while the caches fill, the frozen text
encoders and the VAE while the UNet trains.

Filling the caches (the VAE encoding every image, at 1024 px for SDXL; the text encoders
encoding every caption) does not use the UNet, so it waits in CPU memory meanwhile (5.1 GB of
an SDXL fp16 UNet; the copies there and back take a second or two, not measured yet): that
phase's peak is the VAE's and encoders', not theirs plus the UNet's. When every latent and
caption is cached already (a resumed run, a second run on the same images) nothing is encoded
and the UNet stays where it is (`train.caches`).

Once every caption's embedding is cached, the training steps never call the text encoders:
on SDXL that is 1.6 GB (fp16) of GPU memory the UNet's activations can use, on Kolors
12.5 GB. kohya does the same with `cache_text_encoder_outputs`. The encode path follows each
encoder's device, so a caption that is not cached after all is still encoded (on the CPU).
Once every latent is cached (no colour augmentation), the steps never call the VAE either.
Samples bring CLIP encoders and the VAE back for their few steps (a copy of a second or less,
where CPU encoding of SDXL's bigG would take seconds per prompt); ChatGLM encodes where it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["ParkedModules", "unet_in_cpu_memory"]


def _bytes(modules: Sequence[Any]) -> int:
    return sum(p.numel() * p.element_size() for module in modules for p in module.parameters())


class ParkedModules:
    """Frozen modules moved off `device` (`park`), and back for the samples (`back_for_samples`)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.return_for_samples: list[Any] = []

    def park(self, modules: Sequence[Any], *, back_for_samples: bool = True) -> int:
        """Move `modules` to CPU memory; the bytes freed on the device (0 on a CPU run).
        `back_for_samples=False`: they stay there for samples too (ChatGLM encodes where it is)."""
        import torch

        if torch.device(self.device).type == "cpu" or not modules:
            return 0
        for module in modules:
            module.to("cpu")
        if back_for_samples:
            self.return_for_samples += list(modules)
        _release_cached_memory()
        return _bytes(modules)

    @contextlib.contextmanager
    def back_for_samples(self) -> Iterator[None]:
        """The parked modules on the device meanwhile, parked again after (also when a move fails)."""
        try:
            for module in self.return_for_samples:
                module.to(self.device)
            yield
        finally:
            for module in self.return_for_samples:
                module.to("cpu")
            if self.return_for_samples:
                _release_cached_memory()


@contextlib.contextmanager
def unet_in_cpu_memory(unet: Any, device: Any, *, encoding: bool = True) -> Iterator[bool]:
    """The UNet in CPU memory meanwhile on a GPU run (True), back on `device` after; a CPU run,
    or a phase that encodes nothing (`encoding=False`: every latent and caption cached), moves
    nothing (False)."""
    import torch

    if not encoding or torch.device(device).type == "cpu":
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
