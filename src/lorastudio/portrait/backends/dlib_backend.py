"""The default face backend: dlib's HOG detector, 5-point predictor and ResNet face descriptor.

Everything ships on PyPI with its weights (`dlib-bin`, `face_recognition_models==0.3.0`), so it
works offline. `face_recognition_models` is never imported (its `__init__` needs `pkg_resources`,
gone from current setuptools): its folder is found with importlib and the `.dat` files read by
path. The 68-point predictor beside them is non-commercial (iBUG 300-W) and is not used.

dlib's 5 points are the two corners of each eye and the bottom of the nose. The eyes are the
corners' midpoints; the nose point is the bottom of the nose (a little below the template's nose
tip, so it is listed as estimated); the mouth corners are not measured, so they are estimated from
the eye line with the ArcFace template's proportions (1.155 eye distances below the eyes' middle,
0.414 to each side). Alignment leaves estimated points out: dlib faces align by their eyes.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.portrait.faces import Face, FaceBackend, sort_left_to_right

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["INSTALL_HINT", "DlibBackend", "dlib_model_folder", "import_dlib"]

INSTALL_HINT = 'pip install "lorastudio[portrait]" (dlib-bin and face_recognition_models==0.3.0)'
PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
# HOG runs on at most this many pixels on the long side; boxes are scaled back to the image.
DETECT_MAX_SIDE = 1024
# When nothing is found, images up to this long side are searched again upsampled once (5x slower),
# so faces of ~40 px are found too.
RETRY_UPSAMPLED_BELOW = 1024
# The ArcFace template's mouth corners, in eye distances from the eyes' middle: across, down.
MOUTH_ACROSS = 0.414
MOUTH_DOWN = 1.155
# Points that are not the template's: the bottom of the nose (not its tip) and the estimated mouth.
ESTIMATED = ("nose", "mouth_left", "mouth_right")
# dlib's networks keep scratch buffers: one call at a time per process (API requests run in threads).
_LOCK = threading.Lock()


def import_dlib() -> ModuleType:
    """The `dlib` module, or one line saying how to install it."""
    try:
        import dlib
    except ImportError:
        raise LorastudioError(f"face detection needs dlib: {INSTALL_HINT}.") from None
    return dlib


def dlib_model_folder() -> Path:
    """face_recognition_models' `models/` folder, found without importing the package."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LorastudioError(f"face models not installed (face_recognition_models): {INSTALL_HINT}.")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _model_file(name: str) -> Path:
    path = dlib_model_folder() / name
    if not path.is_file():
        raise LorastudioError(f"{path}: missing; reinstall face_recognition_models==0.3.0 ({INSTALL_HINT}).")
    return path


@lru_cache(maxsize=1)
def _models():
    """(detector, 5-point predictor, descriptor), loaded once per process (~0.3 s)."""
    dlib = import_dlib()
    predictor = dlib.shape_predictor(str(_model_file(PREDICTOR_FILE)))
    descriptor = dlib.face_recognition_model_v1(str(_model_file(DESCRIPTOR_FILE)))
    return dlib.get_frontal_face_detector(), predictor, descriptor


def _rgb(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def estimate_mouth(left_eye: tuple[float, float], right_eye: tuple[float, float]) -> dict[str, tuple[float, float]]:
    """Mouth corners from the eye line with the ArcFace template's proportions (a frontal face)."""
    left, right = np.asarray(left_eye, dtype=np.float64), np.asarray(right_eye, dtype=np.float64)
    across = right - left
    distance = float(np.linalg.norm(across)) or 1.0
    unit = across / distance
    down = np.array([-unit[1], unit[0]])  # the eye line turned 90 degrees towards the chin (y grows down)
    middle = (left + right) / 2 + down * MOUTH_DOWN * distance
    mouth_left = middle - unit * MOUTH_ACROSS * distance
    mouth_right = middle + unit * MOUTH_ACROSS * distance
    return {"mouth_left": (float(mouth_left[0]), float(mouth_left[1])),
            "mouth_right": (float(mouth_right[0]), float(mouth_right[1]))}  # fmt: skip


def _points_from_shape(shape) -> dict[str, tuple[float, float]]:
    parts = [(float(p.x), float(p.y)) for p in shape.parts()]
    # dlib's order: image-right eye (outer, inner), image-left eye (outer, inner), bottom of the nose.
    right_eye = ((parts[0][0] + parts[1][0]) / 2, (parts[0][1] + parts[1][1]) / 2)
    left_eye = ((parts[2][0] + parts[3][0]) / 2, (parts[2][1] + parts[3][1]) / 2)
    points = {"left_eye": left_eye, "right_eye": right_eye, "nose": parts[4]}
    points.update(estimate_mouth(left_eye, right_eye))
    return points


class DlibBackend(FaceBackend):
    """HOG detection, 5 points, 128-d ResNet descriptor; same person below an L2 distance of 0.6."""

    name = "dlib"
    licence = "dlib: Boost Software License; face_recognition_models 5-point and ResNet weights: public domain (CC0)"
    threshold = 0.6
    metric = "euclidean"

    def __init__(self, min_score: float = 0.25):
        self.min_score = min_score
        _models()  # fail now, with the install hint, not at the first image

    def _rectangle(self, face: Face):
        dlib = import_dlib()
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        return dlib.rectangle(x0, y0, x1, y1)

    def detect(self, image: Image.Image) -> list[Face]:
        detector, predictor, _ = _models()
        pixels = _rgb(image)
        scale = min(1.0, DETECT_MAX_SIDE / max(image.size))
        small = pixels if scale == 1.0 else _rgb(image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR))  # fmt: skip
        faces = []
        with _LOCK:
            rectangles, scores, _ = detector.run(small, 0, 0.0)
            if not any(score >= self.min_score for score in scores) and max(small.shape[:2]) <= RETRY_UPSAMPLED_BELOW:
                rectangles, scores, _ = detector.run(small, 1, 0.0)
            for rectangle, score in zip(rectangles, scores, strict=True):
                if score < self.min_score:
                    continue
                box = tuple(float(v) / scale for v in (rectangle.left(), rectangle.top(), rectangle.right(), rectangle.bottom()))
                shape = predictor(pixels, self._rectangle(Face(box=box)))  # type: ignore[arg-type]
                faces.append(Face(box=box, points=_points_from_shape(shape), score=float(score), estimated=ESTIMATED))  # type: ignore[arg-type]
        return sort_left_to_right(faces)

    def embed(self, image: Image.Image, face: Face) -> np.ndarray:
        """dlib's 128-d descriptor of the face in `face.box` (its 5 points are re-measured inside the box)."""
        _, predictor, descriptor = _models()
        pixels = _rgb(image)
        with _LOCK:
            shape = predictor(pixels, self._rectangle(face))
            return np.asarray(descriptor.compute_face_descriptor(pixels, shape), dtype=np.float32)
