"""Masks from a face: the face itself (feathered), its skin, its lips, and the whole person.

Shapes come from the box and the 5 points, no face-parsing network: the face is an ellipse over
the box raised to take in the forehead and turned with the eye line; skin is that ellipse less
the eyes and mouth, kept where the colour is skin-like (YCrCb); the lips an ellipse on the mouth
corners. The retouch mask is the skin less the brows and anything above the hairline, feathered only
inwards (nothing outside that region moves). The person mask is mediapipe's selfie segmentation when
LORASTUDIO_MEDIAPIPE_PYTHON names an interpreter that has it, else OpenCV's GrabCut seeded by the face box.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFilter

from lorastudio.errors import LorastudioError
from lorastudio.portrait.faces import Face

__all__ = ["face_mask", "lip_mask", "person_mask", "retouch_mask", "skin_mask"]

MEDIAPIPE_PYTHON_ENV = "LORASTUDIO_MEDIAPIPE_PYTHON"
SELFIE_WORKER = Path(__file__).with_name("_selfie_worker.py")
TIMEOUT_S = 120
# The face ellipse relative to the box: half-axes and how far above the box centre it sits.
FACE_HALF_WIDTH = 0.62
FACE_HALF_HEIGHT = 0.78
FACE_RAISE = 0.12
GRABCUT_SIDE = 512
HAIRLINE = 0.9  # eye distances from the eye line up to where a retouch mask stops (the hairline)


def _ellipse(size: tuple[int, int], centre, axes, angle: float) -> np.ndarray:
    canvas = np.zeros((size[1], size[0]), dtype=np.uint8)
    centre = (int(round(centre[0])), int(round(centre[1])))
    axes = (max(1, int(round(axes[0]))), max(1, int(round(axes[1]))))
    cv2.ellipse(canvas, centre, axes, angle, 0, 360, 255, thickness=-1)
    return canvas


def _feathered(mask: np.ndarray, feather: int) -> Image.Image:
    image = Image.fromarray(mask, mode="L")
    return image.filter(ImageFilter.GaussianBlur(feather)) if feather > 0 else image


def _face_ellipse(size: tuple[int, int], face: Face) -> np.ndarray:
    cx, cy = face.centre
    angle = face.roll_degrees
    # "Up" along the face: the box centre moved towards the forehead, turned with the eye line.
    theta = np.radians(angle)
    raise_by = FACE_RAISE * face.height
    centre = (cx + np.sin(theta) * raise_by, cy - np.cos(theta) * raise_by)
    return _ellipse(size, centre, (FACE_HALF_WIDTH * face.width, FACE_HALF_HEIGHT * face.height), angle)


def face_mask(size: tuple[int, int], face: Face, feather: int = 0) -> Image.Image:
    """White over the face (forehead to chin, ear to ear), black elsewhere, blurred by `feather` px."""
    return _feathered(_face_ellipse(size, face), feather)


def _feature_ellipses(size: tuple[int, int], face: Face) -> np.ndarray:
    """Eyes and mouth, to leave out of the skin."""
    canvas = np.zeros((size[1], size[0]), dtype=np.uint8)
    eye_distance = _eye_distance(face)
    for name in ("left_eye", "right_eye"):
        if name in face.points:
            canvas |= _ellipse(size, face.points[name], (0.28 * eye_distance, 0.16 * eye_distance), face.roll_degrees)
    canvas |= np.asarray(lip_mask(size, face), dtype=np.uint8)
    return canvas


def _eye_distance(face: Face) -> float:
    if "left_eye" in face.points and "right_eye" in face.points:
        return float(np.hypot(*np.subtract(face.points["right_eye"], face.points["left_eye"])))
    return 0.4 * face.width


def lip_mask(size: tuple[int, int], face: Face, feather: int = 0) -> Image.Image:
    """An ellipse on the mouth corners (empty without them)."""
    if "mouth_left" not in face.points or "mouth_right" not in face.points:
        return Image.new("L", size, 0)
    left, right = np.asarray(face.points["mouth_left"]), np.asarray(face.points["mouth_right"])
    width = float(np.linalg.norm(right - left))
    angle = float(np.degrees(np.arctan2(*(right - left)[::-1])))
    mask = _ellipse(size, (left + right) / 2, (0.6 * width, 0.28 * width), angle)
    return _feathered(mask, feather)


def _skin_region(image: Image.Image, face: Face) -> np.ndarray:
    """The face ellipse less eyes and mouth, where the colour is skin-like (hard, 0/255)."""
    from lorastudio.image_modes import to_rgb

    size = image.size
    region = _face_ellipse(size, face) & ~_feature_ellipses(size, face)
    ycrcb = cv2.cvtColor(np.asarray(to_rgb(image)), cv2.COLOR_RGB2YCrCb)
    skin_colour = cv2.inRange(ycrcb, (0, 133, 77), (255, 173, 127))
    skin = region & skin_colour
    if np.count_nonzero(skin) < 0.25 * np.count_nonzero(region):
        skin = region
    return cv2.morphologyEx(skin, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))


def skin_mask(image: Image.Image, face: Face, feather: int | None = None) -> Image.Image:
    """The face's skin: the face ellipse less eyes and mouth, where the colour is skin-like.

    When almost nothing in the ellipse looks like skin (grey-scale photos, odd lighting) the colour
    test is dropped rather than return an empty mask.
    """
    feather = max(1, int(face.size * 0.04)) if feather is None else feather
    return _feathered(_skin_region(image, face), feather)


def _brow_ellipses(size: tuple[int, int], face: Face) -> np.ndarray:
    """The brows: above each eye, across the eye line (empty without the eyes)."""
    canvas = np.zeros((size[1], size[0]), dtype=np.uint8)
    eye_distance = _eye_distance(face)
    theta = np.radians(face.roll_degrees)
    up = np.array([np.sin(theta), -np.cos(theta)]) * 0.3 * eye_distance
    for name in ("left_eye", "right_eye"):
        if name in face.points:
            centre = np.asarray(face.points[name], dtype=float) + up
            canvas |= _ellipse(size, centre, (0.36 * eye_distance, 0.16 * eye_distance), face.roll_degrees)
    return canvas


def _below_hairline(size: tuple[int, int], face: Face) -> np.ndarray:
    """255 up to HAIRLINE eye distances above the eye line (the forehead), 0 above it: fair hair
    passes the skin-colour test, so the top of the face ellipse is left out (no limit without both eyes)."""
    if "left_eye" not in face.points or "right_eye" not in face.points:
        return np.full((size[1], size[0]), 255, dtype=np.uint8)
    middle = (np.asarray(face.points["left_eye"], dtype=float) + np.asarray(face.points["right_eye"], dtype=float)) / 2
    theta = np.radians(face.roll_degrees)
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    height = (xs - middle[0]) * np.sin(theta) - (ys - middle[1]) * np.cos(theta)  # along "up" of the face
    return np.where(height <= HAIRLINE * _eye_distance(face), 255, 0).astype(np.uint8)


def retouch_mask(image: Image.Image, face: Face, feather: int | None = None) -> Image.Image:
    """Where skin retouching may act: the skin less the brows, feathered inwards only.

    The hard region is shrunk by `feather` px before a blur that reaches `feather` px, so the mask is
    zero on every pixel outside the skin (eyes, brows, mouth, hair, background stay exactly as they were).
    """
    region = _skin_region(image, face) & ~_brow_ellipses(image.size, face) & _below_hairline(image.size, face)
    feather = max(1, int(face.size * 0.03)) if feather is None else feather
    if feather <= 0:
        return Image.fromarray(region, mode="L")
    kernel = np.ones((2 * feather + 1, 2 * feather + 1), np.uint8)  # square: the blur window's reach
    inner = cv2.erode(region, kernel)
    soft = cv2.GaussianBlur(inner, (2 * feather + 1, 2 * feather + 1), feather / 2, borderType=cv2.BORDER_CONSTANT)
    return Image.fromarray(soft, mode="L")


def person_mask(image: Image.Image, face: Face | None = None) -> Image.Image:
    """White over the person, black over the background (mediapipe when set up, else GrabCut)."""
    if os.environ.get(MEDIAPIPE_PYTHON_ENV, "").strip():
        return _mediapipe_person_mask(image)
    return _grabcut_person_mask(image, face)


def _grabcut_person_mask(image: Image.Image, face: Face | None) -> Image.Image:
    """GrabCut from a rectangle: the face box widened to the shoulders and down to the bottom edge
    (the centre 80% of the image without a face); the face itself is certain foreground.

    Runs on at most GRABCUT_SIDE px on the long side (GrabCut is slow), the mask scaled back."""
    factor = min(1.0, GRABCUT_SIDE / max(image.size))
    if factor < 1.0:
        small = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))), Image.BILINEAR)
        mask = _grabcut_person_mask(small, face.scaled(factor) if face is not None else None)
        return mask.resize(image.size, Image.BILINEAR)
    pixels = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    height, width = pixels.shape[:2]
    if face is None:
        rect = (int(width * 0.1), int(height * 0.05), int(width * 0.8), int(height * 0.95))
    else:
        x0 = max(0, int(face.box[0] - 1.5 * face.width))
        x1 = min(width - 1, int(face.box[2] + 1.5 * face.width))
        y0 = max(0, int(face.box[1] - 0.6 * face.height))
        rect = (x0, y0, max(1, x1 - x0), max(1, height - y0 - 1))
    mask = np.zeros((height, width), dtype=np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    if face is not None:
        mask[:] = cv2.GC_BGD
        x, y, w, h = rect
        mask[y : y + h, x : x + w] = cv2.GC_PR_FGD
        mask[_face_ellipse((width, height), face) > 0] = cv2.GC_FGD
        cv2.grabCut(pixels, mask, None, background, foreground, 3, cv2.GC_INIT_WITH_MASK)
    else:
        cv2.grabCut(pixels, mask, rect, background, foreground, 3, cv2.GC_INIT_WITH_RECT)
    person = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    return Image.fromarray(person, mode="L")


def _mediapipe_python() -> str:
    """The interpreter named by LORASTUDIO_MEDIAPIPE_PYTHON (as the mediapipe pose annotator reads it)."""
    python = os.environ.get(MEDIAPIPE_PYTHON_ENV, "").strip()
    path = Path(python).expanduser()
    if not path.is_file():
        raise LorastudioError(
            f"{MEDIAPIPE_PYTHON_ENV}={python}: no such interpreter; point it at a Python with mediapipe==0.10.21 "
            "or unset it (the person mask then uses GrabCut)."
        )
    return str(path)


def _mediapipe_person_mask(image: Image.Image) -> Image.Image:
    """Selfie segmentation in the interpreter named by LORASTUDIO_MEDIAPIPE_PYTHON (mediapipe 0.10.21)."""
    python = _mediapipe_python()
    with tempfile.TemporaryDirectory(prefix="lorastudio-selfie-") as folder:
        source, target = Path(folder) / "in.png", Path(folder) / "mask.png"
        image.convert("RGB").save(source)
        try:
            done = subprocess.run([python, str(SELFIE_WORKER), str(source), str(target)],
                                  capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise LorastudioError(f"person mask: mediapipe took over {TIMEOUT_S} s; check {MEDIAPIPE_PYTHON_ENV}.") from None
        if done.returncode != 0 or not target.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise LorastudioError(f"person mask: mediapipe failed ({last}); check {MEDIAPIPE_PYTHON_ENV}.")
        status = json.loads(done.stdout or "{}")
        if status.get("error"):
            raise LorastudioError(f"person mask: {status['error']}")
        return Image.open(target).convert("L").resize(image.size)
