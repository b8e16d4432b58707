"""A1111 variation seeds, img2img resize modes and inpainting "masked content" on tiny-sd15."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.generate.images import fill_masked, resize_image
from lorastudio.generate.infotext import parse_infotext, read_infotext
from lorastudio.generate.noise import NoiseOptions, image_noise, seed_noise
from test_generate_core import run as core_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_register()
runner = CliRunner()

GREEN, RED, YELLOW = (30, 200, 30), (220, 20, 20), (240, 220, 10)


def run(model, **kw):
    """test_generate_core's runner with this file's defaults (4 steps, "red")."""
    kw.setdefault("steps", 4)
    kw.setdefault("prompt", "red")
    return core_run(model, **kw)


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


# --- variation seeds ---------------------------------------------------------------------


def test_slerp_noise_ends_are_the_seed_and_the_variation_seed_exactly():
    shape = (4, 8, 8)
    a, b = seed_noise(5, shape), seed_noise(9, shape)
    assert torch.equal(image_noise(5, 9, shape, NoiseOptions(0.0)), a)
    assert torch.equal(image_noise(5, 9, shape, NoiseOptions(1.0)), b)
    mid = image_noise(5, 9, shape, NoiseOptions(0.5))
    # half way along the great circle: symmetric in the two seeds, keeps the noise's scale
    assert torch.allclose(mid, image_noise(9, 5, shape, NoiseOptions(0.5)), atol=1e-5)
    assert not torch.allclose(mid, a) and not torch.allclose(mid, b)
    assert abs(mid.std().item() - 1.0) < 0.15


def test_seed_resize_from_keeps_the_small_noise_in_the_centre():
    small = seed_noise(3, (4, 4, 6))
    noise = image_noise(3, None, (4, 8, 8), NoiseOptions(resize_from=(6, 4)))
    assert torch.equal(noise[:, 2:6, 1:7], small)  # centred: 2 rows / 1 column around it
    assert torch.equal(noise[:, :2], seed_noise(3, (4, 8, 8))[:, :2])  # the rest: the seed's own noise
    assert torch.equal(
        image_noise(3, None, (4, 8, 8), NoiseOptions(resize_from=(8, 8))), seed_noise(3, (4, 8, 8))
    )


def test_variation_strength_walks_from_seed_to_subseed(sd15):
    plain = px(run(sd15, seed=5, sampler="Euler")[0].image)
    other = px(run(sd15, seed=9, sampler="Euler")[0].image)
    zero = px(run(sd15, seed=5, subseed=9, subseed_strength=0.0, sampler="Euler")[0].image)
    full = px(run(sd15, seed=5, subseed=9, subseed_strength=1.0, sampler="Euler")[0].image)
    half = px(run(sd15, seed=5, subseed=9, subseed_strength=0.5, sampler="Euler")[0].image)
    assert np.array_equal(zero, plain)
    # strength 1 starts from the subseed's noise exactly; Euler adds no noise later, so the image is seed 9's
    assert np.array_equal(full, other)
    apart = np.abs(plain - other).mean()
    assert 0 < np.abs(half - plain).mean() < apart and 0 < np.abs(half - other).mean() < apart
    # an ancestral sampler keeps drawing from the main seed: same start, different image
    ancestral = px(run(sd15, seed=5, subseed=9, subseed_strength=1.0, sampler="Euler a")[0].image)
    assert not np.array_equal(ancestral, px(run(sd15, seed=9, sampler="Euler a")[0].image))


def test_batch_keeps_the_seed_and_counts_the_subseed_up(sd15):
    batch = run(sd15, seed=5, subseed=20, subseed_strength=0.6, batch_size=2, sampler="Euler")
    assert [i.seed for i in batch] == [5, 5]
    alone = run(sd15, seed=5, subseed=21, subseed_strength=0.6, sampler="Euler")[0]
    # up to batched float rounding: far closer than the batch's other variation
    another = np.abs(px(batch[0].image) - px(batch[1].image)).mean()
    assert np.abs(px(batch[1].image) - px(alone.image)).mean() < 0.1 * another
    assert not np.array_equal(px(batch[0].image), px(batch[1].image))


def gen(*args: str) -> dict:
    result = runner.invoke(app, ["generate", "--model", "tiny-sd15", "--steps", "3", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_infotext_records_variation_and_recipes_restore_it(tiny_workspace):
    from lorastudio.service.generation import config_from_recipe

    out = gen("--prompt", "red", "--seed", "5", "--subseed", "-1", "--subseed-strength", "0.3",
              "--seed-resize-from-w", "48", "--seed-resize-from-h", "56")  # fmt: skip
    text = read_infotext(out["images"][0])
    params = parse_infotext(text)
    subseed = int(params["Variation seed"])
    assert 0 <= subseed < 2**32 and params["Variation seed strength"] == "0.3"
    assert (
        f"Model: tiny-sd15, Variation seed: {subseed}, Variation seed strength: 0.3, Seed resize from: 48x56"
        in text
    )
    for source in (out["images"][0], out["recipes"][0]):
        cfg = config_from_recipe(source, tiny_workspace)
        assert (cfg.seed, cfg.subseed, cfg.subseed_strength) == (5, subseed, 0.3)
        assert (cfg.seed_resize_from_w, cfg.seed_resize_from_h) == (48, 56)
    again = gen("--recipe", out["images"][0])
    same = np.asarray(Image.open(again["images"][0]), dtype=np.float32)
    assert np.array_equal(same, np.asarray(Image.open(out["images"][0]), dtype=np.float32))
    plain = read_infotext(gen("--prompt", "red", "--seed", "5", "--subseed", "7")["images"][0])
    assert "Variation seed" not in plain and "Seed resize from" not in plain


# --- img2img resize modes ----------------------------------------------------------------


def wide_init() -> Image.Image:
    """128x64: green outer quarters, a red centre square, a yellow stripe on top."""
    image = Image.new("RGB", (128, 64), GREEN)
    image.paste(RED, (32, 0, 96, 64))
    image.paste(YELLOW, (0, 0, 128, 8))
    return image


def test_resize_image_modes_geometry():
    image = wide_init()
    stretched, cropped, fitted = (px(resize_image(mode, image, 64, 64)) for mode in (0, 1, 2))
    assert np.array_equal(cropped, px(image.crop((32, 0, 96, 64))))  # crop and resize: the centre
    assert (np.abs(stretched[32, 4] - GREEN).max() <= 2) and (np.abs(stretched[32, 32] - RED).max() <= 2)
    # resize and fill: the whole image in rows 16..48, the bands are its stretched edge rows
    assert np.abs(fitted[40, 4] - GREEN).max() <= 2 and np.abs(fitted[40, 32] - RED).max() <= 2
    assert np.abs(fitted[:16] - YELLOW).max() <= 8 and np.abs(fitted[50:, 4] - GREEN).max() <= 8
    assert np.abs(stretched[20:, 4] - GREEN).max() <= 2  # plain stretch: yellow only in rows 0..8


def test_resize_modes_change_img2img_and_crop_keeps_the_centre(sd15, tmp_path):
    wide, centre = tmp_path / "wide.png", tmp_path / "centre.png"
    wide_init().save(wide)
    wide_init().crop((32, 0, 96, 64)).save(centre)
    common = {"strength": 0.3, "sampler": "Euler", "steps": 4, "width": 64, "height": 64}  # the model's square
    outs = [px(run(sd15, init_image=str(wide), resize_mode=m, **common)[0].image) for m in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(outs[i] - outs[j]).mean() > 0.5, (i, j)
    # mode 1 is exactly img2img of the centre crop
    assert np.array_equal(outs[1], px(run(sd15, init_image=str(centre), **common)[0].image))


def test_whole_picture_inpainting_is_width_by_height_with_the_stretched_init_outside_the_mask(sd15, tmp_path):
    """Resize mode 0 (just resize): A1111 stretches the init image and the mask to width x height and
    pastes the result over the stretched init, so the picture has the requested size (the infotext's)."""
    wide, mask = tmp_path / "wide.png", tmp_path / "mask.png"
    wide_init().save(wide)
    hole = Image.new("L", (128, 64), 0)
    hole.paste(255, (48, 16, 80, 48))
    hole.save(mask)
    common = {"init_image": str(wide), "mask": str(mask), "mask_blur": 0, "strength": 0.6, "sampler": "Euler"}
    image = run(sd15, resize_mode=0, width=64, height=64, **common)[0].image
    assert image.size == (64, 64)
    stretched = px(wide_init().resize((64, 64), Image.Resampling.LANCZOS))
    assert np.abs(px(image)[:, :16] - stretched[:, :16]).max() <= 1  # outside the mask: the init, stretched
    assert np.abs(px(image)[24:40, 28:36] - stretched[24:40, 28:36]).mean() > 1  # inside: sampled
    # No size given (the web form's blank boxes): the photo keeps its own size, not the model's square.
    assert run(sd15, resize_mode=0, **common)[0].image.size == (128, 64)


def test_img2img_with_no_size_samples_at_the_pictures_own_size_as_shown(tiny_workspace, tmp_path):
    """`lorastudio generate --init-image photo` with no size: the photo's size (multiples of 8, EXIF
    rotation applied), not the model's square; the infotext says it, so the image regenerates."""
    photo = tmp_path / "照片.png"
    wide_init().resize((131, 90)).save(photo)
    out = gen("--prompt", "red", "--init-image", str(photo), "--strength", "0.5")
    made = Image.open(out["images"][0])
    assert made.size == (128, 88)
    params = parse_infotext(read_infotext(out["images"][0]))
    assert (params["Size-1"], params["Size-2"]) == ("128", "88")
    again = gen("--recipe", out["images"][0], "--init-image", str(photo))
    assert np.array_equal(px(Image.open(again["images"][0])), px(made))
    phone = tmp_path / "phone.jpg"  # stored 128x64, shown 64x128 (EXIF orientation 6: turned a quarter)
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    wide_init().save(phone, exif=exif)
    assert Image.open(gen("--prompt", "red", "--init-image", str(phone))["images"][0]).size == (64, 128)
    given = gen("--prompt", "red", "--init-image", str(photo), "--width", "64", "--height", "64")
    assert Image.open(given["images"][0]).size == (64, 64)  # a size given: the picture is resized to it


def test_an_inpainted_photo_regenerated_from_its_recipe_is_the_same_picture(tiny_workspace, tmp_path):
    """No size given: the photo comes back at its own 131x90 while the infotext says the 128x88 it
    sampled at (A1111 has no other size to write); the recipe's 128x88 is the photo's own, so the
    regenerated picture is the same, not the photo stretched to 128x88."""
    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    wide_init().resize((131, 90)).save(photo)
    hole = Image.new("L", (131, 90), 0)
    hole.paste(255, (40, 20, 90, 70))
    hole.save(mask)
    first = gen("--prompt", "red", "--init-image", str(photo), "--mask", str(mask), "--strength", "0.6")
    made = Image.open(first["images"][0])
    assert made.size == (131, 90)
    params = parse_infotext(read_infotext(first["images"][0]))
    assert (params["Size-1"], params["Size-2"]) == ("128", "88")
    again = gen("--recipe", first["images"][0], "--init-image", str(photo), "--mask", str(mask))
    assert np.array_equal(px(Image.open(again["images"][0])), px(made))
    other = gen("--recipe", first["images"][0], "--init-image", str(photo), "--mask", str(mask), "--width", "96")
    assert Image.open(other["images"][0]).size == (96, 88)  # another size: resized to it, as A1111


def test_request_size_follows_the_picture_where_the_request_leaves_it_a_side():
    from lorastudio.generate.config import GenerateConfig, request_size

    photo = GenerateConfig(init_image="p.jpg")
    assert request_size(photo, 512, (6000, 4000)) == (4096, 2728)  # one factor for both sides, then 8s
    assert request_size(photo, 512, (100, 30)) == (96, 64)  # at least 64 a side
    assert request_size(photo.model_copy(update={"width": 256}), 512, (300, 200)) == (256, 168)  # the aspect ratio
    assert request_size(photo.model_copy(update={"height": 256}), 512, (300, 200)) == (384, 256)
    sized = photo.model_copy(update={"width": 256, "height": 128})
    assert request_size(sized, 512, (300, 200)) == (256, 128)  # both given: the picture is resized to them
    only_masked = photo.model_copy(update={"mask": "m.png", "inpaint_only_masked": True})
    assert request_size(only_masked, 512, (6000, 4000)) == (512, 512)
    assert request_size(GenerateConfig(), 512, None) == (512, 512)


def test_an_uploaded_photo_is_stored_as_it_is_shown(tiny_workspace):
    """A base64 JPEG turned by its EXIF orientation is stored (as a PNG, which keeps no such tag)
    already turned: the API's and the web form's init images are the picture the user saw."""
    from lorastudio.service.uploads import decode_image, store_image, upload_path

    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    buffer = io.BytesIO()
    wide_init().save(buffer, format="JPEG", exif=exif, quality=95)
    ws = tiny_workspace
    stored = Image.open(upload_path(ws, store_image(ws, base64.b64encode(buffer.getvalue()).decode(), "init_image")))
    assert stored.size == (64, 128)
    right, left = px(stored)[100, 60], px(stored)[100, 2]  # the top stripe is now the right-hand column
    assert np.abs(right - YELLOW).max() < 40 and np.abs(left - YELLOW).max() > 100
    encoded = base64.b64encode(buffer.getvalue()).decode()
    assert decode_image(encoded, "unit image")[0].size == (64, 128)  # ControlNet units' images too
    assert decode_image(encoded, "image", as_shown=False)[0].size == (128, 64)  # PNG info reads it as sent


# --- inpainting masked content -----------------------------------------------------------


def test_fill_masked_takes_the_surrounding_colours():
    image = Image.new("RGB", (64, 64), GREEN)
    image.paste(RED, (24, 24, 40, 40))  # hidden by the mask
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    filled = px(fill_masked(image, mask))
    assert np.array_equal(filled[:16], px(image)[:16])  # unmasked pixels unchanged
    assert np.abs(filled[32, 32] - GREEN).max() <= 3  # the red hole takes the green around it


def test_fill_masked_takes_the_nearest_colours_at_the_edges_of_a_hole():
    image = Image.new("RGB", (64, 64), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 64))  # red left half, blue right half
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 0, 44, 64))  # a band across the border
    filled = px(fill_masked(image, mask)).astype(int)
    assert np.array_equal(filled[:, :20], px(image)[:, :20]) and np.array_equal(filled[:, 44:], px(image)[:, 44:])
    near_red, near_blue = filled[32, 21], filled[32, 42]
    assert near_red[0] - near_red[2] > 100 and near_blue[2] - near_blue[0] > 100
    assert abs(int(filled[32, 31, 0]) - int(filled[32, 32, 0])) < 40  # the middle is a smooth blend


def test_inpainting_fill_modes_differ_inside_and_keep_outside(sd15, tmp_path):
    src, mask = tmp_path / "src.png", tmp_path / "mask.png"
    image = Image.new("RGB", (64, 64), GREEN)
    image.paste(RED, (20, 20, 44, 44))
    image.save(src)
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (16, 16, 48, 48))
    m.save(mask)
    common = {"init_image": str(src), "mask": str(mask), "mask_blur": 0, "strength": 0.6, "sampler": "Euler"}
    outs = [px(run(sd15, inpainting_fill=fill, **common)[0].image) for fill in range(4)]
    default = px(run(sd15, **common)[0].image)
    assert np.array_equal(default, outs[1])  # "original" is the default, as before
    for i in range(4):
        assert np.abs(outs[i][:8, :8] - GREEN).max() <= 1  # outside the mask: the init pixels
        for j in range(i + 1, 4):
            assert np.abs(outs[i][20:44, 20:44] - outs[j][20:44, 20:44]).mean() > 0.5, (i, j)


# --- A1111 API -----------------------------------------------------------------------------


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_api_maps_variation_resize_mode_and_masked_content(client):
    body = {"steps": 3, "width": 64, "height": 64, "prompt": "red", "seed": 7, "batch_size": 2}
    data = client.post("/sdapi/v1/txt2img", json={**body, "subseed": 42, "subseed_strength": 0.25}).json()
    info = json.loads(data["info"])
    assert info["all_seeds"] == [7, 7] and info["subseed"] == 42 and info["all_subseeds"] == [42, 43]
    assert info["subseed_strength"] == 0.25
    for text, subseed in zip(info["infotexts"], [42, 43], strict=True):
        assert "Seed: 7," in text and f"Variation seed: {subseed}, Variation seed strength: 0.25" in text
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = {
        **body,
        "batch_size": 1,
        "init_images": [b64_png(wide_init())],
        "mask": b64_png(mask.convert("RGB")),
    }
    fields = {"resize_mode": 1, "inpainting_fill": 2, "inpaint_full_res": False}
    answer = client.post("/sdapi/v1/img2img", json={**body, **fields}).json()
    text = json.loads(answer["info"])["infotexts"][0]
    assert "Masked content: latent noise" in text and "Resize mode" not in text


def test_the_whole_pictures_overlay_mask_is_doubled_as_in_a1111():
    """A1111 pastes a whole-picture inpaint through the blurred mask times two (clipped); "only masked"
    through the mask itself."""
    from lorastudio.generate.pipeline import _paste_back

    generated, original = Image.new("RGB", (4, 1), RED), Image.new("RGB", (4, 1), GREEN)
    mask = Image.new("L", (4, 1))
    mask.putdata([0, 64, 128, 255])
    whole = px(_paste_back(generated, original, mask, None))[0]
    share = np.array([0, 128, 255, 255]) / 255  # min(255, 2 * mask)
    expected = share[:, None] * np.array(RED) + (1 - share[:, None]) * np.array(GREEN)
    assert np.abs(whole - expected).max() <= 1.5
    only_masked = px(_paste_back(generated, original, mask, (0, 0, 4, 1)))[0]
    share = np.array([0, 64, 128, 255]) / 255
    assert np.abs(only_masked - (share[:, None] * np.array(RED) + (1 - share[:, None]) * np.array(GREEN))).max() <= 1.5


def test_cli_style_merges_an_a1111_style_into_the_prompts(tiny_workspace):
    (tiny_workspace.root / "styles.csv").write_text("name,prompt,negative_prompt\nRed,red theme,blurry\n", encoding="utf-8")
    out = gen("--prompt", "a fox", "--negative-prompt", "ugly", "--style", "Red")
    params = parse_infotext(read_infotext(out["images"][0]))
    assert (params["Prompt"], params["Negative prompt"]) == ("a fox, red theme", "ugly, blurry")


def test_the_style_picker_lists_the_file_in_order_and_nothing_for_a_broken_file(tiny_workspace):
    from lorastudio.service.choices import style_names

    styles = tiny_workspace.root / "styles.csv"
    styles.write_text("name,prompt,negative_prompt\nZed,z,\nAlpha,a,\nZed,again,\n", encoding="utf-8")
    assert style_names(tiny_workspace) == ["Zed", "Alpha"]  # file order, a repeated name once
    styles.write_text("prompt,negative_prompt\nred,\n", encoding="utf-8")  # no name column: not A1111's file
    assert style_names(tiny_workspace) == []


def test_a_styles_csv_saved_by_excel_on_a_chinese_windows_reads(tiny_workspace):
    """Excel on a Chinese Windows saves CSV as GBK: its styles read (a UTF-8-only read refused the file)."""
    from lorastudio.service.choices import style_names
    from lorastudio.service.styles import apply_styles

    (tiny_workspace.root / "styles.csv").write_bytes("name,prompt,negative_prompt\n水墨,水墨画风格,模糊\n".encode("gbk"))
    assert style_names(tiny_workspace) == ["水墨"]
    assert apply_styles(tiny_workspace, "山", "", ["水墨"]) == ("山, 水墨画风格", "模糊")


def test_styles_reach_every_prompt_of_a_story(tiny_workspace, tmp_path):
    """A story replaces the base prompt per line: the styles are merged into each line (only the
    negative prompt kept them before)."""
    (tiny_workspace.root / "styles.csv").write_text("name,prompt,negative_prompt\nRed,red theme,blurry\n", encoding="utf-8")
    story = tmp_path / "story.txt"
    story.write_text("a fox\na cat\n", encoding="utf-8")
    out = gen("--prompts", str(story), "--negative-prompt", "ugly", "--style", "Red", "--steps", "1")
    prompts = [parse_infotext(read_infotext(path))["Prompt"] for path in out["images"]]
    negatives = {parse_infotext(read_infotext(path))["Negative prompt"] for path in out["images"]}
    assert prompts == ["a fox, red theme", "a cat, red theme"] and negatives == {"ugly, blurry"}
