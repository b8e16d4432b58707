"""The Data sets tab end to end in headless Chromium: import by upload (a Chinese file name and
data-set name, a caption .txt beside its image), a fixed caption, the caption editor and a bulk
replace checked on disk, filters previewed then applied, a refused model named next to its button.

Tiny noise PNGs made in the test keep each step to a second or two.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import logged_in_page

pytestmark = pytest.mark.slow


@pytest.fixture
def page(served, browser):
    with logged_in_page(served, browser, tab="Data sets") as page:
        yield page


def _noise(path: Path, size: tuple[int, int] = (64, 64), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(path)
    return path


def _text_box(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def _wait_text(page, elem_id: str, text: str, timeout: int = 30_000) -> str:
    page.wait_for_function(
        "([id, text]) => (document.getElementById(id) || {}).innerText?.includes(text)",
        arg=[elem_id, text],
        timeout=timeout,
    )
    return page.locator(f"#{elem_id}").inner_text()


def _upload(page, files: list[Path], name: str, folder: Path | None = None) -> None:
    """Choose the files (or a folder), wait until the browser sent them all, name the data set, import it."""
    target = "ds-upload-folder" if folder else "ds-upload"
    page.locator(f"#{target} input[type=file]").set_input_files(str(folder) if folder else [str(f) for f in files])
    for file in files:  # the list shows each name once its upload is done (split over lines)
        page.wait_for_function(
            "([id, name]) => document.getElementById(id).innerText.replace(/\\s/g, '').includes(name)",
            arg=[target, file.name],
        )
    _text_box(page, "ds-new-name").fill(name)
    page.click("#ds-import-run")
    _wait_text(page, "ds-import-message", f"Imported {name}")


def _captions(served, name: str) -> dict[str, str]:
    from lorastudio.service.datasets import dataset_captions

    items = dataset_captions(served.studio.workspace, name)["items"]
    return {Path(item["original"]).name: item["caption"] for item in items}


def test_import_by_upload_caption_edit_and_bulk_replace_reach_the_files(served, page, tmp_path):
    files = [_noise(tmp_path / "角色_01.png", seed=1), _noise(tmp_path / "b.png", seed=2),
             _noise(tmp_path / "c.png", seed=3), tmp_path / "b.txt"]  # fmt: skip
    files[3].write_text("a cat, red hair", encoding="utf-8")
    _upload(page, files, "测试集")
    assert "3 images" in _wait_text(page, "ds-info", "测试集")
    assert _captions(served, "测试集") == {"角色_01.png": "", "b.png": "a cat, red hair", "c.png": ""}

    page.get_by_role("tab", name="Captioning", exact=True).click()
    _text_box(page, "ds-template").fill("a photo, red hair")
    page.locator("#ds-only-missing input").check()
    page.click("#ds-template-apply")
    _wait_text(page, "ds-template-message", "Changed 2 of 3")
    assert _captions(served, "测试集") == {"角色_01.png": "a photo, red hair", "b.png": "a cat, red hair",
                                           "c.png": "a photo, red hair"}  # fmt: skip

    page.get_by_role("tab", name="Caption editor", exact=True).click()
    table = _wait_text(page, "ds-captions", "a photo, red hair")
    assert "a cat, red hair" in table
    assert page.locator("#ds-gallery img").count() == 3
    _text_box(page, "ds-bulk-replace").fill("red hair=blue hair")
    page.click("#ds-bulk-preview")
    _wait_text(page, "ds-bulk-message", "Would change 3 captions")
    assert "red hair" in _captions(served, "测试集")["b.png"]  # a preview writes nothing
    page.click("#ds-bulk-apply")
    _wait_text(page, "ds-bulk-message", "Changed 3 captions")
    assert _captions(served, "测试集") == {"角色_01.png": "a photo, blue hair", "b.png": "a cat, blue hair",
                                           "c.png": "a photo, blue hair"}  # fmt: skip
    table = _wait_text(page, "ds-captions", "a cat, blue hair")
    assert "red hair" not in table

    # one caption typed into the table, as a person edits a cell, then saved
    row = page.locator("#ds-captions [role=row]", has_text="角色_01.png").first
    row.locator("[data-col='2']").dblclick()
    editor = row.locator("[data-col='2']").locator("textarea, input").first
    editor.wait_for()  # the cell's editor is open (select-all before it shows selected nothing, under load)
    editor.fill("角色, 红发")
    editor.press("Enter")
    page.click("#ds-captions-save")
    _wait_text(page, "ds-captions-message", "Saved 1 captions")
    assert _captions(served, "测试集")["角色_01.png"] == "角色, 红发"


def test_a_folder_upload_then_filters_preview_a_too_small_image_that_apply_drops(served, page, tmp_path):
    shots = tmp_path / "shots"
    shots.mkdir()
    files = [_noise(shots / "big1.png", seed=4), _noise(shots / "big2.png", seed=5),
             _noise(shots / "tiny.png", (16, 16), seed=6), shots / "big1.txt"]  # fmt: skip
    files[3].write_text("from the folder", encoding="utf-8")
    _upload(page, files, "filtered", folder=shots)
    assert _captions(served, "filtered") == {"big1.png": "from the folder", "big2.png": "", "tiny.png": ""}
    page.get_by_role("tab", name="Filters", exact=True).click()
    width = page.locator("#ds-clean-min_width input").first
    width.fill("32")
    width.press("Tab")
    page.click("#ds-clean-preview")
    assert "too small" in _wait_text(page, "ds-clean-table", "too small")
    assert "Would drop 1 images, keep 2" in _wait_text(page, "ds-clean-message", "Would drop")
    assert len(_captions(served, "filtered")) == 3  # the preview dropped nothing

    page.click("#ds-clean-apply")
    _wait_text(page, "ds-clean-message", "Dropped 1 images")
    assert sorted(_captions(served, "filtered")) == ["big1.png", "big2.png"]
    _wait_text(page, "ds-info", "2 images")

    page.get_by_role("tab", name="Report", exact=True).click()
    page.click("#ds-report-make")
    page.wait_for_selector("#ds-report iframe")
    assert (served.studio.workspace.datasets / "filtered" / "report.html").is_file()


def test_a_missing_tagger_is_named_next_to_the_button_and_the_set_is_deleted(served, page, tmp_path):
    _upload(page, [_noise(tmp_path / "one.png", seed=7)], "tagme")
    page.get_by_role("tab", name="Captioning", exact=True).click()
    _text_box(page, "ds-label-model").fill("no-such-tagger")
    page.click("#ds-label-start")
    text = _wait_text(page, "ds-label-progress", "Error")
    assert "no-such-tagger" in text and "Traceback" not in text

    page.click("#ds-delete-box button")  # open the fold
    _text_box(page, "ds-confirm").fill("tagm")  # a wrong name deletes nothing
    page.click("#ds-delete")
    _wait_text(page, "ds-delete-message", "Type the data set's name")
    assert (served.studio.workspace.datasets / "tagme").is_dir()
    _text_box(page, "ds-confirm").fill("tagme")
    page.click("#ds-delete")
    _wait_text(page, "ds-delete-message", "Deleted tagme")
    assert not (served.studio.workspace.datasets / "tagme").exists()


def test_tagging_runs_as_a_job_with_progress_and_writes_the_tags(served, page, tmp_path):
    from test_dataset_models import build_tiny_wd14

    build_tiny_wd14(served.studio.workspace.models / "tiny-wd14")
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(red)
    Image.new("RGB", (32, 32), (0, 0, 255)).save(blue)
    _upload(page, [red, blue], "tagged")
    page.get_by_role("tab", name="Captioning", exact=True).click()
    _text_box(page, "ds-label-model").fill("tiny-wd14")
    page.click("#ds-label-start")
    _wait_text(page, "ds-label-progress", "Wrote 2 captions", timeout=60_000)
    job = served.studio.list_jobs(limit=1)[0]
    assert (job.kind, job.state, job.user) == ("caption", "succeeded", "admin")
    captions = _captions(served, "tagged")
    assert "red hair" in captions["red.png"] and "blue sky" in captions["blue.png"]
    _wait_text(page, "ds-info", "2 with a caption")  # the view is read again when the job ends


def test_a_queued_caption_job_is_followed_again_after_a_reload_and_cancelled(served, page, tmp_path):
    from test_dataset_models import build_tiny_wd14

    studio = served.studio
    build_tiny_wd14(studio.workspace.models / "tiny-wd14")
    _upload(page, [_noise(tmp_path / "wait.png", seed=8)], "queued")
    busy = studio.submit("sleep", {"config": {"seconds": 60, "steps": 120}})  # holds the worker
    try:
        page.get_by_role("tab", name="Captioning", exact=True).click()
        _text_box(page, "ds-label-model").fill("tiny-wd14")
        page.click("#ds-label-start")
        _wait_text(page, "ds-label-progress", "Queued")
        job = next(j for j in studio.list_jobs(state="queued") if j.kind == "caption")

        page.reload()  # a new page finds the user's caption job and follows it
        page.get_by_role("tab", name="Data sets", exact=True).click()
        page.get_by_role("tab", name="Captioning", exact=True).click()
        _wait_text(page, "ds-label-progress", "Queued")
        page.click("#ds-label-cancel")
        _wait_text(page, "ds-label-progress", "Interrupted")
        assert studio.get_job(job.id).state == "cancelled"
    finally:
        studio.cancel_job(busy.id)
    assert _captions(served, "queued") == {"wait.png": ""}
