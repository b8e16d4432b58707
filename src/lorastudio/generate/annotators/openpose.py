"""OpenPose: people's body points from heatmaps and part-affinity fields, then hands and face per person.

The steps of the CMU method as ControlNet's annotator runs it: the body network sees the image
(BGR, scaled so its height is 184 px, values /256 - 0.5); each of the 18 heatmaps gives its peaks
(local maxima of the smoothed map over 0.1); each limb's candidate pairs are scored by the line
integral of its affinity field; the best pairs are joined greedily into people (a person needs 4
points and a mean score of 0.4). Hands are searched in a box past each wrist (the elbow-wrist
direction), the face in a box around the nose sized by the eyes and ears.
Weights come from `ctx.weight_file(...)` (studio/models/annotators), never from a download.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from lorastudio.generate.annotators.base import AnnotatorContext
from lorastudio.generate.annotators.openpose_draw import Point, Pose, draw_poses, poses_json
from lorastudio.generate.annotators.openpose_model import BodyPoseNet, FaceNet, HandPoseNet, load_pose_weights

__all__ = [
    "BODY_PAF_LIMBS",
    "detect_poses",
    "face_box",
    "face_points",
    "find_peaks",
    "group_people",
    "hand_boxes",
    "hand_points",
    "openpose_body",
    "openpose_face",
    "openpose_faceonly",
    "openpose_full",
    "openpose_hand",
    "pose_heatmaps",
]

BODY_INPUT_HEIGHT = 184  # 0.5 x the 368 px box the network was trained on
HAND_BOX_SIZES = (184, 368, 552, 736)  # the hand network runs at these four scales and averages
FACE_INPUT_SIZE = 384
STRIDE = 8
PAD_VALUE = 128
PEAK_THRESHOLD = 0.1
PAF_THRESHOLD = 0.05
PAF_SAMPLES = 10
MAX_PEAKS_PER_PART = 100  # a bound on the pairing work; real photos give a few per part

# The 19 limbs the body network has affinity fields for: (point, point), (x channel, y channel).
BODY_PAF_LIMBS = (
    ((1, 2), (12, 13)), ((1, 5), (20, 21)), ((2, 3), (14, 15)), ((3, 4), (16, 17)),
    ((5, 6), (22, 23)), ((6, 7), (24, 25)), ((1, 8), (0, 1)), ((8, 9), (2, 3)),
    ((9, 10), (4, 5)), ((1, 11), (6, 7)), ((11, 12), (8, 9)), ((12, 13), (10, 11)),
    ((1, 0), (28, 29)), ((0, 14), (30, 31)), ((14, 16), (34, 35)), ((0, 15), (32, 33)),
    ((15, 17), (36, 37)), ((2, 16), (18, 19)), ((5, 17), (26, 27)),
)  # fmt: skip
_NEW_PERSON_LIMBS = 17  # the two ear-shoulder limbs only add to people found already


# ---- networks --------------------------------------------------------------------------------

_NETS: dict[tuple, torch.nn.Module] = {}


def _net(cls: type[torch.nn.Module], path: Path, device: str) -> torch.nn.Module:
    """The network in `path` on `device`, loaded once per file version."""
    key = (cls.__name__, str(path), path.stat().st_mtime_ns, device)
    if key not in _NETS:
        for old in [k for k in _NETS if k[:2] == key[:2]]:
            del _NETS[old]
        _NETS[key] = load_pose_weights(cls(), path).to(device)
    return _NETS[key]


def _to_tensor(image: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None].to(device) / 256.0 - 0.5


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4)


def _pad_to_stride(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return np.pad(
        image, [[0, -height % STRIDE], [0, -width % STRIDE], [0, 0]], mode="constant", constant_values=PAD_VALUE
    )


def _maps_at(output: torch.Tensor, valid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Network output (1xCxh/8xw/8) back to HxWxC: upsampled by the stride, padding cut, resized to `size`."""
    up = F.interpolate(output.float(), scale_factor=STRIDE, mode="bicubic", align_corners=False)
    up = up[:, :, : valid[0], : valid[1]]
    out = F.interpolate(up, size=size, mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).cpu().numpy()


# ---- body ------------------------------------------------------------------------------------


@torch.no_grad()
def pose_heatmaps(net: BodyPoseNet, image_bgr: np.ndarray, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(heatmaps HxWx19, affinity fields HxWx38) of the body network at the image's size."""
    height, width = image_bgr.shape[:2]
    scale = BODY_INPUT_HEIGHT / float(height)
    small = _resize(image_bgr, max(1, int(width * scale)), max(1, int(height * scale)))
    pafs, heats = net(_to_tensor(_pad_to_stride(small), device))
    valid = small.shape[:2]
    return _maps_at(heats, valid, (height, width)), _maps_at(pafs, valid, (height, width))


def _smooth(heatmap: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    return cv2.GaussianBlur(heatmap.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def find_peaks(heatmap: np.ndarray, threshold: float = PEAK_THRESHOLD) -> list[tuple[int, int, float]]:
    """Local maxima (x, y, score) of the smoothed map above `threshold`, the strongest first (bounded)."""
    smooth = _smooth(heatmap)
    neighbours = np.zeros((4, *smooth.shape), dtype=smooth.dtype)
    neighbours[0, 1:, :] = smooth[:-1, :]
    neighbours[1, :-1, :] = smooth[1:, :]
    neighbours[2, :, 1:] = smooth[:, :-1]
    neighbours[3, :, :-1] = smooth[:, 1:]
    is_peak = (smooth >= neighbours).all(axis=0) & (smooth > threshold)
    ys, xs = np.nonzero(is_peak)
    peaks = [(int(x), int(y), float(heatmap[y, x])) for y, x in zip(ys, xs, strict=True)]
    peaks.sort(key=lambda peak: -peak[2])
    return peaks[:MAX_PEAKS_PER_PART]


def _limb_pairs(
    starts: np.ndarray, ends: np.ndarray, paf: np.ndarray, image_height: int
) -> list[tuple[int, int, float]]:
    """The (start index, end index, score) pairs the affinity field supports, best first, each point used once."""
    vectors = ends[None, :, :2] - starts[:, None, :2]  # nA x nB x 2
    norms = np.maximum(np.linalg.norm(vectors, axis=2), 1e-3)
    units = vectors / norms[:, :, None]
    steps = np.linspace(0.0, 1.0, PAF_SAMPLES)
    points = starts[:, None, None, :2] + vectors[:, :, None, :] * steps[None, None, :, None]  # nA x nB x S x 2
    xs = np.clip(np.round(points[..., 0]).astype(int), 0, paf.shape[1] - 1)
    ys = np.clip(np.round(points[..., 1]).astype(int), 0, paf.shape[0] - 1)
    field = paf[ys, xs]  # nA x nB x S x 2
    along = (field * units[:, :, None, :]).sum(axis=3)
    prior = np.minimum(0.5 * image_height / norms - 1.0, 0.0)
    scores = along.mean(axis=2) + prior
    supported = (along > PAF_THRESHOLD).sum(axis=2) > 0.8 * PAF_SAMPLES
    candidates = [(i, j, float(scores[i, j])) for i, j in zip(*np.nonzero(supported & (scores > 0)), strict=True)]
    candidates.sort(key=lambda c: -c[2])
    used_a, used_b, pairs = set(), set(), []
    for i, j, score in candidates:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j, score))
        if len(pairs) >= min(len(starts), len(ends)):
            break
    return pairs


def group_people(heatmaps: np.ndarray, pafs: np.ndarray) -> list[list[Point | None]]:
    """People as lists of 18 (x, y) pixel points (None where missing), from the body network's maps."""
    peaks_by_part = [find_peaks(heatmaps[:, :, part]) for part in range(18)]
    candidates: list[tuple[int, int, float]] = []
    ids_by_part: list[np.ndarray] = []
    for peaks in peaks_by_part:
        ids_by_part.append(np.arange(len(candidates), len(candidates) + len(peaks)))
        candidates.extend(peaks)
    scores = np.array([c[2] for c in candidates], dtype=np.float64)

    people: list[dict] = []  # parts: candidate id per point (-1 none), score, count
    for limb_index, ((part_a, part_b), (channel_x, channel_y)) in enumerate(BODY_PAF_LIMBS):
        peaks_a, peaks_b = peaks_by_part[part_a], peaks_by_part[part_b]
        if not peaks_a or not peaks_b:
            continue
        paf = pafs[:, :, [channel_x, channel_y]]
        pairs = _limb_pairs(np.array(peaks_a, dtype=np.float64), np.array(peaks_b, dtype=np.float64), paf, heatmaps.shape[0])
        for i, j, limb_score in pairs:
            id_a, id_b = int(ids_by_part[part_a][i]), int(ids_by_part[part_b][j])
            owners = [p for p in people if p["parts"][part_a] == id_a or p["parts"][part_b] == id_b]
            if len(owners) == 2 and not ((owners[0]["parts"] >= 0) & (owners[1]["parts"] >= 0)).any():
                first, second = owners
                first["parts"] = np.where(first["parts"] >= 0, first["parts"], second["parts"])
                first["score"] += second["score"] + limb_score
                first["count"] += second["count"]
                people.remove(second)
            elif owners:
                person = owners[0]
                if person["parts"][part_b] != id_b:
                    person["parts"][part_b] = id_b
                    person["count"] += 1
                    person["score"] += scores[id_b] + limb_score
            elif limb_index < _NEW_PERSON_LIMBS:
                parts = np.full(18, -1, dtype=np.int64)
                parts[part_a], parts[part_b] = id_a, id_b
                people.append({"parts": parts, "score": scores[id_a] + scores[id_b] + limb_score, "count": 2})

    bodies = []
    for person in people:
        if person["count"] < 4 or person["score"] / person["count"] < 0.4:
            continue
        bodies.append([None if c < 0 else (float(candidates[c][0]), float(candidates[c][1])) for c in person["parts"]])
    return bodies


# ---- hands and face --------------------------------------------------------------------------


def hand_boxes(body: list[Point | None], width: int, height: int) -> list[tuple[int, int, int, bool]]:
    """Square boxes (x, y, size, is_left) past each wrist whose arm was found; boxes under 20 px are dropped."""
    boxes = []
    for shoulder, elbow, wrist, is_left in ((5, 6, 7, True), (2, 3, 4, False)):
        s, e, w = body[shoulder], body[elbow], body[wrist]
        if s is None or e is None or w is None:
            continue
        center_x = w[0] + 0.33 * (w[0] - e[0])
        center_y = w[1] + 0.33 * (w[1] - e[1])
        forearm = math.dist(w, e)
        upper_arm = math.dist(e, s)
        size = 1.5 * max(forearm, 0.9 * upper_arm)
        x, y = max(center_x - size / 2, 0.0), max(center_y - size / 2, 0.0)
        size = min(size, width - x, height - y)
        if size >= 20:
            boxes.append((int(x), int(y), int(size), is_left))
    return boxes


def face_box(body: list[Point | None], width: int, height: int) -> tuple[int, int, int] | None:
    """A square box (x, y, size) around the nose, sized by the eyes (x3) and ears (x1.5); None under 20 px."""
    nose = body[0]
    if nose is None or all(body[i] is None for i in (14, 15, 16, 17)):
        return None
    half = 0.0
    for index, factor in ((14, 3.0), (15, 3.0), (16, 1.5), (17, 1.5)):
        point = body[index]
        if point is not None:
            half = max(half, factor * max(abs(nose[0] - point[0]), abs(nose[1] - point[1])))
    x, y = max(nose[0] - half, 0.0), max(nose[1] - half, 0.0)
    size = min(2 * half, width - x, height - y)
    return (int(x), int(y), int(size)) if size >= 20 else None


@torch.no_grad()
def hand_points(net: HandPoseNet, crop_bgr: np.ndarray, device: str = "cpu") -> list[Point | None]:
    """21 (x, y) points in the crop's pixels (None where the heatmap has nothing over 0.05)."""
    map_size = 128
    crop_h, crop_w = crop_bgr.shape[:2]
    blurred = cv2.GaussianBlur(crop_bgr, (0, 0), 0.8)
    average = np.zeros((map_size, map_size, HandPoseNet.CHANNELS), dtype=np.float32)
    for box in HAND_BOX_SIZES:
        scaled = _resize(blurred, box, box)
        heats = net(_to_tensor(_pad_to_stride(scaled), device))
        average += _maps_at(heats, scaled.shape[:2], (map_size, map_size)) / len(HAND_BOX_SIZES)
    points: list[Point | None] = []
    for part in range(21):
        heat = average[:, :, part]
        binary = (_smooth(heat) > 0.05).astype(np.uint8)
        if not binary.any():
            points.append(None)
            continue
        count, labels = cv2.connectedComponents(binary, connectivity=8)
        sums = [heat[labels == label].sum() for label in range(1, count)]
        strongest = np.where(labels == 1 + int(np.argmax(sums)), heat, 0.0)
        y, x = np.unravel_index(int(np.argmax(strongest)), strongest.shape)
        points.append((x * crop_w / float(map_size), y * crop_h / float(map_size)))
    return points


@torch.no_grad()
def face_points(net: FaceNet, crop_bgr: np.ndarray, device: str = "cpu") -> list[Point | None]:
    """70 (x, y) points in the crop's pixels (None where the heatmap has nothing over 0.05)."""
    crop_h, crop_w = crop_bgr.shape[:2]
    heats = net(_to_tensor(_resize(crop_bgr, FACE_INPUT_SIZE, FACE_INPUT_SIZE), device))
    heats = F.interpolate(heats, size=(crop_h, crop_w), mode="bilinear", align_corners=True)[0].cpu().numpy()
    points: list[Point | None] = []
    for part in range(FaceNet.CHANNELS - 1):
        heat = heats[part]
        if not (heat > 0.05).any():
            points.append(None)
            continue
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        points.append((float(x), float(y)))
    return points


def _shift(points: list[Point | None], x0: int, y0: int, width: int, height: int) -> list[Point | None]:
    return [None if p is None else ((p[0] + x0) / width, (p[1] + y0) / height) for p in points]


def detect_poses(
    image_rgb: np.ndarray,
    body_net: BodyPoseNet,
    hand_net: HandPoseNet | None = None,
    face_net: FaceNet | None = None,
    device: str = "cpu",
) -> list[Pose]:
    """Every person's points as fractions of the image size; hands/face only where their net is given."""
    image_bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    height, width = image_bgr.shape[:2]
    heatmaps, pafs = pose_heatmaps(body_net, image_bgr, device)
    poses = []
    for body in group_people(heatmaps, pafs):
        pose = Pose(body=[None if p is None else (p[0] / width, p[1] / height) for p in body])
        if hand_net is not None:
            for x, y, size, is_left in hand_boxes(body, width, height):
                found = _shift(hand_points(hand_net, image_bgr[y : y + size, x : x + size], device), x, y, width, height)
                if is_left:
                    pose.left_hand = found
                else:
                    pose.right_hand = found
        if face_net is not None and (box := face_box(body, width, height)) is not None:
            x, y, size = box
            pose.face = _shift(face_points(face_net, image_bgr[y : y + size, x : x + size], device), x, y, width, height)
        poses.append(pose)
    return poses


# ---- the preprocessor rows -------------------------------------------------------------------


def _run(image: np.ndarray, ctx: AnnotatorContext, body: bool, hands: bool, face: bool) -> np.ndarray:
    body_net = _net(BodyPoseNet, ctx.weight_file("body_pose_model.pth"), ctx.device)
    hand_net = _net(HandPoseNet, ctx.weight_file("hand_pose_model.pth"), ctx.device) if hands else None
    face_net = _net(FaceNet, ctx.weight_file("facenet.pth"), ctx.device) if face else None
    poses = detect_poses(image, body_net, hand_net, face_net, ctx.device)
    if ctx.poses is not None:
        ctx.poses.append(poses_json(poses, image.shape[1], image.shape[0]))
    return draw_poses(poses, image.shape[0], image.shape[1], body=body, hands=hands, face=face)


def openpose_body(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """`openpose`: the body only."""
    return _run(image, ctx, body=True, hands=False, face=False)


def openpose_hand(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """`openpose_hand`: body and hands."""
    return _run(image, ctx, body=True, hands=True, face=False)


def openpose_face(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """`openpose_face`: body and face."""
    return _run(image, ctx, body=True, hands=False, face=True)


def openpose_faceonly(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """`openpose_faceonly`: the face points alone (the body is still found, to place the face)."""
    return _run(image, ctx, body=False, hands=False, face=True)


def openpose_full(image: np.ndarray, ctx: AnnotatorContext) -> np.ndarray:
    """`openpose_full`: body, hands and face."""
    return _run(image, ctx, body=True, hands=True, face=True)
