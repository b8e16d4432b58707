"""A recipe runs wherever it is opened (tiny-sd15): the device it records is where the image was made,
not a requirement; a model, VAE, LoRA or embedding changed since then is found again by the hash the
image recorded, or said in one line; a style given again with a recipe is not merged twice; weights
given as relative paths are recorded so another folder finds them."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from lorastudio.cli import _register, app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_register()
runner = CliRunner()


def run(*args):
    result = runner.invoke(app, ["generate", "--json", *[str(a) for a in args]])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def first(*args) -> dict:
    return run("--model", "tiny-sd15", "--steps", "3", "--seed", "21", *args)[0]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def edit(recipe, change) -> None:
    data = yaml.safe_load(open(recipe, encoding="utf-8"))
    change(data)
    with open(recipe, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def lora_file(sd15, path, seed):
    from lora_helpers import random_lora
    from lorastudio.adapters import save_kohya

    path.parent.mkdir(parents=True, exist_ok=True)
    save_kohya(random_lora(sd15, seed=seed), path, family=sd15.family, unet_config=sd15.unet.config)
    return path


def embedding_file(sd15, path, seed):
    from lorastudio.adapters import Embedding, save_embedding

    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(seed)) * 3
    save_embedding(Embedding("zkstar", [vectors]), path, sd15.family)
    return path


@pytest.fixture
def wild(tiny_workspace, sd15):
    lora_file(sd15, tiny_workspace.loras / "wild.safetensors", seed=0)
    embedding_file(sd15, tiny_workspace.embeddings / "zkstar.safetensors", seed=3)
    return tiny_workspace


# --- 1. the device is where the image was made ----------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_recipe_made_on_a_gpu_runs_on_this_machine_with_a_note(tiny_workspace):
    out = first("--prompt", "red")

    def made_on_a_gpu(data):
        data["request"]["device"] = "cuda"
        data["image"]["device"] = "cuda"

    edit(out["recipes"][0], made_on_a_gpu)
    again, said = run("--recipe", out["recipes"][0])
    assert "the image was made on cuda; generating on cpu here, so the pixels may differ" in said
    assert np.array_equal(pixels(again["images"][0]), pixels(out["images"][0]))  # it was made here, in truth
    kept = yaml.safe_load(open(again["recipes"][0], encoding="utf-8"))
    assert kept["image"]["device"] == "cpu"


def test_a_recipe_keeps_its_device_where_this_machine_has_it(tiny_workspace):
    from lorastudio.service.recipes import read_recipe

    out = first("--prompt", "red")
    assert yaml.safe_load(open(out["recipes"][0], encoding="utf-8"))["image"]["device"] in {"cpu", "cuda"}
    edit(out["recipes"][0], lambda data: data["image"].update(device="cpu"))
    recipe = read_recipe(out["recipes"][0], tiny_workspace)
    assert recipe.config.device == "cpu" and not recipe.notes  # made on the CPU: the same arithmetic again


def test_a_recipe_whose_device_this_machine_cannot_use_takes_the_default(tiny_workspace, tmp_path, monkeypatch):
    """A device torch refuses here — an index `int` cannot read, a driver that fails when asked for its GPUs —
    becomes this machine's default with the `device_changed` note; before, a bare ValueError/RuntimeError."""
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.recipes import read_recipe

    def broken_driver() -> int:
        raise RuntimeError("CUDA driver initialization failed")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine whose driver fails
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "device_count", broken_driver)
    request = GenerateConfig(model="tiny-sd15", steps=3, width=64, height=64, seed=4).model_dump()
    notes = {}
    for made in ("cuda:1", "cuda:\u00b2", "cuda:x", "npu:0"):
        data = {"request": {**request, "device": made}, "image": {"device": made, "seed": 4}}
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
        recipe = read_recipe(tmp_path / "r.yaml", tiny_workspace)
        assert recipe.config.device is None, made
        notes[made] = [(n.key, n.params) for n in recipe.notes]
    # another CUDA device: the default is CUDA too (the same kind of arithmetic), so no note, as before
    assert notes == {"cuda:1": [], "cuda:\u00b2": [], "cuda:x": [],
                     "npu:0": [("device_changed", {"made": "npu:0", "here": "cuda"})]}  # fmt: skip


# --- 2. weights changed since the image was made ------------------------------------------------


def test_a_retrained_lora_and_embedding_are_found_by_their_recorded_hashes(wild, sd15):
    out = first("--prompt", "zkstar picture <lora:wild:0.7>")
    run_folder = wild.runs / "wild"
    kept_lora = run_folder / "checkpoints" / "step-2" / "wild.safetensors"
    kept_embedding = run_folder / "embeddings" / "zkstar.safetensors"
    for source, target in ((wild.loras / "wild.safetensors", kept_lora), (wild.embeddings / "zkstar.safetensors", kept_embedding)):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    lora_file(sd15, wild.loras / "wild.safetensors", seed=9)  # retrained under the same names
    embedding_file(sd15, wild.embeddings / "zkstar.safetensors", seed=8)
    for recipe in (out["recipes"][0], out["images"][0]):  # our YAML, and the PNG's A1111 parameters
        again, said = run("--recipe", recipe)
        assert f"using {kept_lora}, which has the image's hash" in said, said
        assert f"using {kept_embedding}, which has the image's hash" in said, said
        assert "LoRA wild has changed since the image was made (hash " in said
        assert np.array_equal(pixels(again["images"][0]), pixels(out["images"][0])), recipe
    kept = yaml.safe_load(open(again["recipes"][0], encoding="utf-8"))
    assert kept["lora_files"] == {"wild": str(kept_lora)} and kept["embedding_files"] == {"zkstar": str(kept_embedding)}


def test_a_lora_kept_in_the_library_under_another_name_is_used_by_that_name(wild, sd15):
    out = first("--prompt", "a picture <lora:wild:0.7>")
    archived = wild.loras / "archive" / "wild-v1.safetensors"
    archived.parent.mkdir()
    shutil.copyfile(wild.loras / "wild.safetensors", archived)
    lora_file(sd15, wild.loras / "wild.safetensors", seed=9)
    again, said = run("--recipe", out["recipes"][0])
    assert "using wild-v1, which has the image's hash" in said
    assert "<lora:wild-v1:0.7>" in Image.open(again["images"][0]).text["parameters"]
    assert np.array_equal(pixels(again["images"][0]), pixels(out["images"][0]))


def test_a_changed_lora_with_no_copy_left_is_one_line_and_the_picture_differs(wild, sd15):
    from lorastudio.adapters.hashing import lora_short_hash

    out = first("--prompt", "a picture <lora:wild:0.7>")
    old = lora_short_hash(wild.loras / "wild.safetensors")
    lora_file(sd15, wild.loras / "wild.safetensors", seed=9)
    new = lora_short_hash(wild.loras / "wild.safetensors")
    again, said = run("--recipe", out["recipes"][0])
    assert f"LoRA wild has changed since the image was made (hash {old} → {new}); the picture will differ." in said
    assert not np.array_equal(pixels(again["images"][0]), pixels(out["images"][0]))


def _weights(path, value: float):
    from safetensors.torch import save_file

    save_file({"w": torch.full((4,), value)}, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_replaced_model_and_vae_are_found_by_their_recorded_hashes(workspace, tmp_path):
    from lorastudio.service.library import Library
    from lorastudio.service.recipes import read_recipe

    models = workspace.models
    _weights(models / "m.safetensors", 1.0)  # replaced under the image's names
    _weights(models / "v.safetensors", 1.0)
    old_model = _weights(models / "m-2023.safetensors", 2.0)
    old_vae = _weights(models / "v-2023.safetensors", 3.0)
    recipe = tmp_path / "old.yaml"
    data = {
        "request": {"model": "m", "vae": "v", "prompt": "red"},
        "model": {"name": "m", "hash": old_model[:10], "sha256": old_model},
        "infotext": f"red\nSteps: 20, Model hash: {old_model[:10]}, Model: m, VAE hash: {old_vae[:10]}, VAE: v",
    }
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    read = read_recipe(recipe, workspace)
    said = " ".join(note.text for note in read.notes)
    assert read.config.vae == "v-2023.safetensors", said  # a VAE file in models/ with the image's hash
    assert read.config.model == "m", said  # the library does not know m-2023 yet: the picture will differ
    assert f"model m has changed since the image was made (hash {old_model[:10]} → " in said
    Library(workspace).add_model("m-2023", models / "m-2023.safetensors", "sd15", old_model, 1, "single_file")
    read = read_recipe(recipe, workspace)
    assert read.config.model == "m-2023" and "using m-2023, which has the image's hash" in read.notes[0].text
    assert read.notes[0].params == {"kind": "model", "what": "model", "name": "m", "old": old_model[:10],
                                    "new": read.notes[0].params["new"], "file": "m-2023"}  # fmt: skip
    ui = pytest.importorskip("lorastudio.ui.tabs.png_info")  # the web UI words the notes in the page's language
    from types import SimpleNamespace

    from lorastudio.ui.i18n import translator

    zh = SimpleNamespace(t=translator("zh"))
    worded = [zh.t(f"png.{note.key}", **ui._worded(zh, note.params)) for note in read.notes]
    assert worded[0].startswith("模型 m 在图片生成后已更改") and worded[1].startswith("VAE v 在图片生成后已更改"), worded
    png = tmp_path / "old.png"  # the same from an A1111 image's parameters
    Image.new("RGB", (8, 8)).save(png, pnginfo=_pnginfo(data["infotext"]))
    read = read_recipe(png, workspace)
    assert (read.config.model, read.config.vae) == ("m-2023", "v-2023.safetensors"), read.notes


def _pnginfo(text):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    return info


# --- 3. a style given again with its recipe -------------------------------------------------------


def test_a1111_style_extraction_rules():
    from lorastudio.service.styles import PromptStyle, extract_styles

    master = PromptStyle("m", "masterpiece", "")
    around = PromptStyle("a", "masterpiece, {prompt}, 8k", "ugly")
    assert extract_styles([master], "1girl, art by greg, masterpiece", "")[:2] == ("1girl, art by greg", "")
    assert extract_styles([around], "masterpiece,  1girl, 8k", "ugly")[:2] == ("1girl", "")
    assert extract_styles([around], "exquisite, 1girl, 8k", "ugly")[2] == []  # not held: left as it is
    assert extract_styles([around], "masterpiece, 1girl, 8k", "")[2] == []  # its negative text is not there
    merged = ("cat, masterpiece", "")
    assert [s.name for s in extract_styles([master, around], *merged)[2]] == ["m"]


def test_a_style_given_again_with_its_recipe_is_merged_once(tiny_workspace):
    (tiny_workspace.root / "styles.csv").write_text(
        "name,prompt,negative_prompt\ngold,golden light,dark\nframe,\"a frame of {prompt}, centred\",\n", encoding="utf-8"
    )
    out = first("--prompt", "red", "--negative", "blurry", "--style", "gold", "--style", "frame")
    infotext = Image.open(out["images"][0]).text["parameters"]
    assert infotext.startswith("a frame of red, golden light, centred\nNegative prompt: blurry, dark\n")
    for recipe in (out["recipes"][0], out["images"][0]):
        again, _ = run("--recipe", recipe, "--style", "gold", "--style", "frame")
        assert Image.open(again["images"][0]).text["parameters"].split("\nSteps")[0] == infotext.split("\nSteps")[0]
        assert np.array_equal(pixels(again["images"][0]), pixels(out["images"][0]))
    again, _ = run("--recipe", out["recipes"][0], "--style", "frame", "--style", "gold")  # another order: merged again so
    assert Image.open(again["images"][0]).text["parameters"].startswith("a frame of red, centred, golden light\n")


# --- 4. weights given as relative paths -----------------------------------------------------------


def test_weights_given_as_relative_paths_are_found_from_another_folder(tiny_workspace, sd15, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from lorastudio.adapters.ldm import vae_to_ldm
    from upscaler_files import compact_state, save

    here = tmp_path / "here"
    shutil.copytree(tiny_workspace.models / "tiny-sd15", here / "mymodel")
    lora_file(sd15, here / "mine" / "wild.safetensors", seed=4)
    lora_file(sd15, tiny_workspace.loras / "styles" / "ink.safetensors", seed=5)
    save(compact_state(2, seed=6), here / "ups" / "2x-Mine.safetensors")
    state = {k: v.clone() for k, v in sd15.vae.state_dict().items()}
    state["decoder.conv_out.bias"] += torch.tensor([0.3, -0.3, 0.0])
    save_file({k: v.contiguous() for k, v in vae_to_ldm(state, sd15.vae.config).items()}, str(tiny_workspace.models / "warm.safetensors"))
    monkeypatch.chdir(here)
    out, _ = run(
        "--model", "mymodel", "--vae", "../studio/models/warm.safetensors", "--steps", "2", "--seed", "5",
        "--prompt", "red <lora:mine/wild.safetensors:0.8> <lora:../studio/loras/styles/ink.safetensors:0.5>",
        "--hires-scale", "1.5", "--hires-steps", "1", "--hires-upscaler", "ups/2x-Mine.safetensors",
    )  # fmt: skip
    request = yaml.safe_load(open(out["recipes"][0], encoding="utf-8"))["request"]
    assert request["model"] == str(here / "mymodel")  # outside the workspace: its absolute path
    assert request["vae"] == "warm.safetensors"  # in the workspace: the name it finds it by
    assert request["hires_upscaler"] == str(here / "ups" / "2x-Mine.safetensors")
    assert request["prompt"] == f"red <lora:{here / 'mine' / 'wild.safetensors'}:0.8> <lora:ink:0.5>"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again, _ = run("--recipe", out["recipes"][0])
    assert np.array_equal(pixels(again["images"][0]), pixels(out["images"][0]))
