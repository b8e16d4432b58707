"""M-LSD straight lines (`mlsd_large_512_fp32.pth`: MobileNetV2 backbone + the "large" decoder).

Module: `mlsd`, sliders "MLSD Value Threshold" (score a line centre needs, 0.1) and
"MLSD Distance Threshold" (shortest line in pixels of the half-size map, 0.1). The network reads
RGBA-like input (RGB plus a channel of ones) in -1..1 and predicts, at half resolution, a
line-centre heat map and each centre's displacement to the line's two ends. Lines are the
local maxima of the heat map (top 200), drawn one pixel wide, white on black.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lorastudio.generate.annotators.base import AnnotatorContext
from lorastudio.generate.annotators.netload import (
    cached_network,
    image_to_tensor,
    load_strict,
    read_state_dict,
)

__all__ = ["MLSD_FILE", "MlsdLarge", "decode_lines", "mlsd"]

MLSD_FILE = "mlsd_large_512_fp32.pth"
_TOP_K = 200


def _conv_bn(in_channels: int, out_channels: int, kernel: int, **conv) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, **conv), nn.BatchNorm2d(out_channels)]


class ConvBnRelu6(nn.Sequential):
    """Conv (no bias), BatchNorm, ReLU6; a stride-2 conv pads right/bottom only (TFLite padding)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        padding = 0 if stride == 2 else (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = F.pad(x, (0, 1, 0, 1), "constant", 0)
        return super().forward(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: (1x1 expand), 3x3 depthwise, 1x1 project; residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        self.residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = [ConvBnRelu6(in_channels, hidden, kernel=1)] if expand != 1 else []
        layers += [ConvBnRelu6(hidden, hidden, stride=stride, groups=hidden), *_conv_bn(hidden, out_channels, 1, bias=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetBackbone(nn.Module):
    """The first 14 MobileNetV2 layers (4 input channels); features 1, 3, 6, 10, 13 feed the decoder."""

    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]  # t, c, n, s
    TAPS = (1, 3, 6, 10, 13)

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [ConvBnRelu6(4, 32, stride=2)]
        channels = 32
        for expand, out_channels, repeats, stride in self.SETTINGS:
            for index in range(repeats):
                layers.append(InvertedResidual(channels, out_channels, stride if index == 0 else 1, expand))
                channels = out_channels
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.TAPS:
                taps.append(x)
        return taps


class MergeBlock(nn.Module):
    """BlockTypeA: 1x1 conv+BN+ReLU on both inputs, the deeper one upsampled 2x, concatenated."""

    def __init__(self, skip_channels: int, deep_channels: int, out_skip: int, out_deep: int, upscale: bool = True):
        super().__init__()
        self.conv1 = nn.Sequential(*_conv_bn(deep_channels, out_deep, 1), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(*_conv_bn(skip_channels, out_skip, 1), nn.ReLU(inplace=True))
        self.upscale = upscale

    def forward(self, skip: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        deep = self.conv1(deep)
        skip = self.conv2(skip)
        if self.upscale:
            deep = F.interpolate(deep, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.cat((skip, deep), dim=1)


class RefineBlock(nn.Module):
    """BlockTypeB: a residual 3x3 conv, then a 3x3 conv to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Sequential(*_conv_bn(in_channels, in_channels, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(*_conv_bn(in_channels, out_channels, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x) + x)


class OutputBlock(nn.Module):
    """BlockTypeC: dilated 3x3, 3x3, 1x1 to the 16 output maps."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Sequential(*_conv_bn(in_channels, in_channels, 3, padding=5, dilation=5), nn.ReLU())
        self.conv2 = nn.Sequential(*_conv_bn(in_channels, in_channels, 3, padding=1), nn.ReLU())
        self.conv3 = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class MlsdLarge(nn.Module):
    """MobileV2_MLSD_Large: keys `backbone.features.*`, `block15`..`block23`."""

    def __init__(self):
        super().__init__()
        self.backbone = MobileNetBackbone()
        self.block15 = MergeBlock(64, 96, 64, 64, upscale=False)
        self.block16 = RefineBlock(128, 64)
        self.block17 = MergeBlock(32, 64, 64, 64)
        self.block18 = RefineBlock(128, 64)
        self.block19 = MergeBlock(24, 64, 64, 64)
        self.block20 = RefineBlock(128, 64)
        self.block21 = MergeBlock(16, 64, 64, 64)
        self.block22 = RefineBlock(128, 64)
        self.block23 = OutputBlock(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """-> 1x9xH/2xW/2: channel 0 the centre score logits, 1..4 the end displacements."""
        c1, c2, c3, c4, c5 = self.backbone(x)
        x = self.block16(self.block15(c4, c5))
        x = self.block18(self.block17(c3, x))
        x = self.block20(self.block19(c2, x))
        x = self.block22(self.block21(c1, x))
        return self.block23(x)[:, 7:, :, :]


def _build(path: Path) -> MlsdLarge:
    network = MlsdLarge()
    load_strict(network, read_state_dict(path), path)
    return network


def decode_lines(prediction: torch.Tensor, score_threshold: float, distance_threshold: float) -> np.ndarray:
    """Line segments (N x 4: x0, y0, x1, y1 in input pixels) from the network's half-size maps."""
    _, _, height, width = prediction.shape
    heat = torch.sigmoid(prediction[:, 0])
    peaks = F.max_pool2d(heat, (3, 3), stride=1, padding=1)
    heat = (heat * (peaks == heat).float()).reshape(-1)
    scores, indices = torch.topk(heat, min(_TOP_K, heat.numel()))
    ys = (indices // width).cpu().numpy()
    xs = (indices % width).cpu().numpy()
    scores = scores.cpu().numpy()
    displacement = prediction[0, 1:5].permute(1, 2, 0).float().cpu().numpy()  # h, w, (dx0, dy0, dx1, dy1)
    lengths = np.sqrt(np.sum((displacement[:, :, :2] - displacement[:, :, 2:]) ** 2, axis=-1))
    segments = []
    for y, x, score in zip(ys, xs, scores, strict=True):
        if score > score_threshold and lengths[y, x] > distance_threshold:
            dx0, dy0, dx1, dy1 = displacement[y, x]
            segments.append([x + dx0, y + dy0, x + dx1, y + dy1])
    return 2.0 * np.array(segments, dtype=np.float64).reshape(-1, 4)  # half-size map -> input pixels


def mlsd(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """One-pixel white straight lines on black."""
    network = cached_network(ctx.weight_file(MLSD_FILE), ctx.device, _build)
    height, width = image.shape[:2]
    rgb = image_to_tensor(image, ctx.device)
    ones = torch.ones((1, 1, height, width), device=rgb.device)  # the original scales this channel too
    with torch.no_grad():
        prediction = network(torch.cat([rgb, ones], dim=1) / 127.5 - 1.0)
    canvas = np.zeros((height, width), dtype=np.uint8)
    for x0, y0, x1, y1 in decode_lines(prediction, ctx.value_a(), ctx.value_b()):
        cv2.line(canvas, (int(x0), int(y0)), (int(x1), int(y1)), 255, 1)
    return canvas
