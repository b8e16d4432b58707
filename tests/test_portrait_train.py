"""portrait train: which photos are used and why, the face_identity scorer, the whole flow.

A fake face backend stands in for dlib where the test needs to choose who is who and where every
face is: a "face" is a block of one planted colour, its identity that colour. The last tests use
the real default backend (dlib) on public-domain photos.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.portrait.faces import Face, FaceBackend
from lorastudio.portrait.selection import crop_box, load_photo, select_photos
from lorastudio.service.workspace import Workspace

GREY = (128, 128, 128)
ANN = (200, 100, 100)
BOB = (100, 100, 200)


class FakeBackend(FaceBackend):
    """Faces are solid blocks of one colour (not grey, >= 1% of the pixels); identity = colour.

    `rolls` tilts the eye line of the face of a given colour.
    """

    name, licence, threshold, metric = "fake", "test only", 0.3, "euclidean"

    def __init__(self, rolls: dict | None = None):
        self.rolls = rolls or {}

    def detect(self, image):
        pixels = np.asarray(image.convert("RGB")).astype(np.int64)
        codes = pixels[..., 0] * 65536 + pixels[..., 1] * 256 + pixels[..., 2]
        values, counts = np.unique(codes, return_counts=True)
        faces = []
        for code, count in zip(values, counts, strict=True):
            colour = (int(code) // 65536, int(code) // 256 % 256, int(code) % 256)
            if colour in (GREY, (255, 255, 255)) or count < codes.size / 100:
                continue
            ys, xs = np.nonzero(codes == code)
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            cx, cy, half = (box[0] + box[2]) / 2, box[1] + (box[3] - box[1]) * 0.4, (box[2] - box[0]) / 4
            angle = math.radians(self.rolls.get(colour, 0.0))
            dx, dy = half * math.cos(angle), half * math.sin(angle)
            points = {"left_eye": (cx - dx, cy - dy), "right_eye": (cx + dx, cy + dy)}
            faces.append(Face(box, points))
        return sorted(faces, key=lambda f: f.box[0])

    def embed(self, image, face):
        x0, y0, x1, y1 = (int(v) for v in face.box)
        block = np.asarray(image.convert("RGB"))[y0:y1, x0:x1].reshape(-1, 3)
        return block.mean(axis=0) / 255.0


def photo(path, colour=ANN, box=(100, 80, 250, 230), size=(400, 400), faces=()):
    image = Image.new("RGB", size, GREY)
    for face_colour, face_box in [(colour, box), *faces] if colour else faces:
        image.paste(face_colour, tuple(int(v) for v in face_box))
    image.save(path)
    return path


def shade(colour, dr=0, dg=0, db=0):
    return (colour[0] + dr, colour[1] + dg, colour[2] + db)


# -- selection --------------------------------------------------------------------------------
def test_each_unusable_photo_is_left_out_by_name_with_its_reason(tmp_path):
    paths = [photo(tmp_path / f"ok{i}.png", shade(ANN, i)) for i in range(4)]
    paths.append(photo(tmp_path / "noface.png", colour=None))
    paths.append(photo(tmp_path / "twins.png", faces=[((101, 100, 100), (260, 80, 390, 230))], box=(10, 80, 150, 230)))
    paths.append(photo(tmp_path / "small.png", box=(100, 100, 200, 200)))
    paths.append(photo(tmp_path / "tilted.png", colour=(199, 100, 100)))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    paths.append(tmp_path / "broken.jpg")
    selection = select_photos(paths, FakeBackend(rolls={(199, 100, 100): 40.0}), size=64)
    reasons = {p.name: p.reason for p in selection.left_out}
    assert sorted(p.name for p in selection.kept) == ["ok0.png", "ok1.png", "ok2.png", "ok3.png"]
    assert "no face" in reasons["noface.png"]
    assert "2 faces" in reasons["twins.png"]
    assert "100 px" in reasons["small.png"] and "128" in reasons["small.png"]
    assert "tilted 40 degrees" in reasons["tilted.png"]
    assert "not an image" in reasons["broken.jpg"] or "damaged" in reasons["broken.jpg"]
    report = selection.report()
    assert {row["file"] for row in report["left_out"]} == set(reasons)
    with pytest.raises(LorastudioError, match="4 of 9 photos usable.*noface.png: no face.*need at least 5"):
        selection.require(5)
    selection.require(4)


def test_a_clearly_larger_face_is_used_beside_a_small_one(tmp_path):
    path = photo(tmp_path / "crowd.png", faces=[(BOB, (300, 300, 340, 340))])
    selection = select_photos([path], FakeBackend(), size=64)
    assert [p.name for p in selection.kept] == ["crowd.png"]
    assert selection.kept[0].face.box == (100.0, 80.0, 250.0, 230.0)


def test_the_other_person_is_an_outlier_the_closest_are_kept_and_the_reference_is_the_mean(tmp_path):
    offsets = [(0, 0, 0), (6, 0, 0), (-6, 0, 0), (0, 12, 0), (0, -12, 0), (0, 0, 20), (0, 0, -20)]
    paths = [photo(tmp_path / f"ann{i}.png", shade(ANN, *o)) for i, o in enumerate(offsets)]
    paths.append(photo(tmp_path / "bob.png", BOB))
    selection = select_photos(paths, FakeBackend(), size=64, max_photos=5)
    fate = {p.name: p.status for p in selection.photos}
    assert fate["bob.png"] == "outlier" and "someone else" in next(p.reason for p in selection.photos if p.name == "bob.png")
    assert fate["ann5.png"] == fate["ann6.png"] == "not_needed"  # the two farthest from the mean
    assert [p.name for p in selection.kept][0] == "ann0.png" == selection.reference.name
    assert {p.name for p in selection.kept} == {f"ann{i}.png" for i in range(5)}
    assert np.allclose(selection.mean_embedding, np.array(ANN) / 255, atol=1e-6)


def test_crops_are_square_three_faces_wide_inside_the_photo_and_upright(tmp_path):
    face = Face((100, 80, 250, 230))
    assert crop_box(800, 800, face) == (-50 + 50, 0, 450, 450)  # 450 px, moved inside the top-left corner
    assert crop_box(2000, 2000, face) == (-50 + 50, 0, 450, 450)
    big = crop_box(2000, 2000, Face((1000, 1000, 1100, 1100)))
    assert big == (900, 900, 1200, 1200)  # 3 x 100 px around the centre
    assert crop_box(400, 300, face) == (25, 0, 325, 300)  # shrunk to the photo's short side
    path = photo(tmp_path / "a.png", box=(100, 80, 250, 230), size=(800, 800))
    selection = select_photos([path], FakeBackend(), size=90)
    kept = selection.kept[0]
    assert kept.crop.size == (90, 90)
    assert kept.crop_face.box == pytest.approx((20.0, 16.0, 50.0, 46.0))  # (face - crop corner) x 90/450
    # EXIF orientation 6 (rotate 90 clockwise to view): the stored 300x200 photo is seen as 200x300
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (300, 200), GREY).save(rotated, exif=exif)
    assert load_photo(rotated).size == (200, 300)


def test_white_background_uses_the_person_mask(tmp_path):
    path = photo(tmp_path / "a.png", size=(500, 500), box=(180, 180, 320, 320))
    plain = select_photos([path], FakeBackend(), size=128).kept[0].crop
    assert plain.getpixel((0, 0)) == GREY

    def person_mask(image, face):
        pixels = np.asarray(image)
        return Image.fromarray(np.where(np.all(pixels == GREY, axis=-1), 0, 255).astype(np.uint8))

    white = select_photos([path], FakeBackend(), size=128, person_mask=person_mask)
    crop = white.kept[0].crop
    assert crop.getpixel((0, 0)) == (255, 255, 255) and crop.getpixel((64, 64)) == ANN
    assert white.report()["white_background"] is True


# -- the face_identity scorer -------------------------------------------------------------------
@pytest.fixture
def fake_backend(monkeypatch):
    from lorastudio.service import face_identity

    backend = FakeBackend()
    monkeypatch.setattr(face_identity, "open_face_backend", lambda ws, name=None: backend)
    face_identity.install()
    return backend


def test_face_identity_prefers_the_checkpoint_that_draws_the_person(tmp_path, fake_backend):
    from lorastudio.service.portraits import write_portrait_dataset
    from lorastudio.train.scorers import SCORERS

    ws = Workspace.open(tmp_path / "studio")
    photos = [photo(tmp_path / f"ann{i}.png", shade(ANN, 3 * i)) for i in range(3)]
    write_portrait_dataset(ws, "ann", "ann", select_photos(photos, fake_backend, size=64))
    generated = {}
    for step, colours in {10: [BOB, BOB], 20: [shade(ANN, 5), shade(ANN, -5)], 30: [shade(ANN, 40), None]}.items():
        generated[step] = [photo(tmp_path / f"gen{step}-{i}.png", c, size=(64, 64), box=(16, 16, 48, 48)) for i, c in enumerate(colours)]
    ctx = SimpleNamespace(ws=ws, cfg=SimpleNamespace(data=SimpleNamespace(dir="ann"), trigger="ann"), generated=generated)
    scorer = SCORERS["face_identity"]
    assert scorer.unavailable(ctx) is None and scorer.higher_is_better
    scores = {step: scorer.score(ctx, SimpleNamespace(step=step), None) for step in generated}
    assert max(scores, key=scores.get) == 20
    assert scores[20] > 0.9 and scores[10] < 0.5  # the other person is under the same-person threshold
    assert scores[30] < scores[20] and 0 < scores[30] < 0.5  # the faceless image scores 0, no error


def test_a_tie_on_identity_goes_to_the_next_scorer():
    from lorastudio.train.scorers import SCORERS
    from lorastudio.train.scoring import _best_step

    rows = [{"step": s, "scores": {"face_identity": 0.0, "validation_loss": loss}} for s, loss in ((2, 0.5), (4, 0.3), (6, 0.4))]
    usable = [SCORERS["face_identity"], SCORERS["validation_loss"]]
    assert _best_step(rows, usable) == 4  # no checkpoint drew a face: the lowest loss
    rows[2]["scores"]["face_identity"] = 0.1
    assert _best_step(rows, usable) == 6 and _best_step(rows, usable[1:]) == 4


# -- the whole flow, through the command line and the job queue ----------------------------------------
def test_portrait_train_makes_the_data_set_the_lora_and_the_person(tiny_workspace, tmp_path, fake_backend, one_torch_thread):
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        photo(photos / f"ann{i}.png", shade(ANN, 2 * i), size=(300, 300), box=(80, 60, 220, 200))
    photo(photos / "empty.png", colour=None)
    _register()
    args = ["portrait", "train", "--photos", str(photos), "--name", "ann", "--base", "tiny-sd15", "--steps", "4",
            "--face-backend", "fake", "--json", "--device", "cpu"]  # fmt: skip
    for setting in ("train.resolution=64", "train.save_every_steps=2", "scoring.steps=2", "lora.rank=4",
                    "train.mixed_precision=no", "train.grad_accum=1"):  # fmt: skip
        args += ["--set", setting]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    ws = tiny_workspace
    assert out["left_out"] == {"empty.png": "no face found"} and len(out["kept"]) == 4
    assert (ws.loras / "ann.safetensors").is_file() and out["library_lora"] == str(ws.loras / "ann.safetensors")
    dataset = ws.datasets / "ann"
    captions = sorted(p.read_text().strip() for p in (dataset / "images").glob("*.txt"))
    assert captions == ["a photo of ann person"] * 4
    report = json.loads((dataset / "portrait.json").read_text())
    assert report["backend"] == "fake" and report["reference"] == out["reference"]
    scores = json.loads((ws.runs / "ann" / "scores.json").read_text())
    assert scores["decided_by"] == out["decided_by"] == "face_identity" and [r["step"] for r in scores["rows"]] == [2, 4]
    assert set(out["identity"]) == {"2", "4"} and out["best_step"] == scores["best_step"]
    assert all("a photo of ann person" in p for p in scores["prompts"])
    person = json.loads((ws.root / "portraits" / "ann.json").read_text())
    assert person["lora"] == "loras/ann.safetensors" and person["trigger"] == "ann"
    assert (ws.root / "portraits" / person["reference_image"]).is_file()
    assert np.load(ws.root / "portraits" / person["embedding"]).shape == (3,)
    people = CliRunner().invoke(app, ["portrait", "people", "--json"])
    assert json.loads(people.stdout)["people"] == [{"name": "ann", "trigger": "ann", "lora": "loras/ann.safetensors", "photos": 4}]
    # too few usable photos: refused before training, naming each left-out photo
    for extra in photos.glob("ann[123].png"):
        extra.unlink()
    again = CliRunner().invoke(app, [*args[:5], "bob", *args[6:]])
    assert again.exit_code == 2 and "1 of 2 photos usable" in again.output and "empty.png: no face found" in again.output
    assert not (ws.datasets / "bob").exists()


def test_a_portrait_train_job_checks_uploads_reserves_its_run_and_trains(tiny_workspace, tmp_path, fake_backend, one_torch_thread):
    from lorastudio.service.job_kinds import install, job_folder, submit_job, typed_job
    from lorastudio.service.jobs import HandlerRegistry
    from lorastudio.service.jobs.worker import Worker
    from lorastudio.service.studio import Studio, StudioSettings
    from lorastudio.service.uploads import store_stream

    ws = tiny_workspace
    uploads = []
    for i in range(4):
        path = photo(tmp_path / f"ann{i}.png", shade(ANN, 2 * i), size=(300, 300), box=(80, 60, 220, 200))
        with path.open("rb") as stream:
            uploads.append(store_stream(ws, stream, path.name)[0])
    config = {"name": "ann", "photos": uploads, "file_names": [f"ann{i}.png" for i in range(4)], "base": "tiny-sd15", "steps": 2, "resolution": 64,
              "save_every_steps": 2, "rank": 4, "face_backend": "fake", "min_photos": 3}  # fmt: skip
    with Studio(ws, StudioSettings()) as studio:
        missing, _ = typed_job("portrait-train", payload={"config": {**config, "photos": ["nope.png"], "file_names": []}})
        with pytest.raises(LorastudioError, match="nope.png"):
            submit_job(studio, "portrait-train", missing)
        cfg, _ = typed_job("portrait-train", payload={"config": config})
        job = submit_job(studio, "portrait-train", cfg)
        assert job.payload["run"] == "ann" and job_folder(ws, job) == ws.runs / "ann" and (ws.runs / "ann").is_dir()
        Worker(studio.store, ws, registry=install(HandlerRegistry())).run(stop_when_idle=True)
        done = studio.get_job(job.id)
    assert done.state == "succeeded", done.error
    assert done.result["library_lora"] == str(ws.loras / "ann.safetensors")
    assert sorted(done.result["kept"]) == [f"ann{i}.png" for i in range(4)]  # the user's names, not the uploads'
    assert not any((ws.cache / "uploads").iterdir()) and not (ws.cache / "portrait-photos" / job.id).exists()
    assert json.loads((ws.root / "portraits" / "ann.json").read_text())["run"] == "ann"


# -- the real default backend (dlib) on public-domain photos -------------------------------------
def test_dlib_keeps_one_person_drops_the_other_and_records_the_reference(workspace, tmp_path):
    pytest.importorskip("dlib")
    pytest.importorskip("lorastudio.portrait.backends.dlib_backend")
    from pathlib import Path

    from PIL import ImageOps

    from lorastudio.service.face_identity import open_face_backend
    from lorastudio.service.portraits import _write_person, load_person, write_portrait_dataset
    from lorastudio.train.face_scoring import identity_score

    fixtures = Path(__file__).parent / "fixtures" / "faces"
    astronaut = Image.open(fixtures / "astronaut.jpg").convert("RGB").resize((1024, 1024))
    hopper = Image.open(fixtures / "grace_hopper.jpg").convert("RGB")
    astronaut.save(tmp_path / "a-plain.jpg")
    ImageOps.mirror(astronaut).save(tmp_path / "a-flipped.jpg")
    astronaut.save(tmp_path / "a-jpeg30.jpg", quality=30)
    astronaut.crop((40, 0, 984, 944)).save(tmp_path / "a-crop.jpg")
    astronaut.resize((512, 512)).save(tmp_path / "a-small.jpg")  # an 87 px face
    hopper.save(tmp_path / "hopper.jpg")
    paths = sorted(tmp_path.glob("*.jpg"))
    backend = open_face_backend(workspace, None)
    selection = select_photos(paths, backend)
    fate = {p.name: (p.status, p.reason) for p in selection.photos}
    assert fate["a-small.jpg"][0] == "refused" and "under 128 px" in fate["a-small.jpg"][1]
    assert fate["hopper.jpg"][0] == "outlier"
    assert {p.name for p in selection.kept} == {"a-plain.jpg", "a-flipped.jpg", "a-jpeg30.jpg", "a-crop.jpg"}
    assert selection.reference.crop.size == (512, 512)
    write_portrait_dataset(workspace, "eileen", "eileen", selection)
    _write_person(workspace, "eileen", "eileen", selection, "tiny-sd15", "eileen", None)
    person = load_person(workspace, "eileen", need_lora=False)
    assert person.reference_image.is_file() and person.reference_face.size > 100
    with pytest.raises(LorastudioError, match="no trained LoRA"):
        load_person(workspace, "eileen")
    references = list(np.load(workspace.datasets / "eileen" / "portrait_embeddings.npy"))
    hopper_crop = tmp_path / "hopper-crop.png"
    next(p for p in selection.photos if p.name == "hopper.jpg").crop.save(hopper_crop)
    same = identity_score(backend, [person.reference_image], references)
    other = identity_score(backend, [hopper_crop], references)
    assert same > 0.75 and other < 0.5


def test_the_native_api_queues_a_portrait_training_from_uploads(workspace, tmp_path):
    from fastapi.testclient import TestClient

    from lorastudio.api.app import create_app
    from lorastudio.service.studio import Studio, StudioSettings

    path = photo(tmp_path / "ann0.png")
    with Studio(workspace, StudioSettings()) as studio:  # not started: the job stays queued
        client = TestClient(create_app(studio))
        missing = client.post("/api/v1/jobs/portrait-train", json={"name": "ann", "photos": ["nope.png"]})
        assert missing.status_code == 404 and "nope.png" in missing.text
        bad = client.post("/api/v1/jobs/portrait-train", json={"name": "../ann", "photos": ["x.png"]})
        assert bad.status_code == 400 and "person name" in bad.text
        upload = client.post("/api/v1/uploads", files={"file": ("ann0.png", path.read_bytes(), "image/png")})
        name = upload.json()["upload"]
        job = client.post("/api/v1/jobs/portrait-train", json={"name": "ann", "photos": [name], "file_names": ["ann0.png"]})
        assert job.status_code == 200, job.text
        queued = studio.get_job(job.json()["id"])
    assert queued.kind == "portrait-train" and queued.payload["run"] == "ann" and (workspace.runs / "ann").is_dir()
    assert queued.payload["config"]["base"] == "tiny-sd15" and queued.payload["config"]["photos"] == [name]
