"""The web UI end to end in a real headless Chromium: log in, generate, read PNG info back,
img2img, interrupt, the library and jobs tabs, Chinese labels; and nothing fetched from the internet.

One served studio (tiny models, `--auth`) and one browser for the module; 64x64 images with a
few steps keep each generation to seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from browser import (
    PASSWORD,
    USER,
    fill_and_keep,
    logged_in_page,
)

pytestmark = pytest.mark.slow

PROMPT = "a red square, 红色方块"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


@pytest.fixture
def page(served, browser):
    with logged_in_page(served, browser) as page:
        yield page


def _set(page, selector: str, value: object) -> None:
    """Type into a Gradio number/text box and leave it, as a person does (the change fires on blur)."""
    box = page.locator(selector).first
    box.fill(str(value))
    box.press("Tab")


def _small_generation(page, prompt: str = PROMPT, steps: int = 3, count: int = 1) -> None:
    page.locator("#field-prompt textarea").fill(prompt)
    _set(page, "#field-width input", 64)
    _set(page, "#field-height input", 64)
    _set(page, "#field-steps input[type=number]", steps)
    _set(page, "#field-count input[type=number]", count)
    _set(page, "#field-seed input", 1234)


def _wait_for_infotext(page, must_contain: str) -> str:
    page.wait_for_function(
        "(text) => { const box = document.querySelector('#infotext textarea');"
        " return box && box.value.includes(text); }",
        arg=must_contain,
        timeout=120_000,
    )
    return page.locator("#infotext textarea").input_value()


def _tab(page, label: str) -> None:
    page.get_by_role("tab", name=label, exact=True).click()



def _paint_the_centre(page) -> None:
    """One brush stroke across the middle of the inpaint painter's picture."""
    canvas = page.locator("#inpaint-painter canvas").first
    canvas.wait_for()
    page.wait_for_timeout(1500)  # the accordion opens and the picture is fitted into the canvas
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.7, steps=8)
    page.mouse.up()
    page.wait_for_timeout(1000)  # the painter hands its layers to the form a moment after the stroke

def test_the_ui_needs_a_login_and_one_login_opens_ui_api_and_docs(served, browser):
    page = browser.page()
    page.goto(served.url + "/ui/en/")
    assert "/login" in page.url  # a browser is sent to the login page, not shown a 401
    page.fill("#user", USER)
    page.fill("#password", "wrong")
    page.click("button[type=submit]")
    assert page.get_by_role("alert").inner_text().startswith("Wrong user or password")
    page.fill("#user", USER)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/en/")  # back where the browser wanted to go
    page.wait_for_selector("#generate-run")
    assert page.request.get(served.url + "/api/v1/status").status == 200
    assert page.request.get(served.url + "/docs").status == 200
    anonymous = browser.browser.new_context()
    assert anonymous.request.get(served.url + "/api/v1/status").status == 401
    assert anonymous.request.get(served.url + "/ui/en/config").status == 401
    anonymous.close()
    page.context.close()


def test_generate_then_read_the_png_info_back_and_send_it_to_generate(served, page):
    _small_generation(page)
    page.click("#generate-run")
    info = _wait_for_infotext(page, "Steps: 3")
    assert PROMPT in info and "Size: 64x64" in info and "Seed: 1234" in info
    assert page.locator("#gallery img").count() >= 1
    job = served.studio.list_jobs(limit=1)[0]
    assert (job.kind, job.state, job.user) == ("generate", "succeeded", USER)
    assert (job.payload["config"]["width"], job.payload["config"]["steps"]) == (64, 3)  # the form's values
    image = served.studio.job_images(job)[0]
    page.locator("#field-prompt textarea").fill("another prompt")  # the recipe must bring them back
    _set(page, "#field-seed input", 99)

    _tab(page, "PNG info")
    page.locator("#png-image input[type=file]").set_input_files(str(image))
    page.wait_for_function(
        "() => (document.querySelector('#png-parameters textarea') || {}).value?.includes('Steps: 3')"
    )
    assert PROMPT in page.locator("#png-parameters textarea").input_value()

    page.click("#png-send-generate")
    page.wait_for_function(
        "(text) => document.querySelector('#field-prompt textarea').value === text", arg=PROMPT
    )
    assert page.locator("#field-seed input").input_value() == "1234"
    assert page.locator("#field-steps input[type=number]").input_value() == "3"


def test_a_padded_long_prompt_says_pad_conds_and_png_info_brings_the_options_back(served, page):
    """A prompt of two 75-token chunks with a one-chunk negative, padded (A1111's option), DDIM's eta
    and a seed resize: the infotext says so, and PNG info -> Generate sets them again."""
    long_prompt = ", ".join(["red square"] * 40)
    _small_generation(page, prompt=long_prompt)
    page.locator("#field-negative_prompt textarea").fill("blue")
    page.locator("#field-pad_conds input").check()
    sampler = page.locator("#field-sampler input")
    sampler.click()
    sampler.fill("DDIM")
    page.get_by_role("option", name="DDIM", exact=True).click()
    _set(page, "#field-eta input[type=number]", 0.3)  # DDIM's: written for DDIM alone
    page.get_by_text("Variation seed").first.click()  # the accordion with the seed resize boxes
    fill_and_keep(page, "field-seed_resize_from_w", 96)
    fill_and_keep(page, "field-seed_resize_from_h", 80)
    page.click("#generate-run")
    info = _wait_for_infotext(page, "Pad conds: True")
    assert "Steps: 3" in info and "Eta DDIM: 0.3" in info and "Seed resize from: 96x80" in info
    image = served.studio.job_images(served.studio.list_jobs(limit=1)[0])[0]
    page.locator("#field-pad_conds input").uncheck()
    _set(page, "#field-eta input[type=number]", 0)
    _set(page, "#field-seed_resize_from_w input", 0)
    _tab(page, "PNG info")
    page.locator("#png-image input[type=file]").set_input_files(str(image))
    page.wait_for_function(
        "() => (document.querySelector('#png-parameters textarea') || {}).value?.includes('Pad conds')"
    )
    page.click("#png-send-generate")
    page.wait_for_function("() => document.querySelector('#field-pad_conds input').checked")
    assert page.locator("#field-eta input[type=number]").input_value() == "0.3"
    assert page.locator("#field-seed_resize_from_w input").input_value() == "96"


def test_png_info_of_an_old_webuis_image_turns_on_its_old_behaviours(served, page, tmp_path):
    """A DDIM image with prompt editing from A1111 1.5.1: PNG info -> Generate ticks "Pad conds v0"
    and "Old prompt editing timelines" (A1111's Version rule), so it regenerates the old way."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        "a [cat:dog:0.5]\nSteps: 3, Sampler: DDIM, CFG scale: 7, Seed: 5, Size: 64x64, Version: v1.5.1",
    )
    old = tmp_path / "made by 1.5.1.png"
    Image.new("RGB", (64, 64)).save(old, pnginfo=info)
    _tab(page, "PNG info")
    page.locator("#png-image input[type=file]").set_input_files(str(old))
    page.wait_for_function(
        "() => (document.querySelector('#png-parameters textarea') || {}).value?.includes('v1.5.1')"
    )
    page.click("#png-send-generate")
    page.wait_for_function("() => document.querySelector('#field-seed input')?.value === '5'")
    page.get_by_text("Older A1111 and lorastudio images").first.click()
    page.wait_for_function("() => document.querySelector('#field-pad_conds_v0 input')?.checked")
    assert page.locator("#field-old_prompt_editing input").is_checked()
    assert not page.locator("#field-pad_conds input").is_checked()


def test_png_info_of_a_civitai_image_fills_both_pickers_and_generates(served, page, tmp_path):
    """Pre-1.9 A1111 images say `Sampler: DPM++ 2M Karras` and name a VAE this studio lacks: the paste
    fills sampler + schedule, keeps the form's VAE with a note, and Generate runs (it was refused)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        "a heron\nSteps: 2, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 7, Size: 64x64, "
        "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Version: v1.6.0",
    )
    civitai = tmp_path / "civitai.png"
    Image.new("RGB", (64, 64)).save(civitai, pnginfo=info)
    _tab(page, "PNG info")
    page.locator("#png-image input[type=file]").set_input_files(str(civitai))
    page.wait_for_function("() => (document.querySelector('#png-parameters textarea') || {}).value?.includes('Karras')")
    page.click("#png-send-generate")
    page.wait_for_function("() => document.querySelector('#field-seed input')?.value === '7'")
    assert page.locator("#field-sampler input").input_value() == "DPM++ 2M"
    assert page.locator("#field-schedule input").input_value() == "Karras"
    page.click("#generate-run")
    text = _wait_for_infotext(page, "Seed: 7")
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in text
    page.locator("#inpaint").get_by_text("Inpaint", exact=True).first.click()  # open the accordion
    assert not page.locator("#field-mask_invert input").is_checked()
    info = PngImagePlugin.PngInfo()  # an inpainting that repainted outside its mask: the box is ticked
    info.add_text("parameters", "a heron\nSteps: 2, Sampler: Euler, Seed: 8, Size: 64x64, Mask mode: Inpaint not masked")
    Image.new("RGB", (64, 64)).save(tmp_path / "inverted.png", pnginfo=info)
    _tab(page, "PNG info")
    page.locator("#png-image input[type=file]").set_input_files(str(tmp_path / "inverted.png"))
    page.wait_for_function("() => (document.querySelector('#png-parameters textarea') || {}).value?.includes('Mask mode')")
    page.click("#png-send-generate")
    page.wait_for_function("() => document.querySelector('#field-seed input')?.value === '8'")
    page.wait_for_function("() => document.querySelector('#field-mask_invert input')?.checked")


def test_a_picture_given_with_blank_size_boxes_sets_them_to_its_own_size(served, page, tmp_path):
    """A1111's "auto detect size": a 136x72 photo dropped on img2img with both boxes blank fills them
    (multiples of 8), so it is not drawn into the model's square; typed sizes stay."""
    from PIL import Image

    photo = tmp_path / "wide photo.png"
    Image.new("RGB", (139, 72), (200, 30, 30)).save(photo)
    _set(page, "#field-width input", 0)
    _set(page, "#field-height input", 0)
    page.locator("#img2img").get_by_text("img2img").first.click()
    page.locator("#init-image input[type=file]").set_input_files(str(photo))
    page.wait_for_function("() => document.querySelector('#field-width input').value === '136'")
    assert page.locator("#field-height input").input_value() == "72"
    _set(page, "#field-width input", 64)
    _set(page, "#field-height input", 64)
    other = tmp_path / "other.png"
    Image.new("RGB", (200, 96), (30, 30, 200)).save(other)
    page.locator("#init-image input[type=file]").set_input_files(str(other))
    page.wait_for_timeout(1500)
    assert page.locator("#field-width input").input_value() == "64"  # a typed size stays


def test_send_to_img2img_and_generate_again(served, page):
    _small_generation(page, prompt="img2img source")
    page.click("#generate-run")
    _wait_for_infotext(page, "img2img source")
    page.click("#send-img2img")
    page.wait_for_selector("#init-image img")
    page.locator("#field-prompt textarea").fill("img2img result")
    page.click("#generate-run")
    info = _wait_for_infotext(page, "img2img result")
    assert "Denoising strength: 0.75" in info  # an img2img infotext, as A1111 writes it
    job = served.studio.list_jobs(limit=1)[0]
    assert job.payload["config"]["init_image"]  # the source went in as an upload the job names


def test_send_to_inpaint_paint_a_mask_and_repaint_only_there(served, page):
    _small_generation(page, prompt="inpaint source")
    page.click("#generate-run")
    _wait_for_infotext(page, "inpaint source")
    page.click("#send-inpaint")
    _paint_the_centre(page)
    page.locator("#field-prompt textarea").fill("inpaint result")
    page.click("#generate-run")
    info = _wait_for_infotext(page, "inpaint result")
    assert "Mask blur: 4" in info  # an inpainting infotext, as A1111 writes it
    job = served.studio.list_jobs(limit=1)[0]
    assert job.payload["config"]["mask"] and job.payload["config"]["init_image"]


def test_story_mode_renders_each_line_and_a_contact_sheet(served, page):
    _small_generation(page, prompt="base prompt (unused)")
    page.get_by_text("Story (prompt list)").click()
    page.locator("#story-prompts textarea").fill("小红 in a red room\n小红 on a blue sea")
    page.click("#story-run")
    page.wait_for_function(
        "() => (document.querySelector('#progress-text') || {innerText: ''}).innerText.includes('Done')", timeout=120_000
    )
    job = served.studio.list_jobs(limit=1)[0]
    assert (job.kind, job.state) == ("series", "succeeded")
    assert len(job.result["images"]) == 2 and job.result["contact_sheet"]
    assert page.locator("#gallery img").count() >= 3  # the contact sheet, then both pictures


def test_send_to_extras_and_upscale_keeps_the_recipe(served, page):
    from PIL import Image

    _small_generation(page, prompt="to be upscaled")
    page.click("#generate-run")
    _wait_for_infotext(page, "to be upscaled")
    info = _upscale_in_extras(page)
    assert "to be upscaled" in info and "Postprocess upscale by: 2, Postprocess upscaler: Lanczos" in info
    saved = sorted(served.studio.workspace.outputs.glob("*/*-upscaled-2x*.png"))
    assert saved and Image.open(saved[-1]).size == (128, 128)


def _upscale_in_extras(page) -> str:
    """Send the picked image to Extras, upscale it 2x (64 -> 128 px) and answer its infotext."""
    page.click("#send-extras")
    page.wait_for_selector("#extras-source img")
    page.click("#extras-run")
    page.wait_for_function("() => document.querySelector('#extras-message').innerText.includes('128x128')")
    return page.locator("#extras-info textarea").input_value()


def _pick_second_image(page, prompt: str) -> None:
    """Two images (seeds 1234, 1235), the second picked in the gallery, as a person clicks it."""
    _small_generation(page, prompt=prompt, count=2)
    page.click("#generate-run")
    assert "Seed: 1234" in _wait_for_infotext(page, prompt)  # this job's (an earlier one had seed 1234 too)
    page.wait_for_function("() => document.querySelectorAll('#gallery .thumbnail-item').length >= 2")
    page.locator("#gallery .thumbnail-item").nth(1).click()
    _wait_for_infotext(page, "Seed: 1235")


def test_send_to_buttons_send_the_gallerys_selected_image(served, page):
    """A1111's "send to" buttons send the picked image, not the first one."""
    from PIL import Image

    _pick_second_image(page, "pick the second")
    source = served.studio.job_images(served.studio.list_jobs(limit=1)[0])[1]
    assert source.name.endswith("-1235.png")
    page.click("#send-img2img")
    page.wait_for_function("() => (document.querySelector('#init-image img') || {src: ''}).src.includes('-1235')")
    page.click("#send-inpaint")  # then painted and repainted: the job's picture is the picked one
    _paint_the_centre(page)
    page.locator("#field-prompt textarea").fill("repaint the picked one")
    page.click("#generate-run")
    _wait_for_infotext(page, "repaint the picked one")
    job = served.studio.list_jobs(limit=1)[0]
    sent = Image.open(job.payload["config"]["init_image"])  # the stored upload the job names
    assert sent.convert("RGB").tobytes() == Image.open(source).convert("RGB").tobytes()

    _pick_second_image(page, "upscale the second")
    info = _upscale_in_extras(page)
    assert "upscale the second" in info and "Seed: 1235" in info


def test_reuse_seed_takes_the_selected_images_own_seed(served, page):
    _pick_second_image(page, "reuse the second seed")
    _set(page, "#field-seed input", -1)
    page.click("#reuse-seed")
    page.wait_for_function("() => document.querySelector('#field-seed input').value === '1235'")
    page.locator("#gallery .thumbnail-item").first.click()  # the preview's strip: the first again
    _wait_for_infotext(page, "Seed: 1234")
    page.click("#reuse-seed")
    page.wait_for_function("() => document.querySelector('#field-seed input').value === '1234'")


def test_an_xyz_plot_over_cfg_scale_draws_a_grid_with_its_cells(served, page):
    """The Generate tab's X/Y/Z plot: the form is the base request, 2 columns over CFG Scale typed
    as text, a row whose sampler is picked from the values dropdown, and A1111's "Include Sub Images"."""
    from PIL import Image

    _small_generation(page, prompt="a grid of two", steps=2)
    page.get_by_text("X/Y/Z plot").click()
    _pick(page, "#grid-x-type", "CFG Scale")
    fill_and_keep(page, "grid-x-values", "5, 9")
    _pick(page, "#grid-y-type", "Sampler")
    _pick(page, "#grid-y-picks", "DDIM")  # the dropdown shows for an axis with choices; the pick fills the text
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid-y-values textarea, #grid-y-values input')]"
        ".some(box => box.value === 'DDIM')"
    )
    page.locator("#grid-include-sub-images input").check()
    page.click("#grid-run")
    info = _wait_for_infotext(page, "Script: X/Y/Z plot")
    assert "X Type: CFG Scale" in info and "a grid of two" in info and "Seed: 1234" in info
    page.wait_for_function(
        "() => (document.querySelector('#progress-text') || {innerText: ''}).innerText.includes('Done')"
    )
    job = served.studio.list_jobs(limit=1)[0]
    assert (job.kind, job.state) == ("grid", "succeeded")
    assert job.payload["config"]["steps"] == 2 and job.payload["grid"]["x"]["axis"] == "cfg"
    assert job.payload["grid"]["y"] == {"axis": "sampler", "values": "DDIM"}
    assert len(served.studio.job_images(job)) == 2  # one image per cell, each with its own infotext
    assert "CFG scale: 5" in job.result["infotexts"][0] and "CFG scale: 9" in job.result["infotexts"][1]
    assert all("Sampler: DDIM" in text for text in job.result["infotexts"])
    grid = Image.open(served.studio.job_folder(job) / job.result["grid"])
    assert grid.width >= 2 * 64 and grid.height >= 64  # two cells side by side (and the legend)
    assert page.locator("#gallery .thumbnail-item").count() == 3  # the grid, then both cells (sub images)


def test_a_reload_reconnects_to_the_running_generation(served, page):
    # Long enough to be still running after a reload on a fast machine (interrupted, it costs nothing).
    _small_generation(page, prompt="survives a reload", steps=50, count=40)
    page.click("#generate-run")
    page.wait_for_function("() => /Step|Queued|Starting/.test((document.querySelector('#progress-text') || {innerText: ''}).innerText)")
    page.reload()
    page.wait_for_function(
        "() => /Step|Queued|Starting/.test((document.querySelector('#progress-text') || {innerText: ''}).innerText)", timeout=60_000
    )
    page.click("#generate-interrupt")
    page.wait_for_function(
        "() => (document.querySelector('#progress-text') || {innerText: ''}).innerText.includes('Interrupted')", timeout=120_000
    )


def test_interrupt_stops_a_long_generation(served, page):
    _small_generation(page, prompt="a long one", steps=50, count=40)
    page.click("#generate-run")
    page.wait_for_function(
        "() => /Step|Queued/.test((document.querySelector('#progress-text') || {innerText: ''}).innerText)", timeout=120_000
    )
    page.click("#generate-interrupt")
    page.wait_for_function(
        "() => (document.querySelector('#progress-text') || {innerText: ''}).innerText.includes('Interrupted')", timeout=120_000
    )
    job = served.studio.list_jobs(limit=1)[0]
    assert job.state == "cancelled"
    assert len(served.studio.job_images(job)) < 40


def test_a_refused_value_is_shown_next_to_the_button_not_as_a_trace(served, page):
    _small_generation(page)
    _set(page, "#field-width input", 60)  # not a multiple of 8
    page.click("#generate-run")
    page.wait_for_function("() => (document.querySelector('#progress-text') || {innerText: ''}).innerText.includes('Error')")
    text = page.locator("#progress-text").inner_text()
    assert "width" in text and "Traceback" not in text


def test_jobs_tab_lists_the_jobs_of_this_studio(served, page):
    # Its own job: pytest-xdist may run this test on a worker whose studio has served no other.
    _small_generation(page, prompt="listed in the jobs tab")
    page.click("#generate-run")
    _wait_for_infotext(page, "listed in the jobs tab")
    job = served.studio.list_jobs(limit=1)[0]
    assert job.payload["config"]["prompt"] == "listed in the jobs tab"
    _tab(page, "Jobs")
    page.wait_for_function(
        "(id) => document.querySelector('#jobs-table').innerText.includes(id)", arg=job.id, timeout=30_000
    )


def test_library_lists_a_lora_renames_it_and_deletes_it_after_the_name_is_typed_twice(served, page):
    from lorastudio.service.loras import list_loras

    ws = served.studio.workspace
    lora = _small_lora(ws.loras / "角色甲.safetensors")
    _tab(page, "Library")
    page.click("#loras-refresh")  # the file was copied in after the page loaded
    page.wait_for_function("() => document.querySelector('#loras-table').innerText.includes('角色甲')")
    page.locator("#loras-cards .thumbnail-item").first.click()  # its card
    page.wait_for_function(
        "() => (document.querySelector('#loras-name textarea, #loras-name input') || {}).value === '角色甲'"
    )
    assert "角色甲" in page.locator("#loras-card").inner_text()
    page.locator("#loras-new-name textarea, #loras-new-name input").first.fill("角色乙")
    page.click("#loras-rename")
    page.wait_for_function("() => document.querySelector('#loras-table').innerText.includes('角色乙')")
    assert not lora.exists() and (ws.loras / "角色乙.safetensors").exists()
    # the cards and the details panel follow the rename, not only the table
    page.wait_for_function("() => document.querySelector('#loras-card').innerText.includes('角色乙')")
    page.wait_for_function("() => document.querySelector('#loras-cards').innerText.includes('角色乙')")
    assert "角色甲" not in page.locator("#loras-cards").inner_text() + page.locator("#loras-card").inner_text()
    page.locator("#loras-confirm textarea, #loras-confirm input").first.fill("角色乙")
    page.click("#loras-delete")
    page.wait_for_function("() => document.querySelector('#loras-message').innerText.includes('Deleted')")
    page.wait_for_function("() => !document.querySelector('#loras-card').innerText.includes('角色乙')")
    page.wait_for_function("() => !document.querySelector('#loras-cards').innerText.includes('角色乙')")
    assert not (ws.loras / "角色乙.safetensors").exists()
    assert not {"角色甲", "角色乙"} & {row["name"] for row in list_loras(ws)}


def _small_lora(path: Path) -> Path:
    """A one-module kohya LoRA file for tiny-sd15's first attention block (enough to be listed)."""
    import torch
    from safetensors.torch import save_file

    prefix = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {
        f"{prefix}.lora_down.weight": torch.zeros(4, 32),
        f"{prefix}.lora_up.weight": torch.zeros(32, 4),
        f"{prefix}.alpha": torch.tensor(4.0),
    }
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora"})
    return path


def test_the_lora_picker_inserts_a_tag_at_the_preferred_weight(served, page):
    ws = served.studio.workspace
    _small_lora(ws.loras / "ink.safetensors")
    (ws.loras / "ink.json").write_text('{"preferred weight": 0.7, "activation text": "ink wash"}')
    page.click("#generate-refresh")  # the file came after the page loaded
    page.get_by_text("LoRA and embeddings").click()
    picker = page.locator("#lora-picker input")
    picker.click()
    picker.fill("ink")
    page.get_by_role("option", name="ink", exact=True).click()
    page.wait_for_function("() => document.querySelector('#lora-card').innerText.includes('ink wash')")
    page.locator("#field-prompt textarea").fill("a heron")
    page.click("#add-lora")
    page.wait_for_function(
        "() => document.querySelector('#field-prompt textarea').value === 'a heron, <lora:ink:0.7>'"
    )


def _pick(page, selector: str, option: str, timeout_s: float = 60) -> None:
    """Pick `option` in a dropdown. An open dropdown keeps the choices it opened with, so one that a
    refresh is still filling (styles.csv written after the page loaded) is closed and opened again."""
    import time

    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    picker = page.locator(f"{selector} input")
    deadline = time.monotonic() + timeout_s
    while True:
        picker.click()
        picker.fill(option)
        choice = page.get_by_role("option", name=option, exact=True)
        try:
            choice.wait_for(timeout=2_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
            if time.monotonic() > deadline:
                raise
    choice.click()
    page.keyboard.press("Escape")  # a multiselect stays open after a pick


def test_styles_are_merged_when_queued_or_written_into_the_prompts_by_the_button(served, page):
    ws = served.studio.workspace
    (ws.root / "styles.csv").write_text(
        'name,prompt,negative_prompt\nink,"ink wash, {prompt}",blurry\nsharp,"sharp focus",""\n', encoding="utf-8"
    )
    page.click("#generate-refresh")  # the file came after the page loaded
    _small_generation(page, prompt="a heron", steps=2)
    page.locator("#field-negative_prompt textarea").fill("")
    _pick(page, "#styles", "ink")
    page.click("#generate-run")
    info = _wait_for_infotext(page, "Steps: 2")
    assert info.startswith("ink wash, a heron\nNegative prompt: blurry\n")  # the merged prompts are the recipe
    job = served.studio.list_jobs(limit=1)[0]
    assert job.payload["config"]["prompt"] == "ink wash, a heron"

    _pick(page, "#styles", "sharp")  # now ink and sharp, merged in that order
    page.click("#apply-styles")
    page.wait_for_function(
        "() => document.querySelector('#field-prompt textarea').value === 'ink wash, a heron, sharp focus'"
    )
    assert page.locator("#field-negative_prompt textarea").input_value() == "blurry"
    assert page.locator("#styles .token").count() == 0  # cleared: not merged a second time on Generate


def test_switching_the_ui_to_chinese_shows_chinese_labels_and_is_kept(served, page):
    page.locator("#field-prompt textarea").fill("a typed prompt")  # goes along to the other page
    page.locator("#field-negative_prompt textarea").fill("a typed negative")
    _tab(page, "Settings")
    page.get_by_label("简体中文").check()
    page.click("#settings-save")
    page.wait_for_url("**/ui/zh/", timeout=60_000)
    page.wait_for_selector("#generate-run")
    page.wait_for_function("() => document.querySelector('#field-prompt textarea').value === 'a typed prompt'")
    assert page.locator("#field-negative_prompt textarea").input_value() == "a typed negative"
    assert page.locator("#field-schedule input").input_value() == "自动"  # as the VAE picker's "Automatic"
    for label in ("生成", "图片信息", "模型库", "任务", "设置"):
        assert page.get_by_role("tab", name=label, exact=True).count() == 1
    _tab(page, "图片信息")
    assert "拖放" in page.locator("#png-image").inner_text()  # Gradio's own texts follow the page too
    assert json.loads((served.studio.workspace.root / "preferences.json").read_text())["language"] == "zh"
    page.goto(served.url + "/")  # the saved language is where a browser lands
    page.wait_for_url("**/ui/zh/")
    _tab(page, "设置")
    page.get_by_label("English").check()
    page.click("#settings-save")
    page.wait_for_url("**/ui/en/", timeout=60_000)


def test_every_tab_renders_and_is_photographed(served, page, tmp_path):
    """Screenshots for docs/ (set LORASTUDIO_SCREENSHOTS=1 to refresh docs/screenshots)."""
    folder = SCREENSHOTS if os.environ.get("LORASTUDIO_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    tabs = (("Generate", "generate"), ("PNG info", "png-info"), ("Extras", "extras"), ("Library", "library"),
            ("Data sets", "datasets"), ("Train", "train"), ("Portrait", "portrait"), ("Jobs", "jobs"),
            ("Settings", "settings"))  # fmt: skip
    for label, name in tabs:
        _tab(page, label)
        page.wait_for_timeout(300)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
        assert (folder / f"{name}.png").stat().st_size > 10_000
