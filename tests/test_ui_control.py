"""The Generate tab's ControlNet units in a real headless Chromium: the preprocessor preview, a
unit that steers a generation (written to the infotext), and a unit the form cannot send."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from browser import logged_in_page
from controlnet_files import diffusers_to_original, make_controlnet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def control_files(served, sd15, tmp_path_factory):
    """A tiny random ControlNet in the served workspace and a drawn control image."""
    from safetensors.torch import save_file

    controlnet = make_controlnet(sd15)
    original = diffusers_to_original(controlnet.state_dict(), dict(controlnet.config), prefix="control_model.")
    ws = served.studio.workspace
    ws.controlnet.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in original.items()}, ws.controlnet / "edges.safetensors")
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle((16, 16, 48, 48), outline="white", width=3)
    path = tmp_path_factory.mktemp("control") / "square.png"
    image.save(path)
    from lorastudio.service.controlnets import list_controlnets

    return {"image": path, "title": list_controlnets(ws)[0]["title"]}


@pytest.fixture
def page(served, browser, control_files):
    with logged_in_page(served, browser) as page:
        page.get_by_text("ControlNet", exact=True).first.click()  # open the accordion
        page.wait_for_selector("#control-0-image")
        yield page


def _choose(page, elem_id: str, value: str) -> None:
    picker = page.locator(f"#{elem_id} input")
    picker.click()
    picker.fill(value)
    page.get_by_role("option", name=value, exact=True).click()


def _set(page, selector: str, value: object) -> None:
    box = page.locator(selector).first
    box.fill(str(value))
    box.press("Tab")


def test_preview_shows_the_preprocessors_map(page, control_files):
    page.locator("#control-0-image input[type=file]").set_input_files(str(control_files["image"]))
    page.wait_for_selector("#control-0-image img")
    _choose(page, "control-0-module", "canny")
    # the preprocessor's own parameters replace the generic ones (canny: low/high thresholds)
    page.wait_for_function(
        "() => document.querySelector('#control-0-threshold-a input').value === '100'", timeout=10_000
    )
    page.click("#control-0-preview")
    page.wait_for_selector("#control-0-map img", timeout=30_000)
    assert page.locator("#control-0-error").inner_text().strip() == ""


def test_an_enabled_unit_steers_the_generation_and_is_in_the_infotext(served, page, control_files):
    page.locator("#field-prompt textarea").fill("a red square")
    for selector, value in (("#field-width input", 64), ("#field-height input", 64),
                            ("#field-steps input[type=number]", 3), ("#field-seed input", 7)):  # fmt: skip
        _set(page, selector, value)
    page.locator("#control-0-image input[type=file]").set_input_files(str(control_files["image"]))
    page.wait_for_selector("#control-0-image img")
    page.locator("#control-0-enabled input").check()
    _choose(page, "control-0-model", control_files["title"])
    _choose(page, "control-0-module", "canny")
    page.click("#generate-run")
    page.wait_for_function(
        "() => (document.querySelector('#infotext textarea') || {}).value?.includes('ControlNet 0')",
        timeout=120_000,
    )
    info = page.locator("#infotext textarea").input_value()
    assert 'ControlNet 0: "Module: canny, Model: ' + control_files["title"] in info
    job = served.studio.list_jobs(limit=1)[0]
    (unit,) = job.payload["config"]["controlnet"]
    assert (unit["model"], unit["module"]) == (control_files["title"], "canny")
    assert unit["image"]  # the uploaded image went in as an upload the job names


def test_an_enabled_unit_without_a_model_is_refused_naming_it(served, page):
    before = len(served.studio.list_jobs(limit=100))
    page.get_by_role("tab", name="Unit 1", exact=True).click()
    page.locator("#control-1-enabled input").check()
    page.click("#generate-run")
    page.wait_for_function(
        "() => document.querySelector('#progress-text').innerText.includes('ControlNet unit 1')",
        timeout=10_000,
    )
    assert len(served.studio.list_jobs(limit=100)) == before  # nothing was queued


def test_png_info_fills_the_units_of_a_pasted_image(served, page, control_files, tmp_path):
    """As the extension's paste: unit 0 enabled with the image's model, preprocessor and settings (its
    parameters kept, not reset to the preprocessor's defaults), unit 1 switched off."""
    from PIL.PngImagePlugin import PngInfo

    page.get_by_role("tab", name="Unit 1", exact=True).click()
    page.locator("#control-1-enabled input").check()  # the form's own unit: the image has none there
    page.get_by_role("tab", name="Unit 0", exact=True).click()
    info = PngInfo()
    info.add_text("parameters", "a red square\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 7, Size: 64x64, "
                  f'ControlNet 0: "Module: canny, Model: {control_files["title"]}, Weight: 0.6, '
                  "Processor Res: 256, Threshold A: 50, Threshold B: 150, Guidance Start: 0.1, Guidance End: 0.9\"")  # fmt: skip
    pasted = tmp_path / "civitai.png"
    Image.new("RGB", (64, 64)).save(pasted, pnginfo=info)
    page.get_by_role("tab", name="PNG info", exact=True).click()
    page.locator("#png-image input[type=file]").set_input_files(str(pasted))
    page.wait_for_function(
        "() => (document.querySelector('#png-parameters textarea') || {}).value?.includes('ControlNet 0')"
    )
    page.click("#png-send-generate")
    page.wait_for_function("() => document.querySelector('#control-0-enabled input').checked", timeout=10_000)
    assert page.locator("#control-0-model input").input_value() == control_files["title"]
    assert page.locator("#control-0-module input").input_value() == "canny"
    assert page.locator("#control-0-weight input[type=number]").input_value() == "0.6"
    page.wait_for_timeout(500)  # the module's change event has run: the pasted thresholds stay
    assert page.locator("#control-0-threshold-a input").input_value() == "50"
    page.get_by_role("tab", name="Unit 1", exact=True).click()
    assert not page.locator("#control-1-enabled input").is_checked()
