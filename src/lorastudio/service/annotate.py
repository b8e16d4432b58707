"""Control maps: run a ControlNet preprocessor on one image (CLI `control detect`, `/controlnet/detect`, the UI).

Weights come from the workspace's `studio/models/annotators`; the device is CUDA when this
process has one. `list_modules` is the table `control modules` and the A1111 module list show.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError
from lorastudio.generate.annotators.networks import DEPTH_FOLDERS, depth_folder
from lorastudio.generate.annotators.registry import (
    RESOLUTION_SLIDER,
    annotator_context,
    find_annotator,
    list_annotators,
    run_annotator,
)
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from lorastudio.generate.annotators.base import Annotator, Slider

__all__ = ["detect_file", "detect_map", "list_modules", "module_row", "open_control_picture"]


_WEIGHT_FREE_MODULES = ("lorastudio.generate.annotators.builtin", "lorastudio.generate.annotators.mediapipe_pose")


def _weight_free(annotator: Annotator) -> bool:
    """OpenCV/numpy rows and the mediapipe subprocess: no torch, no device to pick."""
    return annotator.run.split(":")[0] in _WEIGHT_FREE_MODULES


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def open_control_picture(path: str) -> PILImage.Image:
    """A control picture file as a unit reads it (EXIF rotation, 16-bit greys), for a preview."""
    from lorastudio.generate.images import open_image_file

    return open_image_file(path, "control image")


def detect_map(
    ws: Workspace,
    module: str,
    image: PILImage.Image,
    resolution: int = 512,
    threshold_a: float | None = None,
    threshold_b: float | None = None,
    seed: int = 0,
    device: str | None = None,
    poses: list[dict] | None = None,
) -> PILImage.Image:
    """The RGB control map preprocessor `module` makes of `image` (at the processing resolution).

    Pass a list as `poses` to get the pose rows' keypoints too (OpenPose JSON, one dict per map),
    as the A1111 extension's `/controlnet/detect` returns them.
    """
    annotator = find_annotator(module)
    ctx = annotator_context(
        annotator.name,
        resolution=resolution,
        threshold_a=threshold_a,
        threshold_b=threshold_b,
        weights_dir=ws.annotators,
        device=(device or "cpu") if _weight_free(annotator) else _device(device),  # torch only for networks
        seed=seed,
    )
    ctx.poses = poses
    return run_annotator(annotator.name, image, ctx)


def _file_stub(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_+-]+", "_", name).strip("_") or "map"


def detect_file(
    ws: Workspace,
    module: str,
    image_path: Path,
    out: Path | None = None,
    resolution: int = 512,
    threshold_a: float | None = None,
    threshold_b: float | None = None,
    seed: int = 0,
) -> Path:
    """`control detect`: the map of the image file written as PNG to `out` (default `<stem>-<module>.png` here)."""
    from lorastudio.generate.images import RequestImageError, open_request_image

    image_path = Path(image_path)
    if not image_path.is_file():
        raise LorastudioError(f"{image_path}: no such image file; give the path of a PNG, JPEG or WebP.")
    annotator = find_annotator(module)
    try:
        image, _ = open_request_image(image_path, what=str(image_path))
    except RequestImageError as exc:
        raise LorastudioError.wrap(str(exc), exc) from None
    result = detect_map(ws, annotator.name, image, resolution, threshold_a, threshold_b, seed)
    short_name = annotator.aliases[0] if annotator.aliases else annotator.name
    target = Path(out) if out is not None else Path.cwd() / f"{image_path.stem}-{_file_stub(short_name)}.png"
    if target.suffix.lower() != ".png":
        raise LorastudioError(f"--out {target}: control maps are written as PNG; use a name ending in .png.")
    target.parent.mkdir(parents=True, exist_ok=True)
    result.save(target, format="PNG")
    return target


def _slider(slider: Slider | None) -> dict[str, Any] | None:
    if slider is None:
        return None
    return {"name": slider.name, "value": slider.value, "min": slider.min, "max": slider.max, "step": slider.step}


def module_row(annotator: Annotator, weights_dir: Path | None) -> dict[str, Any]:
    """One preprocessor as `control modules --json` and the A1111 module detail show it."""
    missing = [name for name in annotator.weights if weights_dir is None or not (weights_dir / name).is_file()]
    needs = None
    if annotator.run.startswith(f"{_WEIGHT_FREE_MODULES[1]}:"):
        from lorastudio.generate.annotators.mediapipe_pose import mediapipe_python

        try:
            mediapipe_python()
        except LorastudioError as error:
            needs = str(error)
    if annotator.name in DEPTH_FOLDERS and depth_folder(annotator.name, weights_dir) is None:
        folders = DEPTH_FOLDERS[annotator.name]
        needs = f"the transformers folder {folders[0]} (or {', '.join(folders[1:])}) in studio/models/annotators"
    sliders = [_slider(RESOLUTION_SLIDER) if annotator.uses_resolution else None]
    sliders += [_slider(annotator.threshold_a), _slider(annotator.threshold_b)]
    while sliders and sliders[-1] is None:
        sliders.pop()
    return {
        "name": annotator.name,
        "aliases": list(annotator.aliases),
        "sliders": sliders,
        "weights": list(annotator.weights),
        "missing_weights": missing,
        "needs": needs,  # a setup step other than weight files (the mediapipe interpreter), or None
        "ready": not missing and needs is None,
    }


def list_modules(ws: Workspace) -> list[dict[str, Any]]:
    """Every preprocessor with its sliders and whether its weight files are in studio/models/annotators."""
    return [module_row(annotator, ws.annotators) for annotator in list_annotators()]
