"""Realistic and coarse line art (`sk_model.pth`, `sk_model2.pth`: "informative drawings" generators).

Modules: `lineart_realistic` (alias `lineart`, the extension's old key) and `lineart_coarse`.
Both files hold the same ResNet generator (3 residual blocks, instance norm without
parameters); it reads RGB in 0..1 and draws dark lines on white, which the extension inverts
into white lines on black.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lorastudio.generate.annotators.base import AnnotatorContext
from lorastudio.generate.annotators.netload import (
    cached_network,
    image_to_tensor,
    load_strict,
    read_state_dict,
)

__all__ = ["COARSE_FILE", "REALISTIC_FILE", "LineartGenerator", "lineart_coarse", "lineart_realistic"]

REALISTIC_FILE = "sk_model.pth"
COARSE_FILE = "sk_model2.pth"


class ResidualBlock(nn.Module):
    """Keys `conv_block.1` and `conv_block.5` (reflection pads and norms hold no weights)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _down(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.InstanceNorm2d(out_channels), nn.ReLU(True)]


def _up(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1),
        nn.InstanceNorm2d(out_channels),
        nn.ReLU(True),
    ]


class LineartGenerator(nn.Module):
    """The layout of sk_model*.pth: `model0` (7x7 in), `model1` (2 downsamples), `model2` (residual
    blocks), `model3` (2 upsamples), `model4` (7x7 out, sigmoid)."""

    def __init__(self, residual_blocks: int = 3):
        super().__init__()
        self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 64, 7), nn.InstanceNorm2d(64), nn.ReLU(True))
        self.model1 = nn.Sequential(*_down(64, 128), *_down(128, 256))
        self.model2 = nn.Sequential(*[ResidualBlock(256) for _ in range(residual_blocks)])
        self.model3 = nn.Sequential(*_up(256, 128), *_up(128, 64))
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, 1, 7), nn.Sigmoid())

    def forward(self, rgb01: torch.Tensor) -> torch.Tensor:
        return self.model4(self.model3(self.model2(self.model1(self.model0(rgb01)))))


def _build(path: Path) -> LineartGenerator:
    network = LineartGenerator()
    load_strict(network, read_state_dict(path), path)
    return network


def _lineart(image: np.ndarray, ctx: AnnotatorContext, file_name: str) -> np.ndarray:
    network = cached_network(ctx.weight_file(file_name), ctx.device, _build)
    height, width = image.shape[:2]
    with torch.no_grad():
        line = network(image_to_tensor(image, ctx.device) / 255.0)[0, 0, :height, :width]
    drawing = (line.float().cpu().numpy() * 255.0).clip(0, 255).astype(np.uint8)
    return 255 - drawing


def lineart_realistic(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """White lines on black from sk_model.pth."""
    return _lineart(image, ctx, REALISTIC_FILE)


def lineart_coarse(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """Thicker, coarser white lines on black from sk_model2.pth."""
    return _lineart(image, ctx, COARSE_FILE)
