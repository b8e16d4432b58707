"""HED soft edges with ControlNet 1.1's Apache-2 network (`ControlNetHED.pth`).

Modules: `softedge_hed`, `softedge_hedsafe` (quantised), `scribble_hed` (thinned lines).
The network takes RGB in 0..255 (its learned `norm` is subtracted), five VGG-like stages each
project to one edge map; the maps are upsampled, averaged and passed through a sigmoid.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lorastudio.generate.annotators.base import AnnotatorContext
from lorastudio.generate.annotators.edgemaps import edges_to_scribble, quantise_edges, to_uint8
from lorastudio.generate.annotators.netload import (
    cached_network,
    image_to_tensor,
    load_strict,
    read_state_dict,
)

__all__ = ["HED_FILE", "HedNetwork", "scribble_hed", "softedge_hed", "softedge_hedsafe"]

HED_FILE = "ControlNetHED.pth"


class HedStage(nn.Module):
    """`layers` 3x3 convolutions with ReLU, and a 1x1 projection of the result to one edge map."""

    def __init__(self, in_channels: int, out_channels: int, layers: int):
        super().__init__()
        self.convs = nn.Sequential(
            *[nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1) for i in range(layers)]
        )
        self.projection = nn.Conv2d(out_channels, 1, 1)

    def forward(self, x: torch.Tensor, downsample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if downsample:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class HedNetwork(nn.Module):
    """The layout of ControlNetHED.pth: `norm`, `block1..5.convs.N`, `block1..5.projection`."""

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.block1 = HedStage(3, 64, 2)
        self.block2 = HedStage(64, 128, 2)
        self.block3 = HedStage(128, 256, 3)
        self.block4 = HedStage(256, 512, 3)
        self.block5 = HedStage(512, 512, 3)

    def forward(self, rgb255: torch.Tensor) -> list[torch.Tensor]:
        x = rgb255 - self.norm
        projections = []
        for index, stage in enumerate([self.block1, self.block2, self.block3, self.block4, self.block5]):
            x, projection = stage(x, downsample=index > 0)
            projections.append(projection)
        return projections


def _build(path: Path) -> HedNetwork:
    network = HedNetwork()
    load_strict(network, read_state_dict(path), path)
    return network


def hed_edges(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """Soft edges in 0..1 (float64, HxW) at the image's size."""
    network = cached_network(ctx.weight_file(HED_FILE), ctx.device, _build)
    height, width = image.shape[:2]
    with torch.no_grad():
        projections = network(image_to_tensor(image, ctx.device))
    maps = [p[0, 0].float().cpu().numpy() for p in projections]
    maps = [cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in maps]
    mean = np.mean(np.stack(maps, axis=2), axis=2).astype(np.float64)
    return 1.0 / (1.0 + np.exp(-mean))


def softedge_hed(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """Soft HED edges, white on black."""
    return to_uint8(hed_edges(image, ctx))


def softedge_hedsafe(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """HED edges quantised to three levels (hides fine detail from the ControlNet)."""
    return to_uint8(quantise_edges(hed_edges(image, ctx)))


def scribble_hed(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """HED edges thinned and binarised into scribble lines."""
    return edges_to_scribble(softedge_hed(image, ctx))
