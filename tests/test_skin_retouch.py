"""Skin retouching (EasyPhoto's `skin_retouching_bool`, done without a model): an edge-preserving
filter blended in through the skin mask. Measured on a public-domain photo: the high-frequency
energy of the skin drops, every pixel outside the mask keeps its exact value, strength 0 changes
nothing; then the switch through training crops, `portrait make` and the EasyPhoto API.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.portrait.faces import Face
from lorastudio.portrait.masks import retouch_mask
from lorastudio.portrait.retouch import DEFAULT_STRENGTH, retouch_face, retouch_skin
from test_portrait_make import (  # noqa: F401 (fixtures)
    ONE_FACE,
    _cfg,
    _make,
    _points,
    _px,
    _template,
    cache,
    lora_files,
    people,
    real_faces,
    toolkit,
)

FACES = Path(__file__).parent / "fixtures" / "faces"
# dlib's face on astronaut.jpg (512 x 512), written out so these tests need no detector
ASTRONAUT_FACE = Face(
    box=(179.0, 83.0, 266.0, 170.0),
    points={"left_eye": (203.5, 102.0), "right_eye": (246.0, 104.5), "nose": (224.0, 135.0),
            "mouth_left": (204.3, 151.3), "mouth_right": (239.5, 153.4)},
)  # fmt: skip

pytestmark = pytest.mark.skipif(not (FACES / "astronaut.jpg").is_file(), reason="tests/fixtures/faces missing")


def _astronaut() -> Image.Image:
    return Image.open(FACES / "astronaut.jpg").convert("RGB")


def _laplacian_variance(image: Image.Image, where: np.ndarray) -> float:
    grey = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F)[where].var())


def _box(point, half: int) -> tuple[slice, slice]:
    x, y = (int(round(v)) for v in point)
    return slice(y - half, y + half), slice(x - half, x + half)


def test_skin_loses_its_fine_detail_while_eyes_brows_mouth_and_background_keep_every_bit():
    image = _astronaut()
    mask = np.asarray(retouch_mask(image, ASTRONAUT_FACE))
    skin = mask > 200
    assert skin.sum() > 3000  # cheeks, forehead, nose, chin
    out = retouch_face(image, ASTRONAUT_FACE, 1.0)
    assert _laplacian_variance(out, skin) < 0.5 * _laplacian_variance(image, skin)
    default = retouch_face(image, ASTRONAUT_FACE)  # 0.7: between untouched and fully smoothed
    assert _laplacian_variance(out, skin) < _laplacian_variance(default, skin) < 0.8 * _laplacian_variance(image, skin)
    before, after = np.asarray(image), np.asarray(out)
    assert np.array_equal(before[mask == 0], after[mask == 0])  # outside the mask: bit-identical
    for name in ("left_eye", "right_eye"):
        assert np.array_equal(before[_box(ASTRONAUT_FACE.points[name], 5)], after[_box(ASTRONAUT_FACE.points[name], 5)])
        brow = (ASTRONAUT_FACE.points[name][0], ASTRONAUT_FACE.points[name][1] - 13)
        assert np.array_equal(before[_box(brow, 3)], after[_box(brow, 3)])
    mouth = np.mean([ASTRONAUT_FACE.points["mouth_left"], ASTRONAUT_FACE.points["mouth_right"]], axis=0)
    assert np.array_equal(before[_box(mouth, 4)], after[_box(mouth, 4)])
    assert np.array_equal(before[:60], after[:60]) and np.array_equal(before[:, :150], after[:, :150])  # hair, background


def test_strength_zero_is_the_picture_unchanged_and_a_strength_out_of_range_is_one_line():
    image = _astronaut()
    assert np.array_equal(np.asarray(retouch_face(image, ASTRONAUT_FACE, 0.0)), np.asarray(image))
    assert DEFAULT_STRENGTH == pytest.approx(0.7)
    with pytest.raises(LorastudioError, match=r"strength 1.5: give a value from 0 \(off\) to 1"):
        retouch_face(image, ASTRONAUT_FACE, 1.5)


@pytest.mark.parametrize("mode", ["CMYK", "RGBA", "LA", "P", "L", "I;16"])
def test_any_picture_mode_is_retouched_and_transparency_is_kept(mode):
    image = _astronaut()
    if mode == "I;16":
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257  # 16-bit: 65535 is white
        picture = Image.fromarray(grey, "I;16")
    elif mode in ("RGBA", "LA"):
        picture = image.convert(mode[:-1])
        picture.putalpha(Image.linear_gradient("L").resize(image.size))
    else:
        picture = image.convert(mode)
    out = retouch_face(picture, ASTRONAUT_FACE, 1.0)
    assert out.size == image.size and out.mode == ("RGBA" if mode in ("RGBA", "LA") else "RGB")
    pixels = np.asarray(out.convert("RGB"))
    assert 40 < pixels.mean() < 220  # a 16-bit grey is not read as all white
    if mode != "P":  # a palette picture's dithering is no skin; it only has to come back RGB
        skin = np.asarray(retouch_mask(image, ASTRONAUT_FACE)) > 200
        source = image.convert("L") if mode == "I;16" else picture.convert("RGB")
        assert _laplacian_variance(out, skin) < 0.7 * _laplacian_variance(source, skin)
    if mode in ("RGBA", "LA"):
        assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(picture.getchannel("A")))


def test_the_mask_weight_decides_and_an_empty_mask_changes_nothing():
    image = _astronaut()
    untouched = retouch_skin(image, Image.new("L", image.size, 0), 1.0)
    assert np.array_equal(np.asarray(untouched), np.asarray(image)) and untouched is not image


# --- training crops ---------------------------------------------------------------------------


class _OneFace:
    """The astronaut's face where the photo is the astronaut; an identity that ignores the skin."""

    name, licence, threshold, metric = "one-face", "test", 0.5, "euclidean"

    def detect(self, image):
        return [ASTRONAUT_FACE] if image.size == (512, 512) else []

    def embed(self, image, face):
        return np.array([1.0, 0.0])

    def distance(self, a, b):
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def test_training_crops_are_retouched_unless_switched_off_and_the_report_says_so(workspace, tmp_path, monkeypatch):
    from lorastudio.service import face_identity
    from lorastudio.service.portraits import PortraitTrainConfig, select_person_photos

    monkeypatch.setattr(face_identity, "open_face_backend", lambda ws, name=None: _OneFace())
    _astronaut().save(tmp_path / "eileen.png")
    on = PortraitTrainConfig(name="eileen", min_face=64)  # an 87 px face
    assert on.skin_retouch and on.skin_retouch_strength == DEFAULT_STRENGTH  # EasyPhoto's training default
    retouched = select_person_photos(workspace, on, [tmp_path / "eileen.png"])
    plain = select_person_photos(workspace, on.model_copy(update={"skin_retouch": False}), [tmp_path / "eileen.png"])
    assert retouched.report()["skin_retouch"] == DEFAULT_STRENGTH and plain.report()["skin_retouch"] == 0.0
    a, b = retouched.kept[0], plain.kept[0]
    skin = np.asarray(retouch_mask(b.crop, b.crop_face)) > 200
    assert _laplacian_variance(a.crop, skin) < 0.8 * _laplacian_variance(b.crop, skin)
    outside = np.asarray(retouch_mask(b.crop, b.crop_face)) == 0
    assert np.array_equal(np.asarray(a.crop)[outside], np.asarray(b.crop)[outside])


# --- portrait make ------------------------------------------------------------------------------


def test_portrait_make_retouches_the_painted_face_only_and_records_it(tiny_workspace, people, cache):  # noqa: F811
    from lorastudio.generate.image_metadata import read_infotext
    from lorastudio.portrait.masks import face_mask
    from lorastudio.service.portrait_make import RECIPE_KEY, config_from_portrait_recipe

    template = _template(tiny_workspace.root / "solo.png", (128, 128))
    on = _make(tiny_workspace, _cfg(persons=["A"], templates=[str(template)]), cache).images[0]
    off = _make(tiny_workspace, _cfg(persons=["A"], templates=[str(template)], skin_retouch=False), cache).images[0]
    face = Face(box=ONE_FACE, points=_points(ONE_FACE), score=1.0)
    mask = np.asarray(face_mask((128, 128), face, round(0.08 * 128)))
    a, b = _px(on.path), _px(off.path)
    assert np.array_equal(a[mask == 0], b[mask == 0])  # the template around the face: the same either way
    assert np.abs(a - b)[mask > 0].max() > 3  # the face: retouched
    assert "Portrait skin retouch: 0.7" in read_infotext(on.path)
    assert "Portrait skin retouch" not in read_infotext(off.path)
    recipe = yaml.safe_load(Image.open(on.path).text[RECIPE_KEY])
    assert recipe["request"]["skin_retouch"] is True and recipe["request"]["skin_retouch_strength"] == 0.7
    assert config_from_portrait_recipe(on.recipe_path).skin_retouch is True
    # a recipe written before the switch existed made its portrait without retouching
    del recipe["request"]["skin_retouch"], recipe["request"]["skin_retouch_strength"]
    old = tiny_workspace.root / "old.yaml"
    old.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert config_from_portrait_recipe(old).skin_retouch is False


# --- the EasyPhoto API ---------------------------------------------------------------------------


def test_easyphoto_skin_retouching_bool_reaches_the_training_config(studio):
    from lorastudio.api.easyphoto import EasyPhotoTrainRequest, _train_config

    base = {"user_id": "eileen", "instance_images": ["x"], "sd_model_checkpoint": "tiny-sd15"}
    assert _train_config(EasyPhotoTrainRequest(**base), studio, ["a.png"], []).skin_retouch is False  # EasyPhoto's API default
    sent = EasyPhotoTrainRequest(**base, skin_retouching_bool=True)
    assert _train_config(sent, studio, ["a.png"], []).skin_retouch is True


def test_easyphoto_infer_skin_retouching_bool_changes_the_portrait(client, studio, real_faces, one_torch_thread):  # noqa: F811
    template = Image.open(FACES / "grace_hopper.jpg").convert("RGB")
    buffer = io.BytesIO()
    template.save(buffer, format="PNG")
    request = {"user_ids": ["eileen"], "selected_template_images": [base64.b64encode(buffer.getvalue()).decode()],
               "first_diffusion_steps": 1, "seed": 3, "second_denoising_strength": 0}  # fmt: skip
    outputs = {}
    for retouch in (False, True):
        made = client.post("/easyphoto/easyphoto_infer_forward", json={**request, "skin_retouching_bool": retouch})
        assert made.status_code == 200, made.text
        job = studio.get_job(made.json()["job"])
        assert job.payload["config"]["skin_retouch"] is retouch
        outputs[retouch] = np.asarray(Image.open(io.BytesIO(base64.b64decode(made.json()["outputs"][0]))), dtype=np.int16)
    difference = np.abs(outputs[True] - outputs[False])
    assert difference[180:320, 180:360].max() > 3  # her painted face retouched
    assert difference[:60].max() == 0 and difference[:, :60].max() == 0 and difference[480:].max() == 0  # cap, flag
