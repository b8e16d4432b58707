"""OpenPose: the drawing pixel by pixel, people grouped from known maps, the real files' layouts, mediapipe's mapping."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate.annotators import openpose
from lorastudio.generate.annotators.mediapipe_pose import MEDIAPIPE_PYTHON_ENV, mediapipe_to_pose
from lorastudio.generate.annotators.openpose_draw import (
    BODY_COLORS,
    Pose,
    draw_body,
    draw_face,
    draw_hand,
    draw_poses,
    hand_edge_color,
    poses_json,
)
from lorastudio.generate.annotators.openpose_model import BodyPoseNet, FaceNet, HandPoseNet, load_pose_weights
from lorastudio.generate.annotators.registry import annotator_context, run_annotator

# ---- drawing ---------------------------------------------------------------------------------


def _canvas(size: int = 200) -> np.ndarray:
    return np.zeros((size, size, 3), dtype=np.uint8)


def test_a_limb_is_its_colour_at_60_percent_and_points_are_full_colour_discs():
    body = [None] * 18
    body[1] = (0.5, 0.3)  # neck at (100, 60)
    body[2] = (0.3, 0.3)  # right shoulder at (60, 60)
    canvas = draw_body(_canvas(), body)
    assert tuple(canvas[60, 80]) == (153, 0, 0)  # limb 0 (neck - right shoulder): red x 0.6, at its middle
    assert tuple(canvas[63, 80]) == (153, 0, 0) and tuple(canvas[66, 80]) == (0, 0, 0)  # 8 px thick
    assert tuple(canvas[60, 100]) == BODY_COLORS[1]  # the neck's disc
    assert tuple(canvas[60, 60]) == BODY_COLORS[2]
    assert tuple(canvas[60, 104]) == BODY_COLORS[1] and tuple(canvas[60, 106]) == (0, 0, 0)  # radius 4
    canvas[55:66, 55:106] = 0
    assert canvas.max() == 0  # nothing else drawn (no limb to a missing point)


def test_vertical_limb_and_the_colour_order():
    body = [None] * 18
    body[8] = (0.5, 0.2)  # right hip
    body[9] = (0.5, 0.6)  # right knee: limb 7 (8-9)
    canvas = draw_body(_canvas(), body)
    assert tuple(canvas[80, 100]) == tuple(int(c * 0.6) for c in BODY_COLORS[7]) == (0, 153, 51)
    assert tuple(canvas[80, 103]) == (0, 153, 51) and tuple(canvas[80, 106]) == (0, 0, 0)
    assert tuple(canvas[40, 100]) == BODY_COLORS[8] and tuple(canvas[120, 100]) == BODY_COLORS[9]


def test_hand_edges_are_rainbow_lines_and_points_are_blue():
    assert [hand_edge_color(i) for i in (0, 4, 5, 10, 15)] == [
        (255, 0, 0), (204, 255, 0), (128, 255, 0), (0, 255, 255), (128, 0, 255),
    ]  # fmt: skip
    hand = [None] * 21
    hand[0] = (0.2, 0.5)  # wrist (40, 100)
    hand[1] = (0.6, 0.5)  # thumb base (120, 100): edge 0
    hand[5] = (0.2, 0.1)  # index base (40, 20): edge 4
    canvas = draw_hand(_canvas(), hand)
    assert tuple(canvas[100, 80]) == (255, 0, 0)
    assert tuple(canvas[60, 40]) == (204, 255, 0)
    assert tuple(canvas[100, 40]) == (0, 0, 255) and tuple(canvas[100, 120]) == (0, 0, 255)
    assert tuple(canvas[105, 80]) == (0, 0, 0)  # 2 px line


def test_face_points_are_white_dots_and_edge_points_count_as_missing():
    face = [(0.5, 0.5), (0.0, 0.5), None]
    canvas = draw_face(_canvas(), face)
    assert tuple(canvas[100, 100]) == (255, 255, 255) and tuple(canvas[100, 103]) == (255, 255, 255)
    assert tuple(canvas[100, 105]) == (0, 0, 0)
    assert canvas[:, :10].max() == 0  # x = 0 is "not found", as the detectors write it


def test_draw_poses_draws_only_the_parts_asked_for():
    body = [None] * 18
    body[0] = (0.5, 0.5)
    pose = Pose(body=body, face=[(0.25, 0.25)])
    both = draw_poses([pose], 100, 100)
    assert tuple(both[50, 50]) == BODY_COLORS[0] and tuple(both[25, 25]) == (255, 255, 255)
    face_only = draw_poses([pose], 100, 100, body=False)
    assert face_only[50, 50].max() == 0 and tuple(face_only[25, 25]) == (255, 255, 255)


# ---- grouping people from maps ----------------------------------------------------------------

PERSON = [
    (64, 20), (64, 35), (50, 35), (45, 55), (42, 72), (78, 35), (83, 55), (86, 72), (56, 75),
    (55, 95), (55, 115), (72, 75), (73, 95), (73, 115), (61, 16), (67, 16), (56, 19), (72, 19),
]  # fmt: skip


def _maps_of(people: list[list[tuple[int, int]]], size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps with a unit bump at each point and affinity fields along each limb, as a trained net gives."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    heat = np.zeros((size, size, 19))
    paf = np.zeros((size, size, 38))
    for person in people:
        for part, (x, y) in enumerate(person):
            heat[:, :, part] = np.maximum(heat[:, :, part], np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0))
        for (a, b), (cx, cy) in openpose.BODY_PAF_LIMBS:
            (ax, ay), (bx, by) = person[a], person[b]
            length = max(np.hypot(bx - ax, by - ay), 1e-6)
            ux, uy = (bx - ax) / length, (by - ay) / length
            along = (xx - ax) * ux + (yy - ay) * uy
            across = np.abs((xx - ax) * uy - (yy - ay) * ux)
            band = (along >= -1) & (along <= length + 1) & (across <= 2)
            paf[band, cx], paf[band, cy] = ux, uy
    return heat, paf


def test_one_person_is_found_with_every_point():
    heat, paf = _maps_of([PERSON])
    bodies = openpose.group_people(heat, paf)
    assert len(bodies) == 1
    assert [tuple(int(v) for v in p) for p in bodies[0]] == PERSON


def test_two_people_side_by_side_stay_apart():
    other = [(x + 0, y) for x, y in PERSON]
    left = [(x - 30, y) for x, y in PERSON]
    right = [(x + 30, y) for x, y in other]
    heat, paf = _maps_of([left, right], size=160)
    bodies = sorted(openpose.group_people(heat, paf), key=lambda b: b[1][0])
    assert len(bodies) == 2
    assert [tuple(int(v) for v in p) for p in bodies[0]] == left
    assert [tuple(int(v) for v in p) for p in bodies[1]] == right


def test_no_fields_no_people_and_hand_and_face_boxes():
    heat, _ = _maps_of([PERSON])
    assert openpose.group_people(heat, np.zeros((128, 128, 38))) == []
    body: list = [None] * 18
    body[5], body[6], body[7] = (100.0, 100.0), (100.0, 140.0), (100.0, 170.0)  # left arm straight down
    boxes = openpose.hand_boxes(body, 400, 400)
    size = 1.5 * max(30, 0.9 * 40)
    assert boxes == [(int(100 - size / 2), int(170 + 0.33 * 30 - size / 2), int(size), True)]
    body[0], body[14] = (200.0, 100.0), (190.0, 95.0)
    assert openpose.face_box(body, 400, 400) == (170, 70, 60)
    body[14] = (198.0, 99.0)
    assert openpose.face_box(body, 400, 400) is None  # under 20 px


# ---- the networks on the real files' layouts -------------------------------------------------


def _save_random(model: torch.nn.Module, path: Path, strip_block: bool) -> None:
    torch.manual_seed(0)
    state = {}
    for key, value in model.state_dict().items():
        name = key.split(".", 1)[1] if strip_block else key
        state[name] = (torch.randn_like(value) * 0.01).half()
    torch.save(state, path)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """Random weights under the real file names with the real keys (body/hand: no block prefix; face: flat)."""
    folder = tmp_path_factory.mktemp("annotators")
    _save_random(BodyPoseNet(), folder / "body_pose_model.pth", strip_block=True)
    _save_random(HandPoseNet(), folder / "hand_pose_model.pth", strip_block=True)
    _save_random(FaceNet(), folder / "facenet.pth", strip_block=False)
    return folder


def test_the_files_load_with_and_without_the_block_prefix(weights_dir, tmp_path):
    state = torch.load(weights_dir / "body_pose_model.pth", weights_only=True)
    assert "conv1_1.weight" in state and "Mconv7_stage6_L2.bias" in state and "conv5_5_CPM_L1.weight" in state
    assert state["Mconv7_stage6_L1.weight"].shape == (38, 128, 1, 1)
    body = load_pose_weights(BodyPoseNet(), weights_dir / "body_pose_model.pth")
    assert torch.equal(body.model6_2.Mconv7_stage6_L2.bias, state["Mconv7_stage6_L2.bias"].float())
    prefixed = tmp_path / "prefixed.pth"
    torch.save(BodyPoseNet().state_dict(), prefixed)
    load_pose_weights(BodyPoseNet(), prefixed)
    with pytest.raises(LorastudioError, match="hand_pose_model.pth: key 'conv4_3_CPM.weight' is missing"):
        load_pose_weights(BodyPoseNet(), weights_dir / "hand_pose_model.pth")
    face = torch.load(weights_dir / "facenet.pth", weights_only=True)
    assert face["conv6_2_CPM.weight"].shape == (71, 512, 1, 1) and face["Mconv1_stage2.weight"].shape[1] == 199


def test_openpose_runs_end_to_end_on_random_weights(weights_dir, monkeypatch):
    monkeypatch.setattr(openpose, "HAND_BOX_SIZES", (64,))
    monkeypatch.setattr(openpose, "FACE_INPUT_SIZE", 64)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8))
    for name in ("openpose", "openpose_full"):
        ctx = annotator_context(name, resolution=64, weights_dir=weights_dir)
        result = run_annotator(name, image, ctx)
        assert result.size == (96, 64) and result.mode == "RGB"


def test_hands_and_face_run_for_each_person_found(weights_dir, monkeypatch):
    monkeypatch.setattr(openpose, "HAND_BOX_SIZES", (64,))
    monkeypatch.setattr(openpose, "FACE_INPUT_SIZE", 64)
    person = [(x * 2.0, y * 2.0) for x, y in PERSON]  # on a 256 px image
    monkeypatch.setattr(openpose, "group_people", lambda heat, paf: [person])
    image = np.full((256, 256, 3), 127, dtype=np.uint8)
    body = openpose._net(BodyPoseNet, weights_dir / "body_pose_model.pth", "cpu")
    hand = openpose._net(HandPoseNet, weights_dir / "hand_pose_model.pth", "cpu")
    face = openpose._net(FaceNet, weights_dir / "facenet.pth", "cpu")
    poses = openpose.detect_poses(image, body, hand, face)
    assert len(poses) == 1
    pose = poses[0]
    assert len(pose.left_hand) == 21 and len(pose.right_hand) == 21 and len(pose.face) == 70
    assert pose.body[1] == (128 / 256, 70 / 256)
    drawn = draw_poses(poses, 256, 256, hands=False, face=False)
    assert tuple(drawn[70, 114]) == (153, 0, 0)  # neck (128, 70) - right shoulder (100, 70), middle
    found = poses_json(poses, 256, 256)
    assert found["canvas_width"] == 256 and len(found["people"]) == 1
    person = found["people"][0]
    assert person["pose_keypoints_2d"][3:6] == [128.0, 70.0, 1.0]  # the neck, in pixels
    assert len(person["face_keypoints_2d"]) == 70 * 3 and len(person["hand_left_keypoints_2d"]) == 21 * 3


def test_missing_weights_name_the_file_and_folder(weights_dir, tmp_path):
    (tmp_path / "body_pose_model.pth").write_bytes((weights_dir / "body_pose_model.pth").read_bytes())
    ctx = annotator_context("openpose_hand", resolution=64, weights_dir=tmp_path)
    with pytest.raises(LorastudioError) as error:
        run_annotator("openpose_hand", Image.new("RGB", (64, 64)), ctx)
    assert "hand_pose_model.pth" in str(error.value) and str(tmp_path) in str(error.value)
    assert "download" in str(error.value)


# ---- mediapipe -------------------------------------------------------------------------------


def _landmarks() -> list[list[float]]:
    points = [[0.5, 0.5, 0.9] for _ in range(33)]
    points[11] = [0.6, 0.3, 0.99]  # left shoulder
    points[12] = [0.4, 0.3, 0.99]  # right shoulder
    points[0] = [0.5, 0.15, 0.99]  # nose
    points[27] = [0.6, 0.95, 0.2]  # left ankle, hardly visible
    points[28] = [0.4, 1.2, 0.99]  # right ankle, outside the image
    return points


def test_mediapipe_landmarks_map_onto_the_openpose_points():
    pose = mediapipe_to_pose(_landmarks(), [[i / 500, i / 500] for i in range(478)])
    assert pose.body[0] == (0.5, 0.15)
    assert pose.body[1] == pytest.approx((0.5, 0.3))  # neck: between the shoulders
    assert pose.body[2] == (0.4, 0.3) and pose.body[5] == (0.6, 0.3)  # right is the person's right
    assert pose.body[13] is None and pose.body[10] is None
    assert len(pose.face) == 70 and pose.face[0] == (162 / 500, 162 / 500) and pose.face[69] == (473 / 500, 473 / 500)
    assert len(mediapipe_to_pose(None, [[0.5, 0.5]] * 468).face) == 68
    assert mediapipe_to_pose(None, None) is None


def test_mediapipe_needs_its_interpreter(monkeypatch):
    monkeypatch.delenv(MEDIAPIPE_PYTHON_ENV, raising=False)
    with pytest.raises(LorastudioError, match=MEDIAPIPE_PYTHON_ENV) as error:
        run_annotator("mediapipe", Image.new("RGB", (64, 64)), annotator_context("mediapipe", resolution=64))
    assert "mediapipe==0.10.21" in str(error.value) and "\n" not in str(error.value)


def test_mediapipe_worker_output_is_drawn_as_an_openpose_map(monkeypatch, tmp_path):
    """A stand-in interpreter prints what the worker prints: the subprocess path end to end, no mediapipe."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho '" + json.dumps({"pose": _landmarks(), "face": None}) + "'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv(MEDIAPIPE_PYTHON_ENV, str(fake))
    ctx = annotator_context("mediapipe", resolution=128)
    result = np.asarray(run_annotator("mediapipe_openpose", Image.new("RGB", (128, 128)), ctx))
    assert tuple(result[38, 64]) == BODY_COLORS[1]  # the neck at (0.5, 0.3)
    assert tuple(result[38, 57]) == (153, 0, 0)  # neck - right shoulder limb, red x 0.6
    assert result[120:].max() == 0  # the ankles: one hardly visible, one outside
    ctx = annotator_context("mediapipe", resolution=100)
    ctx.poses = []
    run_annotator("mediapipe", Image.new("RGB", (100, 100)), ctx)  # padded to 128 inside
    assert ctx.poses[0]["canvas_width"] == 100 and ctx.poses[0]["canvas_height"] == 100
    assert ctx.poses[0]["people"][0]["pose_keypoints_2d"][:3] == [64.0, pytest.approx(0.15 * 128), 1.0]
    assert ctx.poses[0]["people"][0]["pose_keypoints_2d"][30:33] == [0.0, 0.0, 0.0]  # right ankle (point 10): missing


@pytest.mark.skipif(not os.environ.get(MEDIAPIPE_PYTHON_ENV), reason=f"{MEDIAPIPE_PYTHON_ENV} is not set")
def test_real_mediapipe_runs_on_a_blank_image():
    result = run_annotator("mediapipe", Image.new("RGB", (128, 128), "white"), annotator_context("mediapipe", resolution=128))
    assert result.size == (128, 128) and np.asarray(result).max() == 0  # nobody there


def _sample_photo(python: str) -> Path | None:
    """matplotlib's public-domain portrait (mediapipe's interpreter has matplotlib), if it is there."""
    import subprocess

    code = "import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path(), 'sample_data', 'grace_hopper.jpg'))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    path = Path(done.stdout.strip()) if done.returncode == 0 else None
    return path if path is not None and path.is_file() else None


@pytest.mark.skipif(not os.environ.get(MEDIAPIPE_PYTHON_ENV), reason=f"{MEDIAPIPE_PYTHON_ENV} is not set")
def test_real_mediapipe_finds_the_person_in_a_portrait():
    photo = _sample_photo(os.environ[MEDIAPIPE_PYTHON_ENV])
    if photo is None:
        pytest.skip("no sample portrait in the mediapipe interpreter")
    result = np.asarray(run_annotator("mediapipe", Image.open(photo), annotator_context("mediapipe", resolution=256)))
    colours = {tuple(c) for c in result.reshape(-1, 3)}
    assert BODY_COLORS[1] in colours and BODY_COLORS[0] in colours  # neck and nose discs
    assert (result == 255).all(axis=2).sum() > 50  # face dots
