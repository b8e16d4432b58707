"""Every kind of request comes back pixel-exact from its own `.yaml` recipe through
`lorastudio generate --recipe` (tiny-sd15): LoRAs and embeddings, hires fix, img2img, inpainting,
ControlNet units with preprocessors, variation seeds, each image of a batch, each grid cell; an
uploaded picture is kept beside the outputs, a user's moved file is one line naming the recipe."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from lorastudio.cli import _register, app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_register()
runner = CliRunner()


def gen(*args) -> dict:
    result = runner.invoke(app, ["generate", "--json", *[str(a) for a in args]])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def first(*args) -> dict:
    """A first generation: tiny-sd15, 3 steps, a fixed seed, 64x64 unless the args say otherwise."""
    return gen("--model", "tiny-sd15", "--steps", "3", "--seed", "21", *args)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_recipes_remake(out: dict) -> None:
    """Each image of `out`, made again from its own recipe alone, is the same picture."""
    assert out["recipes"], out
    for image, recipe in zip(out["images"], out["recipes"], strict=True):
        again = gen("--recipe", recipe)
        assert np.array_equal(pixels(again["images"][0]), pixels(image)), (image, recipe)


def failure(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    assert not isinstance(result.exception, (AttributeError, KeyError, TypeError)), result.exception
    return result.output.strip()


def photo(path, size=(64, 64)):
    image = Image.new("RGB", size, (40, 40, 200))
    ImageDraw.Draw(image).ellipse((size[0] // 5, size[1] // 5, 4 * size[0] // 5, 4 * size[1] // 5), fill=(230, 200, 40))
    image.save(path)
    return path


def hole(path, size=(64, 64)):
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    mask.save(path)
    return path


@pytest.fixture
def lora_and_embedding(tiny_workspace, sd15):
    from lora_helpers import random_lora
    from lorastudio.adapters import Embedding, save_embedding, save_kohya

    save_kohya(random_lora(sd15), tiny_workspace.loras / "wild.safetensors", family=sd15.family,
               unet_config=sd15.unet.config)  # fmt: skip
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(3)) * 3
    save_embedding(Embedding("zkstar", [vectors]), tiny_workspace.embeddings / "zkstar.safetensors", sd15.family)
    return tiny_workspace


@pytest.fixture
def cn_workspace(tiny_workspace, sd15):
    from safetensors.torch import save_file

    from controlnet_files import diffusers_to_original, make_controlnet

    controlnet = make_controlnet(sd15, 0)
    original = diffusers_to_original(controlnet.state_dict(), dict(controlnet.config), prefix="control_model.")
    tiny_workspace.controlnet.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in original.items()}, tiny_workspace.controlnet / "cn.safetensors")
    return tiny_workspace


# --- txt2img ----------------------------------------------------------------------------------


def test_txt2img_with_a_lora_and_an_embedding(lora_and_embedding):
    out = first("--prompt", "zkstar picture <lora:wild:0.7>", "--negative", "blurry")
    assert_recipes_remake(out)


def test_hires_fix(tiny_workspace):
    out = first("--prompt", "red", "--hires-scale", "1.5", "--hires-steps", "2", "--hires-strength", "0.6")
    assert Image.open(out["images"][0]).size == (96, 96)
    assert_recipes_remake(out)


def test_variation_seeds_each_image_of_a_batch(tiny_workspace):
    out = first("--prompt", "red", "--subseed", "7", "--subseed-strength", "0.4", "--batch-size", "2")
    assert_recipes_remake(out)


def test_each_image_of_a_batch_and_of_every_batch(tiny_workspace):
    out = first("--prompt", "green", "--batch-size", "3", "--count", "2")
    assert len(out["images"]) == 6
    assert_recipes_remake(out)


# --- pictures -----------------------------------------------------------------------------------


def test_img2img(tiny_workspace, tmp_path):
    out = first("--prompt", "red", "--init-image", photo(tmp_path / "init.png", (96, 64)), "--strength", "0.6")
    assert_recipes_remake(out)


def test_inpaint_and_only_masked(tiny_workspace, tmp_path):
    init, mask = photo(tmp_path / "init.png", (96, 96)), hole(tmp_path / "mask.png", (96, 96))
    out = first("--prompt", "red", "--init-image", init, "--mask", mask, "--strength", "0.8", "--inpainting-fill", "2")
    assert_recipes_remake(out)
    only = first("--prompt", "red", "--init-image", init, "--mask", mask, "--inpaint-only-masked",
                 "--inpaint-padding", "8", "--width", "64", "--height", "64")  # fmt: skip
    assert_recipes_remake(only)


def test_controlnet_units_with_a_preprocessor(cn_workspace, tmp_path):
    from lorastudio.service.recipes import read_recipe

    edges = photo(tmp_path / "edges.png")
    out = first("--prompt", "red", "--control", f"model=cn,image={edges},module=canny,processor_res=64",
                "--control", f"model=cn,image={edges},weight=0.5")  # fmt: skip
    assert_recipes_remake(out)
    recipe = read_recipe(out["recipes"][0], cn_workspace)
    assert recipe.control_slots == [0, 1]
    assert recipe.config.controlnet[0].module == "canny"


def test_a_users_moved_picture_is_one_line_naming_the_recipe(tiny_workspace, tmp_path):
    init = photo(tmp_path / "init.png")
    out = first("--prompt", "red", "--init-image", init, "--strength", "0.6")
    init.rename(tmp_path / "moved.png")
    message = failure("generate", "--recipe", out["recipes"][0])
    assert len(message.splitlines()) == 1, message
    assert out["recipes"][0] in message and str(init) in message, message
    again = gen("--recipe", out["recipes"][0], "--init-image", tmp_path / "moved.png")  # given anew: used
    assert np.array_equal(pixels(again["images"][0]), pixels(out["images"][0]))


def test_a_relative_path_is_kept_whole_for_another_folder(tiny_workspace, tmp_path, monkeypatch):
    """The CLI's `--init-image init.png` meant the folder it ran in: the recipe names the file itself."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "init.png")
    out = first("--prompt", "red", "--init-image", "init.png", "--strength", "0.6")
    monkeypatch.chdir(tiny_workspace.root)
    assert_recipes_remake(out)


# --- uploaded pictures ----------------------------------------------------------------------------


def test_uploaded_pictures_are_kept_beside_the_recipe(cn_workspace, tmp_path):
    """An upload (base64, the web form's picture) lives in the workspace cache: the recipe points at its
    own copy in outputs/, so it still reproduces once the uploads are gone, and after the outputs move."""
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import run_generation
    from lorastudio.service.uploads import store_picture, upload_path

    ws = cn_workspace
    init = upload_path(ws, store_picture(ws, Image.open(photo(tmp_path / "init.png", (96, 96)))))
    mask = upload_path(ws, store_picture(ws, Image.open(hole(tmp_path / "mask.png", (96, 96))), mask=True))
    edges = upload_path(ws, store_picture(ws, Image.open(hole(tmp_path / "edges.png", (96, 96)))))
    cfg = GenerateConfig(
        prompt="red", steps=3, seed=4, init_image=str(init), mask=str(mask), strength=0.8, batch_size=2,
        controlnet=[{"model": "cn", "image": str(edges), "module": "canny", "processor_res": 64}],
    )  # fmt: skip
    result = run_generation(ws, cfg, out_dir=ws.outputs / "job")
    recipe = yaml.safe_load(result.images[0].recipe_path.read_text(encoding="utf-8"))["request"]
    assert recipe["init_image"].startswith("inputs/") and recipe["controlnet"][0]["image"].startswith("inputs/")
    assert len(list((ws.outputs / "job" / "inputs").iterdir())) == 3  # one copy each, shared by the batch
    shutil.rmtree(ws.cache / "uploads")
    shutil.move(ws.outputs / "job", tmp_path / "elsewhere")
    assert_recipes_remake(
        {
            "images": [tmp_path / "elsewhere" / i.path.name for i in result.images],
            "recipes": [tmp_path / "elsewhere" / i.recipe_path.name for i in result.images],
        }
    )


# --- batches, preprocessors' seeds ------------------------------------------------------------------


def test_each_image_of_a_batch_is_remade_with_its_batch(cn_workspace, tmp_path):
    """Batched kernels round otherwise than one image alone (here: inpainting under a canny unit, 1 in
    some pixels): a batch image's recipe makes its batch again and keeps its own image."""
    init, mask, edges = photo(tmp_path / "init.png", (96, 96)), hole(tmp_path / "mask.png", (96, 96)), tmp_path / "e.png"
    Image.open(hole(edges, (96, 96))).convert("RGB").save(edges)
    out = gen("--model", "tiny-sd15", "--steps", "3", "--seed", "4", "--prompt", "red", "--init-image", init,
              "--mask", mask, "--strength", "0.8", "--batch-size", "2",
              "--control", f"model=cn,image={edges},module=canny,processor_res=64")  # fmt: skip
    assert_recipes_remake(out)
    again = gen("--recipe", out["recipes"][1])
    assert again["seeds"] == [5] and len(again["images"]) == 1  # the batch's other image is not kept


def test_a_shuffle_unit_draws_its_map_with_the_requests_seed_again(cn_workspace, tmp_path):
    """Content shuffle draws its map with the request's first seed: the second batch's image keeps it."""
    out = first("--prompt", "red", "--count", "2", "--control", f"model=cn,image={photo(tmp_path / 'p.png')},module=shuffle")
    assert_recipes_remake(out)


# --- grids ------------------------------------------------------------------------------------------


def test_every_grid_cell(lora_and_embedding):
    result = runner.invoke(
        app,
        ["grid", "--model", "tiny-sd15", "--width", "64", "--height", "64", "--steps", "2", "--seed", "-1",
         "--prompt", "zkstar red <lora:wild:1>", "--x", "lora_weight=0.2,0.9", "--y", "prompt_sr=red,blue",
         "--z", "cfg=3,6", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout.strip().splitlines()[-1])["cells"]
    assert len(cells) == 8
    assert_recipes_remake({"images": [c["image"] for c in cells], "recipes": [c["recipe"] for c in cells]})


def test_a_grid_cells_training_checkpoint_is_used_again(lora_and_embedding, sd15, tmp_path):
    """A checkpoint axis' cell used a run's `checkpoints/step-N/` file, not the library LoRA of that name."""
    from lora_helpers import random_lora
    from lorastudio.adapters import save_kohya
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import run_generation

    checkpoint = tmp_path / "runs" / "step-10" / "wild.safetensors"
    checkpoint.parent.mkdir(parents=True)
    save_kohya(random_lora(sd15, seed=9), checkpoint, family=sd15.family, unet_config=sd15.unet.config)
    cfg = GenerateConfig(prompt="red <lora:wild:1>", steps=3, seed=8, width=64, height=64)
    cell = run_generation(lora_and_embedding, cfg, lora_files={"wild": checkpoint}).images[0]
    assert_recipes_remake({"images": [cell.path], "recipes": [cell.recipe_path]})
    checkpoint.rename(tmp_path / "gone.safetensors")
    message = failure("generate", "--recipe", cell.recipe_path)
    assert len(message.splitlines()) == 1 and str(cell.recipe_path) in message and str(checkpoint) in message


# --- an image's A1111 parameters (`--recipe X.png`) -------------------------------------------------


def test_an_images_parameters_name_the_pictures_they_do_not_carry(cn_workspace, tmp_path):
    """A1111's infotext has no pictures: the PNG's recipe says which to give again, and with them the
    image comes back (a YAML recipe names them itself)."""
    init, mask = photo(tmp_path / "init.png", (96, 96)), hole(tmp_path / "mask.png", (96, 96))
    out = first("--prompt", "red", "--init-image", init, "--mask", mask, "--strength", "0.8", "--inpaint-only-masked",
                "--width", "64", "--height", "64", "--control", "model=cn")  # fmt: skip
    png = out["images"][0]
    bare = runner.invoke(app, ["generate", "--recipe", png, "--json"])
    assert "(init image, mask, ControlNet unit 0 image)" in bare.output, bare.output
    control = f"model=cn,image={init}"  # the unit's picture was the init image
    given = runner.invoke(app, ["generate", "--recipe", png, "--init-image", init, "--mask", mask, "--control", control,
                                "--json"])  # fmt: skip
    assert given.exit_code == 0 and "do not carry" not in given.output, given.output
    again = json.loads(given.stdout.strip().splitlines()[-1])
    assert np.array_equal(pixels(again["images"][0]), pixels(png))


def test_a_rest_jobs_base64_pictures_are_kept_for_its_recipe(client, studio, tmp_path):
    """`POST /api/v1/jobs/generate` with base64 pictures: its recipes name the kept copies, and remake the
    image once the uploads are gone."""
    import base64

    def inline(path) -> str:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()

    init, mask = photo(tmp_path / "init.png", (96, 64)), hole(tmp_path / "mask.png", (96, 64))
    body = {"model": "tiny-sd15", "prompt": "red", "steps": 3, "seed": 6, "strength": 0.7,
            "init_image": inline(init), "mask": inline(mask)}  # fmt: skip
    response = client.post("/api/v1/jobs/generate", json=body)
    assert response.status_code == 200, response.text
    job = studio.wait_job(response.json()["id"], timeout=120)
    assert job.state == "succeeded", job.error
    png = studio.workspace.outputs / job.id / job.result["images"][0]
    recipe = png.with_suffix(".yaml")
    assert yaml.safe_load(recipe.read_text(encoding="utf-8"))["request"]["mask"].startswith("inputs/")
    shutil.rmtree(studio.workspace.cache / "uploads")
    assert_recipes_remake({"images": [png], "recipes": [recipe]})
