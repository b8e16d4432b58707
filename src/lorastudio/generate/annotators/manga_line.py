"""Denoised anime line art (`erika.pth`: MangaLineExtraction's residual U-Net, MIT).

Module: `lineart_anime_denoise`. The network reads the grey image in 0..255 and draws dark
lines on white at the same size (a multiple of 16: the image is edge-padded to one and
cropped back); the result is inverted into white lines on black. Every layer is
BatchNorm -> LeakyReLU(0.2) -> conv, keys as the original `res_skip` model.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from lorastudio.generate.annotators.base import AnnotatorContext
from lorastudio.generate.annotators.netload import (
    cached_network,
    load_strict,
    read_state_dict,
)

__all__ = ["MANGA_LINE_FILE", "MangaLineNetwork", "lineart_anime_denoise"]

MANGA_LINE_FILE = "erika.pth"


class NormActConv(nn.Module):
    """`model`: BatchNorm (eps 1e-3), LeakyReLU(0.2), conv; optionally a 2x nearest upsample after."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, upsample: bool = False):
        super().__init__()
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channels, eps=1e-3),
            nn.LeakyReLU(0.2),
            nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2),
        ]
        if upsample:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Shortcut(nn.Module):
    """Adds the block input to its output, through a 1x1 conv (`model.0`) when the shapes differ."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.model = None
        if in_channels != out_channels or (stride != 1 and not upsample):
            layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, stride=stride)]
            if upsample:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.model(x) if self.model is not None else x) + y


class BasicBlock(nn.Module):
    """`conv1`, `residual`, `shortcut`; `upsample` doubles the size in conv1 and the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.conv1 = NormActConv(in_channels, out_channels, stride=stride, upsample=upsample)
        self.residual = NormActConv(out_channels, out_channels)
        self.shortcut = Shortcut(in_channels, out_channels, stride, upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x, self.residual(self.conv1(x)))


class Stage(nn.Module):
    """`model`: `repeats` blocks; a down stage halves the size in its last block, an up stage
    doubles it in its first."""

    def __init__(self, in_channels: int, out_channels: int, repeats: int, down: bool = False, up: bool = False):
        super().__init__()
        blocks = []
        for index in range(repeats):
            stride = 2 if down and index == repeats - 1 else 1
            upsample = up and index == 0
            blocks.append(BasicBlock(in_channels if index == 0 else out_channels, out_channels, stride, upsample))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MangaLineNetwork(nn.Module):
    """res_skip: `block0..4` down (24, 48, 96, 192, 384 channels), `block5..8` up with skip sums,
    `block9` (16 channels) and `conv15` to one channel."""

    def __init__(self):
        super().__init__()
        self.block0 = Stage(1, 24, 2)
        self.block1 = Stage(24, 48, 3, down=True)
        self.block2 = Stage(48, 96, 5, down=True)
        self.block3 = Stage(96, 192, 7, down=True)
        self.block4 = Stage(192, 384, 12, down=True)
        self.block5 = Stage(384, 192, 7, up=True)
        self.block6 = Stage(192, 96, 5, up=True)
        self.block7 = Stage(96, 48, 3, up=True)
        self.block8 = Stage(48, 24, 2, up=True)
        self.block9 = Stage(24, 16, 2)
        self.conv15 = NormActConv(16, 1, kernel=1)

    def forward(self, grey255: torch.Tensor) -> torch.Tensor:
        x0 = self.block0(grey255)
        x1 = self.block1(x0)
        x2 = self.block2(x1)
        x3 = self.block3(x2)
        x = self.block5(self.block4(x3)) + x3
        x = self.block6(x) + x2
        x = self.block7(x) + x1
        x = self.block8(x) + x0
        return self.conv15(self.block9(x))


def _build(path: Path) -> MangaLineNetwork:
    stored = read_state_dict(path)
    network = MangaLineNetwork()
    load_strict(network, {key.replace("module.", ""): value for key, value in stored.items()}, path)
    return network


def lineart_anime_denoise(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """White, cleaned-up anime lines on black from erika.pth."""
    network = cached_network(ctx.weight_file(MANGA_LINE_FILE), ctx.device, _build)
    height, width = image.shape[:2]
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    grey = np.pad(grey, [[0, -height % 16], [0, -width % 16]], mode="edge")
    tensor = torch.from_numpy(grey).to(device=ctx.device, dtype=torch.float32)[None, None]
    with torch.no_grad():
        line = network(tensor)[0, 0, :height, :width].float().cpu().numpy()
    return (255.0 - line).clip(0, 255).astype(np.uint8)
