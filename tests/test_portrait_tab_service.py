"""The service calls behind the web UI's Portrait tab: the photo check without training, a
person's reference photo and identity scores, and a form's photos queued as `portrait-train`.
Real dlib on the public-domain test photos (a check takes well under a second)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from lorastudio.errors import LorastudioError
from lorastudio.service.portraits import PortraitTrainConfig, check_photos, person_details

FACES = Path(__file__).parent / "fixtures" / "faces"


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    """Three photos of Grace Hopper (plain, mirrored, JPEG) and a grey wall."""
    if not (FACES / "grace_hopper.jpg").is_file():
        pytest.skip("tests/fixtures/faces is not here")
    hopper = Image.open(FACES / "grace_hopper.jpg").convert("RGB")
    hopper.save(tmp_path / "hopper.jpg")
    ImageOps.mirror(hopper).save(tmp_path / "hopper-flipped.jpg")
    hopper.save(tmp_path / "hopper-jpeg.jpg", quality=40)
    Image.new("RGB", (300, 300), (128, 128, 128)).save(tmp_path / "wall.png")
    return sorted(tmp_path.glob("*.*"))


def test_check_photos_reports_kept_crops_and_refused_files_and_writes_nothing(workspace, photos):
    pytest.importorskip("dlib")
    report = check_photos(workspace, PortraitTrainConfig(name="grace", min_photos=3), photos)
    assert sorted(row["file"] for row in report["kept"]) == ["hopper-flipped.jpg", "hopper-jpeg.jpg", "hopper.jpg"]
    assert all(row["crop"].size == (512, 512) for row in report["kept"])
    assert [row["reference"] for row in report["kept"]].count(True) == 1
    assert report["left_out"] == [{"file": "wall.png", "status": "refused", "reason": report["left_out"][0]["reason"]}]
    assert "no face" in report["left_out"][0]["reason"]
    assert report["enough"] and report["summary"].startswith("3 of 4 photos usable")
    assert not report_enough_with(workspace, photos, minimum=4)
    assert not any(workspace.datasets.iterdir()) and not (workspace.root / "portraits").exists()
    with pytest.raises(LorastudioError, match="no photos"):
        check_photos(workspace, PortraitTrainConfig(name="grace"), [])


def report_enough_with(workspace, photos, minimum: int) -> bool:
    return check_photos(workspace, PortraitTrainConfig(name="grace", min_photos=minimum), photos)["enough"]


def test_person_details_show_the_reference_and_each_checkpoints_identity(workspace, photos):
    pytest.importorskip("dlib")
    from lorastudio.portrait.selection import select_photos
    from lorastudio.service.face_identity import open_face_backend
    from lorastudio.service.portraits import _write_person, write_portrait_dataset

    selection = select_photos(photos, open_face_backend(workspace, None))
    write_portrait_dataset(workspace, "grace", "zqgrace", selection)
    _write_person(workspace, "grace", "zqgrace", selection, "tiny-sd15", "grace", None)
    run = workspace.runs / "grace"
    run.mkdir(parents=True)
    table = {
        "scorers": {"face_identity": {}}, "best_step": 4, "result_step": 4,
        "rows": [{"step": 2, "scores": {"face_identity": 0.61}}, {"step": 4, "scores": {"face_identity": 0.83}}],
    }  # fmt: skip
    (run / "scores.json").write_text(json.dumps(table), encoding="utf-8")
    details = person_details(workspace, "grace")
    assert details["trigger"] == "zqgrace" and details["lora"] is None and details["run"] == "grace"
    assert Image.open(details["reference_image"]).size == (512, 512)
    assert details["scores"] == [
        {"step": 2, "identity": 0.61, "best": False, "in_library": False},
        {"step": 4, "identity": 0.83, "best": True, "in_library": True},
    ]


def test_a_forms_photos_are_stored_and_queued_as_portrait_train_and_a_refusal_keeps_none(workspace, photos):
    from lorastudio.service.portrait_uploads import submit_portrait_photos
    from lorastudio.service.studio import Studio, StudioSettings
    from lorastudio.service.uploads import uploads_dir

    with Studio(workspace, StudioSettings(model="tiny-sd15")) as studio:  # not started: the job stays queued
        job = submit_portrait_photos(studio, PortraitTrainConfig(name="grace", steps=2), photos, user="ann")
        with pytest.raises(LorastudioError, match="no photos"):
            submit_portrait_photos(studio, PortraitTrainConfig(name="grace"), [])
        before = sorted(uploads_dir(workspace).iterdir())
        text = photos[0].with_name("notes.txt")
        text.write_text("not a photo", encoding="utf-8")
        with pytest.raises(LorastudioError, match="notes.txt"):
            submit_portrait_photos(studio, PortraitTrainConfig(name="other"), [photos[0], text])
        assert sorted(uploads_dir(workspace).iterdir()) == before  # the refused request left no upload
    config = job.payload["config"]
    assert job.kind == "portrait-train" and job.user == "ann" and config["steps"] == 2
    assert config["file_names"] == [p.name for p in photos] and len(config["photos"]) == len(photos)
    assert all((uploads_dir(workspace) / name).is_file() for name in config["photos"])
