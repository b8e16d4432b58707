"""Bring-your-own-weights backend: OpenCV zoo's YuNet detector and SFace recogniser (ONNX, local folder).

Put `face_detection_yunet_*.onnx` and `face_recognition_sface_*.onnx` (from opencv/opencv_zoo) in
`studio/models/faces/<name>/`. They run through `cv2.FaceDetectorYN` and `cv2.FaceRecognizerSF`
(both in opencv-python-headless 4.5.4+ and 5.x). The faces are aligned with `portrait.align` (the
same ArcFace template SFace's own `alignCrop` uses), so faces from any backend can be embedded.
"""

from __future__ import annotations

import threading
from fnmatch import fnmatch
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.portrait.align import align_face
from lorastudio.portrait.faces import POINT_NAMES, Face, FaceBackend, cosine_distance, sort_left_to_right

__all__ = ["LICENCE", "OpenCvZooBackend", "is_opencv_zoo_folder"]

LICENCE = "OpenCV zoo weights: YuNet MIT, SFace Apache-2.0 (commercial use allowed)"
DETECTOR_PATTERN = "*yunet*.onnx"
RECOGNISER_PATTERN = "*sface*.onnx"
# SFace's cosine-similarity threshold for the same person is 0.363 (opencv_zoo), as a distance 1 - 0.363.
SFACE_THRESHOLD = 1.0 - 0.363


def _matches(folder: Path, pattern: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and fnmatch(p.name.lower(), pattern))


def is_opencv_zoo_folder(folder: Path) -> bool:
    return bool(_matches(folder, DETECTOR_PATTERN) or _matches(folder, RECOGNISER_PATTERN))


def _one(folder: Path, pattern: str, example: str) -> Path:
    found = _matches(folder, pattern)
    if not found:
        raise LorastudioError(f"{folder}: no {pattern} file; copy {example} from opencv_zoo there.")
    return found[0]


class OpenCvZooBackend(FaceBackend):
    """YuNet detection (5 points measured) + SFace 128-d identity, cosine distance."""

    licence = LICENCE
    threshold = SFACE_THRESHOLD
    metric = "cosine"

    def __init__(self, folder: Path, name: str = "opencv-zoo", score_threshold: float = 0.6, nms_threshold: float = 0.3):
        self.name = name
        self.folder = Path(folder)
        self.detector_file = _one(self.folder, DETECTOR_PATTERN, "face_detection_yunet_2023mar.onnx")
        self.recogniser_file = _one(self.folder, RECOGNISER_PATTERN, "face_recognition_sface_2021dec.onnx")
        self._lock = threading.Lock()  # the detector's input size is state: one image at a time
        try:
            self._detector = cv2.FaceDetectorYN.create(str(self.detector_file), "", (320, 320), score_threshold, nms_threshold, 5000)
            self._recogniser = cv2.FaceRecognizerSF.create(str(self.recogniser_file), "")
        except cv2.error as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "cv2 error"
            raise LorastudioError(f"{self.folder}: OpenCV cannot load the YuNet/SFace ONNX files ({first}).") from None

    def detect(self, image: Image.Image) -> list[Face]:
        bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
        try:
            with self._lock:
                self._detector.setInputSize((bgr.shape[1], bgr.shape[0]))
                _, rows = self._detector.detect(bgr)
        except cv2.error as exc:
            raise LorastudioError(f"{self.detector_file}: YuNet failed on this image ({str(exc).strip()[-120:]}).") from None
        return sort_left_to_right([face_from_yunet_row(row) for row in (rows if rows is not None else [])])

    def embed(self, image: Image.Image, face: Face) -> np.ndarray:
        aligned = cv2.cvtColor(np.asarray(align_face(image, face, 112)), cv2.COLOR_RGB2BGR)
        with self._lock:
            return np.asarray(self._recogniser.feature(aligned), dtype=np.float32).ravel()

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return cosine_distance(a, b)


def face_from_yunet_row(row: np.ndarray) -> Face:
    """One YuNet row: x, y, w, h, then 5 (x, y) points in the template's order (image-left eye first), score."""
    x, y, w, h = (float(v) for v in row[:4])
    points = {name: (float(row[4 + 2 * i]), float(row[5 + 2 * i])) for i, name in enumerate(POINT_NAMES)}
    return Face(box=(x, y, x + w, y + h), points=points, score=float(row[14]))
