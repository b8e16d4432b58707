"""SCUNet (Zhang et al. 2022), the blind denoiser A1111 lists as ScuNET, with the released names.

A U-Net of three 2x downsamplings whose stages are Swin-Conv blocks: a 1x1 conv splits the
channels in half, one half goes through a residual pair of 3x3 convs, the other through a Swin
transformer block (window attention, every second block on a shifted map), and a 1x1 conv joins
them back as a residual. Scale 1; sides must be whole windows at 1/8 size, so the network pads
its input to 8 * window (64 for the released files) by repeating the edge, as the original's
`forward` does, and crops the result. The blocks take the released files' shifted /
unshifted pattern, which the original derived from a 256-pixel training size.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lorastudio.generate.upscalers.windows import (
    merge_windows,
    relative_position_index,
    shifted_window_regions,
    split_windows,
    window_attention,
)

__all__ = ["SCUNet"]

TRAINING_SIZE = 256  # the original's `input_resolution`: a stage narrower than one window never shifts
LEVELS = 3  # downsamplings


class WindowMSA(nn.Module):
    """Window self-attention; the offset bias is stored (heads, 2w-1, 2w-1) as `relative_position_params`."""

    def __init__(self, dim: int, head_dim: int, window: int, shifted: bool) -> None:
        super().__init__()
        self.heads, self.window, self.shifted = dim // head_dim, window, shifted
        self.embedding_layer = nn.Linear(dim, 3 * dim)
        self.relative_position_params = nn.Parameter(torch.zeros(self.heads, 2 * window - 1, 2 * window - 1))
        self.linear = nn.Linear(dim, dim)
        self.register_buffer("_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        _, height, width, _ = x.shape
        shift = self.window // 2
        if self.shifted:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        bias = self.relative_position_params.flatten(1)[:, self._index]
        mask = None
        if self.shifted:
            regions = shifted_window_regions(height, width, self.window, shift, x.device)
            mask = torch.zeros(regions.shape, dtype=x.dtype, device=x.device).masked_fill(regions, float("-inf"))
        out = window_attention(self.embedding_layer(split_windows(x, self.window)), self.heads, bias, mask)
        x = merge_windows(self.linear(out), self.window, height, width)
        if self.shifted:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x


class TransBlock(nn.Module):
    def __init__(self, dim: int, head_dim: int, window: int, shifted: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.msa = WindowMSA(dim, head_dim, window, shifted)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.msa(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ConvTransBlock(nn.Module):
    """Half the channels through convs, half through a Swin block, joined as a residual."""

    def __init__(self, half: int, head_dim: int, window: int, shifted: bool) -> None:
        super().__init__()
        self.half = half
        self.trans_block = TransBlock(half, head_dim, window, shifted)
        self.conv1_1 = nn.Conv2d(2 * half, 2 * half, 1, 1, 0)
        self.conv1_2 = nn.Conv2d(2 * half, 2 * half, 1, 1, 0)
        self.conv_block = nn.Sequential(
            nn.Conv2d(half, half, 3, 1, 1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(half, half, 3, 1, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv_x, trans_x = torch.split(self.conv1_1(x), (self.half, self.half), dim=1)
        conv_x = self.conv_block(conv_x) + conv_x
        trans_x = self.trans_block(trans_x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + self.conv1_2(torch.cat((conv_x, trans_x), dim=1))


def _blocks(count: int, half: int, head_dim: int, window: int, level: int) -> list[nn.Module]:
    """One stage's blocks: every second one shifted, unless the stage is one window wide at training size."""
    can_shift = TRAINING_SIZE // 2**level > window
    return [ConvTransBlock(half, head_dim, window, can_shift and i % 2 == 1) for i in range(count)]


class SCUNet(nn.Module):
    """SCUNet; `config` is the block count of the seven stages (down1..3, body, up3..1)."""

    def __init__(
        self,
        in_nc: int = 3,
        config: tuple[int, ...] = (4, 4, 4, 4, 4, 4, 4),
        dim: int = 64,
        head_dim: int = 32,
        window_size: int = 8,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        args = (head_dim, window_size)
        self.m_head = nn.Sequential(nn.Conv2d(in_nc, dim, 3, 1, 1, bias=False))
        downs = []
        for level in range(LEVELS):
            width = dim * 2**level
            down = nn.Conv2d(width, 2 * width, 2, 2, 0, bias=False)
            downs.append(nn.Sequential(*_blocks(config[level], width // 2, *args, level), down))
        self.m_down1, self.m_down2, self.m_down3 = downs
        self.m_body = nn.Sequential(*_blocks(config[3], 4 * dim, *args, LEVELS))
        ups = []
        for level in reversed(range(LEVELS)):
            width = dim * 2**level
            up = nn.ConvTranspose2d(2 * width, width, 2, 2, 0, bias=False)
            ups.append(nn.Sequential(up, *_blocks(config[6 - level], width // 2, *args, level)))
        self.m_up3, self.m_up2, self.m_up1 = ups
        self.m_tail = nn.Sequential(nn.Conv2d(dim, in_nc, 3, 1, 1, bias=False))

    scale = 1.0
    size_multiple = 1  # the network pads for itself (edge-replicated, as the original)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**LEVELS * self.window_size  # three halvings, then whole windows
        x0 = F.pad(x, (0, -width % multiple, 0, -height % multiple), mode="replicate")
        x1 = self.m_head(x0)
        x2 = self.m_down1(x1)
        x3 = self.m_down2(x2)
        x4 = self.m_down3(x3)
        x = self.m_body(x4)
        x = self.m_up3(x + x4)
        x = self.m_up2(x + x3)
        x = self.m_up1(x + x2)
        return self.m_tail(x + x1)[..., :height, :width]

