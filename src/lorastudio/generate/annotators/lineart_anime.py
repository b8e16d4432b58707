"""Anime line art (`netG.pth`: a pix2pix U-Net generator with 8 downsamplings).

Module: `lineart_anime`. The U-Net is nested as the original: `model.model.1.model.3...`;
instance norm without parameters, so only the convolutions hold weights. It reads RGB in
-1..1 at a multiple of 256 pixels and draws dark lines, inverted into white on black.
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
    image_to_tensor,
    load_strict,
    read_state_dict,
)

__all__ = ["ANIME_FILE", "AnimeUnet", "lineart_anime"]

ANIME_FILE = "netG.pth"


class UnetLevel(nn.Module):
    """One level of the U-Net: down conv, the inner levels, up conv; the input is concatenated
    to the output (except on the outermost level). Its `model` Sequential keeps the original
    indices so the keys match: outermost [down, inner, relu, up, tanh], innermost
    [lrelu, down, relu, up, norm], others [lrelu, down, norm, inner, relu, up, norm]."""

    def __init__(self, outer: int, inner: int, in_channels: int | None = None, submodule: nn.Module | None = None,
                 outermost: bool = False):
        super().__init__()
        self.outermost = outermost
        down = nn.Conv2d(in_channels or outer, inner, kernel_size=4, stride=2, padding=1)
        if outermost:
            up = nn.ConvTranspose2d(inner * 2, outer, kernel_size=4, stride=2, padding=1)
            layers = [down, submodule, nn.ReLU(True), up, nn.Tanh()]
        elif submodule is None:
            up = nn.ConvTranspose2d(inner, outer, kernel_size=4, stride=2, padding=1)
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, nn.InstanceNorm2d(outer)]
        else:
            up = nn.ConvTranspose2d(inner * 2, outer, kernel_size=4, stride=2, padding=1)
            layers = [nn.LeakyReLU(0.2, True), down, nn.InstanceNorm2d(inner), submodule, nn.ReLU(True), up,
                      nn.InstanceNorm2d(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class AnimeUnet(nn.Module):
    """UnetGenerator(3 -> 1, 8 levels, 64 filters): innermost 512, three more 512 levels, then
    256, 128, 64 and the outermost."""

    def __init__(self, levels: int = 8, filters: int = 64):
        super().__init__()
        level = UnetLevel(filters * 8, filters * 8)
        for _ in range(levels - 5):
            level = UnetLevel(filters * 8, filters * 8, submodule=level)
        level = UnetLevel(filters * 4, filters * 8, submodule=level)
        level = UnetLevel(filters * 2, filters * 4, submodule=level)
        level = UnetLevel(filters, filters * 2, submodule=level)
        self.model = UnetLevel(1, filters, in_channels=3, submodule=level, outermost=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _build(path: Path) -> AnimeUnet:
    stored = read_state_dict(path)
    network = AnimeUnet()
    load_strict(network, {key.removeprefix("module."): value for key, value in stored.items()}, path)
    return network


def lineart_anime(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """White anime-style lines on black from netG.pth."""
    network = cached_network(ctx.weight_file(ANIME_FILE), ctx.device, _build)
    height, width = image.shape[:2]
    padded_height = 256 * int(np.ceil(height / 256.0))
    padded_width = 256 * int(np.ceil(width / 256.0))
    resized = cv2.resize(image, (padded_width, padded_height), interpolation=cv2.INTER_CUBIC)
    with torch.no_grad():
        line = network(image_to_tensor(resized, ctx.device) / 127.5 - 1.0)[0, 0] * 127.5 + 127.5
    line = cv2.resize(line.float().cpu().numpy(), (width, height), interpolation=cv2.INTER_CUBIC)
    return 255 - line.clip(0, 255).astype(np.uint8)
