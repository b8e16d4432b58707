"""SwinIR (Liang et al. 2021), with the parameter names of the released weight files.

A conv, residual groups of Swin transformer blocks (window attention, every second block on a
map shifted by half a window) each closed by a conv, then one of SwinIR's four reconstructions:
`nearest+conv` (the real-SR GAN models, A1111's default `SwinIR 4x`: nearest 2x + conv steps as
ESRGAN), `pixelshuffle` (classical SR), `pixelshuffledirect` (lightweight SR) or none (denoising
and JPEG models, which add their output to the input). `unshuffle` > 1 is DiffBIR v1's stage-1
restorer: the normalised input is pixel-unshuffled before the first conv (`conv_first.1`, after a
`PixelUnshuffle` at index 0), the body runs at 1/unshuffle of the size and the reconstruction
brings it back, so the network's scale is upscale / unshuffle. Inputs are padded to a multiple of
the window (times the unshuffle) by `tiling`. The shifted blocks' `attn_mask` buffers are kept so files load strictly, but
the mask is computed for the size at hand (it is the same for the size the file was saved at).
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

__all__ = ["SwinIR"]

_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # the training sets' mean SwinIR subtracts from RGB inputs
_MASKED = -100.0  # SwinIR's additive mask value between tokens of different regions


class SwinAttention(nn.Module):
    """Window attention with a learned bias per relative offset (`relative_position_bias_table`)."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        tokens = windows.shape[1]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.view(tokens, tokens, self.heads).permute(2, 0, 1)
        return self.proj(window_attention(self.qkv(windows), self.heads, bias, mask))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """norm -> (shifted) window attention -> residual; norm -> MLP -> residual."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_hidden: int, img_size: int) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SwinAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_hidden)
        if shift:  # the released files keep the mask for their training size: a buffer, so they load strictly
            cells = (img_size // window) ** 2
            self.register_buffer("attn_mask", torch.zeros(cells, window * window, window * window))

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
        height, width = size
        batch, _, channels = x.shape
        shortcut = x
        x = self.norm1(x).view(batch, height, width, channels)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        out = self.attn(split_windows(x, self.window), mask if self.shift else None)
        x = merge_windows(out, self.window, height, width)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + x.reshape(batch, height * width, channels)
        return x + self.mlp(self.norm2(x))


class ResidualGroup(nn.Module):
    def __init__(self, blocks: list[SwinBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


def _residual_conv(dim: int, resi_connection: str) -> nn.Module:
    """The conv closing a group: one 3x3 (`1conv`) or SwinIR-L's 3x3 / 1x1 / 3x3 bottleneck (`3conv`)."""
    if resi_connection == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    return nn.Sequential(
        nn.Conv2d(dim, dim // 4, 3, 1, 1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(dim // 4, dim // 4, 1, 1, 0),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(dim // 4, dim, 3, 1, 1),
    )


class RSTB(nn.Module):
    """Residual Swin Transformer Block: a group of Swin blocks and a conv, added to its input."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_hidden: int, img_size: int, resi: str) -> None:
        super().__init__()
        shift = window // 2 if img_size > window else 0
        blocks = [SwinBlock(dim, heads, window, shift if i % 2 else 0, mlp_hidden, img_size) for i in range(depth)]
        self.residual_group = ResidualGroup(blocks)
        self.conv = _residual_conv(dim, resi)

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
        out = x
        for block in self.residual_group.blocks:
            out = block(out, size, mask)
        return _to_tokens(self.conv(_to_image(out, size))) + x


class PatchEmbed(nn.Module):
    """Image -> tokens (patch size 1), layer-normed: SwinIR's `patch_embed.norm`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_to_tokens(x))


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


def _to_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *size)


class SwinIR(nn.Module):
    """SwinIR with its released names; every size is read from the weight file by `arch_specs`."""

    def __init__(
        self,
        in_chans: int = 3,
        out_chans: int = 3,
        embed_dim: int = 180,
        depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
        num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        img_size: int = 64,
        upscale: int = 4,
        upsampler: str = "nearest+conv",
        resi_connection: str = "1conv",
        num_feat: int = 64,
        img_range: float = 1.0,
        unshuffle: int = 1,
    ) -> None:
        super().__init__()
        if unshuffle > 1 and (not upsampler or upscale % unshuffle):
            raise ValueError(f"SwinIR unshuffle {unshuffle}: needs an upsampler whose upscale ({upscale}) it divides")
        self.window_size, self.upscale, self.upsampler, self.img_range = window_size, upscale, upsampler, img_range
        self.unshuffle = unshuffle
        self.shift = window_size // 2 if img_size > window_size else 0
        mean = _RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        self.register_buffer("mean", torch.tensor(mean).view(1, in_chans, 1, 1), persistent=False)
        first = nn.Conv2d(in_chans * unshuffle * unshuffle, embed_dim, 3, 1, 1)
        self.conv_first = nn.Sequential(nn.PixelUnshuffle(unshuffle), first) if unshuffle > 1 else first
        self.patch_embed = PatchEmbed(embed_dim)
        hidden = int(embed_dim * mlp_ratio)
        self.layers = nn.ModuleList(
            RSTB(embed_dim, depth, heads, window_size, hidden, img_size, resi_connection)
            for depth, heads in zip(depths, num_heads, strict=True)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = _residual_conv(embed_dim, resi_connection)
        self._build_reconstruction(embed_dim, num_feat, out_chans, upscale, upsampler)

    def _build_reconstruction(self, embed_dim: int, num_feat: int, out_chans: int, upscale: int, upsampler: str) -> None:
        if upsampler in ("nearest+conv", "pixelshuffle"):
            # SwinIR's nn.LeakyReLU() here keeps torch's default slope, 0.01
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        if upsampler == "nearest+conv":
            for i in range(1, upscale.bit_length()):
                setattr(self, f"conv_up{i}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, out_chans, 3, 1, 1)
        elif upsampler == "pixelshuffle":
            steps: list[nn.Module] = []
            for factor in [3] if upscale == 3 else [2] * (upscale.bit_length() - 1):
                steps += [nn.Conv2d(num_feat, factor * factor * num_feat, 3, 1, 1), nn.PixelShuffle(factor)]
            self.upsample = nn.Sequential(*steps)
            self.conv_last = nn.Conv2d(num_feat, out_chans, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(embed_dim, upscale * upscale * out_chans, 3, 1, 1), nn.PixelShuffle(upscale))
        else:
            self.conv_last = nn.Conv2d(embed_dim, out_chans, 3, 1, 1)

    @property
    def scale(self) -> float:
        return self.upscale / self.unshuffle

    @property
    def size_multiple(self) -> int:
        """Window attention needs sides in whole windows (after the unshuffle): `tiling` pads to this."""
        return self.window_size * self.unshuffle

    def _deep_features(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        mask = None
        if self.shift:
            regions = shifted_window_regions(*size, self.window_size, self.shift, x.device)
            mask = regions.to(x.dtype) * _MASKED
        tokens = self.patch_embed(x)
        for layer in self.layers:
            tokens = layer(tokens, size, mask)
        return _to_image(self.norm(tokens), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        first = self.conv_first(x)
        feat = self.conv_after_body(self._deep_features(first)) + first
        if self.upsampler == "nearest+conv":
            feat = self.conv_before_upsample(feat)
            for i in range(1, self.upscale.bit_length()):
                conv = getattr(self, f"conv_up{i}")
                feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
            out = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        elif self.upsampler == "pixelshuffle":
            out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        elif self.upsampler == "pixelshuffledirect":
            out = self.upsample(feat)
        else:
            out = x + self.conv_last(feat)
        return out / self.img_range + mean
