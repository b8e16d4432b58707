"""Draw pose keypoints as the OpenPose-format map the pose ControlNets were trained on.

Black canvas; 18 COCO body points joined by 17 limbs, each limb a filled ellipse 8 px thick in
60 % of its colour, each point a 4 px disc in its full colour; hands as 20 rainbow edges (HSV hue
by edge index, 2 px) with blue 4 px points; the face as white 3 px dots. Colours, widths and the
point order are the ones ControlNet's OpenPose annotator draws, so maps from here, from the
extension and from pose editors mean the same to the model. Coordinates are fractions of the
width and height (0..1); `None` is a point not found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "BODY_COLORS",
    "BODY_LIMBS",
    "BODY_POINT_NAMES",
    "HAND_EDGES",
    "Point",
    "Pose",
    "draw_body",
    "draw_face",
    "draw_hand",
    "draw_poses",
    "hand_edge_color",
    "poses_json",
]

Point = tuple[float, float]

BODY_POINT_NAMES = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

# Limbs as (point, point), drawn in this order; limb i takes BODY_COLORS[i], point i BODY_COLORS[i].
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

# 21 hand points: the wrist (0), then four per finger from the palm out (thumb 1-4 ... little 17-20).
HAND_EDGES = tuple((0 if joint == 0 else finger * 4 + joint, finger * 4 + joint + 1) for finger in range(5) for joint in range(4))

LIMB_HALF_WIDTH = 4
BODY_POINT_RADIUS = 4
HAND_POINT_RADIUS = 4
HAND_POINT_COLOR = (0, 0, 255)
HAND_EDGE_WIDTH = 2
FACE_POINT_RADIUS = 3
FACE_POINT_COLOR = (255, 255, 255)
_EPS = 0.01  # hand/face points at the image's top/left edge are "not found" (detectors write 0 or -1)


@dataclass
class Pose:
    """One person's points: 18 body points, 21 per hand, the face's points (any may be missing)."""

    body: list[Point | None] = field(default_factory=lambda: [None] * 18)
    left_hand: list[Point | None] | None = None
    right_hand: list[Point | None] | None = None
    face: list[Point | None] | None = None


def hand_edge_color(index: int) -> tuple[int, int, int]:
    """Edge `index` of 20: a fully saturated, full-value hue of index/20 around the HSV circle, as RGB."""
    hue = index / float(len(HAND_EDGES)) * 6.0
    sector = int(math.floor(hue)) % 6
    rising = hue - math.floor(hue)
    falling = 1.0 - rising
    rgb = [
        (1.0, rising, 0.0),
        (falling, 1.0, 0.0),
        (0.0, 1.0, rising),
        (0.0, falling, 1.0),
        (rising, 0.0, 1.0),
        (1.0, 0.0, falling),
    ][sector]
    return tuple(int(round(channel * 255.0)) for channel in rgb)


def _pixel(point: Point, width: int, height: int) -> tuple[int, int]:
    return int(point[0] * width), int(point[1] * height)


def draw_body(canvas: np.ndarray, body: list[Point | None]) -> np.ndarray:
    """Limbs (ellipses in 60 % colour) first, then the points on top."""
    height, width = canvas.shape[:2]
    for (start, end), color in zip(BODY_LIMBS, BODY_COLORS, strict=False):  # 17 limbs, 18 colours
        a, b = body[start], body[end]
        if a is None or b is None:
            continue
        ax, ay = a[0] * width, a[1] * height
        bx, by = b[0] * width, b[1] * height
        length = math.hypot(ax - bx, ay - by)
        angle = math.degrees(math.atan2(ay - by, ax - bx))
        center = (int((ax + bx) / 2), int((ay + by) / 2))
        polygon = cv2.ellipse2Poly(center, (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(channel * 0.6) for channel in color])
    for point, color in zip(body, BODY_COLORS, strict=True):
        if point is not None:
            cv2.circle(canvas, _pixel(point, width, height), BODY_POINT_RADIUS, color, thickness=-1)
    return canvas


def _found(pixel: tuple[int, int]) -> bool:
    return pixel[0] > _EPS and pixel[1] > _EPS


def draw_hand(canvas: np.ndarray, hand: list[Point | None] | None) -> np.ndarray:
    """Rainbow edges from the wrist along each finger, blue points on top."""
    if not hand:
        return canvas
    height, width = canvas.shape[:2]
    for index, (start, end) in enumerate(HAND_EDGES):
        a, b = hand[start], hand[end]
        if a is None or b is None:
            continue
        pa, pb = _pixel(a, width, height), _pixel(b, width, height)
        if _found(pa) and _found(pb):
            cv2.line(canvas, pa, pb, hand_edge_color(index), thickness=HAND_EDGE_WIDTH)
    for point in hand:
        if point is not None and _found(pixel := _pixel(point, width, height)):
            cv2.circle(canvas, pixel, HAND_POINT_RADIUS, HAND_POINT_COLOR, thickness=-1)
    return canvas


def draw_face(canvas: np.ndarray, face: list[Point | None] | None) -> np.ndarray:
    """White dots, no lines."""
    if not face:
        return canvas
    height, width = canvas.shape[:2]
    for point in face:
        if point is not None and _found(pixel := _pixel(point, width, height)):
            cv2.circle(canvas, pixel, FACE_POINT_RADIUS, FACE_POINT_COLOR, thickness=-1)
    return canvas


def draw_poses(
    poses: list[Pose], height: int, width: int, body: bool = True, hands: bool = True, face: bool = True
) -> np.ndarray:
    """An HxWx3 uint8 RGB map of every pose on black."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for pose in poses:
        if body:
            draw_body(canvas, pose.body)
        if hands:
            draw_hand(canvas, pose.left_hand)
            draw_hand(canvas, pose.right_hand)
        if face:
            draw_face(canvas, pose.face)
    return canvas


def _flat(points: list[Point | None] | None, width: int, height: int) -> list[float] | None:
    """[x, y, confidence, ...] in pixels; a missing point is 0, 0, 0 (OpenPose's convention)."""
    if points is None:
        return None
    flat: list[float] = []
    for point in points:
        flat += [0.0, 0.0, 0.0] if point is None else [point[0] * width, point[1] * height, 1.0]
    return flat


def poses_json(poses: list[Pose], width: int, height: int) -> dict:
    """The poses as OpenPose JSON (what the A1111 extension's detect route returns and pose editors read)."""
    return {
        "people": [
            {
                "pose_keypoints_2d": _flat(pose.body, width, height),
                "face_keypoints_2d": _flat(pose.face, width, height),
                "hand_left_keypoints_2d": _flat(pose.left_hand, width, height),
                "hand_right_keypoints_2d": _flat(pose.right_hand, width, height),
            }
            for pose in poses
        ],
        "canvas_width": width,
        "canvas_height": height,
    }
