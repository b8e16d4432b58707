"""The three OpenPose networks (body, hand, face), laid out so the published weight files load as they are.

The files (`body_pose_model.pth`, `hand_pose_model.pth`, `facenet.pth`, as the ControlNet v1.1
annotators ship them) hold plain VGG-style convolutions named after the original Caffe layers
(`conv1_1`, `conv5_5_CPM_L1`, `Mconv7_stage6_L2`, ...). The body and hand files name the layers
without the block that holds them (the block prefix `model0.`, `model1_1.`, ... is this module's);
both layouts load. Every file is read with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from lorastudio.errors import LorastudioError
from lorastudio.models.checkpoint import weights_only_load

__all__ = ["BodyPoseNet", "FaceNet", "HandPoseNet", "load_pose_weights"]

# (name, in, out, kernel) for a 3x3/1x1/7x7 convolution with "same" padding, or (pool_name,) for a 2x2 max-pool.
_VGG_HEAD = [
    ("conv1_1", 3, 64, 3),
    ("conv1_2", 64, 64, 3),
    ("pool1_stage1",),
    ("conv2_1", 64, 128, 3),
    ("conv2_2", 128, 128, 3),
    ("pool2_stage1",),
    ("conv3_1", 128, 256, 3),
    ("conv3_2", 256, 256, 3),
    ("conv3_3", 256, 256, 3),
    ("conv3_4", 256, 256, 3),
    ("pool3_stage1",),
    ("conv4_1", 256, 512, 3),
    ("conv4_2", 512, 512, 3),
]
_BODY_FEATURES = [*_VGG_HEAD, ("conv4_3_CPM", 512, 256, 3), ("conv4_4_CPM", 256, 128, 3)]
_HAND_FACE_FEATURES = [
    *_VGG_HEAD,
    ("conv4_3", 512, 512, 3),
    ("conv4_4", 512, 512, 3),
    ("conv5_1", 512, 512, 3),
    ("conv5_2", 512, 512, 3),
    ("conv5_3_CPM", 512, 128, 3),
]


def _layers(spec: list[tuple], last_linear: bool = True) -> nn.Sequential:
    """Convolutions (each followed by ReLU, except the last when `last_linear`) and pools, named as in the files."""
    layers: list[tuple[str, nn.Module]] = []
    for index, row in enumerate(spec):
        if len(row) == 1:
            layers.append((row[0], nn.MaxPool2d(kernel_size=2, stride=2)))
            continue
        name, channels_in, channels_out, kernel = row
        layers.append((name, nn.Conv2d(channels_in, channels_out, kernel, padding=kernel // 2)))
        if not (last_linear and index == len(spec) - 1):
            layers.append((f"relu_{name}", nn.ReLU(inplace=True)))
    return nn.Sequential(OrderedDict(layers))


def _refine_stage(suffix: str, channels_in: int, channels_out: int) -> list[tuple]:
    """Stages 2-6: five 7x7 convolutions, a 1x1, then the 1x1 that predicts the maps."""
    return [
        (f"Mconv1_{suffix}", channels_in, 128, 7),
        *[(f"Mconv{i}_{suffix}", 128, 128, 7) for i in range(2, 6)],
        (f"Mconv6_{suffix}", 128, 128, 1),
        (f"Mconv7_{suffix}", 128, channels_out, 1),
    ]


class BodyPoseNet(nn.Module):
    """The CMU body network: 19 part heatmaps (18 COCO points + background) and 38 part-affinity fields."""

    PAF_CHANNELS = 38
    HEATMAP_CHANNELS = 19

    def __init__(self) -> None:
        super().__init__()
        pafs, heats = self.PAF_CHANNELS, self.HEATMAP_CHANNELS
        self.model0 = _layers(_BODY_FEATURES, last_linear=False)
        for branch, out in ((1, pafs), (2, heats)):
            first = [
                (f"conv5_1_CPM_L{branch}", 128, 128, 3),
                (f"conv5_2_CPM_L{branch}", 128, 128, 3),
                (f"conv5_3_CPM_L{branch}", 128, 128, 3),
                (f"conv5_4_CPM_L{branch}", 128, 512, 1),
                (f"conv5_5_CPM_L{branch}", 512, out, 1),
            ]
            self.add_module(f"model1_{branch}", _layers(first))
            for stage in range(2, 7):
                spec = _refine_stage(f"stage{stage}_L{branch}", pafs + heats + 128, out)
                self.add_module(f"model{stage}_{branch}", _layers(spec))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(part affinity fields, heatmaps) of the last stage, at 1/8 of the input size."""
        features = self.model0(x)
        pafs = self.model1_1(features)
        heats = self.model1_2(features)
        for stage in range(2, 7):
            joined = torch.cat([pafs, heats, features], dim=1)
            pafs = getattr(self, f"model{stage}_1")(joined)
            heats = getattr(self, f"model{stage}_2")(joined)
        return pafs, torch.relu(heats)  # the reference network keeps the last heatmap layer's ReLU


class HandPoseNet(nn.Module):
    """The CMU hand network: 22 heatmaps (21 hand points + background)."""

    CHANNELS = 22

    def __init__(self) -> None:
        super().__init__()
        self.model1_0 = _layers(_HAND_FACE_FEATURES, last_linear=False)
        self.model1_1 = _layers([("conv6_1_CPM", 128, 512, 1), ("conv6_2_CPM", 512, self.CHANNELS, 1)])
        for stage in range(2, 7):
            spec = _refine_stage(f"stage{stage}", self.CHANNELS + 128, self.CHANNELS)
            self.add_module(f"model{stage}", _layers(spec))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model1_0(x)
        heats = self.model1_1(features)
        for stage in range(2, 7):
            heats = getattr(self, f"model{stage}")(torch.cat([heats, features], dim=1))
        return heats


class FaceNet(nn.Module):
    """The CMU face network: 71 heatmaps (70 face points + background). Layers sit at the top level, as in the file."""

    CHANNELS = 71

    def __init__(self) -> None:
        super().__init__()
        stages: list[tuple] = [
            *_HAND_FACE_FEATURES,
            ("conv6_1_CPM", 128, 512, 1),
            ("conv6_2_CPM", 512, self.CHANNELS, 1),
        ]
        for stage in range(2, 7):
            stages += _refine_stage(f"stage{stage}", self.CHANNELS + 128, self.CHANNELS)
        self._order = [row[0] for row in stages]
        for row in stages:
            if len(row) == 1:
                continue
            name, channels_in, channels_out, kernel = row
            self.add_module(name, nn.Conv2d(channels_in, channels_out, kernel, padding=kernel // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's heatmaps, at 1/8 of the input size."""
        h = x
        features = None
        for name in self._order:
            if name.startswith("pool"):
                h = nn.functional.max_pool2d(h, kernel_size=2, stride=2)
                continue
            if name.startswith("Mconv1_"):
                h = torch.cat([h, features], dim=1)
            h = getattr(self, name)(h)
            if not (name == "conv6_2_CPM" or name.startswith("Mconv7_")):
                h = torch.relu(h)
            if name == "conv5_3_CPM":
                features = h
        return h


def load_pose_weights(model: nn.Module, path: Path) -> nn.Module:
    """`model` with the weights of `path`, whose keys may or may not carry this module's block prefix."""
    try:
        state = weights_only_load(path)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise LorastudioError(f"{path}: cannot be read as a PyTorch weight file ({error}); replace the file.") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LorastudioError(f"{path}: holds no state dict; use the OpenPose weight file of that name.")
    weights = {}
    for key in model.state_dict():
        short = key.split(".", 1)[1] if key.count(".") > 1 else key  # "model0.conv1_1.weight" -> "conv1_1.weight"
        tensor = state.get(key, state.get(short))
        if tensor is None:
            raise LorastudioError(
                f"{path}: key {short!r} is missing; it is not the {type(model).__name__} file "
                "(use body_pose_model.pth / hand_pose_model.pth / facenet.pth from the ControlNet annotators)."
            )
        weights[key] = tensor
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise LorastudioError(f"{path}: weights do not fit {type(model).__name__} ({first}).") from error
    return model.eval()
