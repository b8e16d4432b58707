"""The preprocessor table: every row lorastudio knows, found by its A1111 extension name or alias.

`run_annotator` applies the frame the A1111 ControlNet extension gives every preprocessor: the
image as 3-channel RGB, resized so its short side is the unit's resolution, padded (edge pixels)
to a multiple of 64 for the networks, the padding cut off the map again, the map returned RGB.
Rows name their function as "module:function", imported only when the row runs, so listing the
preprocessors imports neither cv2 nor torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.errors import LorastudioError
from lorastudio.generate.annotators.base import Annotator, AnnotatorContext, Slider
from lorastudio.generate.annotators.networks import NET_ANNOTATORS

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image as PILImage

__all__ = [
    "BUILTIN_ANNOTATORS",
    "RESOLUTION_SLIDER",
    "annotator_context",
    "find_annotator",
    "list_annotators",
    "prepare_input",
    "run_annotator",
]

RESOLUTION_SLIDER = Slider("Preprocessor Resolution", 512, 64, 2048)

_BUILTIN = "lorastudio.generate.annotators.builtin"
_OPENPOSE = "lorastudio.generate.annotators.openpose"
_MEDIAPIPE = "lorastudio.generate.annotators.mediapipe_pose"

BODY_WEIGHTS = "body_pose_model.pth"
HAND_WEIGHTS = "hand_pose_model.pth"
FACE_WEIGHTS = "facenet.pth"

# Names, aliases and sliders as the A1111 ControlNet extension lists them (module_list, alias names).
BUILTIN_ANNOTATORS: list[Annotator] = [
    Annotator("none", f"{_BUILTIN}:identity", uses_resolution=False),
    Annotator(
        "invert (from white bg & black line)", f"{_BUILTIN}:invert", uses_resolution=False, aliases=("invert",)
    ),
    Annotator(
        "canny",
        f"{_BUILTIN}:canny",
        threshold_a=Slider("Canny Low Threshold", 100, 1, 255),
        threshold_b=Slider("Canny High Threshold", 200, 1, 255),
    ),
    Annotator("threshold", f"{_BUILTIN}:threshold", threshold_a=Slider("Binarization Threshold", 127, 0, 255)),
    Annotator("blur_gaussian", f"{_BUILTIN}:blur_gaussian", threshold_a=Slider("Sigma", 9.0, 0.01, 64.0, 0.01)),
    Annotator(
        "tile_resample",
        f"{_BUILTIN}:tile_resample",
        threshold_a=Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01),
        uses_resolution=False,
    ),
    Annotator(
        "tile_colorfix",
        f"{_BUILTIN}:identity",
        threshold_a=Slider("Variation", 8.0, 3.0, 32.0, 1.0),
        uses_resolution=False,
    ),
    Annotator(
        "tile_colorfix+sharp",
        f"{_BUILTIN}:identity",
        threshold_a=Slider("Variation", 8.0, 3.0, 32.0, 1.0),
        threshold_b=Slider("Sharpness", 1.0, 0.0, 2.0, 0.01),
        uses_resolution=False,
    ),
    Annotator("shuffle", f"{_BUILTIN}:shuffle"),
    Annotator(
        "lineart_standard (from white bg & black line)",
        f"{_BUILTIN}:lineart_standard",
        aliases=("lineart_standard",),
    ),
    Annotator("inpaint_global_harmonious", f"{_BUILTIN}:inpaint", uses_resolution=False, aliases=("inpaint",)),
    Annotator("inpaint_only", f"{_BUILTIN}:inpaint", uses_resolution=False),
    Annotator("scribble_xdog", f"{_BUILTIN}:scribble_xdog", threshold_a=Slider("XDoG Threshold", 32, 1, 64)),
    Annotator("openpose", f"{_OPENPOSE}:openpose_body", weights=(BODY_WEIGHTS,)),
    Annotator("openpose_face", f"{_OPENPOSE}:openpose_face", weights=(BODY_WEIGHTS, FACE_WEIGHTS)),
    Annotator("openpose_faceonly", f"{_OPENPOSE}:openpose_faceonly", weights=(BODY_WEIGHTS, FACE_WEIGHTS)),
    Annotator(
        "openpose_full", f"{_OPENPOSE}:openpose_full", weights=(BODY_WEIGHTS, HAND_WEIGHTS, FACE_WEIGHTS)
    ),
    Annotator("openpose_hand", f"{_OPENPOSE}:openpose_hand", weights=(BODY_WEIGHTS, HAND_WEIGHTS)),
    # Not an extension module: OpenPose-format body + face points from mediapipe (no weight files).
    Annotator("mediapipe_openpose", f"{_MEDIAPIPE}:mediapipe_openpose", aliases=("mediapipe_pose", "mediapipe")),
]

# Rows whose function gets the mask too (HxWx4: RGB + mask in the 4th channel, 255 = repaint).
_MASKED_ROWS = {"inpaint_global_harmonious", "inpaint_only"}


def list_annotators() -> list[Annotator]:
    """Every preprocessor: the built-in rows, then the networks whose weights the user brings."""
    return [*BUILTIN_ANNOTATORS, *NET_ANNOTATORS]


def find_annotator(name: str) -> Annotator:
    """The row named `name` (or one of its aliases), case-insensitive; unknown names list the valid ones."""
    wanted = (name or "none").strip().lower()
    rows = list_annotators()
    for row in rows:
        if wanted == row.name.lower() or wanted in (alias.lower() for alias in row.aliases):
            return row
    names = ", ".join(row.name for row in rows)
    raise LorastudioError(f"preprocessor {str(name)[:80]!r} is not available; use one of: {names}.")


def annotator_context(
    name: str,
    resolution: int | None = 512,
    threshold_a: float | None = None,
    threshold_b: float | None = None,
    weights_dir: Path | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> AnnotatorContext:
    """The run settings for preprocessor `name`, its resolution checked against the extension's range."""
    annotator = find_annotator(name)
    # A1111 clients send -1 for "the default" (the extension's API unit defaults to -1).
    resolution = int(RESOLUTION_SLIDER.value) if resolution is None or int(resolution) == -1 else int(resolution)
    if not RESOLUTION_SLIDER.min <= resolution <= RESOLUTION_SLIDER.max:
        raise LorastudioError(
            f"processor_res: {resolution} is out of range; use {int(RESOLUTION_SLIDER.min)} to "
            f"{int(RESOLUTION_SLIDER.max)}."
        )
    return AnnotatorContext(
        annotator=annotator,
        resolution=resolution,
        threshold_a=_clean_threshold(threshold_a),
        threshold_b=_clean_threshold(threshold_b),
        weights_dir=Path(weights_dir) if weights_dir is not None else None,
        device=device,
        seed=int(seed),
    )


def _clean_threshold(value: float | None) -> float | None:
    """A1111 clients send -1 for "the default"; treat it (and None) as not given."""
    if value is None or float(value) == -1:
        return None
    return float(value)


def hwc3(array: np.ndarray) -> np.ndarray:
    """Any uint8 map (HxW, HxWx1, HxWx3, HxWx4) as HxWx3; RGBA is composed over white like the extension."""
    import numpy as np

    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels == 3:
        return array
    if channels == 1:
        return np.concatenate([array, array, array], axis=2)
    color = array[:, :, :3].astype(np.float32)
    alpha = array[:, :, 3:4].astype(np.float32) / 255.0
    return (color * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).round().astype(np.uint8)


def prepare_input(array: np.ndarray, resolution: int) -> tuple[np.ndarray, tuple[int, int]]:
    """`array` resized so its short side is `resolution`, padded by its edge pixels to a multiple of 64.

    Returns the padded array and the (height, width) before padding, which the map is cut back to.
    """
    import cv2
    import numpy as np

    height, width = array.shape[:2]
    scale = float(resolution) / float(min(height, width))
    target_h, target_w = int(round(height * scale)), int(round(width * scale))
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    resized = cv2.resize(array, (target_w, target_h), interpolation=interpolation)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    pad_h = -target_h % 64
    pad_w = -target_w % 64
    padded = np.pad(resized, [[0, pad_h], [0, pad_w], [0, 0]], mode="edge")
    return np.ascontiguousarray(padded), (target_h, target_w)


def _load_function(run: str):
    module_name, _, function_name = run.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def _input_array(image: PILImage.Image, masked: bool) -> np.ndarray:
    """The image as uint8 RGB; rows that take a mask get RGBA with the image's alpha as the mask."""
    import numpy as np

    if masked:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
        if image.mode not in ("RGBA", "LA") and "transparency" not in image.info:
            rgba = rgba.copy()
            rgba[:, :, 3] = 0  # no alpha: nothing masked
        return rgba
    if image.mode in ("RGBA", "LA", "P"):
        return hwc3(np.asarray(image.convert("RGBA"), dtype=np.uint8))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def run_annotator(name: str, image: PILImage.Image, ctx: AnnotatorContext) -> PILImage.Image:
    """The control map preprocessor `name` makes of `image` (RGB, at the processing resolution)."""
    from PIL import Image

    annotator = find_annotator(name)
    if annotator.name == "none":
        return image.convert("RGB")
    if ctx.annotator.name != annotator.name:
        ctx.annotator = annotator  # defaults of the row that runs
    for file_name in annotator.weights:
        ctx.weight_file(file_name)  # one line naming the first missing file, before any work
    array = _input_array(image, annotator.name in _MASKED_ROWS)
    function = _load_function(annotator.run)
    if not annotator.uses_resolution:
        return Image.fromarray(hwc3(function(array, ctx)))
    padded, (height, width) = prepare_input(array, ctx.resolution)
    known_poses = len(ctx.poses) if ctx.poses is not None else 0
    result = function(padded, ctx)
    if result.shape[:2] == padded.shape[:2]:
        result = result[:height, :width]
    for found in (ctx.poses or [])[known_poses:]:  # the padding is right/bottom: only the canvas shrinks
        found["canvas_width"], found["canvas_height"] = width, height
    return Image.fromarray(hwc3(result.copy()))
