"""Decode (and encode) large images in overlapping tiles, so a cancel is noticed between tiles.

The tiles overlap and their seams are blended linearly (the scheme of diffusers'
`AutoencoderKL.tiled_decode`), which bounds memory as well. A tiled decode is not
bit-identical to one decode: the VAE's mid-block attention and group norms see one tile
instead of the whole image. So the pipeline keeps the plain decode below a size threshold
and only tiles images so large that one decode would hold a worker for a long time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["decode_in_tiles", "encode_in_tiles", "map_in_tiles"]


def _blend_rows(above, below, extent: int):
    """Fade `above`'s last `extent` rows into `below`'s first ones (in place on `below`)."""
    import torch

    extent = min(extent, above.shape[2], below.shape[2])
    if extent <= 0:
        return below
    ramp = torch.arange(extent, device=below.device, dtype=below.dtype).div_(extent).view(1, 1, extent, 1)
    below[:, :, :extent, :] = above[:, :, -extent:, :] * (1 - ramp) + below[:, :, :extent, :] * ramp
    return below


def _blend_columns(left, right, extent: int):
    """Fade `left`'s last `extent` columns into `right`'s first ones (in place on `right`)."""
    import torch

    extent = min(extent, left.shape[3], right.shape[3])
    if extent <= 0:
        return right
    ramp = torch.arange(extent, device=right.device, dtype=right.dtype).div_(extent).view(1, 1, 1, extent)
    right[:, :, :, :extent] = left[:, :, :, -extent:] * (1 - ramp) + right[:, :, :, :extent] * ramp
    return right


def map_in_tiles(
    fn: Callable,
    inputs: torch.Tensor,
    tile: int,
    stride: int,
    out_tile: int,
    out_stride: int,
    before_tile: Callable[[], None] | None = None,
) -> torch.Tensor:
    """`fn` applied to overlapping `tile` x `tile` windows of `inputs` (N, C, H, W), stitched.

    A window of `tile` inputs gives `out_tile` outputs (x8 for a decode, /8 for an encode);
    neighbours overlap by `out_tile - out_stride` outputs, blended linearly.
    """
    import torch

    blend = out_tile - out_stride
    rows = []
    for top in range(0, inputs.shape[2], stride):
        row = []
        for left in range(0, inputs.shape[3], stride):
            if before_tile is not None:
                before_tile()
            row.append(fn(inputs[:, :, top : top + tile, left : left + tile]))
        rows.append(row)
    stitched = []
    for i, row in enumerate(rows):
        pieces = []
        for j, part in enumerate(row):
            if i > 0:
                part = _blend_rows(rows[i - 1][j], part, blend)
            if j > 0:
                part = _blend_columns(row[j - 1], part, blend)
            pieces.append(part[:, :, :out_stride, :out_stride])
        stitched.append(torch.cat(pieces, dim=3))
    return torch.cat(stitched, dim=2)


def _stride(tile: int, overlap: float) -> int:
    return max(1, int(tile * (1 - overlap)))


def decode_in_tiles(
    decode: Callable,
    latents: torch.Tensor,
    factor: int,
    tile: int = 64,
    overlap: float = 0.25,
    before_tile: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Pixels for `latents` (already unscaled), decoded `tile` x `tile` latents at a time.

    `decode(latent_tile)` returns the tile's pixels (`factor` times larger); `before_tile()`
    runs before each tile and may raise to stop (a cancel).
    """
    stride = _stride(tile, overlap)
    return map_in_tiles(decode, latents, tile, stride, tile * factor, stride * factor, before_tile)


def encode_in_tiles(
    encode: Callable,
    pixels: torch.Tensor,
    factor: int,
    tile: int = 64,
    overlap: float = 0.25,
    before_tile: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Latents for `pixels` (sides multiples of `factor`), encoded `tile * factor` pixels at a time."""
    stride = _stride(tile, overlap)
    return map_in_tiles(encode, pixels, tile * factor, stride * factor, tile, stride, before_tile)
