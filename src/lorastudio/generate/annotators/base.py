"""What every preprocessor is: one row (`Annotator`) and what a run gets (`AnnotatorContext`).

Two tables of rows exist: the built-in ones (OpenCV/numpy, no weights; OpenPose and the
weight-free pose) in `registry.py`, and the networks whose weights the user brings
(`networks.py`). A row names its function as a "module:function" string so that listing the
preprocessors imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorastudio.errors import LorastudioError

__all__ = ["Annotator", "AnnotatorContext", "Slider"]


@dataclass(frozen=True)
class Slider:
    """A preprocessor parameter as the A1111 extension shows it (`/controlnet/module_list?alias_names`)."""

    name: str
    value: float
    min: float
    max: float
    step: float = 1.0


@dataclass(frozen=True)
class Annotator:
    """One preprocessor. `run` is "module:function", called as `function(image, ctx)`.

    The function takes an HxWx3 uint8 RGB numpy array already resized by the caller to the
    processing resolution, and returns an HxW or HxWx3 uint8 map (any size: the caller
    resizes it to the output).
    """

    name: str  # the A1111 extension's module name, e.g. "canny", "openpose_full"
    run: str
    weights: tuple[str, ...] = ()  # file names the user puts in studio/models/annotators
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    uses_resolution: bool = True  # False: runs on the image as it is (e.g. "invert", "inpaint")
    aliases: tuple[str, ...] = ()  # older names clients still send, e.g. "openpose_hand"


@dataclass
class AnnotatorContext:
    """The settings of one run: the unit's resolution and thresholds, where weights live, the device."""

    annotator: Annotator
    resolution: int = 512
    threshold_a: float | None = None
    threshold_b: float | None = None
    weights_dir: Path | None = None
    device: str = "cpu"
    seed: int = 0  # random preprocessors (shuffle) are reproducible from the request's seed
    poses: list[dict] | None = None  # a list here: pose rows append their keypoints (OpenPose JSON) to it

    def value_a(self) -> float:
        """threshold_a, or the row's default."""
        if self.threshold_a is not None:
            return self.threshold_a
        return self.annotator.threshold_a.value if self.annotator.threshold_a else 0.0

    def value_b(self) -> float:
        if self.threshold_b is not None:
            return self.threshold_b
        return self.annotator.threshold_b.value if self.annotator.threshold_b else 0.0

    def weight_file(self, file_name: str) -> Path:
        """The weight file this preprocessor needs, or one line saying where to put it (never a download)."""
        folder = self.weights_dir
        path = folder / file_name if folder is not None else None
        if path is None or not path.is_file():
            where = f"{folder}/" if folder is not None else "studio/models/annotators/"
            raise LorastudioError(
                f"preprocessor {self.annotator.name!r} needs {file_name}: put that file in {where} "
                "(lorastudio never downloads weights)."
            )
        return path
