"""Training samples: kohya's per-line prompt options, and infotext that redraws a sample from its checkpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.train.config import load_train_config
from lorastudio.train.sample_prompts import parse_sample_prompt
from lorastudio.train.samples import sample_request
from training_helpers import tiny_train_config, write_images

KOHYA_LINE = "1girl, red hair --n lowres, blurry --w 128 --h 64 --d 1 --l 6.5 --s 10 --ss euler_a"


def _kohya_import(tmp_path, prompt_file):
    from lorastudio.train.kohya_config import import_kohya_config

    toml = tmp_path / "train.toml"
    toml.write_text(f'pretrained_model_name_or_path = "tiny-sd15"\nsample_prompts = "{prompt_file}"\n', encoding="utf-8")
    return import_kohya_config(toml)


def _request_of(line: str, *overrides: str):
    cfg = load_train_config(overrides=["train.resolution=64", f"samples.prompts=[{json.dumps(line)}]", *overrides])
    return sample_request(cfg, parse_sample_prompt(cfg.samples.prompts[0]), "x")


def test_kohya_line_options_reach_the_sample_request(tmp_path):
    """`--n lowres --w 64 ...` was cut off: the sample drew with negative "", 20 steps, CFG 7, seed 0."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"# kohya sample prompts\n{KOHYA_LINE}\nplain prompt\n", encoding="utf-8")
    imported = _kohya_import(tmp_path, prompts)
    assert not [line for line in imported.lines() if "NOT MAPPED" in line]
    kept = imported.config["samples"]["prompts"]
    assert kept[1] == "plain prompt"
    cfg = load_train_config(overrides=["train.resolution=64", f"samples.prompts={json.dumps(kept)}"])
    request = sample_request(cfg, parse_sample_prompt(cfg.samples.prompts[0]), "1girl, red hair")
    assert (request.negative_prompt, request.width, request.height) == ("lowres, blurry", 128, 64)
    assert (request.seed, request.cfg_scale, request.steps, request.sampler) == (1, 6.5, 10, "Euler a")
    plain = sample_request(cfg, parse_sample_prompt(cfg.samples.prompts[1]), "plain prompt")
    assert (plain.negative_prompt, plain.steps, plain.cfg_scale, plain.seed, plain.width) == ("", 20, 7.0, 0, 64)


def test_lorastudio_prompts_take_the_same_options_over_the_samples_section():
    request = _request_of("a red car --s 3 --w 100", "samples.negative=ugly", "samples.steps=9", "samples.seed=4")
    assert (request.prompt, request.steps, request.width, request.height) == ("x", 3, 96, 64)  # kohya: down to 8s
    assert (request.negative_prompt, request.seed) == ("ugly", 4)
    spaced = _request_of("a red car --ss DPM++ 2M Karras --n blurry, lowres")  # a value runs to the next " --"
    assert (spaced.sampler, spaced.negative_prompt) == ("DPM++ 2M Karras", "blurry, lowres")


@pytest.mark.parametrize(
    "line, words",
    [
        ("a --q 3", "unknown option --q"),
        ("a --w wide", "--w 'wide' is not a valid value"),
        ("a --ss fastest", "--ss 'fastest' is not a sampler"),
        ("a --cn pose.png", "a ControlNet image"),
        ("a --n", "--n needs a value"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(line, words):
    with pytest.raises(LorastudioError, match="samples.prompts") as caught:
        load_train_config(overrides=[f"samples.prompts=[{json.dumps(line)}]"])
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_kohya_toml_and_json_prompt_files_are_read_as_kohya_does(tmp_path):
    toml = tmp_path / "prompts.toml"
    toml.write_text(
        "[prompt]\nwidth = 128\nheight = 64\nsample_steps = 12\nscale = 5.0\n\n"
        '[[prompt.subset]]\nprompt = "a cat"\nnegative_prompt = "dog"\nseed = 7\n\n'
        '[[prompt.subset]]\nprompt = "a bird"\nwidth = 64\ncontrolnet_image = "pose.png"\n',
        encoding="utf-8",
    )
    imported = _kohya_import(tmp_path, toml)
    cat, bird = (parse_sample_prompt(line) for line in imported.config["samples"]["prompts"])
    assert (cat.prompt, cat.negative, cat.width, cat.height, cat.steps, cat.cfg_scale, cat.seed) == (
        "a cat", "dog", 128, 64, 12, 5.0, 7,
    )  # fmt: skip
    assert (bird.prompt, bird.width, bird.height) == ("a bird", 64, 64)
    assert any("prompt 2: --cn (a ControlNet image) left out" in line for line in imported.lines())
    js = tmp_path / "prompts.json"
    js.write_text(json.dumps(["a fox --s 4", {"prompt": "a owl", "sample_sampler": "k_euler", "seed": 2}]))
    fox, owl = (parse_sample_prompt(p) for p in _kohya_import(tmp_path, js).config["samples"]["prompts"])
    assert (fox.prompt, fox.steps) == ("a fox", 4)
    assert (owl.prompt, owl.sampler, owl.seed) == ("a owl", "Euler", 2)


@pytest.mark.slow
def test_a_sample_redraws_from_its_png_with_the_step_lora(tiny_workspace, tmp_path, one_torch_thread):
    """Samples held no parameters ("holds no generation parameters"); now PNG info names the step's LoRA
    and `generate --recipe sample.png` with that checkpoint gives the same picture."""
    from lorastudio.generate.infotext import parse_infotext, read_infotext
    from lorastudio.service.generation import run_generation
    from lorastudio.service.recipes import read_recipe
    from lorastudio.service.training import run_training

    ws = tiny_workspace
    data = write_images(tmp_path / "red", [((230, 20 + i, 25), "zqx") for i in range(4)])
    cfg = tiny_train_config(
        data, "zqx", "train.steps=2", "train.save_every_steps=2", "lora.rank=4", "output.name=redraw",
        "output.save_precision=fp32", "scoring.enabled=false", "train.learning_rate=5e-2",
        'samples.prompts=["zqx, red --n blue --w 64 --h 128 --d 5 --l 6 --s 4"]',
    )  # fmt: skip
    run_training(ws, cfg, progress=False)
    sample = ws.runs / "redraw" / "samples" / "step-2" / "00.png"
    params = parse_infotext(read_infotext(sample))
    assert params["Prompt"] == "zqx, red <lora:redraw:1>" and params["Negative prompt"] == "blue"
    assert (params["Steps"], params["Seed"], params["CFG scale"], params["Size-1"], params["Size-2"]) == ("4", "5", "6.0", "64", "128")
    checkpoint = ws.runs / "redraw" / "checkpoints" / "step-2" / "redraw.safetensors"
    from lorastudio.adapters.hashing import lora_short_hash

    assert params["Lora hashes"].strip('"') == f"redraw: {lora_short_hash(checkpoint)}"
    shutil.copy(checkpoint, ws.loras / "redraw.safetensors")  # the step's LoRA in the library
    request = read_recipe(sample, ws).config.model_copy(update={"device": "cpu"})
    again = run_generation(ws, request, out_dir=tmp_path / "out", add_to_library=False).images[0].path
    drawn, redrawn = (np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in (sample, again))
    assert drawn.shape == redrawn.shape == (128, 64, 3)
    assert np.abs(drawn - redrawn).max() <= 3, np.abs(drawn - redrawn).max()


def test_every_kohya_sample_sampler_name_is_one_lorastudio_samples_with(tmp_path):
    """kohya's `sample_sampler` / `--ss` names: `dpm_2_a` and `dpm_2` (kohya's spellings beside `k_dpm_2_a`) were
    refused, and `pndm` became samples.sampler "PNDM", which no sampler answers to, so the run failed at its
    first sample step; a sampler no sampler answers to is refused by the config, before a run starts."""
    from lorastudio.generate.samplers import parse_sampler
    from lorastudio.train.sample_prompts import sampler_of

    for kohya, a1111 in (("dpm_2_a", "DPM2 a"), ("dpm_2", "DPM2"), ("pndm", "PLMS")):
        assert sampler_of(kohya) == a1111
        toml = tmp_path / f"{kohya}.toml"
        toml.write_text(f'pretrained_model_name_or_path = "tiny-sd15"\nsample_sampler = "{kohya}"\n', encoding="utf-8")
        from lorastudio.train.kohya_config import import_kohya_config

        imported = import_kohya_config(toml)
        assert imported.config["samples"]["sampler"] == a1111, imported.lines()
        parse_sampler(imported.config["samples"]["sampler"])
    for section in ("samples", "prior", "scoring"):
        with pytest.raises(LorastudioError, match=f"{section}.sampler") as caught:
            load_train_config(overrides=[f"{section}.sampler=PNDM"])
        assert "unknown sampler 'PNDM'" in str(caught.value) and "\n" not in str(caught.value)
    assert load_train_config(overrides=["samples.sampler=DPM++ 2M Karras"]).samples.sampler == "DPM++ 2M Karras"
