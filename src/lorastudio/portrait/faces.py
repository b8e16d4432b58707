"""A detected face and the one small interface every face backend answers to.

Points are in image pixels and named as the standard 5-point template names them, seen from the
image: `left_eye` is the eye on the image's left (the person's right eye), `mouth_left` the mouth
corner on the image's left. A backend that does not measure a point as the template defines it
may estimate it and list its name in `Face.estimated` (dlib's 5-point model gives eye corners and
the bottom of the nose: its nose and mouth corners are estimates). Alignment uses measured points only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "POINT_NAMES",
    "Face",
    "FaceBackend",
    "cosine_distance",
    "largest_face",
    "sort_left_to_right",
]

POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

Box = tuple[float, float, float, float]
Point = tuple[float, float]


@dataclass(frozen=True)
class Face:
    """One face: its box (x0, y0, x1, y1), its named points and the detector's confidence."""

    box: Box
    points: dict[str, Point] = field(default_factory=dict)
    score: float = 1.0
    estimated: tuple[str, ...] = ()

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """The box's shorter side in pixels: what "a face under 128 px" is measured by."""
        return min(self.width, self.height)

    @property
    def centre(self) -> Point:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def roll_degrees(self) -> float:
        """The eye line's angle from horizontal (clockwise positive, image y down); 0 without both eyes."""
        if "left_eye" not in self.points or "right_eye" not in self.points:
            return 0.0
        (lx, ly), (rx, ry) = self.points["left_eye"], self.points["right_eye"]
        return math.degrees(math.atan2(ry - ly, rx - lx))

    def measured(self) -> dict[str, Point]:
        """The points the backend measured (not estimated)."""
        return {k: v for k, v in self.points.items() if k not in self.estimated}

    def scaled(self, factor: float, offset: Point = (0.0, 0.0)) -> Face:
        """This face in another frame: coordinates times `factor`, then plus `offset`."""
        ox, oy = offset
        box = tuple(v * factor + (ox if i % 2 == 0 else oy) for i, v in enumerate(self.box))
        points = {k: (x * factor + ox, y * factor + oy) for k, (x, y) in self.points.items()}
        return Face(box=box, points=points, score=self.score, estimated=self.estimated)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: box, points, score, estimated point names, size and roll."""
        return {
            "box": [round(float(v), 1) for v in self.box],
            "points": {k: [round(float(x), 1), round(float(y), 1)] for k, (x, y) in self.points.items()},
            "score": round(float(self.score), 4),
            "estimated": list(self.estimated),
            "size": round(float(self.size), 1),
            "roll_degrees": round(self.roll_degrees, 2),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Face:
        """The inverse of `to_dict` (size and roll are recomputed), e.g. for boxes cached beside a template."""
        return cls(
            box=tuple(float(v) for v in data["box"]),  # type: ignore[arg-type]
            points={k: (float(v[0]), float(v[1])) for k, v in (data.get("points") or {}).items()},
            score=float(data.get("score", 1.0)),
            estimated=tuple(data.get("estimated") or ()),
        )


class FaceBackend:
    """Detect faces and tell identities apart.

    `detect` returns faces sorted left to right; `embed` gives one identity vector per face;
    `distance(a, b)` is below `threshold` for the same person. `licence` is one line the user sees
    where they pick the backend (the weights' licence, not the code's).
    """

    name: str = "base"
    licence: str = ""
    threshold: float = 0.6
    metric: str = "euclidean"

    def detect(self, image: Image.Image) -> list[Face]:
        raise NotImplementedError

    def embed(self, image: Image.Image, face: Face) -> np.ndarray:
        raise NotImplementedError

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance between two embeddings (dlib's measure); cosine backends override it."""
        return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "licence": self.licence, "threshold": self.threshold, "metric": self.metric}


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine similarity: 0 for the same direction, 1 for orthogonal, 2 for opposite."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denominator == 0.0:
        return 1.0
    return float(1.0 - float(a @ b) / denominator)


def largest_face(faces: Sequence[Face]) -> Face | None:
    """The face with the biggest box (the subject of a portrait), or None."""
    return max(faces, key=lambda f: f.width * f.height, default=None)


def sort_left_to_right(faces: Sequence[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: (f.centre[0], f.centre[1]))
