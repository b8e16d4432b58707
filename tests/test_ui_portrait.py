"""The Portrait tab end to end in headless Chromium, with the real dlib face backend on the
public-domain test photos: photos checked (kept crops, a refused file with its reason), a person
trained on tiny-sd15 in a few 64 px steps and shown in the people list with their reference
photo, a template added to the library, and a portrait made with its identity score shown.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageOps

from browser import cancel_unfinished, fill_and_keep, logged_in_page

# `make test` runs a file on one pytest-xdist worker (--dist loadfile): the later tests use the person the training test made.
pytestmark = pytest.mark.slow

FACES = Path(__file__).parent / "fixtures" / "faces"


@pytest.fixture(scope="module", autouse=True)
def needs_dlib():
    pytest.importorskip("dlib")
    if not (FACES / "grace_hopper.jpg").is_file():
        pytest.skip("tests/fixtures/faces is not here")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Four usable photos of Grace Hopper (flips, JPEG, a crop) and one photo without a face."""
    folder = tmp_path_factory.mktemp("grace")
    hopper = Image.open(FACES / "grace_hopper.jpg").convert("RGB")
    hopper.save(folder / "hopper.jpg")
    ImageOps.mirror(hopper).save(folder / "hopper-flipped.jpg")
    hopper.save(folder / "hopper-jpeg.jpg", quality=40)
    hopper.crop((20, 20, 500, 580)).save(folder / "hopper-crop.jpg")
    Image.new("RGB", (300, 300), (128, 128, 128)).save(folder / "wall.png")
    return sorted(folder.iterdir())


@pytest.fixture
def page(served, browser):
    with logged_in_page(served, browser, tab="Portrait") as page:
        page.wait_for_selector("#portrait-check")
        yield page
        cancel_unfinished(served.studio)


def _wait_text(page, selector: str, text: str, timeout: int = 120_000) -> str:
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel) || {}).innerText?.includes(text)",
        arg=[selector, text],
        timeout=timeout,
    )
    return page.locator(selector).inner_text()


def _loaded(page, selector: str) -> None:
    """An image under `selector` has loaded (the server serves its folder)."""
    page.wait_for_function(
        "(sel) => [...document.querySelectorAll(sel + ' img')].some(i => i.complete && i.naturalWidth > 0)",
        arg=selector,
    )


def _pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def test_photos_are_checked_then_the_person_is_trained_and_listed(served, page, photos):
    page.locator("#portrait-photos input[type=file]").set_input_files([str(p) for p in photos])
    page.wait_for_function(
        "() => document.querySelectorAll('#portrait-photos .file-preview tr, #portrait-photos li').length >= 5"
    )
    page.click("#portrait-check")
    _wait_text(page, "#portrait-check-summary", "4 of 5 photos usable")
    assert page.locator("#portrait-kept img").count() == 4
    refused = _wait_text(page, "#portrait-refused", "wall.png")
    assert "no face" in refused
    assert "hopper" not in refused
    assert "reference" in page.locator("#portrait-kept").inner_text()  # one kept crop is the reference

    fill_and_keep(page, "portrait-name", "grace")
    fill_and_keep(page, "portrait-steps", 2)
    page.click("#portrait-advanced button")
    page.locator("#portrait-resolution input").first.wait_for(state="visible")
    fill_and_keep(page, "portrait-resolution", 64)
    fill_and_keep(page, "portrait-save-every-steps", 2)
    fill_and_keep(page, "portrait-rank", 4)
    page.click("#portrait-train")
    page.wait_for_function(
        "() => (document.querySelector('#portrait-train-job textarea, #portrait-train-job input') || {}).value"
    )
    job_id = page.locator("#portrait-train-job textarea, #portrait-train-job input").first.input_value()
    _wait_text(page, "#portrait-train-message", "is trained", timeout=180_000)
    job = served.studio.get_job(job_id)
    assert job.kind == "portrait-train" and job.state == "succeeded"
    config = job.payload["config"]
    assert config["steps"] == 2 and config["resolution"] == 64 and config["rank"] == 4
    assert sorted(config["file_names"]) == sorted(p.name for p in photos)
    assert "grace" in page.locator("#portrait-people").inner_text()
    _loaded(page, "#portrait-reference")
    assert "wall.png: no face" in page.locator("#portrait-train-progress").inner_text()  # the job's photo report
    assert "2" in page.locator("#portrait-scores").inner_text()  # the checkpoint at step 2 is scored
    assert (served.studio.workspace.loras / "grace.safetensors").is_file()


def test_a_template_is_added_and_a_portrait_made_with_its_score(served, page):
    if not (served.studio.workspace.root / "portraits" / "grace.json").is_file():
        pytest.skip("needs the person trained by the test before")
    page.get_by_role("tab", name="Templates", exact=True).click()
    page.locator("#portrait-template-file input[type=file]").set_input_files(str(FACES / "astronaut.jpg"))
    page.wait_for_timeout(500)
    page.click("#portrait-template-add")
    _wait_text(page, "#portrait-template-message", "1 face(s)")
    _wait_text(page, "#portrait-template-gallery", "astronaut · 1 face(s)")
    _loaded(page, "#portrait-template-gallery")

    page.get_by_role("tab", name="Make", exact=True).click()
    _pick(page, "portrait-make-persons", "grace")
    page.keyboard.press("Escape")
    _pick(page, "portrait-make-templates", "astronaut")
    page.keyboard.press("Escape")
    fill_and_keep(page, "portrait-make-steps", 2)
    fill_and_keep(page, "portrait-seed", 1)
    page.click("#portrait-make-run")
    _wait_text(page, "#portrait-make-message", "Done", timeout=120_000)
    _loaded(page, "#portrait-results")
    caption = page.locator("#portrait-results").inner_text()
    assert "astronaut · score " in caption and "score –" not in caption
    info = page.locator("#portrait-infotext textarea").first.input_value()
    assert "Portrait template: astronaut" in info and "Seed: 1" in info
