"""`portrait make`: persons' faces painted into template photos, on tiny-sd15 at 64 px.

The face toolkit (warp, masks, colour) is the real one; the face backend is one with planted
faces (the synthetic templates have no real faces for dlib to find), except in the tests on
the public-domain photos. Persons are written as the person registry records them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFilter
from typer.testing import CliRunner

from lora_helpers import random_lora
from lorastudio.errors import LorastudioError
from lorastudio.portrait.faces import Face
from lorastudio.portrait.make import assign_persons, faces_left_to_right, paste_back, square_crop_box
from lorastudio.service import faces as faces_service

STEPS = 2

# --- the face backend and person records --------------------------------------------------------


def _ellipse(size, box, shrink=0.0, feather=0):
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * shrink, (y1 - y0) * shrink
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((x0 + dx, y0 + dy, x1 - dx, y1 - dy), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(feather)) if feather else mask


def _points(box) -> dict:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return {
        "left_eye": (x0 + 0.3 * w, y0 + 0.4 * h),
        "right_eye": (x0 + 0.7 * w, y0 + 0.4 * h),
        "nose": (x0 + 0.5 * w, y0 + 0.6 * h),
        "mouth_left": (x0 + 0.35 * w, y0 + 0.78 * h),
        "mouth_right": (x0 + 0.65 * w, y0 + 0.78 * h),
    }


class PlantedBackend:
    """Faces planted by image size; the identity is the face box's mean colour."""

    name = "planted"
    licence = "test"
    threshold = 0.6

    def __init__(self, planted: dict[tuple[int, int], list[tuple]]):
        self.planted = planted
        self.detect_calls = 0

    def detect(self, image):

        self.detect_calls += 1
        return [Face(box=box, points=_points(box), score=0.99) for box in self.planted.get(image.size, [])]

    def embed(self, image, face):
        box = tuple(int(v) for v in face.box)
        return np.asarray(image.convert("RGB").crop(box), np.float32).mean((0, 1)) / 255.0

    def distance(self, a, b):
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


ONE_FACE = (40, 36, 88, 92)  # in a 128x128 template
TWO_FACES = [(76, 10, 116, 54), (12, 12, 52, 56)]  # in a 128x64 template (right one first: order is by x)
PHOTO = (12, 12, 52, 52)  # in every 64x64 person photo


@pytest.fixture
def toolkit(monkeypatch):
    """The face toolkit with a backend whose faces are planted (no real faces in these templates)."""
    backend = PlantedBackend({(128, 128): [ONE_FACE], (128, 64): TWO_FACES, (64, 64): [PHOTO], (96, 96): []})
    monkeypatch.setattr(faces_service, "open_backend", lambda ws, name=None: backend)
    return backend


def _random_lora(model, seed: int = 0):
    return random_lora(model, seed=seed, scale=0.3)


@pytest.fixture(scope="module")
def lora_files(sd15, tmp_path_factory):
    """Three different tiny LoRAs (made once per module)."""
    from lorastudio.adapters import save_kohya

    folder = tmp_path_factory.mktemp("loras")
    paths = {}
    for seed, name in enumerate(("lora-a", "lora-b", "lora-c")):
        paths[name] = folder / f"{name}.safetensors"
        save_kohya(_random_lora(sd15, seed), paths[name], family=sd15.family, unet_config=sd15.unet.config)
    return paths


def _photo(path: Path, colour) -> Path:
    image = Image.new("RGB", (64, 64), (200, 200, 200))
    ImageDraw.Draw(image).ellipse(PHOTO, fill=colour)
    image.save(path)
    return path


@pytest.fixture
def people(tiny_workspace, toolkit, lora_files):
    """Persons A, B, C, each with their own LoRA, photo and mean identity; D without a LoRA.

    Written as the person registry records them (`studio/portraits/<name>.json`).
    """
    import shutil


    folder = tiny_workspace.root / "portraits"
    colours = {"A": (220, 60, 60), "B": (60, 60, 220), "C": (60, 200, 60), "D": (120, 120, 120)}
    for name, colour in colours.items():
        (folder / name).mkdir(parents=True)
        photo = _photo(folder / name / "reference.png", colour)
        embedding = toolkit.embed(Image.open(photo).convert("RGB"), Face(box=PHOTO, points=_points(PHOTO)))
        np.save(folder / name / "embedding.npy", embedding)
        lora = None
        if name != "D":
            lora = f"loras/lora-{name.lower()}.safetensors"
            shutil.copy(lora_files[f"lora-{name.lower()}"], tiny_workspace.root / lora)
        record = {
            "name": name, "trigger": f"zq{name.lower()}", "lora": lora,
            "reference_image": f"{name}/reference.png",
            "reference_face": {"box": list(PHOTO), "points": {k: list(v) for k, v in _points(PHOTO).items()}},
            "embedding": f"{name}/embedding.npy", "backend": "planted", "base_model": "tiny-sd15",
            "kept_photos": [f"portraits/{name}/reference.png"],
        }  # fmt: skip
        (folder / f"{name}.json").write_text(json.dumps(record), encoding="utf-8")
    return toolkit


def _template(path: Path, size) -> Path:
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    Image.fromarray(noise).resize(size, Image.Resampling.BICUBIC).save(path)
    return path


def _px(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def _cfg(**fields):
    from lorastudio.service.portrait_make import PortraitMakeConfig

    return PortraitMakeConfig(steps=STEPS, seed=5, **fields)


def _make(ws, cfg, cache):
    """The flow as the CLI runs it (local paths allowed)."""
    from lorastudio.service.names import LENIENT
    from lorastudio.service.portrait_make import make_portraits

    return make_portraits(ws, cfg, cache, names=LENIENT)


@pytest.fixture
def cache(tiny_workspace):
    from lorastudio.service.model_cache import ModelCache

    return ModelCache(tiny_workspace)


# --- the pure steps ----------------------------------------------------------------------------


def test_crop_box_is_square_scaled_and_moved_inside_the_image():
    assert square_crop_box((40, 40, 60, 60), (200, 100), 2.0) == (30, 30, 70, 70)
    assert square_crop_box((0, 0, 20, 30), (200, 100), 2.5) == (0, 0, 75, 75)  # moved, not cut
    assert square_crop_box((10, 10, 90, 90), (200, 100), 3.0) == (0, 0, 100, 100)  # image too small: shrunk
    assert faces_left_to_right([(80, 0, 90, 10), (5, 0, 15, 10), (40, 0, 50, 10)]) == [1, 2, 0]


def test_persons_go_left_to_right_and_an_explicit_face_wins():
    assert assign_persons(["A", "B"], {}, 3, "t.png") == {1: "A", 2: "B"}
    assert assign_persons(["A"], {3: "B", 1: "C"}, 3, "t.png") == {1: "C", 3: "B"}
    with pytest.raises(LorastudioError, match=r"template t.png: 3 persons given but the template has 2 faces"):
        assign_persons(["A", "B", "C"], {}, 2, "t.png")
    with pytest.raises(LorastudioError, match=r"template t.png: --face 4=B: the template has faces 1..2"):
        assign_persons([], {4: "B"}, 2, "t.png")
    with pytest.raises(LorastudioError, match=r"template t.png: no face found"):
        assign_persons(["A"], {}, 0, "t.png")


def test_paste_back_keeps_the_template_outside_the_mask_exactly():
    template = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    mask = _ellipse((60, 40), (20, 10, 40, 30), feather=2)
    out = np.asarray(paste_back(template, Image.new("RGB", (16, 16), (255, 0, 255)), (16, 8, 44, 36), mask))
    outside = np.asarray(mask) == 0
    assert (out[outside] == np.asarray(template)[outside]).all()
    assert np.abs(out[20, 30].astype(int) - (255, 0, 255)).max() <= 1


# --- the flow on tiny-sd15 -----------------------------------------------------------------------


def test_one_face_template_end_to_end_sorted_by_score_with_recipe(tiny_workspace, people, cache):
    from lorastudio.generate.image_metadata import read_infotext
    from lorastudio.portrait.masks import face_mask
    from lorastudio.service.portrait_make import RECIPE_KEY

    template = _template(tiny_workspace.root / "solo.png", (128, 128))
    result = _make(tiny_workspace, _cfg(persons=["A"], templates=[str(template)], count=3), cache)
    assert len(result.images) == 3
    scores = [image.score for image in result.images]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    assert sorted(image.seed for image in result.images) == [5, 6, 7]
    before = _px(template)
    face = Face(box=ONE_FACE, points=_points(ONE_FACE), score=1.0)
    mask = np.asarray(face_mask((128, 128), face, round(0.08 * 128)))  # the flow's default feather (crop 128)
    for image in result.images:
        after = _px(image.path)
        assert after.shape == before.shape  # output size = template size
        assert np.abs(after - before)[mask == 0].max() <= 1  # outside the face: untouched
        assert np.abs(after - before)[mask > 0.9 * mask.max()].mean() > 10  # inside: repainted
    best = result.images[0]
    recipe = yaml.safe_load(Image.open(best.path).text[RECIPE_KEY])
    assert recipe == yaml.safe_load(best.recipe_path.read_text(encoding="utf-8"))
    assert recipe["kind"] == "portrait-make" and recipe["score"] == best.score
    assert recipe["request"]["seed"] == best.seed and recipe["request"]["count"] == 1
    assert recipe["faces"][0]["person"] == "A" and "<lora:lora-a:0.9>" in recipe["faces"][0]["prompt"]
    infotext = read_infotext(best.path)
    assert "zqa" in infotext and f"Seed: {best.seed}" in infotext and "Portrait faces: 1=A" in infotext
    assert not list(tiny_workspace.outputs.rglob("passes")), "inpaint passes stay out of the outputs"


def test_each_lora_acts_only_on_its_own_face(tiny_workspace, people, cache):
    from lorastudio.generate.image_metadata import read_infotext

    template = _template(tiny_workspace.root / "pair.png", (128, 64))
    pair = _make(tiny_workspace, _cfg(persons=["A", "B"], templates=[str(template)]), cache).images[0]
    swapped = _make(tiny_workspace, _cfg(faces={1: "C", 2: "B"}, templates=[str(template)]), cache)
    swapped = swapped.images[0]
    left, right = TWO_FACES[1], TWO_FACES[0]  # face 1 is the leftmost
    before, ab, cb = _px(template), _px(pair.path), _px(swapped.path)

    def region(px, box):
        x0, y0, x1, y1 = box
        return px[y0 + 8 : y1 - 8, x0 + 8 : x1 - 8]

    for box in (left, right):
        assert np.abs(region(ab, box) - region(before, box)).mean() > 10  # both faces repainted
    assert np.array_equal(region(ab, right), region(cb, right))  # A -> C on face 1 leaves face 2 alone
    assert np.abs(region(ab, left) - region(cb, left)).mean() > 3  # while face 1 follows its LoRA
    assert [(f["face"], f["person"], f["lora"]) for f in pair.faces] == [(1, "A", "lora-a"), (2, "B", "lora-b")]
    assert pair.faces[0]["lora_hash"] != pair.faces[1]["lora_hash"]
    info = read_infotext(pair.path)
    assert f"Lora hashes: \"lora-a: {pair.faces[0]['lora_hash']}, lora-b: {pair.faces[1]['lora_hash']}\"" in info
    assert "lora-b" not in pair.faces[0]["prompt"] and "lora-a" not in pair.faces[1]["prompt"]


def test_the_recipe_makes_the_same_pixels_again_through_the_cli(tiny_workspace, people, cache):
    from lorastudio.cli import _register, app
    template = _template(tiny_workspace.root / "solo.png", (128, 128))
    first = _make(tiny_workspace, _cfg(persons=["A"], templates=[str(template)], count=2), cache).images[1]
    _register()
    runner = CliRunner()
    for recipe in (first.recipe_path, first.path):
        out = runner.invoke(app, ["portrait", "make", "--recipe", str(recipe), "--json"])
        assert out.exit_code == 0, out.output
        again = json.loads(out.stdout.strip().splitlines()[-1])
        assert again["seeds"] == [first.seed] and again["scores"] == [first.score]
        assert np.array_equal(_px(again["images"][0]), _px(first.path))
    changed = runner.invoke(app, ["portrait", "make", "--recipe", str(first.recipe_path), "--set", "lora_weight=0.5", "--json"])
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.stdout.strip().splitlines()[-1])["faces"][0][0]["prompt"].endswith("<lora:lora-a:0.5>")
    template.write_bytes(template.read_bytes() + b"\0")  # another photo now: refused, named
    out = runner.invoke(app, ["portrait", "make", "--recipe", str(first.recipe_path)])
    assert out.exit_code == 2 and "changed since" in out.output and str(template) in out.output


def test_bad_requests_are_one_line_naming_the_file_or_person(tiny_workspace, people):
    from lorastudio.cli import _register, app

    _register()
    runner = CliRunner()
    solo = _template(tiny_workspace.root / "solo.png", (128, 128))
    empty = _template(tiny_workspace.root / "empty.png", (96, 96))

    def fails(*args: str) -> str:
        out = runner.invoke(app, ["portrait", "make", "--steps", "1", *args])
        lines = [line for line in out.output.splitlines() if line.strip()]
        assert out.exit_code == 2 and len(lines) == 1, out.output
        return lines[0]

    assert "person 'nobody': not trained" in fails("--person", "nobody", "--template", str(solo))
    assert "person 'D': has no trained LoRA" in fails("--person", "D", "--template", str(solo))
    assert "empty.png: no face found" in fails("--person", "A", "--template", str(empty))
    assert "solo.png: 2 persons given but the template has 1 face" in fails(
        "--person", "A", "--person", "B", "--template", str(solo)
    )
    assert "template 'nope': not in" in fails("--person", "A", "--template", "nope")
    assert "--face 'x=A'" in fails("--face", "x=A", "--template", str(solo))
    assert "stepz" in fails("--person", "A", "--template", str(solo), "--set", "stepz=3")


# --- the template library ------------------------------------------------------------------------


def test_templates_add_list_delete_and_the_face_cache_follows_the_file(tiny_workspace, toolkit):
    from lorastudio.portrait.templates import face_cache_path
    from lorastudio.service.templates import find_template, list_templates, template_faces

    _register_cli = __import__("lorastudio.cli", fromlist=["_register"])._register
    _register_cli()
    from lorastudio.cli import app

    runner = CliRunner()
    photo = _template(tiny_workspace.root / "group.png", (128, 64))
    out = runner.invoke(app, ["portrait", "templates", "add", str(photo), "--name", "duo", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["faces"] == 2 and toolkit.detect_calls == 1
    path = find_template(tiny_workspace, "duo", allow_paths=False)
    cache = face_cache_path(path)
    assert cache.is_file() and path.parent == tiny_workspace.root / "templates"
    faces = template_faces(tiny_workspace, path, toolkit)
    assert [f.box[0] for f in faces] == [12, 76] and toolkit.detect_calls == 1  # cached, left to right
    assert list_templates(tiny_workspace) == [
        {"name": "duo", "file": "duo.png", "path": str(path), "faces": 2}
    ]
    Image.open(path).resize((128, 128)).save(path)  # the file changed: the faces are found again
    assert [f.box for f in template_faces(tiny_workspace, path, toolkit)] == [ONE_FACE]
    assert toolkit.detect_calls == 2
    assert json.loads(cache.read_text())["faces"][0]["box"] == list(ONE_FACE)
    listed = runner.invoke(app, ["portrait", "templates", "list"])
    assert "duo  duo.png  1 face(s)" in listed.output
    empty = _template(tiny_workspace.root / "empty.png", (96, 96))
    refused = runner.invoke(app, ["portrait", "templates", "add", str(empty)])
    assert refused.exit_code == 2 and "empty.png: no face found" in refused.output
    assert not (tiny_workspace.root / "templates" / "empty.png").exists()
    assert runner.invoke(app, ["portrait", "templates", "delete", "duo"]).exit_code == 0
    assert not path.exists() and not cache.exists()


def test_controlnets_are_found_by_name_and_openpose_needs_its_weights(tiny_workspace):
    from lorastudio.generate.annotators.registry import BODY_WEIGHTS
    from lorastudio.service.portrait_control import control_models

    assert control_models(tiny_workspace, None, None, None) == {}
    (tiny_workspace.controlnet / "control_v11p_sd15_canny.safetensors").write_bytes(b"x" * 64)
    (tiny_workspace.controlnet / "control_v11p_sd15_openpose.safetensors").write_bytes(b"y" * 64)
    found = control_models(tiny_workspace, None, None)
    assert found == {"canny": "control_v11p_sd15_canny"}  # no openpose weights yet
    tiny_workspace.annotators.mkdir(parents=True, exist_ok=True)
    (tiny_workspace.annotators / BODY_WEIGHTS).write_bytes(b"z")
    found = control_models(tiny_workspace, "none", None)
    assert found == {"openpose": "control_v11p_sd15_openpose"}
    with pytest.raises(LorastudioError, match="nope"):
        control_models(tiny_workspace, "nope", None)


def test_a_canny_controlnet_found_by_name_guides_pass_one_and_the_recipe_names_it(tiny_workspace, people, cache, sd15):
    from controlnet_files import make_controlnet
    from lorastudio.generate.image_metadata import read_infotext

    make_controlnet(sd15, seed=1).save_pretrained(tiny_workspace.controlnet / "tiny-canny")
    template = _template(tiny_workspace.root / "solo.png", (128, 128))
    guided = _make(tiny_workspace, _cfg(persons=["A"], templates=[str(template)], control_weight=2.0), cache).images[0]
    plain = _make(tiny_workspace, _cfg(persons=["A"], templates=[str(template)], canny="none"), cache).images[0]
    assert np.abs(_px(guided.path) - _px(plain.path)).max() > 2  # the unit acted (a tiny ControlNet: a small push)
    recipe = yaml.safe_load(guided.recipe_path.read_text(encoding="utf-8"))
    assert [recipe["request"][k] for k in ("canny", "openpose", "tile")] == ["tiny-canny", "none", "none"]
    assert "Portrait ControlNets: canny=tiny-canny" in read_infotext(guided.path)
    assert "Portrait ControlNets" not in read_infotext(plain.path)


def test_each_face_gets_its_own_passes_with_its_own_lora_and_unit_images(tiny_workspace, people, cache, monkeypatch):
    """What the flow asks the generator for, pass by pass (the generator itself stands aside)."""
    import shutil

    from lorastudio.generate.annotators.registry import BODY_WEIGHTS
    from lorastudio.service import generation
    from lorastudio.service.generation import GenerationResult, OutputImage

    asked = []

    def run_generation(ws, request, cache=None, **kwargs):
        maps = {u.module: np.asarray(Image.open(u.image or request.init_image).convert("RGB")) for u in request.controlnet}
        asked.append((request, maps, kwargs, np.asarray(Image.open(request.init_image).convert("RGB"))))
        out = kwargs["out_dir"] / f"{len(asked)}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(request.init_image, out)
        return GenerationResult([OutputImage(out, out, request.seed, "")], request.model, "0")

    monkeypatch.setattr(generation, "run_generation", run_generation)
    for name in ("cn-canny", "cn-openpose", "cn-tile"):
        (tiny_workspace.controlnet / f"{name}.safetensors").write_bytes(b"x" * 64)
    tiny_workspace.annotators.mkdir(parents=True, exist_ok=True)
    (tiny_workspace.annotators / BODY_WEIGHTS).write_bytes(b"z")
    template = _template(tiny_workspace.root / "pair.png", (128, 64))
    _make(tiny_workspace, _cfg(persons=["A", "B"], templates=[str(template)]), cache)
    assert [(r.prompt.split("<lora:")[1], r.strength) for r, *_ in asked] == [
        ("lora-a:0.9>", 0.7), ("lora-a:0.9>", 0.3), ("lora-b:0.9>", 0.7), ("lora-b:0.9>", 0.3)
    ]  # fmt: skip
    assert all(r.prompt.count("<lora:") == 1 and kw["add_to_library"] is False for r, _, kw, _ in asked)
    for face, (request, maps, _, init) in zip((1, 1, 2, 2), asked, strict=True):
        box = square_crop_box(TWO_FACES[2 - face], (128, 64), 2.5)  # face 1 is the leftmost
        crop = np.asarray(Image.open(template).convert("RGB").crop(box).resize((64, 64), Image.Resampling.LANCZOS))
        if request.strength == 0.7:  # pass 1: canny on the start (the warped face), openpose on the template
            assert sorted(maps) == ["canny", "openpose"]
            assert np.array_equal(maps["openpose"], crop) and np.array_equal(maps["canny"], init)
            assert not np.array_equal(init, crop)  # the start holds the person's warped face
        else:  # pass 2: tile on its start (pass 1 after the colour transfer)
            assert list(maps) == ["tile_resample"] and np.array_equal(maps["tile_resample"], init)


# --- the job kind ---------------------------------------------------------------------------------


def test_portrait_make_job_runs_on_a_worker_and_answers_images_and_scores(tiny_workspace, people):
    from lorastudio.service.job_kinds import KINDS, install, typed_job
    from lorastudio.service.jobs import HandlerRegistry, open_store
    from lorastudio.service.jobs.worker import Worker
    from lorastudio.service.studio import Studio, StudioSettings
    from lorastudio.service.templates import templates_folder

    assert "portrait-make" in KINDS
    _template(templates_folder(tiny_workspace) / "solo.png", (128, 128))
    cfg, _ = typed_job("portrait-make", payload={"persons": ["A"], "templates": ["solo"], "steps": 1, "seed": 9})
    with Studio(tiny_workspace, StudioSettings()) as studio:
        with pytest.raises(LorastudioError, match="template '/etc/passwd'"):
            bad, _ = typed_job("portrait-make", payload={"persons": ["A"], "templates": ["/etc/passwd"]})
            KINDS["portrait-make"].submit(studio, bad, {})
        job = KINDS["portrait-make"].submit(studio, cfg, {})
    with open_store(None, tiny_workspace) as store:
        Worker(store, tiny_workspace, registry=install(HandlerRegistry())).run(stop_when_idle=True)
        done = store.get(job.id)
    assert done.state == "succeeded", done.error
    assert done.result["seeds"] == [9] and done.result["templates"] == ["solo"]
    assert isinstance(done.result["scores"][0], float)
    assert (tiny_workspace.outputs / job.id / done.result["images"][0]).is_file()


# --- the real face stack on public-domain photos (once the face toolkit is installed) -------------

FACE_PHOTOS = Path(__file__).parent / "fixtures" / "faces"


@pytest.fixture
def real_faces(tiny_workspace, lora_files):
    """The real dlib backend, and Grace Hopper and the astronaut recorded as `portrait train` records them."""
    if not (FACE_PHOTOS / "astronaut.jpg").is_file():
        pytest.skip("the face toolkit's photos (tests/fixtures/faces) are not here")
    pytest.importorskip("dlib")
    import shutil

    from lorastudio.portrait.faces import largest_face
    from lorastudio.service.faces import open_backend

    backend = open_backend(tiny_workspace)
    for name, photo, lora in (("grace", "grace_hopper.jpg", "lora-a"), ("eileen", "astronaut.jpg", "lora-b")):
        folder = tiny_workspace.root / "portraits" / name
        folder.mkdir(parents=True)
        reference = Image.open(FACE_PHOTOS / photo).convert("RGB")
        reference.save(folder / "reference.png")
        face = largest_face(backend.detect(reference))
        np.save(folder / "embedding.npy", backend.embed(reference, face))
        shutil.copy(lora_files[lora], tiny_workspace.loras / f"{name}.safetensors")
        record = {
            "name": name, "trigger": f"zq{name}", "lora": f"loras/{name}.safetensors",
            "reference_image": f"{name}/reference.png", "reference_face": face.to_dict(),
            "embedding": f"{name}/embedding.npy", "backend": backend.name, "base_model": "tiny-sd15",
            "kept_photos": [],
        }  # fmt: skip
        (tiny_workspace.root / "portraits" / f"{name}.json").write_text(json.dumps(record), encoding="utf-8")
    return backend


def _centre(box) -> tuple[slice, slice]:
    cx, cy = int(box[0] + box[2]) // 2, int(box[1] + box[3]) // 2
    return slice(cy - 8, cy + 8), slice(cx - 8, cx + 8)


def test_real_faces_grace_hopper_painted_into_the_astronaut(tiny_workspace, real_faces, cache):
    """dlib finds the astronaut's face; Grace Hopper's record (as `portrait train` writes it) goes on it."""
    from lorastudio.service.portraits import load_person

    assert load_person(tiny_workspace, "grace").lora.name == "grace.safetensors"
    template = FACE_PHOTOS / "astronaut.jpg"
    result = _make(tiny_workspace, _cfg(persons=["grace"], templates=[str(template)], count=2), cache)
    before, after = _px(template), _px(result.images[0].path)
    assert after.shape == before.shape
    assert np.abs(after - before)[_centre(result.images[0].faces[0]["box"])].mean() > 5  # the face repainted
    assert np.abs(after - before)[:20, :20].max() <= 1  # a corner far from the face untouched
    scores = [image.score for image in result.images]
    assert all(isinstance(s, float) for s in scores) and scores == sorted(scores, reverse=True)
    assert result.images[0].faces[0]["prompt"].endswith("<lora:grace:0.9>")


def test_real_faces_two_persons_on_a_tiled_template_left_to_right(tiny_workspace, real_faces, cache):
    """[astronaut | Grace Hopper] side by side: `--person grace --person eileen` swaps them."""
    tiled = Image.new("RGB", (1024, 512), "white")
    tiled.paste(Image.open(FACE_PHOTOS / "astronaut.jpg").convert("RGB"), (0, 0))
    tiled.paste(Image.open(FACE_PHOTOS / "grace_hopper.jpg").convert("RGB").crop((0, 0, 512, 512)), (512, 0))
    template = tiled.save(tiny_workspace.root / "duo.png") or tiny_workspace.root / "duo.png"
    image = _make(tiny_workspace, _cfg(persons=["grace", "eileen"], templates=[str(template)]), cache).images[0]
    assert [(f["face"], f["person"]) for f in image.faces] == [(1, "grace"), (2, "eileen")]
    assert image.faces[0]["box"][2] < 512 <= image.faces[1]["box"][0]  # face 1 on the left tile
    before, after = _px(template), _px(image.path)
    for face in image.faces:
        assert np.abs(after - before)[_centre(face["box"])].mean() > 5
    assert np.abs(after - before)[:20, 500:524].max() <= 1  # between the faces, at the top: untouched


# --- train -> make ----------------------------------------------------------------------------------


def test_portrait_train_then_make_on_the_tiny_model(tiny_workspace, tmp_path, monkeypatch, one_torch_thread):
    """A person trained by `portrait train` (4 steps) goes into a template by `portrait make`."""
    from lorastudio.cli import _register, app
    from lorastudio.service import face_identity
    from test_portrait_train import ANN, BOB, GREY, FakeBackend, photo, shade

    backend = FakeBackend()  # faces are solid colour blocks, identity = colour
    monkeypatch.setattr(face_identity, "open_face_backend", lambda ws, name=None: backend)
    monkeypatch.setattr(faces_service, "open_backend", lambda ws, name=None: backend)
    face_identity.install()
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        photo(photos / f"ann{i}.png", shade(ANN, 2 * i), size=(300, 300), box=(80, 60, 220, 200))
    _register()
    runner = CliRunner()
    train = ["portrait", "train", "--photos", str(photos), "--name", "ann", "--base", "tiny-sd15", "--steps", "2",
             "--face-backend", "fake", "--device", "cpu"]  # fmt: skip
    for setting in ("train.resolution=64", "train.save_every_steps=2", "scoring.steps=1", "lora.rank=4",
                    "train.mixed_precision=no", "train.grad_accum=1"):  # fmt: skip
        train += ["--set", setting]
    trained = runner.invoke(app, train)
    assert trained.exit_code == 0, trained.output
    template = tmp_path / "bob.png"
    photo(template, BOB, size=(128, 128), box=(40, 36, 88, 92))
    made = runner.invoke(app, ["portrait", "make", "--person", "ann", "--template", str(template), "--steps", "2",
                               "--count", "2", "--seed", "1", "--backend", "fake", "--json"])  # fmt: skip
    assert made.exit_code == 0, made.output
    out = json.loads(made.stdout.strip().splitlines()[-1])
    assert out["faces"][0][0]["prompt"].endswith("<lora:ann:0.9>") and out["faces"][0][0]["trigger"] == "ann"
    assert out["scores"] == sorted(out["scores"], reverse=True)
    before, after = _px(template), _px(out["images"][0])
    assert after.shape == before.shape and np.abs(after - before)[50:80, 52:76].mean() > 10
    assert (after[:8, :8] == GREY).all()  # far from the face: the template as it was
