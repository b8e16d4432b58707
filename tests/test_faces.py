"""The face toolkit on real public-domain photos (tests/fixtures/faces): dlib detection and identity,
alignment, crops, masks, colour transfer, person mask, the CLI, the API and `--face-crop`."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from lorastudio.errors import LorastudioError
from lorastudio.portrait.faces import Face

pytest.importorskip("dlib")

FIXTURES = Path(__file__).parent / "fixtures" / "faces"
ASTRONAUT = FIXTURES / "astronaut.jpg"
HOPPER = FIXTURES / "grace_hopper.jpg"
# dlib's HOG boxes on the fixtures (x0, y0, x1, y1), stored when the fixtures were added.
ASTRONAUT_BOX = (179, 83, 266, 170)
HOPPER_BOX = (161, 137, 376, 352)
# ... and their eyes and (bottom of the) nose.
ASTRONAUT_POINTS = {"left_eye": (203.5, 102.0), "right_eye": (246.0, 104.5), "nose": (224.0, 135.0)}
HOPPER_POINTS = {"left_eye": (223.0, 193.5), "right_eye": (307.5, 190.5), "nose": (270.0, 252.0)}


@pytest.fixture(scope="module")
def dlib_backend():
    from lorastudio.portrait.backends.dlib_backend import DlibBackend

    return DlibBackend()


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {"astronaut": Image.open(ASTRONAUT).convert("RGB"), "hopper": Image.open(HOPPER).convert("RGB")}


@pytest.fixture(scope="module")
def faces(dlib_backend, photos) -> dict[str, Face]:
    found = {name: dlib_backend.detect(image) for name, image in photos.items()}
    assert {name: len(f) for name, f in found.items()} == {"astronaut": 1, "hopper": 1}
    return {name: f[0] for name, f in found.items()}


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _tiled(photos) -> Image.Image:
    hopper = photos["hopper"].resize((512, 600))
    canvas = Image.new("RGB", (1024, 600), "white")
    canvas.paste(photos["astronaut"], (0, 44))
    canvas.paste(hopper, (512, 0))
    return canvas


# --- detection and identity -------------------------------------------------------------------


def test_dlib_finds_one_face_per_photo_at_the_stored_box_with_eyes_above_the_nose(faces):
    for name, stored, points in (("astronaut", ASTRONAUT_BOX, ASTRONAUT_POINTS), ("hopper", HOPPER_BOX, HOPPER_POINTS)):
        face = faces[name]
        assert face.box == pytest.approx(stored, abs=3), name
        for point, where in points.items():
            assert face.points[point] == pytest.approx(where, abs=3), (name, point)
        (lx, ly), (rx, ry), (nx, ny) = face.points["left_eye"], face.points["right_eye"], face.points["nose"]
        assert lx < nx < rx, name  # image-left eye first
        assert max(ly, ry) < ny, name  # eyes above the nose
        x0, y0, x1, y1 = face.box
        for x, y in face.points.values():
            assert x0 - 5 <= x <= x1 + 5 and y0 - 5 <= y <= y1 + 5, name
        assert abs(face.roll_degrees) < 10 and face.size > 80
        assert set(face.estimated) == {"nose", "mouth_left", "mouth_right"}
        assert face.points["mouth_left"][1] > ny  # the estimated mouth is below the nose


def test_the_same_person_is_below_the_threshold_and_two_people_above(dlib_backend, photos, faces):
    astronaut = photos["astronaut"]
    reference = dlib_backend.embed(astronaut, faces["astronaut"])
    variants = {
        "flip": ImageOps.mirror(astronaut),
        "jpeg q30": _jpeg(astronaut, 30),
        "crop": astronaut.crop((40, 20, 472, 452)),
        "half size": astronaut.resize((256, 256)),
    }
    for label, variant in variants.items():
        found = dlib_backend.detect(variant)
        assert len(found) == 1, label
        distance = dlib_backend.distance(reference, dlib_backend.embed(variant, found[0]))
        assert distance < dlib_backend.threshold - 0.2, (label, distance)
    other = dlib_backend.embed(photos["hopper"], faces["hopper"])
    assert dlib_backend.distance(reference, other) > dlib_backend.threshold


def test_a_tiled_two_person_image_gives_two_faces_left_to_right(dlib_backend, photos, faces):
    tiled = _tiled(photos)
    found = dlib_backend.detect(tiled)
    assert len(found) == 2
    assert found[0].centre[0] < 512 < found[1].centre[0]
    reference = dlib_backend.embed(photos["astronaut"], faces["astronaut"])
    left, right = (dlib_backend.embed(tiled, face) for face in found)
    assert dlib_backend.distance(reference, left) < dlib_backend.threshold < dlib_backend.distance(reference, right)


def test_missing_dlib_is_one_line_with_the_install_hint(monkeypatch, workspace):
    from lorastudio.portrait.backends import dlib_backend
    from lorastudio.service import faces as service_faces

    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError
    monkeypatch.setattr(service_faces, "_OPEN", {})
    dlib_backend._models.cache_clear()
    try:
        with pytest.raises(LorastudioError, match=r'pip install "lorastudio\[portrait\]"'):
            service_faces.open_backend(workspace)
        rows = service_faces.list_backends(workspace)
        assert "lorastudio[portrait]" in rows[0]["error"]
    finally:
        dlib_backend._models.cache_clear()
    monkeypatch.setattr(dlib_backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LorastudioError, match="face_recognition_models"):
        dlib_backend.dlib_model_folder()


# --- alignment and crops ----------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_rotation_scale_and_shift():
    from lorastudio.portrait.align import similarity_transform

    points = np.array([[10, 20], [60, 25], [35, 50], [15, 80], [55, 82]], dtype=np.float64)
    angle, scale, shift = np.radians(17), 1.7, np.array([5.0, -3.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = points @ rotation.T + shift
    assert similarity_transform(points, moved) == pytest.approx(np.hstack([rotation, shift[:, None]]), abs=1e-9)


def test_alignment_puts_the_eyes_on_the_template_points(photos, faces, dlib_backend):
    from lorastudio.portrait.align import align_face, alignment_matrix, template_points

    for name in ("astronaut", "hopper"):
        face = faces[name]
        for size in (112, 224):
            matrix = alignment_matrix(face, size)
            template = template_points(size)
            for eye in ("left_eye", "right_eye"):
                x, y = face.points[eye]
                assert matrix @ np.array([x, y, 1.0]) == pytest.approx(template[eye], abs=0.5)
        aligned = align_face(photos[name], face, 224)
        assert aligned.size == (224, 224)
        # The aligned face is found again, with its eyes near the template's.
        again = dlib_backend.detect(aligned.resize((448, 448)))
        assert len(again) == 1
        for eye in ("left_eye", "right_eye"):
            assert np.subtract(again[0].points[eye], np.multiply(template_points(448)[eye], 1)) == pytest.approx((0, 0), abs=8)


def test_crop_around_is_a_square_about_three_face_boxes_inside_the_image(photos, faces):
    from lorastudio.portrait.align import crop_around

    image, face = photos["hopper"], faces["hopper"]
    crop, box = crop_around(image, face, scale=2.0)
    side = 2.0 * max(face.width, face.height)
    assert crop.size == (box[2] - box[0], box[3] - box[1]) and crop.width == crop.height
    assert crop.width == pytest.approx(side, abs=1)
    assert box[0] <= face.box[0] and box[1] <= face.box[1] and box[2] >= face.box[2] and box[3] >= face.box[3]
    crop, box = crop_around(image, face, scale=3.0)  # larger than the image's width: shrunk, still square, inside
    assert crop.width == crop.height == 512 and 0 <= box[1] and box[3] <= 600


def test_warp_face_moves_the_source_face_onto_the_target_points(dlib_backend, photos, faces):
    from lorastudio.portrait.align import warp_face

    tiled = _tiled(photos)
    target = dlib_backend.detect(tiled)[1]  # Grace Hopper's place in the template
    warped = warp_face(photos["astronaut"], faces["astronaut"], tiled, target)
    assert warped.size == tiled.size
    found = dlib_backend.detect(warped)
    right = max(found, key=lambda f: f.centre[0])
    assert np.subtract(right.centre, target.centre) == pytest.approx((0, 0), abs=target.size * 0.15)
    reference = dlib_backend.embed(photos["astronaut"], faces["astronaut"])
    assert dlib_backend.distance(reference, dlib_backend.embed(warped, right)) < dlib_backend.threshold
    # Outside the face mask the template is unchanged.
    assert warped.getpixel((5, 5)) == tiled.getpixel((5, 5))


# --- masks and colour -------------------------------------------------------------------------


def test_masks_cover_the_face_and_not_the_corners(photos, faces):
    from lorastudio.portrait.masks import face_mask, lip_mask, skin_mask

    image, face = photos["hopper"], faces["hopper"]
    hard = np.asarray(face_mask(image.size, face, feather=0))
    soft = np.asarray(face_mask(image.size, face, feather=12))
    for x, y in (*face.points.values(), face.centre):
        assert hard[int(y), int(x)] == 255 and soft[int(y), int(x)] > 200
    for x, y in ((0, 0), (image.width - 1, 0), (0, image.height - 1), (image.width - 1, image.height - 1)):
        assert hard[y, x] == 0 and soft[y, x] == 0
    assert ((soft > 0) & (soft < 255)).sum() > ((hard > 0) & (hard < 255)).sum() + 1000  # feathered edge
    assert 0.6 < (hard > 0).sum() / (face.width * face.height) < 2.0
    skin = np.asarray(skin_mask(image, face, feather=0))
    (lx, ly), (mx, my) = face.points["left_eye"], face.points["mouth_left"]
    assert skin[int(ly), int(lx)] == 0  # the eye is not skin
    cheek = (int((lx + mx) / 2), int((ly + my) / 2))
    assert skin[cheek[1], cheek[0]] == 255
    assert skin[0, 0] == 0 and (skin > 0).sum() < (hard > 0).sum()
    lips = np.asarray(lip_mask(image.size, face))
    mouth = np.mean([face.points["mouth_left"], face.points["mouth_right"]], axis=0).astype(int)
    assert lips[mouth[1], mouth[0]] == 255 and lips[int(ly), int(lx)] == 0


def test_colour_transfer_moves_the_lab_mean_toward_the_reference_inside_the_mask_only(photos, faces):
    import cv2

    from lorastudio.portrait.colour import transfer_colour
    from lorastudio.portrait.masks import face_mask

    source, face = photos["astronaut"], faces["astronaut"]
    reference = Image.new("RGB", (64, 64), (90, 140, 220))  # a blue cast
    mask = face_mask(source.size, face, feather=0)
    result = transfer_colour(source, reference, mask)

    def lab_mean(image, where):
        lab = cv2.cvtColor(np.asarray(image, dtype=np.float32) / 255.0, cv2.COLOR_RGB2LAB)
        return lab[where].mean(axis=0)

    inside = np.asarray(mask) > 0
    target = lab_mean(reference, np.ones((64, 64), bool))
    before, after = lab_mean(source, inside), lab_mean(result, inside)
    assert np.linalg.norm(after - target) < 0.2 * np.linalg.norm(before - target)
    assert np.array_equal(np.asarray(result)[~inside], np.asarray(source)[~inside])


def test_person_mask_grabcut_keeps_the_face_and_drops_the_corners(photos, faces):
    from lorastudio.portrait.masks import person_mask

    image = photos["astronaut"].resize((256, 256))
    face = faces["astronaut"].scaled(0.5)
    mask = np.asarray(person_mask(image, face))
    cx, cy = (int(v) for v in face.centre)
    assert mask[cy, cx] == 255 and mask[0, 0] == 0 and mask[0, 255] == 0
    assert 0.1 < (mask > 0).mean() < 0.9


def test_person_mask_uses_mediapipe_through_its_interpreter_when_set(tmp_path, monkeypatch, photos):
    """A stand-in mediapipe (left half is the person) in a stand-in interpreter runs the real worker."""
    from lorastudio.portrait.masks import person_mask

    package = tmp_path / "fake" / "mediapipe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import types, numpy as np\n"
        "class SelfieSegmentation:\n"
        "    def __init__(self, model_selection=0): pass\n"
        "    def __enter__(self): return self\n"
        "    def __exit__(self, *a): return False\n"
        "    def process(self, pixels):\n"
        "        mask = np.zeros(pixels.shape[:2], np.float32); mask[:, : pixels.shape[1] // 2] = 1.0\n"
        "        return types.SimpleNamespace(segmentation_mask=mask)\n"
        "solutions = types.SimpleNamespace(selfie_segmentation=types.SimpleNamespace(SelfieSegmentation=SelfieSegmentation))\n"
    )
    interpreter = tmp_path / "python"
    interpreter.write_text(f'#!/bin/sh\nPYTHONPATH="{package.parent}" exec "{sys.executable}" "$@"\n')
    interpreter.chmod(0o755)
    monkeypatch.setenv("LORASTUDIO_MEDIAPIPE_PYTHON", str(interpreter))
    mask = np.asarray(person_mask(photos["astronaut"].resize((128, 96))))
    assert mask.shape == (96, 128) and mask[:, :60].min() == 255 and mask[:, 68:].max() == 0


# --- service, CLI, API, data sets ---------------------------------------------------------------


def test_face_detect_and_compare_json_end_to_end(cli, tmp_path):
    result = cli("face", "detect", ASTRONAUT, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["backend"] == "dlib" and (report["width"], report["height"]) == (512, 512)
    assert len(report["faces"]) == 1 and report["faces"][0]["box"] == pytest.approx(ASTRONAUT_BOX, abs=3)
    assert set(report["faces"][0]["points"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}

    flipped = tmp_path / "flipped.png"
    ImageOps.mirror(Image.open(ASTRONAUT)).save(flipped)
    same = json.loads(cli("face", "compare", ASTRONAUT, flipped, "--json").output)
    assert same["same_person"] and same["distance"] < same["threshold"] == 0.6
    different = json.loads(cli("face", "compare", ASTRONAUT, HOPPER, "--json").output)
    assert not different["same_person"] and different["distance"] > 0.6

    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), "grey").save(blank)
    result = cli("face", "compare", ASTRONAUT, blank)
    assert result.exit_code == 2 and "blank.png: no face found" in result.output
    result = cli("face", "detect", tmp_path / "nope.jpg")
    assert result.exit_code == 2 and "nope.jpg: no such image file" in result.output


def test_dataset_import_and_clean_face_crop_crop_around_the_faces(cli, workspace, tmp_path, dlib_backend):
    source = tmp_path / "photos"
    source.mkdir()
    for path in (ASTRONAUT, HOPPER):
        (source / path.name).write_bytes(path.read_bytes())
    Image.new("RGB", (300, 200), "grey").save(source / "wall.png")
    result = cli("dataset", "import", source, "--name", "people", "--face-crop", "--face-scale", "2", "--json")
    assert result.exit_code == 0, result.output
    crop = json.loads(result.stdout.strip().splitlines()[-1])["face_crop"]
    assert crop["cropped"] == 2 and len(crop["no_face"]) == 1
    images = workspace.datasets / "people" / "images"
    for path in sorted(images.glob("*.jpg")):
        image = Image.open(path)
        assert image.width == image.height < 512
        found = dlib_backend.detect(image)
        assert len(found) == 1
        # The face sits in the middle of its crop, about half its side.
        assert np.subtract(found[0].centre, (image.width / 2, image.height / 2)) == pytest.approx((0, 0), abs=image.width * 0.1)
        assert 0.35 < found[0].width / image.width < 0.65
    again = json.loads(cli("dataset", "clean", "people", "--face-crop", "--dedupe", "off", "--json").output)
    assert again["face_crop"]["cropped"] == 0  # already cropped once: never a crop of a crop


def test_api_detect_and_compare_take_base64_images(workspace):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lorastudio.api import faces as faces_api
    from lorastudio.api.deps import get_studio

    app = FastAPI()
    app.include_router(faces_api.router)

    class _Studio:
        pass

    studio = _Studio()
    studio.workspace = workspace
    app.dependency_overrides[get_studio] = lambda: studio
    client = TestClient(app)
    astronaut = base64.b64encode(ASTRONAUT.read_bytes()).decode()
    hopper = "data:image/jpeg;base64," + base64.b64encode(HOPPER.read_bytes()).decode()
    detected = client.post("/api/v1/faces/detect", json={"image": astronaut})
    assert detected.status_code == 200, detected.text
    assert detected.json()["faces"][0]["box"] == pytest.approx(ASTRONAUT_BOX, abs=3)
    compared = client.post("/api/v1/faces/compare", json={"image_a": astronaut, "image_b": hopper})
    assert compared.status_code == 200 and compared.json()["same_person"] is False
    assert client.get("/api/v1/faces/backends").json()["backends"][0]["name"] == "dlib"
