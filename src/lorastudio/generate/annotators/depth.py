"""Depth maps through `transformers` from a LOCAL model folder in studio/models/annotators.

Modules: `depth_midas` and `normal_midas` (a DPT folder, e.g. Intel/dpt-hybrid-midas saved as
`dpt-hybrid-midas`), `depth_anything` and `depth_anything_v2` (Depth-Anything "-hf" folders);
`networks.DEPTH_FOLDERS` lists the folder names each accepts. A folder is loaded with
`local_files_only=True` (never a download). Inputs are prepared as the ControlNet extension
does where transformers allows: DPT/MiDaS in -1..1 on the square its config names (384);
Depth Anything resized so the short side is 518 (a multiple of 14) with ImageNet statistics.
The prediction is resized back to the image and its relative inverse depth stretched to
0..255: near is white, far is black.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from lorastudio.errors import LorastudioError
from lorastudio.generate.annotators.base import AnnotatorContext
from lorastudio.generate.annotators.networks import DEPTH_FOLDERS, depth_folder

__all__ = [
    "DEPTH_FOLDERS",
    "depth_anything",
    "depth_anything_v2",
    "depth_midas",
    "find_depth_folder",
    "normal_midas",
    "predict_depth",
]

_SOURCES = {
    "depth_midas": "Intel/dpt-hybrid-midas",
    "normal_midas": "Intel/dpt-hybrid-midas",
    "depth_anything": "LiheYoung/depth-anything-small-hf",
    "depth_anything_v2": "depth-anything/Depth-Anything-V2-Small-hf",
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CACHE_SIZE = 2
_MODELS: OrderedDict[tuple[str, int, str], torch.nn.Module] = OrderedDict()
_LOCK = threading.Lock()


def find_depth_folder(module: str, ctx: AnnotatorContext) -> Path:
    """The model folder for `module` in the annotators folder, or one line saying what to put there."""
    found = depth_folder(module, ctx.weights_dir)
    if found is not None:
        return found
    names = DEPTH_FOLDERS[module]
    where = f"{ctx.weights_dir}/" if ctx.weights_dir is not None else "studio/models/annotators/"
    raise LorastudioError(
        f"preprocessor {module!r} needs the transformers folder {names[0]} ({_SOURCES[module]} saved with "
        f"save_pretrained; also accepted: {', '.join(names[1:])}): put it in {where} "
        "(lorastudio never downloads weights)."
    )


def _load_model(folder: Path, device: str) -> torch.nn.Module:
    """The folder's model in eval mode on `device`, cached by folder and newest file time."""
    newest = max(entry.stat().st_mtime_ns for entry in folder.iterdir() if entry.is_file())
    key = (str(folder.resolve()), newest, str(device))
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            model = _from_folder(folder).float().eval().to(device)
            _MODELS[key] = model
            while len(_MODELS) > _CACHE_SIZE:
                _MODELS.popitem(last=False)
        _MODELS.move_to_end(key)
        return model


def _from_folder(folder: Path) -> torch.nn.Module:
    from transformers import AutoModelForDepthEstimation

    try:
        return AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise LorastudioError(
            f"{folder.name} in {folder.parent}/ is not a transformers depth model ({error.__class__.__name__}): "
            "save one with save_pretrained, config.json and weights included."
        ) from error


def _normalisation(folder: Path, model_type: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The folder's image mean/std (preprocessor_config.json), else the family's usual ones."""
    config = folder / "preprocessor_config.json"
    if config.is_file():
        values = json.loads(config.read_text(encoding="utf-8"))
        if "image_mean" in values and "image_std" in values:
            return tuple(values["image_mean"]), tuple(values["image_std"])
    if model_type == "dpt":
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return _IMAGENET_MEAN, _IMAGENET_STD


def _network_size(height: int, width: int, config) -> tuple[int, int]:
    """The input size the model takes.

    transformers' DPT reshapes its tokens into a square grid (the hybrid one even needs exactly
    `image_size`), so DPT/MiDaS runs on a square of `image_size` (384 for Intel's models), as its
    own image processor does. Depth Anything takes any multiple of 14: short side 518.
    """
    if getattr(config, "model_type", "") == "dpt":
        side = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        return side, side
    scale = max(518 / height, 518 / width)
    return 14 * math.ceil(height * scale / 14), 14 * math.ceil(width * scale / 14)


def predict_depth(image: np.ndarray, module: str, ctx: AnnotatorContext) -> np.ndarray:
    """The model's relative inverse depth (HxW float32, larger = nearer) at the image's size."""
    folder = find_depth_folder(module, ctx)
    model = _load_model(folder, ctx.device)
    model_type = getattr(model.config, "model_type", "")
    height, width = image.shape[:2]
    net_height, net_width = _network_size(height, width, model.config)
    resized = cv2.resize(image, (net_width, net_height), interpolation=cv2.INTER_CUBIC)
    mean, std = _normalisation(folder, model_type)
    pixels = (resized.astype(np.float32) / 255.0 - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).to(ctx.device)
    with torch.no_grad():
        predicted = model(pixel_values=tensor).predicted_depth
    depth = F.interpolate(
        predicted.float().reshape(1, 1, *predicted.shape[-2:]), (height, width), mode="bilinear", align_corners=False
    )
    return depth[0, 0].cpu().numpy()


def _stretch(depth: np.ndarray) -> np.ndarray:
    """0..1: the nearest point 1, the farthest 0 (a flat prediction stays 0)."""
    depth = depth - depth.min()
    peak = depth.max()
    return depth / peak if peak > 0 else depth


def estimate_depth(image: np.ndarray, module: str, ctx: AnnotatorContext) -> np.ndarray:
    """Relative inverse depth (HxW uint8, near = 255) of an HxWx3 uint8 RGB image."""
    return (_stretch(predict_depth(image, module, ctx)) * 255.0).clip(0, 255).astype(np.uint8)


def depth_midas(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """MiDaS (DPT) depth: near is white."""
    return estimate_depth(image, "depth_midas", ctx)


def normal_midas(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """A normal map from the MiDaS depth (ControlNet 1.0's "normal_map"): the depth's horizontal and
    vertical gradients with a constant 2*pi as the third component, normalised; pixels farther
    than the "Normal Background Threshold" (share of the depth range) face the camera. RGB = (z, y, x)."""
    depth = predict_depth(image, "normal_midas", ctx)
    gradient_x = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    gradient_y = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    background = _stretch(depth) < ctx.value_a()
    gradient_x[background] = 0
    gradient_y[background] = 0
    normal = np.stack([gradient_x, gradient_y, np.full_like(gradient_x, 2.0 * np.pi)], axis=2)
    normal /= np.sqrt(np.sum(normal**2, axis=2, keepdims=True))
    return (normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8)[:, :, ::-1].copy()


def depth_anything(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """Depth Anything depth: near is white."""
    return estimate_depth(image, "depth_anything", ctx)


def depth_anything_v2(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """Depth Anything V2 depth: near is white."""
    return estimate_depth(image, "depth_anything_v2", ctx)
