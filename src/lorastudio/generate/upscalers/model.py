"""A loaded model upscaler: the network, its scale, and A1111's way of reaching a target size.

A1111 runs a model upscaler (up to three times) until the image is at least the target size,
then resizes to the target with Lanczos; `upscale_to` does the same. A greyscale model (SwinIR's
`004_grayDN`, `scunet_gray_*`) runs on the picture's luminance; its result fills R, G and B.
A network runs in the dtype asked for (the hires fix asks for the generation's: fp16 or bf16 on a
GPU) unless its arch is not half-safe (`upscaler_dtype`): SwinIR, and what spandrel marks so, keep fp32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from lorastudio.generate.upscalers.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, check_tiling, count_tiles

if TYPE_CHECKING:
    import torch

__all__ = ["HALF_UNSAFE_ARCHS", "ModelUpscaler", "load_model_upscaler", "upscaler_dtype"]

MAX_PASSES = 3
# Archs that go wrong in fp16 (spandrel's `supports_half=False`: SwinIR's attention overflows); bf16's
# range is fp32's, so they take bf16 (spandrel's `supports_bfloat16=True`).
HALF_UNSAFE_ARCHS = frozenset({"SwinIR"})


@dataclass
class ModelUpscaler:
    network: Any
    scale: int
    path: Path
    arch: str
    multiple: int = 1  # inputs padded to a multiple of this (RRDBNet's unshuffle)
    channels: int = 3  # 1: a greyscale model, run on the luminance and copied to R, G and B

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    def passes_to(self, size: tuple[int, int], target: tuple[int, int]) -> list[tuple[int, int]]:
        """The input sizes of the passes that bring `size` to at least `target` (at most three)."""
        if self.scale <= 1:  # a 1x model (a denoiser) runs once
            return [size]
        sizes: list[tuple[int, int]] = []
        width, height = size
        while len(sizes) < MAX_PASSES and (width < target[0] or height < target[1]):
            sizes.append((width, height))
            width, height = width * self.scale, height * self.scale
        return sizes

    def upscale(
        self,
        image: Image.Image,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        should_stop: Callable[[], bool] | None = None,
        progress: Callable[[int, int], None] | None = None,
        done_before: int = 0,
        total: int | None = None,
    ) -> Image.Image:
        """`image` times the model's scale (one pass), in tiles."""
        import numpy as np
        import torch

        from lorastudio.generate.upscalers.tiling import upscale_tensor

        grey = self.channels == 1
        array = np.asarray(image.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
        pixels = torch.from_numpy(array.reshape(*array.shape[:2], -1)).permute(2, 0, 1)[None].to(self.device, self.dtype)
        with torch.inference_mode():
            out = upscale_tensor(
                self.network, pixels, self.scale, tile, overlap, self.multiple, should_stop, progress, done_before, total
            )
        array = (out.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
        if array.shape[2] == 1:  # a greyscale model's luminance, as an RGB picture
            return Image.fromarray(array[..., 0], "L").convert("RGB")
        return Image.fromarray(array, "RGB")

    def upscale_to(
        self,
        image: Image.Image,
        size: tuple[int, int],
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        should_stop: Callable[[], bool] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Image.Image:
        """`image` through the model until it reaches `size`, then Lanczos to exactly `size` (as A1111)."""
        check_tiling(tile, overlap)
        passes = self.passes_to(image.size, size)
        total = sum(count_tiles(w, h, tile, overlap) for w, h in passes)
        done = 0
        image = image.convert("RGB")
        for width, height in passes:
            image = self.upscale(image, tile, overlap, should_stop, progress, done, total)
            done += count_tiles(width, height, tile, overlap)
        if image.size != tuple(size):
            image = image.resize(tuple(size), Image.Resampling.LANCZOS)
        return image


def upscaler_dtype(spec: Any, requested: Any = None) -> Any:
    """The dtype `spec`'s network runs in when `requested` is asked for: fp32 by default, and fp32
    instead of a half type the arch is not safe in (ours: `HALF_UNSAFE_ARCHS`; spandrel's: its flags)."""
    import torch

    if requested is None or requested == torch.float32:
        return torch.float32
    if spec.arch == "spandrel":
        descriptor = spec.kwargs["descriptor"]
        flag = "supports_half" if requested == torch.float16 else "supports_bfloat16"
        return requested if getattr(descriptor, flag, False) else torch.float32
    if requested == torch.float16 and spec.arch in HALF_UNSAFE_ARCHS:
        return torch.float32
    return requested


def load_model_upscaler(path: str | Path, device: Any = "cpu", dtype: Any = None) -> ModelUpscaler:
    """Read, sniff and build the upscaler in `path` on `device` (fp32 unless `dtype` is given and the
    arch is safe in it, `upscaler_dtype`)."""
    from lorastudio.generate.upscalers.loading import build_network, read_upscaler_state_dict, sniff_upscaler

    path = Path(path)
    state = read_upscaler_state_dict(path)
    spec = sniff_upscaler(state, path)
    network = build_network(spec, state, path)
    network.to(device=device, dtype=upscaler_dtype(spec, dtype))
    multiple = int(getattr(network, "size_multiple", 1) or 1)
    if spec.arch == "spandrel":
        multiple = int(getattr(spec.kwargs["descriptor"].size_requirements, "multiple_of", 1) or 1)
    scale = int(round(spec.scale)) if spec.scale >= 1 else 1
    if not math.isclose(scale, spec.scale):
        from lorastudio.errors import LorastudioError

        raise LorastudioError(f"{path.name}: scale {spec.scale:g} is not a whole number; only integer scales are supported.")
    return ModelUpscaler(network, scale, path, spec.arch, multiple, spec.channels)
