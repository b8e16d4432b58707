"""Run an upscaling network over an image in overlapping tiles, so a 4x upscale fits in memory.

Tiles are `tile` pixels square (A1111's default 192; 0 = the whole image at once) and overlap by
`overlap` pixels (default 8); where two tiles overlap their outputs are blended with linear
ramps that sum to one, so no seam shows. `should_stop()` is asked before every tile (True stops
with `UpscaleCancelled`; a callback may also raise its own exception) and `progress(done, total)`
is told after every tile.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from lorastudio.errors import LorastudioError

__all__ = ["DEFAULT_TILE", "DEFAULT_OVERLAP", "UpscaleCancelled", "count_tiles", "tile_starts", "upscale_tensor"]

DEFAULT_TILE = 192
DEFAULT_OVERLAP = 8


class UpscaleCancelled(LorastudioError):
    """`should_stop()` said stop between two tiles."""


def check_tiling(tile: int, overlap: int) -> None:
    if tile < 0 or overlap < 0:
        raise LorastudioError(f"tile {tile} / overlap {overlap}: use sizes of 0 or more (tile 0 = no tiling).")
    if tile and overlap >= tile:
        raise LorastudioError(f"tile overlap {overlap}: must be smaller than the tile size {tile}.")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side begin; the last one ends at the edge."""
    if tile <= 0 or length <= tile:
        return [0]
    stride = tile - overlap
    return [*range(0, length - tile, stride), length - tile]


def count_tiles(width: int, height: int, tile: int, overlap: int) -> int:
    return len(tile_starts(width, tile, overlap)) * len(tile_starts(height, tile, overlap))


def _ramp(starts: list[int], index: int, size: int, scale: int) -> torch.Tensor:
    """One tile's blending weight along one side (output pixels): ramps where it meets a neighbour."""
    weight = torch.ones(size * scale)
    begin = starts[index]
    if index > 0:
        shared = (starts[index - 1] + size - begin) * scale
        weight[:shared] = (torch.arange(shared) + 0.5) / shared
    if index < len(starts) - 1:
        shared = (begin + size - starts[index + 1]) * scale
        weight[size * scale - shared :] = torch.flip((torch.arange(shared) + 0.5) / shared, [0])
    return weight


def _run(network, tile: torch.Tensor, multiple: int) -> torch.Tensor:
    """The network on one tile, padded to a multiple of `multiple` (and the padding cropped)."""
    h, w = tile.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        tile = F.pad(tile, (0, pad_w, 0, pad_h), mode=mode)
    out = network(tile)
    scale_h, scale_w = out.shape[-2] // tile.shape[-2], out.shape[-1] // tile.shape[-1]
    return out[..., : h * scale_h, : w * scale_w]


def upscale_tensor(
    network: torch.nn.Module,
    pixels: torch.Tensor,
    scale: int,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    multiple: int = 1,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
    done_before: int = 0,
    total: int | None = None,
) -> torch.Tensor:
    """`pixels` (1, C, H, W in 0..1, the network's device and dtype) upscaled by `scale`, on the CPU in fp32."""
    check_tiling(tile, overlap)
    height, width = pixels.shape[-2:]
    tile_h, tile_w = (min(tile, height), min(tile, width)) if tile else (height, width)
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    total = total if total is not None else done_before + len(ys) * len(xs)
    out: torch.Tensor | None = None  # the network's channels, known from the first tile
    weights = torch.zeros(1, height * scale, width * scale)
    done = done_before
    for iy, y in enumerate(ys):
        wy = _ramp(ys, iy, tile_h, scale)
        for ix, x in enumerate(xs):
            if should_stop is not None and should_stop():
                raise UpscaleCancelled("upscale cancelled.", key="job_cancelled")
            result = _run(network, pixels[..., y : y + tile_h, x : x + tile_w], multiple)[0].float().cpu()
            weight = wy[:, None] * _ramp(xs, ix, tile_w, scale)[None, :]
            region = (slice(None), slice(y * scale, (y + tile_h) * scale), slice(x * scale, (x + tile_w) * scale))
            if out is None:
                out = torch.zeros(result.shape[0], height * scale, width * scale)
            out[region] += result * weight
            weights[region] += weight
            done += 1
            if progress is not None:
                progress(done, total)
    assert out is not None  # there is always at least one tile
    return out / weights
