"""The ESRGAN family's networks, with the parameter names of the released weight files.

RRDBNet follows Real-ESRGAN / basicsr (`conv_first`, `body.N.rdb1..3.conv1..5`, `conv_body`,
`conv_up1..`, `conv_hr`, `conv_last`): 2x and 1x models fold the input into 12 or 48 channels
with a pixel unshuffle first; old-layout ESRGAN files (2x, 3x, 4x, 8x) are converted to these names
by `loading`; ESRGAN+ files (an extra 1x1 conv per dense block) build with `plus=True`.
SRVGGNetCompact follows Real-ESRGAN's compact model (`body.N`: convs and PReLUs, the last conv
gives 3 * scale^2 channels, pixel-shuffled and added to a nearest upscale).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RRDBNet", "SRVGGNetCompact"]


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing every earlier output; the result is scaled by 0.2 and added.

    `plus` is ESRGAN+'s block (Rakotonirina & Rasoanaivo 2020, "residual of residual"): a bias-free
    1x1 conv of the block's input is added to the second conv's output, and that sum to the fourth's.
    """

    def __init__(self, num_feat: int, num_grow_ch: int, plus: bool = False) -> None:
        super().__init__()
        for i in range(1, 5):
            setattr(self, f"conv{i}", nn.Conv2d(num_feat + (i - 1) * num_grow_ch, num_grow_ch, 3, 1, 1))
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.conv1x1 = nn.Conv2d(num_feat, num_grow_ch, 1, bias=False) if plus else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i in range(1, 5):
            conv = getattr(self, f"conv{i}")
            out = F.leaky_relu(conv(torch.cat(features, 1)), 0.2)
            if self.conv1x1 is not None and i == 2:
                out = out + self.conv1x1(x)
            elif self.conv1x1 is not None and i == 4:
                out = out + features[2]  # the second output, its 1x1 shortcut included
            features.append(out)
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks in a residual (scaled by 0.2)."""

    def __init__(self, num_feat: int, num_grow_ch: int, plus: bool = False) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch, plus)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch, plus)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch, plus)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator: `num_upsamples` 2x steps, after an optional pixel unshuffle.

    Scale = up_factor ** num_upsamples / unshuffle: Real-ESRGAN x4plus is (2, 1), x2plus (2, 2), a
    1x model (2, 4); old-layout 2x and 8x ESRGAN files have 1 and 3 upsamples. Each step is a nearest
    2x then a conv (`upsampler="nearest"`, ESRGAN's upconv) or, in BasicSR's pixel-shuffle
    variant, a conv to up_factor² times the features then a pixel shuffle (`upsampler="pixelshuffle"`;
    its 3x files take one step with `up_factor=3`; old ESRGAN's nearest 3x files one nearest 3x step).
    `plus`: ESRGAN+'s dense blocks (`ResidualDenseBlock`).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        num_upsamples: int = 2,
        unshuffle: int = 1,
        upsampler: str = "nearest",
        up_factor: int = 2,
        plus: bool = False,
    ) -> None:
        super().__init__()
        if upsampler not in ("nearest", "pixelshuffle"):
            raise ValueError(f"RRDBNet upsampler {upsampler!r}: use 'nearest' or 'pixelshuffle'")
        if up_factor not in (2, 3):
            raise ValueError(f"RRDBNet up_factor {up_factor}: use 2 or 3")
        self.unshuffle = unshuffle
        self.num_upsamples = num_upsamples
        self.upsampler = upsampler
        self.up_factor = up_factor
        up_ch = num_feat * up_factor**2 if upsampler == "pixelshuffle" else num_feat
        self.conv_first = nn.Conv2d(num_in_ch * unshuffle * unshuffle, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch, plus) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        for i in range(1, num_upsamples + 1):
            setattr(self, f"conv_up{i}", nn.Conv2d(num_feat, up_ch, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    @property
    def scale(self) -> float:
        return self.up_factor**self.num_upsamples / self.unshuffle

    @property
    def size_multiple(self) -> int:
        """Inputs must be a multiple of this (the unshuffle): `tiling` pads them."""
        return self.unshuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        for i in range(1, self.num_upsamples + 1):
            conv = getattr(self, f"conv_up{i}")
            if self.upsampler == "pixelshuffle":
                feat = F.leaky_relu(F.pixel_shuffle(conv(feat), self.up_factor), 0.2)
            else:
                feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=self.up_factor, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact model: a plain conv + PReLU stack, pixel shuffle, plus a nearest upscale."""

    def __init__(
        self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16, upscale: int = 4
    ) -> None:
        super().__init__()
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    @property
    def scale(self) -> float:
        return float(self.upscale)

    size_multiple = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = F.pixel_shuffle(out, self.upscale)
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")
