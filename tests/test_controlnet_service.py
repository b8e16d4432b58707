"""ControlNet units through the service and `lorastudio generate --control`: files in studio/controlnet,
the extension's infotext lines, reproducible recipes, cached ControlNets, one-line errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from typer.testing import CliRunner

from controlnet_files import diffusers_to_original, make_controlnet
from lorastudio.cli import _register, app
from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig

_register()
runner = CliRunner()


def _controlnet_file(ws, model, name: str = "cn", seed: int = 0):
    """A tiny random ControlNet saved in the original layout with the `control_model.` prefix, fp16."""
    controlnet = make_controlnet(model, seed)
    original = diffusers_to_original(controlnet.state_dict(), dict(controlnet.config), prefix="control_model.")
    path = ws.controlnet / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in original.items()}, path)
    return path


@pytest.fixture
def cn_workspace(tiny_workspace, sd15):
    _controlnet_file(tiny_workspace, sd15)
    return tiny_workspace


def _edges(path, kind="square"):
    image = Image.new("RGB", (64, 64), "black")
    draw = ImageDraw.Draw(image)
    if kind == "square":
        draw.rectangle((16, 16, 48, 48), outline="white", width=3)
    else:
        draw.line((0, 0, 64, 64), fill="white", width=3)
    image.save(path)
    return str(path)


def gen(*args: str) -> dict:
    result = runner.invoke(app, ["generate", "--model", "tiny-sd15", "--steps", "4", "--seed", "5", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def arr(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_control_option_generates_writes_the_extensions_infotext_and_reproduces(cn_workspace, tmp_path):
    from lorastudio.generate.infotext import parse_infotext, read_infotext
    from lorastudio.service.generation import config_from_recipe

    image = _edges(tmp_path / "edges.png")
    plain = gen("--prompt", "red")
    out = gen("--prompt", "red", "--control", f"model=cn,image={image},weight=0.8,guidance_end=0.6")
    assert np.abs(arr(out["images"][0]) - arr(plain["images"][0])).mean() > 0.3
    text = read_infotext(out["images"][0])
    line = next(part for part in text.splitlines()[-1].split(", ControlNet ") if part.startswith("0: "))
    assert line.startswith('0: "Module: none, Model: cn [')
    assert (
        'Weight: 0.8, Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: -1, Threshold B: -1, '
        'Guidance Start: 0.0, Guidance End: 0.6, Pixel Perfect: False, Control Mode: Balanced"'
    ) in line
    recipe = yaml.safe_load(open(out["recipes"][0]))
    assert recipe["request"]["controlnet"][0]["image"] == image
    assert recipe["controlnets"][0]["title"].startswith("cn [")
    again = gen("--recipe", out["recipes"][0])
    assert np.array_equal(arr(again["images"][0]), arr(out["images"][0]))
    from_png = config_from_recipe(out["images"][0], cn_workspace)
    unit = from_png.controlnet[0]
    assert (unit.model.startswith("cn ["), unit.weight, unit.guidance_end, unit.threshold_a) == (True, 0.8, 0.6, None)
    assert parse_infotext(text)["ControlNet 0"].startswith("Module: none")


def test_a_second_request_reuses_the_cached_controlnet(cn_workspace, tmp_path):
    from lorastudio.service.model_cache import ModelCache

    cache = ModelCache(cn_workspace)
    model = cache.get("tiny-sd15")
    path = cn_workspace.controlnet / "cn.safetensors"
    first = cache.get_controlnet(path, model)
    assert cache.get_controlnet(path, model) is first
    assert next(first.parameters()).dtype == model.dtype
    _controlnet_file(cn_workspace, model, seed=1)  # replaced on disk: loaded again
    assert cache.get_controlnet(path, model) is not first


def test_img2img_unit_without_image_uses_the_init_image(cn_workspace, tmp_path):
    init = _edges(tmp_path / "init.png", "cross")
    implicit = gen("--prompt", "red", "--init-image", init, "--strength", "0.8", "--control", "model=cn")
    explicit = gen("--prompt", "red", "--init-image", init, "--strength", "0.8", "--control", f"model=cn,image={init}")
    assert np.array_equal(arr(implicit["images"][0]), arr(explicit["images"][0]))


def test_a_unit_on_the_img2img_picture_is_fitted_by_the_img2img_resize_mode(cn_workspace, tmp_path):
    """The extension fits a unit that takes the init image by A1111's resize mode (a stretched 96x64
    picture got a centre-cropped map, which no longer lined up with it)."""
    wide = Image.new("RGB", (96, 64), "black")
    ImageDraw.Draw(wide).line((0, 0, 96, 64), fill="white", width=3)
    wide.save(tmp_path / "wide.png")
    common = ["--prompt", "red", "--init-image", str(tmp_path / "wide.png"), "--strength", "0.8", "--width", "64",
              "--height", "64", "--resize-mode", "0"]  # fmt: skip
    implicit = gen(*common, "--control", "model=cn")
    stretched = gen(*common, "--control", f"model=cn,image={tmp_path / 'wide.png'},resize_mode=Just Resize")
    cropped = gen(*common, "--control", f"model=cn,image={tmp_path / 'wide.png'},resize_mode=Crop and Resize")
    assert np.array_equal(arr(implicit["images"][0]), arr(stretched["images"][0]))
    assert not np.array_equal(arr(implicit["images"][0]), arr(cropped["images"][0]))


def _error(*args: str) -> str:
    result = runner.invoke(app, ["generate", "--model", "tiny-sd15", "--steps", "2", *args])
    assert result.exit_code != 0
    return str(result.exception) if not isinstance(result.exception, SystemExit) else result.output


def test_bad_units_are_one_line_errors(cn_workspace, tmp_path, sdxl):
    image = _edges(tmp_path / "e.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    Image.new("L", (32, 32)).save(tmp_path / "small-mask.png")
    message = _error("--control", "model=cn,colour=red")
    assert "colour" in message and "guidance_end" in message and "module" in message
    assert "ControlNet unit 0: has no image" in _error("--control", "model=cn")
    assert "ControlNet unit 0: image broken.png is not a readable image" in _error(
        "--control", f"model=cn,image={tmp_path / 'broken.png'}"
    )
    assert "ControlNet unit 0: mask is 32x32, its image 64x64" in _error(
        "--control", f"model=cn,image={image},mask={tmp_path / 'small-mask.png'}"
    )
    assert "nothere" in _error("--control", f"model=nothere,image={image}")
    _controlnet_file(cn_workspace, sdxl, name="xl")
    xl = cn_workspace.controlnet / "xl.safetensors"
    # SDXL in the original layout: refused by name, before any model loads
    assert "xl.safetensors: an SDXL ControlNet in the original (ldm) layout" in _error(
        "--control", f"model=xl,image={image}"
    )
    xl.unlink()
    assert "preprocessor" in _error("--control", f"model=cn,image={image},module=surely-not-a-module")


def test_a_controlnet_for_another_family_is_refused(cn_workspace, tmp_path, sdxl):
    from diffusers import ControlNetModel

    ControlNetModel.from_unet(sdxl.unet).save_pretrained(cn_workspace.controlnet / "xl-folder")
    image = _edges(tmp_path / "e.png")
    message = _error("--control", f"model=xl-folder,image={image}")
    assert "xl-folder: a ControlNet for SDXL, the model is SD 1.x" in message


def test_the_resolver_resolves_unit_uploads_and_names(cn_workspace, tmp_path):
    from lorastudio.service.names import NamePolicy
    from lorastudio.service.requests import RequestResolver
    from lorastudio.service.uploads import save_upload

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    name = save_upload(cn_workspace, buffer.getvalue())
    resolver = RequestResolver(cn_workspace, NamePolicy(strict=True), device="cpu")
    cfg = resolver.generate(GenerateConfig(prompt="a", controlnet=[{"model": "cn", "image": name}]), "tiny-sd15")
    assert cfg.controlnet[0].image.endswith(name) and cfg.controlnet[0].image != name
    with pytest.raises(LorastudioError, match="ControlNet unit 0: .*upload"):
        resolver.generate(GenerateConfig(prompt="a", controlnet=[{"model": "cn", "image": "../x.png"}]), "tiny-sd15")
    with pytest.raises(LorastudioError, match="ControlNet unit 0: .*missing-cn"):
        resolver.generate(GenerateConfig(prompt="a", controlnet=[{"model": "missing-cn", "image": name}]), "tiny-sd15")
    with pytest.raises(LorastudioError, match="ControlNet unit 0: .*plain name"):
        resolver.generate(GenerateConfig(prompt="a", controlnet=[{"model": str(tmp_path / "cn.safetensors")}]), "tiny-sd15")


def test_parse_control_option():
    from lorastudio.service.control import parse_control_option

    assert parse_control_option("model=a [1234abcd], module=canny ,weight=0.5,pixel-perfect=true") == {
        "model": "a [1234abcd]", "module": "canny", "weight": "0.5", "pixel_perfect": "true",
    }
    with pytest.raises(LorastudioError, match="needs model=NAME"):
        parse_control_option("weight=1")


def test_pixel_perfect_writes_the_resolution_it_used(cn_workspace, tmp_path):
    from lorastudio.generate.infotext import parse_infotext, read_infotext

    wide = tmp_path / "wide.png"
    Image.new("RGB", (256, 128), "white").save(wide)
    out = gen("--prompt", "red", "--control", f"model=cn,image={wide},pixel_perfect=true,resize_mode=Resize and Fill")
    unit = parse_infotext(read_infotext(out["images"][0]))["ControlNet 0"]
    assert "Processor Res: 32, " in unit and "Pixel Perfect: True" in unit  # 128 px short side fitted into 64


def test_cached_controlnets_count_towards_the_memory_budget(cn_workspace):
    from lorastudio.service.model_cache import ModelCache, model_bytes

    cache = ModelCache(cn_workspace)
    model = cache.get("tiny-sd15")
    before = model_bytes(model)
    controlnet = cache.get_controlnet(cn_workspace.controlnet / "cn.safetensors", model)
    added = sum(p.numel() * p.element_size() for p in controlnet.parameters())
    assert model_bytes(model) == before + added


def test_a_preprocessor_makes_the_map_the_unit_follows(cn_workspace, tmp_path):
    from lorastudio.generate.infotext import parse_infotext, read_infotext

    photo = tmp_path / "photo.png"
    image = Image.new("RGB", (64, 64), (40, 40, 200))
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=(230, 200, 40))
    image.save(photo)
    raw = gen("--prompt", "red", "--control", f"model=cn,image={photo}")
    canny = gen("--prompt", "red", "--control", f"model=cn,image={photo},module=canny,processor_res=64")
    assert np.abs(arr(raw["images"][0]) - arr(canny["images"][0])).mean() > 0.3
    unit = parse_infotext(read_infotext(canny["images"][0]))["ControlNet 0"]
    assert unit.startswith("Module: canny, ") and "Processor Res: 64, Threshold A: 100.0, Threshold B: 200.0" in unit


def test_only_masked_inpainting_crops_the_unit_image_to_the_masked_area(cn_workspace, tmp_path):
    """The map lines up with the region that is sampled: the same as giving the crop itself."""
    from lorastudio.generate.images import mask_crop_region

    init = tmp_path / "init.png"
    image = Image.new("RGB", (128, 128), "black")
    ImageDraw.Draw(image).rectangle((40, 40, 100, 100), outline="white", width=3)
    ImageDraw.Draw(image).line((0, 127, 127, 0), fill="white", width=3)
    image.save(init)
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (48, 48, 80, 80))
    mask.save(tmp_path / "mask.png")
    box = mask_crop_region(mask, 8, 1.0)
    image.crop(box).save(tmp_path / "crop.png")
    image.resize((130, 130)).save(tmp_path / "other-size.png")  # not the init image's size: used whole
    args = ["--prompt", "red", "--init-image", str(init), "--mask", str(tmp_path / "mask.png"), "--inpaint-only-masked",
            "--inpaint-padding", "8", "--width", "64", "--height", "64", "--mask-blur", "0"]
    whole = gen(*args, "--control", "model=cn")
    cropped = gen(*args, "--control", f"model=cn,image={tmp_path / 'crop.png'}")
    uncropped = gen(*args, "--control", f"model=cn,image={tmp_path / 'other-size.png'}")
    assert np.array_equal(arr(whole["images"][0]), arr(cropped["images"][0]))
    assert not np.array_equal(arr(whole["images"][0]), arr(uncropped["images"][0]))


def test_an_inpaint_unit_fills_the_requests_hole_and_needs_a_mask(cn_workspace, tmp_path):
    source, mask = tmp_path / "src.png", tmp_path / "mask.png"
    Image.new("RGB", (64, 64), (30, 200, 30)).save(source)
    hole = Image.new("L", (64, 64), 0)
    hole.paste(255, (16, 16, 48, 48))
    hole.save(mask)
    inpaint = ["--init-image", str(source), "--mask", str(mask), "--strength", "1.0", "--mask-blur", "0"]
    plain = gen("--prompt", "red", *inpaint)
    filled = gen("--prompt", "red", *inpaint, "--control", "model=cn,module=inpaint_only")
    assert np.abs(arr(filled["images"][0]) - arr(plain["images"][0])).mean() > 0.3
    from lorastudio.generate.infotext import read_infotext

    assert 'ControlNet 0: "Module: inpaint_only, Model: cn [' in read_infotext(filled["images"][0])
    # txt2img with an image but no mask anywhere: nothing to fill, said before any model loads
    assert "ControlNet unit 0: an inpaint preprocessor needs a mask" in _error(
        "--control", f"model=cn,module=inpaint,image={source}"
    )


def _civitai_png(path, units: str) -> str:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", f"a red square\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 7, Size: 64x64, {units}")
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return str(path)


def test_a_pasted_images_units_reach_the_form_by_title_and_one_this_studio_lacks_is_left_off(cn_workspace, tmp_path):
    """The web form's paste (A1111's ControlNet extension restores a unit's settings, not its image):
    the model by the picker's title (another hash in the image: the file here), the settings as written;
    a unit whose ControlNet is not here is left off with a note, not refused."""
    from lorastudio.service.controlnets import list_controlnets
    from lorastudio.service.recipes import read_recipe

    title = list_controlnets(cn_workspace)[0]["title"]
    units = (
        'ControlNet 0: "Module: depth_midas, Model: control_v11f1p_sd15_depth [cfd03158], Weight: 1", '
        'ControlNet 1: "Module: canny, Model: cn [0badc0de], Weight: 0.6, Resize Mode: Crop and Resize, '
        "Processor Res: 256, Threshold A: 50, Threshold B: 150, Guidance Start: 0.1, Guidance End: 0.9, "
        'Pixel Perfect: False, Control Mode: Balanced"'
    )
    recipe = read_recipe(_civitai_png(tmp_path / "civitai.png", units), cn_workspace, model="tiny-sd15", form=True)
    (unit,) = recipe.config.controlnet
    assert recipe.control_slots == [1]  # unit 1 stays unit 1, as the extension's paste keeps its slots
    assert (unit.model, unit.module, unit.weight, unit.processor_res) == (title, "canny", 0.6, 256)
    assert (unit.threshold_a, unit.threshold_b, unit.guidance_start, unit.guidance_end) == (50, 150, 0.1, 0.9)
    missing = [note for note in recipe.notes if note.key == "controlnet_missing"]
    assert len(missing) == 1 and missing[0].params["unit"] == 0
