"""Bring-your-own-weights backend: an insightface model pack (buffalo_l, antelopev2) run with onnxruntime.

Put the pack's ONNX files in `studio/models/faces/<name>/`: the SCRFD detector (`det_10g.onnx`, or
`scrfd_10g_bnkps.onnx`) and the ArcFace recogniser (`w600k_r50.onnx`, or `glintr100.onnx`); the
others (gender/age, 106/68-point) are not used. The `insightface` package is not needed: the
detector's output is decoded here (SCRFD: per stride 8/16/32, scores, box distances and 5 points
relative to anchor centres, then non-maximum suppression). The weights are for non-commercial
research only (insightface's licence): `licence` says so wherever the user picks the backend.
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.portrait.align import align_face
from lorastudio.portrait.faces import POINT_NAMES, Face, FaceBackend, cosine_distance, sort_left_to_right

__all__ = ["LICENCE", "InsightFaceBackend", "decode_scrfd", "is_insightface_pack", "non_maximum_suppression"]

LICENCE = (
    "insightface model packs (buffalo_l, antelopev2): non-commercial research use only "
    "(insightface's model licence); do not use them for commercial work"
)
DETECTOR_PATTERNS = ("det_10g.onnx", "scrfd_*.onnx", "scrfd*.onnx", "det_*.onnx")
RECOGNISER_PATTERNS = ("w600k_r50.onnx", "glintr100.onnx", "w600k_*.onnx", "*r100*.onnx", "*r50*.onnx")
ONNX_HINT = 'pip install "lorastudio[portrait]" (onnxruntime)'
# ArcFace: same person when the cosine similarity is above ~0.35 (buffalo_l on LFW-style pairs).
ARCFACE_THRESHOLD = 0.65
DETECT_SIZE = 640


def _find(folder: Path, patterns: tuple[str, ...]) -> Path | None:
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for pattern in patterns:
        for path in files:
            if fnmatch(path.name.lower(), pattern):
                return path
    return None


def is_insightface_pack(folder: Path) -> bool:
    return _find(folder, DETECTOR_PATTERNS) is not None or _find(folder, RECOGNISER_PATTERNS) is not None


def _session(path: Path):
    try:
        import onnxruntime
    except ImportError:
        raise LorastudioError(f"insightface packs need onnxruntime: {ONNX_HINT}.") from None
    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for broken files
        raise LorastudioError(f"{path}: onnxruntime cannot load it ({str(exc).strip().splitlines()[0][:160]}).") from None


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, overlap: float) -> list[int]:
    """Indices of the boxes kept, best score first, dropping any box that overlaps a kept one by more than `overlap` IoU."""
    order = np.argsort(-scores)
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    while len(order):
        best, rest = order[0], order[1:]
        keep.append(int(best))
        x0 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = (x1 - x0).clip(0) * (y1 - y0).clip(0)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= overlap]
    return keep


def _layout(count: int) -> tuple[tuple[int, ...], int, bool]:
    """(strides, anchors per place, has 5 points) from the number of SCRFD outputs."""
    layouts = {6: ((8, 16, 32), 2, False), 9: ((8, 16, 32), 2, True),
               10: ((8, 16, 32, 64, 128), 1, False), 15: ((8, 16, 32, 64, 128), 1, True)}  # fmt: skip
    if count not in layouts:
        raise LorastudioError(f"SCRFD detector has {count} outputs; expected 6, 9, 10 or 15 (an insightface det_*.onnx).")
    return layouts[count]


def decode_scrfd(
    outputs: list[np.ndarray], height: int, width: int, score_threshold: float = 0.5, nms_threshold: float = 0.4
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """SCRFD outputs for one (height, width) input -> boxes (N, 4), scores (N,), points (N, 5, 2) or None.

    Outputs come as [scores per stride, box distances per stride, points per stride]; each row is
    one anchor (`anchors` per feature-map place, row-major), distances are in stride units.
    """
    strides, anchors, with_points = _layout(len(outputs))
    levels = len(strides)
    all_boxes, all_scores, all_points = [], [], []
    for level, stride in enumerate(strides):
        scores = np.asarray(outputs[level]).reshape(-1)
        distances = np.asarray(outputs[level + levels]).reshape(-1, 4) * stride
        rows, cols = -(-height // stride), -(-width // stride)
        ys, xs = np.mgrid[:rows, :cols]
        centres = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
        centres = np.repeat(centres, anchors, axis=0)
        if len(centres) != len(scores):
            raise LorastudioError(f"SCRFD stride {stride}: {len(scores)} scores for {len(centres)} anchors; the input size does not match the model.")
        keep = scores >= score_threshold
        centre = centres[keep]
        all_scores.append(scores[keep])
        all_boxes.append(np.hstack([centre - distances[keep, :2], centre + distances[keep, 2:]]))
        if with_points:
            offsets = np.asarray(outputs[level + 2 * levels]).reshape(-1, 10)[keep] * stride
            all_points.append(offsets.reshape(-1, 5, 2) + centre[:, None, :])
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    points = np.concatenate(all_points) if with_points else None
    keep = non_maximum_suppression(boxes, scores, nms_threshold)
    return boxes[keep], scores[keep], (points[keep] if points is not None else None)


class InsightFaceBackend(FaceBackend):
    """SCRFD detection (5 points measured) + ArcFace 512-d identity, cosine distance."""

    licence = LICENCE
    threshold = ARCFACE_THRESHOLD
    metric = "cosine"

    def __init__(self, folder: Path, name: str = "insightface", score_threshold: float = 0.5, nms_threshold: float = 0.4):
        self.name = name
        self.folder = Path(folder)
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.detector_file = _find(self.folder, DETECTOR_PATTERNS)
        self.recogniser_file = _find(self.folder, RECOGNISER_PATTERNS)
        if self.detector_file is None:
            raise LorastudioError(f"{self.folder}: no detector (det_10g.onnx or scrfd_*.onnx) in this insightface pack.")
        if self.recogniser_file is None:
            raise LorastudioError(f"{self.folder}: no recogniser (w600k_r50.onnx or glintr100.onnx) in this insightface pack.")
        self._detector = _session(self.detector_file)
        self._recogniser = _session(self.recogniser_file)
        shape = self._recogniser.get_inputs()[0].shape
        self.input_size = shape[2] if isinstance(shape[2], int) else 112

    def detect(self, image: Image.Image) -> list[Face]:
        rgb = np.asarray(image.convert("RGB"))
        scale = DETECT_SIZE / max(rgb.shape[:2])
        resized = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))))
        canvas = np.zeros((DETECT_SIZE, DETECT_SIZE, 3), dtype=np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self._detector.run(None, {self._detector.get_inputs()[0].name: blob})
        boxes, scores, points = decode_scrfd(outputs, DETECT_SIZE, DETECT_SIZE, self.score_threshold, self.nms_threshold)
        faces = []
        for index in range(len(boxes)):
            box = tuple(float(v) / scale for v in boxes[index])
            named = {} if points is None else {n: (float(x) / scale, float(y) / scale) for n, (x, y) in zip(POINT_NAMES, points[index], strict=True)}
            faces.append(Face(box=box, points=named, score=float(scores[index])))  # type: ignore[arg-type]
        return sort_left_to_right(faces)

    def embed(self, image: Image.Image, face: Face) -> np.ndarray:
        """ArcFace's identity: the aligned 112 px face, RGB, (x - 127.5) / 127.5, NCHW."""
        aligned = np.asarray(align_face(image, face, self.input_size), dtype=np.float32)
        blob = ((aligned - 127.5) / 127.5).transpose(2, 0, 1)[None]
        output = self._recogniser.run(None, {self._recogniser.get_inputs()[0].name: blob})[0]
        return np.asarray(output, dtype=np.float32).ravel()

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return cosine_distance(a, b)
