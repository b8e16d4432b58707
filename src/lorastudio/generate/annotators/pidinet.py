"""PiDiNet soft edges (`table5_pidinet.pth`, the "carv4" network with dilation and attention).

Modules: `softedge_pidinet`, `softedge_pidisafe` (quantised), `scribble_pidinet` (thinned lines),
`t2ia_sketch_pidi` (edges above 0.5, for the T2I-Adapter sketch model).
The file holds `{"state_dict": {"module.<key>": tensor}}` as trained: its pixel-difference
convolutions (central, angular, radial) are stored as plain 3x3 kernels. They are converted
once at load into the equivalent vanilla kernels (3x3, or 5x5 for the radial ones), so the
network here is made of ordinary convolutions. The network reads BGR in 0..1.
"""

from __future__ import annotations

from pathlib import Path

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

__all__ = ["PIDINET_FILE", "PidiNetwork", "scribble_pidinet", "sketch_pidinet", "softedge_pidinet", "softedge_pidisafe"]

PIDINET_FILE = "table5_pidinet.pth"

# "carv4": layer i uses central, angular, radial difference or a vanilla conv, in turn.
_PDC_OF_LAYER = ["cd", "ad", "rd", "cv"] * 4
_BLOCKS = ["block1_1", "block1_2", "block1_3"] + [f"block{s}_{b}" for s in (2, 3, 4) for b in (1, 2, 3, 4)]
_ANGULAR_ORDER = [3, 0, 1, 6, 4, 2, 7, 8, 5]  # each tap minus its clockwise neighbour
_RADIAL_OUTER = [0, 2, 4, 10, 14, 20, 22, 24]  # 5x5 taps two pixels out
_RADIAL_INNER = [6, 7, 8, 11, 13, 16, 17, 18]  # 5x5 taps one pixel out


def vanilla_kernel(weight: torch.Tensor, pdc: str) -> torch.Tensor:
    """A stored 3x3 pixel-difference kernel -> the plain kernel that computes the same convolution."""
    out_channels, in_channels = weight.shape[:2]
    if pdc == "cd":  # sum of w * (x_i - x_centre)
        converted = weight.clone()
        converted[:, :, 1, 1] -= weight.sum(dim=(2, 3))
        return converted
    if pdc == "ad":
        flat = weight.reshape(out_channels, in_channels, 9)
        return (flat - flat[:, :, _ANGULAR_ORDER]).reshape(weight.shape)
    if pdc == "rd":
        flat = weight.reshape(out_channels, in_channels, 9)
        buffer = torch.zeros(out_channels, in_channels, 25, dtype=weight.dtype)
        buffer[:, :, _RADIAL_OUTER] = flat[:, :, 1:]
        buffer[:, :, _RADIAL_INNER] = -flat[:, :, 1:]
        return buffer.reshape(out_channels, in_channels, 5, 5)
    return weight


def _depthwise(channels: int, pdc: str) -> nn.Conv2d:
    size = 5 if pdc == "rd" else 3
    return nn.Conv2d(channels, channels, size, padding=size // 2, groups=channels, bias=False)


class PdcBlock(nn.Module):
    """Depthwise (converted) difference conv, ReLU, 1x1 conv, plus a (pooled, projected) shortcut."""

    def __init__(self, pdc: str, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        self.conv1 = _depthwise(in_channels, pdc)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        y = self.conv2(F.relu(self.conv1(x)))
        if self.stride > 1:
            x = self.shortcut(x)
        return y + x


class DilationModule(nn.Module):
    """CDCM: 1x1 conv, then four dilated 3x3 convs (5, 7, 9, 11) summed."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        for index, dilation in enumerate((5, 7, 9, 11), start=1):
            conv = nn.Conv2d(out_channels, out_channels, 3, dilation=dilation, padding=dilation, bias=False)
            setattr(self, f"conv2_{index}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return self.conv2_1(x) + self.conv2_2(x) + self.conv2_3(x) + self.conv2_4(x)


class SpatialAttention(nn.Module):
    """CSAM: a 1-channel sigmoid mask from the features multiplies them."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class MapReduce(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PidiNetwork(nn.Module):
    """PiDiNet with 60 base channels, dilation 24 and attention, in the converted (vanilla) form."""

    def __init__(self, channels: int = 60, dilation: int = 24):
        super().__init__()
        self.init_block = nn.Conv2d(3, channels, 3, padding=1, bias=False)  # layer 0: central difference
        widths = [channels, channels * 2, channels * 4, channels * 4]
        in_channels = channels
        for layer, name in enumerate(_BLOCKS, start=1):
            stage = int(name[5]) - 1
            stride = 2 if name.endswith("_1") and stage > 0 else 1
            setattr(self, name, PdcBlock(_PDC_OF_LAYER[layer], in_channels, widths[stage], stride))
            in_channels = widths[stage]
        self.dilations = nn.ModuleList(DilationModule(width, dilation) for width in widths)
        self.attentions = nn.ModuleList(SpatialAttention(dilation) for _ in widths)
        self.conv_reduces = nn.ModuleList(MapReduce(dilation) for _ in widths)
        self.classifier = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """BGR in 0..1 -> the fused edge probability (1x1xHxW)."""
        height, width = x.shape[2:]
        x = self.init_block(x)
        features = []
        for name in _BLOCKS:
            if name.endswith("_1") and name != "block1_1":
                features.append(x)
            x = getattr(self, name)(x)
        features.append(x)
        edges = []
        for index, feature in enumerate(features):
            reduced = self.conv_reduces[index](self.attentions[index](self.dilations[index](feature)))
            edges.append(F.interpolate(reduced, (height, width), mode="bilinear", align_corners=False))
        return torch.sigmoid(self.classifier(torch.cat(edges, dim=1)))


def convert_state_dict(stored: dict) -> dict[str, torch.Tensor]:
    """The file's `state_dict` without `module.`, its difference kernels made vanilla."""
    tensors = stored.get("state_dict", stored)
    tensors = {key.removeprefix("module."): value for key, value in tensors.items()}
    pdc_keys = {"init_block.weight": _PDC_OF_LAYER[0]}
    pdc_keys.update({f"{name}.conv1.weight": _PDC_OF_LAYER[layer] for layer, name in enumerate(_BLOCKS, start=1)})
    for key, pdc in pdc_keys.items():
        weight = tensors.get(key)
        if isinstance(weight, torch.Tensor) and tuple(weight.shape[2:]) == (3, 3):
            tensors[key] = vanilla_kernel(weight.float(), pdc)
    return tensors


def _build(path: Path) -> PidiNetwork:
    network = PidiNetwork()
    load_strict(network, convert_state_dict(read_state_dict(path)), path)
    return network


def pidinet_edges(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """Edge probability in 0..1 (HxW float32) at the image's size."""
    network = cached_network(ctx.weight_file(PIDINET_FILE), ctx.device, _build)
    bgr = image_to_tensor(image[:, :, ::-1], ctx.device) / 255.0
    with torch.no_grad():
        return network(bgr)[0, 0].float().cpu().numpy()


def softedge_pidinet(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """Soft PiDiNet edges, white on black."""
    return to_uint8(pidinet_edges(image, ctx))


def softedge_pidisafe(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """PiDiNet edges quantised to three levels."""
    return to_uint8(quantise_edges(pidinet_edges(image, ctx)))


def sketch_pidinet(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """PiDiNet edges above one half, black and white (the T2I-Adapter sketch input)."""
    return to_uint8((pidinet_edges(image, ctx) > 0.5).astype(np.float32))


def scribble_pidinet(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """PiDiNet edges thinned and binarised into scribble lines."""
    return edges_to_scribble(softedge_pidinet(image, ctx))
