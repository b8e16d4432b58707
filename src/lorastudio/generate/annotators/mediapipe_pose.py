"""Pose without weight files: mediapipe's body and face landmarks drawn as an OpenPose-format map.

mediapipe 0.10.21 (the last release that bundles its models) pins numpy<2 and protobuf<5, so it
lives in an interpreter of its own, named by LORASTUDIO_MEDIAPIPE_PYTHON; `_mediapipe_worker.py`
runs there, reads one image and prints the landmarks as JSON. The mapping onto OpenPose's 18 body
points and 70 face points is here (a pure function) and the drawing is `openpose_draw`'s.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from lorastudio.errors import LorastudioError
from lorastudio.generate.annotators.base import AnnotatorContext
from lorastudio.generate.annotators.openpose_draw import Point, Pose, draw_poses, poses_json

__all__ = [
    "FACE_MESH_TO_OPENPOSE",
    "MEDIAPIPE_PYTHON_ENV",
    "POSE_TO_OPENPOSE",
    "mediapipe_landmarks",
    "mediapipe_openpose",
    "mediapipe_python",
    "mediapipe_to_pose",
]

MEDIAPIPE_PYTHON_ENV = "LORASTUDIO_MEDIAPIPE_PYTHON"
SETUP_HINT = (
    f"set {MEDIAPIPE_PYTHON_ENV} to a Python that has mediapipe 0.10.21, e.g. `python3 -m venv ~/mpvenv && "
    "~/mpvenv/bin/pip install mediapipe==0.10.21` then "
    f"`export {MEDIAPIPE_PYTHON_ENV}=~/mpvenv/bin/python` (a separate interpreter: it needs numpy<2)."
)
WORKER = Path(__file__).with_name("_mediapipe_worker.py")
TIMEOUT_S = 120

# OpenPose body point -> mediapipe pose landmark (person's left/right in both); the neck is the shoulders' middle.
POSE_TO_OPENPOSE: dict[int, int | tuple[int, int]] = {
    0: 0,  # nose
    1: (11, 12),  # neck
    2: 12, 3: 14, 4: 16,  # right shoulder, elbow, wrist
    5: 11, 6: 13, 7: 15,  # left shoulder, elbow, wrist
    8: 24, 9: 26, 10: 28,  # right hip, knee, ankle
    11: 23, 12: 25, 13: 27,  # left hip, knee, ankle
    14: 5, 15: 2,  # right eye, left eye
    16: 8, 17: 7,  # right ear, left ear
}  # fmt: skip

# OpenPose's 68 face points (jaw, brows, nose, eyes, lips: the iBUG 300-W order) -> face-mesh vertex.
FACE_MESH_TO_OPENPOSE = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
)  # fmt: skip
PUPILS = (468, 473)  # OpenPose points 68 and 69, when the mesh has its iris points (478 vertices)


def _inside(x: float, y: float) -> bool:
    return 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0


def mediapipe_to_pose(
    pose_landmarks: Sequence[Sequence[float]] | None,
    face_landmarks: Sequence[Sequence[float]] | None = None,
    min_visibility: float = 0.5,
) -> Pose | None:
    """One OpenPose `Pose` from mediapipe's 33 pose landmarks (x, y, visibility) and 468/478 mesh points (x, y).

    Coordinates are fractions of the image, as both libraries give them. A landmark less visible
    than `min_visibility` or outside the image is a missing point. None when there is nothing at all.
    """
    body: list[Point | None] = [None] * 18
    if pose_landmarks:
        def landmark(index: int) -> Point | None:
            x, y, *rest = pose_landmarks[index]
            visibility = rest[0] if rest else 1.0
            return (float(x), float(y)) if visibility >= min_visibility and _inside(x, y) else None

        for point, source in POSE_TO_OPENPOSE.items():
            if isinstance(source, tuple):
                a, b = landmark(source[0]), landmark(source[1])
                body[point] = None if a is None or b is None else ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
            else:
                body[point] = landmark(source)
    face: list[Point | None] | None = None
    if face_landmarks:
        indices = list(FACE_MESH_TO_OPENPOSE) + (list(PUPILS) if len(face_landmarks) > max(PUPILS) else [])
        face = []
        for index in indices:
            x, y = face_landmarks[index][:2]
            face.append((float(x), float(y)) if _inside(x, y) else None)
    if all(point is None for point in body) and not face:
        return None
    return Pose(body=body, face=face)


def mediapipe_python() -> str:
    """The interpreter that has mediapipe, or one line saying how to set it up."""
    python = os.environ.get(MEDIAPIPE_PYTHON_ENV, "").strip()
    if not python:
        raise LorastudioError(f"preprocessor 'mediapipe_openpose' needs mediapipe: {SETUP_HINT}")
    path = Path(python).expanduser()
    if not path.is_file():
        raise LorastudioError(f"{MEDIAPIPE_PYTHON_ENV}={python}: no such interpreter; {SETUP_HINT}")
    return str(path)


def mediapipe_landmarks(image_rgb: np.ndarray) -> dict:
    """{"pose": [[x, y, visibility] x 33] | None, "face": [[x, y] x 478] | None} from the mediapipe interpreter."""
    python = mediapipe_python()
    with tempfile.TemporaryDirectory(prefix="lorastudio-mediapipe-") as folder:
        source = Path(folder) / "image.png"
        cv2.imwrite(str(source), np.ascontiguousarray(image_rgb[:, :, ::-1]))
        try:
            done = subprocess.run(
                [python, str(WORKER), str(source)], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise LorastudioError(f"{MEDIAPIPE_PYTHON_ENV}={python}: the mediapipe worker failed ({error}).") from error
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LorastudioError(f"{MEDIAPIPE_PYTHON_ENV}={python}: the mediapipe worker failed ({last}); {SETUP_HINT}")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as error:
        raise LorastudioError(f"{MEDIAPIPE_PYTHON_ENV}={python}: the mediapipe worker printed no landmarks.") from error


def mediapipe_openpose(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """The `mediapipe_openpose` row: body and face points drawn as an OpenPose map."""
    found = mediapipe_landmarks(image)
    pose = mediapipe_to_pose(found.get("pose"), found.get("face"))
    if ctx.poses is not None:
        ctx.poses.append(poses_json([pose] if pose else [], image.shape[1], image.shape[0]))
    return draw_poses([pose] if pose else [], image.shape[0], image.shape[1], body=True, hands=False, face=True)
