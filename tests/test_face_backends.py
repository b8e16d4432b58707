"""Bring-your-own-weights face backends, on tiny ONNX models built here with the real contracts.

YuNet (cv2.FaceDetectorYN): input [1, 3, H, W] raw BGR; outputs cls/obj/bbox/kps per stride 8/16/32.
SFace (cv2.FaceRecognizerSF): aligned 112 px RGB, raw 0-255 -> [1, 128].
insightface: SCRFD det_10g (9 outputs: scores, box distances, 5 points per stride; (x - 127.5) / 128)
and ArcFace w600k_r50 ([N, 3, 112, 112] RGB, (x - 127.5) / 127.5 -> [N, 512]).
The recognisers' first three outputs are the input's channel means (the rest random), so the tests
see exactly what preprocessing each backend applied. The detectors plant one face at a known place.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lorastudio.errors import LorastudioError, NotFoundError  # noqa: E402
from lorastudio.portrait.faces import Face  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "faces"
SIZE = 512  # the astronaut photo is 512 x 512


# --- tiny ONNX models ------------------------------------------------------------------------


def _save(nodes, inits, inputs, outputs, path: Path) -> Path:
    model = helper.make_model(helper.make_graph(nodes, path.stem, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])  # fmt: skip
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _head(nodes, inits, source: str, name: str, stride: int, planted: np.ndarray, shape: list[int]) -> None:
    """A zero-weight strided Conv, reshaped to rows, plus `planted` values: the output does not depend on the image."""
    channels = planted.size // ((SIZE_IN[0] // stride) ** 2)
    inits.append(numpy_helper.from_array(np.zeros((channels, 3, stride, stride), np.float32), f"{name}_w"))
    inits.append(numpy_helper.from_array(np.zeros(channels, np.float32), f"{name}_b"))
    inits.append(numpy_helper.from_array(np.array(shape, np.int64), f"{name}_shape"))
    inits.append(numpy_helper.from_array(planted.reshape(shape).astype(np.float32), f"{name}_p"))
    nodes += [
        helper.make_node("Conv", [source, f"{name}_w", f"{name}_b"], [f"{name}_c"], kernel_shape=[stride, stride], strides=[stride, stride]),
        helper.make_node("Transpose", [f"{name}_c"], [f"{name}_t"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", [f"{name}_t", f"{name}_shape"], [f"{name}_r"]),
        helper.make_node("Add", [f"{name}_r", f"{name}_p"], [name]),
    ]


SIZE_IN = [SIZE]


def build_yunet(path: Path) -> Path:
    """One face at stride 16, place (row 8, col 13): centre (208, 128), 80 x 80 px, score 0.9."""
    SIZE_IN[0] = SIZE
    nodes, inits, outputs = [], [], []
    for kind, per_row in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            places = (SIZE // stride) ** 2
            planted = np.zeros((places, per_row), np.float32)
            if stride == 16:
                index = 8 * (SIZE // 16) + 13
                if kind in ("cls", "obj"):
                    planted[index] = 0.9
                elif kind == "bbox":
                    planted[:, 2:] = np.log(5.0)
                else:
                    planted[index] = [-1, -1, 1, -1, 0, 0, -0.5, 1, 0.5, 1]
            _head(nodes, inits, "input", f"{kind}_{stride}", stride, planted, [1, places, per_row])
            outputs.append(helper.make_tensor_value_info(f"{kind}_{stride}", TensorProto.FLOAT, [1, places, per_row]))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])]
    return _save(nodes, inits, inputs, outputs, path)


def build_scrfd(path: Path) -> Path:
    """SCRFD at 640 x 640, 2 anchors per place: a face at stride 16, place (8, 13), centre (208, 128) in
    640 px, 2.5 strides to each side; a weaker copy on the second anchor (NMS drops it); one below 0.5."""
    SIZE_IN[0] = 640
    nodes, inits, outputs = [], [], []
    for kind, per_row in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            rows = (640 // stride) ** 2 * 2
            planted = np.zeros((rows, per_row), np.float32)
            if stride == 16:
                index = (8 * (640 // 16) + 13) * 2
                if kind == "score":
                    planted[index], planted[index + 1], planted[index + 40] = 0.9, 0.8, 0.3
                elif kind == "bbox":
                    planted[:] = 2.5
                else:
                    planted[:] = [-1, -1, 1, -1, 0, 0, -0.5, 1, 0.5, 1]
            name = f"{kind}_{stride}"
            _head(nodes, inits, "input.1", name, stride, planted, [rows, per_row])
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [rows, per_row]))
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])]
    return _save(nodes, inits, inputs, outputs, path)


def build_recogniser(path: Path, dims: int, batch) -> Path:
    """GlobalAveragePool -> Flatten -> Gemm; outputs 0-2 are the input's channel means, the rest random."""
    weight = np.random.default_rng(0).normal(size=(3, dims)).astype(np.float32) * 0.1
    weight[:, :3] = np.eye(3, dtype=np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w"], ["embedding"])]  # fmt: skip
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, 112, 112])]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dims])]
    return _save(nodes, [numpy_helper.from_array(weight, "w")], inputs, outputs, path)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    return {
        "yunet": build_yunet(folder / "face_detection_yunet_2023mar.onnx"),
        "sface": build_recogniser(folder / "face_recognition_sface_2021dec.onnx", 128, 1),
        "scrfd": build_scrfd(folder / "det_10g.onnx"),
        "arcface": build_recogniser(folder / "w600k_r50.onnx", 512, "N"),
    }


def _install(ws, name: str, *files: Path) -> Path:
    folder = ws.models / "faces" / name
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


@pytest.fixture
def astronaut() -> Image.Image:
    return Image.open(FIXTURES / "astronaut.jpg").convert("RGB")


def _solid(colour=(200, 100, 50)) -> Image.Image:
    return Image.new("RGB", (SIZE, SIZE), colour)


# --- OpenCV zoo: YuNet + SFace ----------------------------------------------------------------


def test_yunet_and_sface_run_through_cv2_with_the_real_contract(workspace, onnx_files):
    from lorastudio.service.faces import open_backend

    _install(workspace, "zoo", onnx_files["yunet"], onnx_files["sface"])
    backend = open_backend(workspace, "zoo")
    assert backend.name == "zoo" and "MIT" in backend.licence and backend.metric == "cosine"
    faces = backend.detect(_solid())
    assert len(faces) == 1
    face = faces[0]
    assert face.box == pytest.approx((168, 88, 248, 168), abs=0.5)  # centre (208, 128), 80 x 80
    assert face.points["left_eye"] == pytest.approx((192, 112), abs=0.5)
    assert face.points["right_eye"] == pytest.approx((224, 112), abs=0.5)
    assert face.points["mouth_left"] == pytest.approx((200, 144), abs=0.5)
    assert face.score == pytest.approx(0.9, abs=1e-3) and not face.estimated
    # SFace gets the aligned face as raw RGB 0-255: the fake's first outputs are the channel means.
    embedding = backend.embed(_solid(), face)
    assert embedding.shape == (128,)
    assert embedding[:3] == pytest.approx([200, 100, 50], abs=1.0)
    assert backend.distance(embedding, embedding) == pytest.approx(0.0, abs=1e-6)
    other = backend.embed(_solid((50, 100, 200)), face)
    assert backend.distance(embedding, other) > 0.1


def test_an_opencv_zoo_folder_without_the_recogniser_names_the_missing_file(workspace, onnx_files):
    from lorastudio.service.faces import list_backends, open_backend

    _install(workspace, "half", onnx_files["yunet"])
    with pytest.raises(LorastudioError, match=r"no \*sface\*\.onnx file"):
        open_backend(workspace, "half")
    row = next(r for r in list_backends(workspace) if r["name"] == "half")
    assert row["kind"] == "opencv-zoo" and "sface" in row["error"] and "MIT" in row["licence"]


# --- insightface packs: SCRFD + ArcFace with onnxruntime ---------------------------------------


def test_scrfd_decoding_places_boxes_and_points_and_suppresses_overlaps():
    from lorastudio.portrait.backends.insightface_onnx import decode_scrfd

    outputs = []
    for kind, per_row in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            rows = (64 // stride) ** 2 * 2
            planted = np.zeros((rows, per_row), np.float32)
            if stride == 8:
                index = (2 * 8 + 3) * 2  # row 2, col 3: centre (24, 16)
                if kind == "score":
                    planted[index], planted[index + 1] = 0.95, 0.7
                elif kind == "bbox":
                    planted[:] = [1, 2, 3, 4]
                else:
                    planted[:] = np.arange(10) / 10
            outputs.append(planted)
    boxes, scores, points = decode_scrfd(outputs, 64, 64)
    assert scores.tolist() == pytest.approx([0.95])
    assert boxes[0].tolist() == pytest.approx([24 - 8, 16 - 16, 24 + 24, 16 + 32])
    assert points[0, 0].tolist() == pytest.approx([24 + 0.0, 16 + 0.8])
    assert points[0, 4].tolist() == pytest.approx([24 + 6.4, 16 + 7.2])


def test_insightface_pack_detects_embeds_and_shows_its_non_commercial_licence(workspace, onnx_files, astronaut):
    from lorastudio.service.faces import list_backends, open_backend

    _install(workspace, "buffalo_l", onnx_files["scrfd"], onnx_files["arcface"])
    backend = open_backend(workspace, "buffalo_l")
    assert "non-commercial" in backend.licence
    faces = backend.detect(astronaut)
    assert len(faces) == 1  # the weaker overlapping anchor is suppressed, the 0.3 one is under the threshold
    face = faces[0]
    # 208 +- 40 and 128 +- 40 in the 640 px letterbox; the photo was scaled by 640 / 512.
    assert face.box == pytest.approx((168 / 1.25, 88 / 1.25, 248 / 1.25, 168 / 1.25), abs=0.01)
    assert face.points["left_eye"] == pytest.approx((192 / 1.25, 112 / 1.25), abs=0.01)
    assert face.points["mouth_right"] == pytest.approx((216 / 1.25, 144 / 1.25), abs=0.01)
    # ArcFace gets [N, 3, 112, 112] RGB scaled (x - 127.5) / 127.5.
    embedding = backend.embed(_solid(), face)
    assert embedding.shape == (512,)
    assert embedding[:3] == pytest.approx([(200 - 127.5) / 127.5, (100 - 127.5) / 127.5, (50 - 127.5) / 127.5], abs=0.01)
    row = next(r for r in list_backends(workspace) if r["name"] == "buffalo_l")
    assert row["kind"] == "insightface" and row["error"] is None and "non-commercial" in row["licence"]


def test_face_backends_cli_lists_dlib_and_the_folders_with_licences(workspace, onnx_files):
    from lorastudio.cli import _register, app

    _register()
    _install(workspace, "antelopev2", onnx_files["scrfd"])  # no recogniser
    (workspace.models / "faces" / "junk").mkdir()
    result = CliRunner().invoke(app, ["face", "backends", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)["backends"]}
    assert rows["dlib"]["default"] and rows["dlib"]["error"] is None
    assert "glintr100.onnx" in rows["antelopev2"]["error"] and "non-commercial" in rows["antelopev2"]["licence"]
    assert "neither YuNet" in rows["junk"]["error"]
    text = CliRunner().invoke(app, ["face", "backends"]).output
    assert "non-commercial" in text and "dlib (default)" in text


def test_a_missing_backend_folder_is_one_line_naming_it(workspace):
    from lorastudio.service.faces import open_backend

    with pytest.raises(NotFoundError, match="no folder .*models/faces/buffalo_l"):
        open_backend(workspace, "buffalo_l")
    with pytest.raises(LorastudioError, match="not allowed"):
        open_backend(workspace, "../models")


def test_faces_from_one_backend_embed_in_another(workspace, onnx_files, astronaut):
    """A dlib face (estimated mouth) aligns by its eyes for an ONNX recogniser."""
    from lorastudio.service.faces import open_backend

    _install(workspace, "arc", onnx_files["scrfd"], onnx_files["arcface"])
    face = Face(box=(175, 76, 265, 166), points={"left_eye": (203.5, 102), "right_eye": (246, 104.5),
                "nose": (224, 135), "mouth_left": (204, 151), "mouth_right": (239, 153)},
                estimated=("mouth_left", "mouth_right"))  # fmt: skip
    embedding = open_backend(workspace, "arc").embed(astronaut, face)
    assert embedding.shape == (512,) and np.isfinite(embedding).all()
