"""Training config, presets, budget, captions, buckets and LoRA wrappers (no models needed)."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from lorastudio.data.dataset import DatasetItem
from lorastudio.errors import LorastudioError
from lorastudio.train.config import budget_steps, load_train_config, preset_names, read_preset
from lorastudio.train.data import BatchSchedule, scan_images
from lorastudio.train.lora_modules import LoraLayer, LoraSet, TargetSpec, inject_lora
from lorastudio.train.text import build_caption


def test_public_keys_parse_from_overrides():
    cfg = load_train_config(
        overrides=[
            "model=tiny-sd15",
            "data.dir=./imgs",
            "trigger=mira",
            "train.steps=1000",
            "train.batch_size=2",
            "train.learning_rate=1e-4",
            "train.resolution=768",
            "train.save_every_steps=50",
            "lora.rank=8",
            "lora.alpha=4",
            "output.name=mira_v1",
            "seed=7",
        ]
    )
    assert (cfg.model, cfg.data.dir, cfg.trigger, cfg.seed) == ("tiny-sd15", "./imgs", "mira", 7)
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.resolution, cfg.train.save_every_steps) == (
        1000,
        2,
        768,
        50,
    )
    assert cfg.train.learning_rate == pytest.approx(1e-4)
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.output.name) == (8, 4.0, "mira_v1")


def test_unknown_key_is_rejected_with_valid_keys_listed():
    with pytest.raises(LorastudioError) as info:
        load_train_config(overrides=["train.stepz=10"])
    message = str(info.value)
    assert "train.stepz" in message and "Did you mean 'steps'" in message and "learning_rate" in message


def test_wrong_type_and_bad_choice_are_rejected():
    with pytest.raises(LorastudioError, match="train.steps"):
        load_train_config(overrides=["train.steps=many"])
    with pytest.raises(LorastudioError, match="lora.targets"):
        load_train_config(overrides=["lora.targets=everything"])
    with pytest.raises(LorastudioError, match="trigger"):
        load_train_config(overrides=["method=pivotal"])  # a trigger embedding needs a trigger


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        (["method=embedding"], "config: method 'embedding' trains a trigger embedding; set trigger=<word>."),
        (["trigger=two words"], "config: trigger must be one word (no spaces or commas)."),
        (["method=dreambooth"], "config: method 'dreambooth' needs class images; set prior.class_prompt="),
        (["train.resolution=100"], "config: train.resolution 100 is not a multiple of data.bucket_reso_steps 64;"),
    ],
)
def test_a_check_across_keys_says_only_its_message(overrides, said):
    """A model validator's error has no key of its own: no ` = {whole config}` dump, no "Value error, "."""
    with pytest.raises(LorastudioError) as info:
        load_train_config(overrides=overrides)
    message = str(info.value)
    assert message.startswith(said), message
    assert "Value error" not in message and " = {" not in message and len(message) < 200


def test_config_file_and_overrides_layer_over_preset(tmp_path):
    file = tmp_path / "my.yaml"
    file.write_text("preset: portrait\ntrigger: anna\ntrain:\n  steps: 300\n", encoding="utf-8")
    cfg = load_train_config(file, ["lora.rank=64"])
    assert cfg.preset == "portrait"
    assert (cfg.train.steps, cfg.lora.rank, cfg.lora.alpha, cfg.train.grad_accum) == (300, 64, 64.0, 4)


def test_presets_are_shipped_and_encode_their_recipes():
    assert {"character", "style", "portrait", "sdxl-character"} <= set(preset_names())
    portrait = load_train_config(preset="portrait", overrides=["trigger=anna"])
    assert (portrait.train.resolution, portrait.lora.rank, portrait.lora.alpha) == (512, 128, 64.0)
    assert (portrait.train.learning_rate, portrait.train.grad_accum, portrait.train.steps) == (1e-4, 4, 800)
    assert portrait.train.max_steps_per_image == 200
    character = load_train_config(preset="character", overrides=["trigger=surtr"])
    assert character.method == "pivotal" and character.trains_embedding and character.trains_lora
    assert read_preset("sdxl-character")["family"] == "sdxl"
    dreambooth = load_train_config(preset="dreambooth", overrides=["trigger=zqx", "prior.class_prompt=a dog"])
    assert dreambooth.trains_full_unet and dreambooth.uses_prior and dreambooth.train.learning_rate == 2e-6
    with pytest.raises(LorastudioError, match="prior.class_prompt"):
        load_train_config(preset="dreambooth", overrides=["trigger=zqx"])
    with pytest.raises(LorastudioError, match="choose one of"):
        read_preset("nope")


def test_exposures_per_image_become_steps():
    cfg = load_train_config(
        overrides=["train.epochs_per_image=10", "train.batch_size=2", "train.grad_accum=2"]
    )
    steps, why = budget_steps(cfg, num_images=12, num_samples=12)
    assert steps == 30  # 10 x 12 samples / (2 x 2) per step
    assert "12 images" in why and "30 steps" in why
    capped = load_train_config(preset="portrait", overrides=["trigger=a"])
    steps, why = budget_steps(capped, num_images=3, num_samples=3)
    assert steps == 600 and "capped" in why  # 800 steps, but at most 200 per photo


def test_caption_building_keeps_tokens_prefixes_trigger_and_drops():
    rng = random.Random(0)
    caption = build_caption("1girl, red hair, smile, hat, sword", "mira", True, True, 2, 0.0, rng)
    tags = caption.split(", ")
    assert tags[:2] == ["mira", "1girl"]  # trigger first, then the kept token
    assert sorted(tags[2:]) == ["hat", "red hair", "smile", "sword"]
    assert build_caption("mira, smile", "mira", True, False, 1, 0.0, rng) == "mira, smile"  # not doubled
    assert build_caption("smile", "mira", True, False, 1, 1.0, rng) == ""


def test_an_embedding_run_with_no_caption_holding_the_trigger_is_refused(tmp_path):
    from lorastudio.train.plan import prepare_plan
    from training_helpers import write_images

    folder = write_images(tmp_path / "set", [((200, 10, 10), "red, 1girl"), ((10, 200, 10), "green")])
    common = ["model=tiny-sd15", f"data.dir={folder}", "train.resolution=64", "trigger=notthere"]
    unprefixed = [*common, "method=embedding", "data.caption_prefix_trigger=false"]
    with pytest.raises(LorastudioError, match="no caption contains the trigger 'notthere'; set data.caption_prefix_trigger"):
        prepare_plan(load_train_config(overrides=unprefixed), tmp_path)
    with pytest.raises(LorastudioError, match="no caption contains"):
        prepare_plan(load_train_config(overrides=[*common, "method=pivotal", "data.caption_prefix_trigger=false"]), tmp_path)
    assert len(prepare_plan(load_train_config(overrides=[*common, "method=embedding"]), tmp_path).images) == 2
    assert prepare_plan(load_train_config(overrides=unprefixed), tmp_path, held_out=True).images  # scoring's set
    lora = [*common, "method=lora", "data.caption_prefix_trigger=false"]
    assert prepare_plan(load_train_config(overrides=lora), tmp_path).images  # a LoRA learns from any caption
    (folder / "1.txt").write_text("green, NotThere (person)", encoding="utf-8")  # one caption is enough
    assert prepare_plan(load_train_config(overrides=unprefixed), tmp_path).images


def _image(path, size, colour=(200, 10, 10)):
    Image.new("RGB", size, colour).save(path)
    return DatasetItem(path, "x", 1)


def test_images_smaller_than_resolution_are_refused(tmp_path):
    items = [_image(tmp_path / "big.png", (128, 128)), _image(tmp_path / "small.png", (40, 40))]
    with pytest.raises(LorastudioError, match=r"small.png \(40x40\).*train.resolution"):
        scan_images(items, resolution=64)
    images = scan_images(items, resolution=64, max_upscale=2.0)
    assert [img.bucket for img in images] == [(64, 64), (64, 64)]


def test_batch_order_is_seeded_and_one_bucket_per_batch(tmp_path):
    items = [_image(tmp_path / f"w{i}.png", (128, 64)) for i in range(3)]
    items += [_image(tmp_path / f"t{i}.png", (64, 128), (0, 0, 200)) for i in range(3)]
    images = scan_images(items, resolution=64, max_upscale=2.0)
    a = BatchSchedule(images, 2, seed=1, flip=True)
    b = BatchSchedule(images, 2, seed=1, flip=True)
    assert [a.batch(i) for i in range(12)] == [b.batch(i) for i in reversed(range(12))][::-1]
    for i in range(12):
        assert len({images[index].bucket for index, _ in a.batch(i)}) == 1
    assert any(flipped for i in range(12) for _, flipped in a.batch(i))


def test_lora_layer_starts_as_identity_and_rank_is_checked():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Conv2d(3, 4, 3, padding=1))
    x = torch.randn(2, 8)
    before = model[0](x)
    lora_set = LoraSet()
    spec = TargetSpec("unet", rank=4, conv_rank=2, alpha=2.0, targets="locon")
    inject_lora(model, spec, ["0", "1"], lora_set, torch.Generator().manual_seed(0))
    assert isinstance(model[0], LoraLayer) and model[1].rank == 2
    assert torch.equal(model[0](x), before)  # up starts at zero
    with torch.no_grad():
        model[0].lora_up.weight.fill_(0.1)
    assert not torch.allclose(model[0](x), before)
    assert model[0].scale == pytest.approx(0.5)
    with pytest.raises(LorastudioError, match="lora.rank 16"):
        inject_lora(
            torch.nn.Sequential(torch.nn.Linear(8, 6)),
            TargetSpec("unet", 16, 16, 1.0, "kohya"),
            ["0"],
            LoraSet(),
            torch.Generator(),
        )


def test_cli_lists_presets():
    import json

    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    _register()
    result = CliRunner().invoke(app, ["train", "presets", "--json"])
    assert result.exit_code == 0, result.output
    names = [p["name"] for p in json.loads(result.output)["presets"]]
    assert "portrait" in names and "character" in names


def test_one_sample_prompt_may_be_given_as_a_string():
    """`samples.prompts="red girl, smiling"` was "Input should be a valid list"; it is one prompt."""
    cfg = load_train_config(overrides=["samples.prompts=red girl, smiling"])
    assert cfg.samples.prompts == ["red girl, smiling"]
    assert load_train_config(overrides=["samples.prompts="]).samples.prompts == []
    assert load_train_config(overrides=["samples.prompts=[a, b]"]).samples.prompts == ["a", "b"]


def test_keys_of_another_method_are_said_to_be_ignored():
    """`lora.train_text_encoder=true` on an embedding run (or `embedding.*` on a LoRA run) changed nothing,
    silently; `--explain` and the run's plan lines say so."""
    from lorastudio.train.config import explain_lines, ignored_keys, resolve_train_config

    embedding = load_train_config(overrides=["method=embedding", "trigger=zqx", "lora.train_text_encoder=true"])
    assert ignored_keys(embedding) == ["lora.train_text_encoder=true ignored: method 'embedding' trains no LoRA"]
    lora = resolve_train_config(None, ["method=lora", "embedding.num_vectors=4"])
    assert "# embedding.num_vectors=4 ignored: method 'lora' trains no trigger embedding" in explain_lines(lora)
    assert ignored_keys(load_train_config(preset="character", overrides=["trigger=zqx"])) == []
    assert ignored_keys(load_train_config(overrides=["method=dreambooth", "prior.class_prompt=a dog"])) == []
