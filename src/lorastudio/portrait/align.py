"""Alignment: a face moved onto the standard 112 px ArcFace template, crops around a face, and
one face warped onto another by their points.

The transform is a similarity (rotation, uniform scale, shift) fitted by least squares (Umeyama)
to the points the backend *measured*: all five for YuNet and insightface, the two eyes for dlib,
whose mouth corners are estimates and whose nose point is the bottom of the nose, not the tip
(two points fix a similarity exactly, so dlib's eyes land on the template's eyes).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.portrait.faces import POINT_NAMES, Face

__all__ = [
    "ARCFACE_TEMPLATE",
    "align_face",
    "alignment_matrix",
    "crop_around",
    "similarity_transform",
    "template_points",
    "warp_face",
]

# insightface's `arcface_dst`: left eye, right eye, nose tip, mouth left, mouth right in a 112x112 crop.
ARCFACE_TEMPLATE = {
    "left_eye": (38.2946, 51.6963),
    "right_eye": (73.5318, 51.5014),
    "nose": (56.0252, 71.7366),
    "mouth_left": (41.5493, 92.3655),
    "mouth_right": (70.7299, 92.2041),
}


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity matrix that maps `source` points onto `target` points best (Umeyama, least squares)."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError("similarity_transform needs two matching (N, 2) point arrays, N >= 2")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_c, target_c = source - source_mean, target - target_mean
    covariance = target_c.T @ source_c / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    variance = (source_c**2).sum() / len(source)
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance > 0 else 1.0
    shift = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, shift[:, None]])


def template_points(size: int = 112) -> dict[str, tuple[float, float]]:
    """The ArcFace template scaled to a `size` x `size` crop."""
    factor = size / 112.0
    return {k: (x * factor, y * factor) for k, (x, y) in ARCFACE_TEMPLATE.items()}


def _fit_names(*faces: Face) -> list[str]:
    """The point names every face measured; the eyes at least."""
    names = [n for n in POINT_NAMES if all(n in f.measured() for f in faces)]
    if "left_eye" not in names or "right_eye" not in names:
        raise LorastudioError("face has no measured eye points; use a backend that gives 5-point landmarks.")
    return names


def alignment_matrix(face: Face, size: int = 112) -> np.ndarray:
    """The 2x3 matrix that takes image pixels to the aligned `size` x `size` crop."""
    names = _fit_names(face)
    template = template_points(size)
    return similarity_transform(np.array([face.points[n] for n in names]), np.array([template[n] for n in names]))


def align_face(image: Image.Image, face: Face, size: int = 112) -> Image.Image:
    """The face rotated, scaled and cropped onto the ArcFace template (what recognisers take)."""
    matrix = alignment_matrix(face, size)
    pixels = np.asarray(image.convert("RGB"))
    warped = cv2.warpAffine(pixels, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(warped)


def crop_around(
    image: Image.Image, face: Face, scale: float = 3.0, square: bool = True
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A crop centred on the face, `scale` x its box (EasyPhoto uses about 3x), and that box in the image.

    The crop is shifted to stay inside the image and shrunk only when the image is smaller than
    it, so a square crop stays square wherever the image allows.
    """
    cx, cy = face.centre
    if square:
        width = height = scale * max(face.width, face.height)
    else:
        width, height = scale * face.width, scale * face.height
    width, height = min(width, image.width), min(height, image.height)
    if square:
        width = height = min(width, height)
    x0 = int(round(min(max(cx - width / 2, 0), image.width - width)))
    y0 = int(round(min(max(cy - height / 2, 0), image.height - height)))
    box = (x0, y0, x0 + int(round(width)), y0 + int(round(height)))
    return image.crop(box), box


def warp_face(source_image: Image.Image, source_face: Face, target_image: Image.Image, target_face: Face,
              feather: int | None = None) -> Image.Image:  # fmt: skip
    """The target image with the source face moved onto the target face's points and blended in a feathered face mask.

    EasyPhoto's conditioning for the first inpaint pass: the person's reference face placed where
    the template's face is, rotated and scaled to match.
    """
    from lorastudio.portrait.masks import face_mask

    names = _fit_names(source_face, target_face)
    matrix = similarity_transform(
        np.array([source_face.points[n] for n in names]), np.array([target_face.points[n] for n in names])
    )
    source = np.asarray(source_image.convert("RGB"))
    warped = cv2.warpAffine(source, matrix, target_image.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    feather = max(1, int(target_face.size * 0.08)) if feather is None else feather
    mask = face_mask(target_image.size, target_face, feather=feather)
    return Image.composite(Image.fromarray(warped), target_image.convert("RGB"), mask)
