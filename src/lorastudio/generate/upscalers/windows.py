"""Window attention pieces SwinIR and SCUNet share: windows, relative positions, the shifted mask.

Both cut the feature map into `window` x `window` squares, attend inside each square with a
learned bias per relative offset, and every second block shifts the map by half a window first
(`torch.roll`), so the squares straddle the previous ones. Tokens that the roll brought together
from opposite edges must not see each other: `shifted_window_regions` says which pairs those are.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = [
    "merge_windows",
    "relative_position_index",
    "shifted_window_regions",
    "split_windows",
    "window_attention",
]


def split_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, window * window, C), windows in row order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def merge_windows(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """The inverse of `split_windows`: (B * windows, window * window, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²): for each (query, key) pair, the row of the (2w-1)² offset table to use."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # 2, N
    offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)  # 2, N, N; 0 .. 2w-2
    return offsets[0] * (2 * window - 1) + offsets[1]


def shifted_window_regions(
    height: int, width: int, window: int, shift: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """(windows, N, N) bool, True where the query and key came from different image regions.

    After rolling by -shift, the last window row and column mix pixels from the far edge; each
    side has three regions (the bulk, the last window's first part, the wrapped strip).
    """

    def side(length: int) -> torch.Tensor:
        label = torch.zeros(length, dtype=torch.long, device=device)
        label[length - window :] = 1
        label[length - shift :] = 2
        return label

    labels = side(height)[:, None] * 3 + side(width)[None, :]
    cells = split_windows(labels[None, :, :, None], window)[..., 0]  # windows, N
    return cells[:, :, None] != cells[:, None, :]


def window_attention(
    qkv: torch.Tensor, heads: int, bias: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-head attention inside each window.

    `qkv`: (B * windows, N, 3C) laid out q|k|v, each head-major; `bias`: (heads, N, N);
    `mask`: (windows, N, N) additive (float) or None. Returns (B * windows, N, C), head-major.
    """
    batch, tokens, three_c = qkv.shape
    channels = three_c // 3
    q, k, v = qkv.view(batch, tokens, 3, heads, channels // heads).permute(2, 0, 3, 1, 4)
    if mask is None:
        attn_bias = bias[None]
    else:
        windows = mask.shape[0]
        attn_bias = (bias[None] + mask[:, None]).repeat(batch // windows, 1, 1, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias.to(q.dtype))
    return out.transpose(1, 2).reshape(batch, tokens, channels)
