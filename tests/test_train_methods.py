"""DreamBooth (prior preservation), full UNet fine-tune, EMA and the text-encoder cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from lorastudio.errors import LorastudioError
from lorastudio.service.training import run_training
from lorastudio.train.ema import WeightAverage
from test_train_run import TRIGGER
from test_train_run import _config as train_run_config
from training_helpers import write_images

pytestmark = pytest.mark.slow  # DreamBooth, fine-tune and EMA training runs (~40 s)


@pytest.fixture
def ws(tiny_workspace, one_torch_thread):
    return tiny_workspace


@pytest.fixture
def red_set(tmp_path):
    """Eight solid red images captioned `zqx, square, <n>` (four distinct captions)."""
    return write_images(
        tmp_path / "red", [((230, 20 + i, 25), f"{TRIGGER}, square, {i % 4}") for i in range(8)]
    )


def _config(data_dir, *extra):
    """test_train_run's small tiny-sd15 run, without scoring unless a test asks for it."""
    return train_run_config(data_dir, "scoring.enabled=false", *extra)


def _tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _redness(image: Image.Image) -> float:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return float((pixels[..., 0] - (pixels[..., 1] + pixels[..., 2]) / 2).mean())


def _distance(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute pixel difference in [0, 1]."""
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean() / 255.0)


def _generate(ws, model: str, prompt: str, seed: int = 0) -> Image.Image:
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import run_generation

    request = GenerateConfig(
        model=model, prompt=prompt, steps=8, width=64, height=64, seed=seed, cfg_scale=1.0, sampler="Euler"
    )
    with Image.open(run_generation(ws, request).images[0].path) as image:
        return image.convert("RGB")


# -- EMA ----------------------------------------------------------------------------------------
def test_weight_average_warms_up_and_swaps_in_only_while_applied():
    param = torch.nn.Parameter(torch.zeros(3))
    ema = WeightAverage([param], decay=0.99)
    with torch.no_grad():
        param.fill_(1.0)
    ema.update()  # decay warms up: min(0.99, 1/10) = 0.1, so the average moves 90% of the way
    assert torch.allclose(ema.shadow[0], torch.full((3,), 0.9))
    with ema.applied():
        assert torch.allclose(param, torch.full((3,), 0.9))
    assert torch.equal(param, torch.ones(3))  # the live weights are back for the optimizer


def test_ema_run_saves_the_average_and_resumes_to_the_same_bits(ws, red_set):
    plain = run_training(ws, _config(red_set, "output.name=plain"), progress=False)
    ema_cfg = ("train.ema_decay=0.9",)
    straight = run_training(ws, _config(red_set, "output.name=ema", *ema_cfg), progress=False)
    run_training(ws, _config(red_set, "output.name=ema-halves", *ema_cfg), progress=False, stop_at_step=3)
    resumed = run_training(ws, resume="ema-halves", progress=False)

    a, b = _tensors(straight["lora"]), _tensors(resumed["lora"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    # LoRA up-weights start at zero and grow; the average lags behind the live weights.
    live = _tensors(plain["lora"])
    ups = [k for k in a if k.endswith("lora_up.weight")]
    assert sum(a[k].norm() for k in ups) < 0.95 * sum(live[k].norm() for k in ups)


# -- text-encoder output cache -------------------------------------------------------------------
def test_text_encoder_outputs_are_cached_on_disk_and_reused_across_runs(ws, red_set):
    first = run_training(ws, _config(red_set, "output.name=first"), progress=False)
    files = sorted((ws.cache / "text").rglob("*.safetensors"))
    assert len(files) == 4  # one per distinct caption
    stamps = [f.stat().st_mtime_ns for f in files]

    second = run_training(ws, _config(red_set, "output.name=second"), progress=False)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read, not re-encoded
    uncached = run_training(
        ws, _config(red_set, "output.name=uncached", "train.cache_text_encoder_outputs=false"), progress=False
    )
    a, b, c = (_tensors(r["lora"]) for r in (first, second, uncached))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.allclose(a[k], c[k], atol=1e-6) for k in a)


def test_shuffled_or_trained_captions_are_not_disk_cached(ws, red_set):
    # The captions to cache are chosen and encoded before the first step: one step shows it.
    run_training(ws, _config(red_set, "output.name=shuffled", "data.shuffle_tags=true", "train.steps=1"), progress=False)
    run_training(ws, _config(red_set, "output.name=piv", "method=pivotal", "train.steps=1"), progress=False)
    assert not list((ws.cache / "text").rglob("*.safetensors"))


# -- prior preservation ------------------------------------------------------------------------------
def test_prior_preservation_generates_class_images_once_and_keeps_the_class(ws, red_set):
    train = (
        "train.steps=25",
        "train.batch_size=4",
        "train.save_every_steps=1000",
        "train.learning_rate=2e-2",
        "lora.rank=8",
        "lora.alpha=8",
    )
    # Class images made with the settings the test generates with, so "unchanged" is measurable.
    prior = ("prior.class_prompt=square", "prior.num_images=4", "prior.steps=8", "prior.cfg_scale=1")
    prior += ("prior.sampler=Euler",)
    run_training(ws, _config(red_set, "output.name=leaky", *train), progress=False)
    kept = run_training(ws, _config(red_set, "output.name=kept", *train, *prior), progress=False)

    (folder,) = [p for p in ws.datasets.iterdir() if p.name.startswith("class-square-")]
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 4 and (folder / f"{pngs[0].stem}.txt").read_text(encoding="utf-8") == "square"
    stamps = [p.stat().st_mtime_ns for p in pngs]

    base_image = _generate(ws, "tiny-sd15", "square")
    leak = _distance(_generate(ws, "tiny-sd15", "square <lora:leaky:1>"), base_image)
    kept_leak = _distance(_generate(ws, "tiny-sd15", "square <lora:kept:1>"), base_image)
    assert leak > 0.08, leak  # without the prior, the class itself changes a lot
    assert kept_leak < 0.6 * leak, (leak, kept_leak)
    trigger_base = _redness(_generate(ws, "tiny-sd15", TRIGGER))
    assert _redness(_generate(ws, "tiny-sd15", f"{TRIGGER} <lora:kept:1>")) > trigger_base + 0.05

    run_training(ws, _config(red_set, "output.name=again", "train.steps=1", *prior), progress=False)
    assert [p.stat().st_mtime_ns for p in sorted(folder.glob("*.png"))] == stamps  # reused
    assert kept["finished"]
    assert "prior preservation" in _metadata(kept["lora"])["ss_training_comment"]


def _metadata(path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


def test_dreambooth_needs_a_class_prompt():
    with pytest.raises(LorastudioError, match="prior.class_prompt"):
        _config("x", "method=dreambooth")


# -- full UNet fine-tune / DreamBooth ------------------------------------------------------------------
def test_dreambooth_trains_the_whole_unet_into_a_single_file_checkpoint(ws, red_set, tiny_models_dir):
    from diffusers import StableDiffusionPipeline

    cfg = _config(
        red_set,
        "method=dreambooth",
        "output.name=db",
        "train.steps=12",
        "train.batch_size=4",
        "train.save_every_steps=6",
        "train.learning_rate=2e-3",
        "train.optimizer=adamw",
        "prior.class_prompt=square",
        "prior.num_images=4",
        "prior.steps=8",
        "scoring.enabled=true",
        "scoring.steps=4",
    )
    result = run_training(ws, cfg, progress=False)
    model_file = Path(result["library_model"])
    assert model_file == ws.models / "db.safetensors" and "library_lora" not in result
    assert result["best_step"] in (6, 12)
    checkpoints = Path(result["run_dir"]) / "checkpoints"
    assert (checkpoints / "step-6" / "db.safetensors").is_file()  # every model file stays for scoring
    assert not (checkpoints / "step-6" / "state").exists() and (checkpoints / "step-12" / "state").is_dir()
    meta = _metadata(model_file)
    assert meta["modelspec.architecture"] == "stable-diffusion-v1"
    assert meta["modelspec.prediction_type"] == "v" and meta["lorastudio.base_config"] == "tiny-sd15"

    # lorastudio loads it by name (it is in models/) and the trigger is now red ...
    # (over four seeds: one tiny-model image swings by more than the effect; 2026-12-07, five training
    # seeds: +0.07 to +0.11 in mean redness)
    base = np.mean([_redness(_generate(ws, "tiny-sd15", TRIGGER, seed)) for seed in range(4)])
    assert np.mean([_redness(_generate(ws, "db", TRIGGER, seed)) for seed in range(4)]) > base + 0.04
    # ... and plain diffusers reads the A1111 layout with the base model's configs.
    pipe = StableDiffusionPipeline.from_single_file(
        str(model_file), config=str(tiny_models_dir / "tiny-sd15"), local_files_only=True
    )
    base_pipe = StableDiffusionPipeline.from_pretrained(
        str(tiny_models_dir / "tiny-sd15"), local_files_only=True
    )

    def fp16(tensor):  # the file is saved in fp16 (output.save_precision), like A1111 checkpoints
        return tensor.half().float()

    base_unet = base_pipe.unet.state_dict()
    changed = [n for n, v in pipe.unet.state_dict().items() if not torch.equal(v, fp16(base_unet[n]))]
    assert len(changed) > 0.9 * len(base_unet)  # every layer trained, not an adapter
    vae_key = "decoder.conv_out.weight"
    assert torch.equal(pipe.vae.state_dict()[vae_key], fp16(base_pipe.vae.state_dict()[vae_key]))


def test_full_finetune_resumes_to_the_same_bits(ws, red_set):
    extra = ("method=finetune", "train.steps=4", "train.save_every_steps=2", "train.learning_rate=1e-4")
    straight = run_training(ws, _config(red_set, "output.name=ft", *extra), progress=False)
    run_training(ws, _config(red_set, "output.name=ft-halves", *extra), progress=False, stop_at_step=2)
    resumed = run_training(ws, resume="ft-halves", progress=False)
    a, b = _tensors(straight["model"]), _tensors(resumed["model"])
    unet_keys = [k for k in a if k.startswith("model.diffusion_model.")]
    assert unet_keys and all(torch.equal(a[k], b[k]) for k in a)


# -- library registration ----------------------------------------------------------------------------
def test_finished_lora_is_registered_with_trigger_base_model_samples_and_settings(ws, red_set):
    import json

    from typer.testing import CliRunner

    from lorastudio.cli import _register, app
    from lorastudio.service.training import pick_training_checkpoint

    cfg = _config(red_set, "output.name=reg", "samples.prompts=[zqx]", "samples.steps=2")
    run_training(ws, cfg, progress=False)
    _register()
    listed = CliRunner().invoke(app, ["lora", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)["loras"]
    assert (row["name"], row["trigger"], row["base_model"], row["run"], row["step"]) == (
        "reg",
        TRIGGER,
        "tiny-sd15",
        "reg",
        6,
    )
    assert row["registered"] and row["samples"] and row["samples"][0].endswith("step-6/00.png")

    pick_training_checkpoint(ws, "reg", 3)  # the user's override is recorded too
    (row,) = json.loads(CliRunner().invoke(app, ["lora", "list", "--json"]).stdout)["loras"]
    assert row["step"] == 3 and row["samples"][0].endswith("step-3/00.png")


def test_samples_show_what_the_saved_lora_draws_with_dropout_and_ema(ws, red_set):
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import run_generation

    cfg = _config(
        red_set,
        "output.name=sampled",
        "train.steps=4",
        "train.save_every_steps=4",
        "train.learning_rate=2e-2",
        "train.ema_decay=0.9",
        "lora.dropout=0.5",
        "samples.prompts=[zqx]",
        "samples.steps=4",
    )
    result = run_training(ws, cfg, progress=False)
    with Image.open(Path(result["run_dir"]) / "samples" / "step-4" / "00.png") as image:
        sample = np.asarray(image.convert("RGB"), dtype=np.float32)
    request = GenerateConfig(
        model="tiny-sd15",
        prompt="zqx <lora:sampled:1>",
        steps=4,
        width=64,
        height=64,
        seed=0,
        sampler="Euler a",
    )
    with Image.open(run_generation(ws, request).images[0].path) as image:
        generated = np.asarray(image.convert("RGB"), dtype=np.float32)
    request.prompt = "zqx"
    with Image.open(run_generation(ws, request).images[0].path) as image:
        base = np.asarray(image.convert("RGB"), dtype=np.float32)
    # Training samples through its LoRA wrappers (x + B(Ax)), generation patches W + BA: the
    # same function up to float rounding, which a few sampler steps may amplify by an amount
    # that depends on the CPU. Dropout or a missed average would move the sample by a good
    # part of the LoRA's whole effect, so the bound is a fraction of that effect.
    effect = np.abs(generated - base).mean()

    assert effect > 5
    assert np.abs(sample - generated).mean() < 0.1 * effect


# -- review fixes: dtypes, defaults, user folders, names ------------------------------------------------
def test_unet_dtype_bridge_lets_an_fp32_unet_sample_with_bf16_tensors(tiny_models_dir):
    from diffusers import UNet2DConditionModel

    from lorastudio.train.trainables import unet_dtype_bridge

    unet = UNet2DConditionModel.from_pretrained(str(tiny_models_dir / "tiny-sd15" / "unet"))  # fp32
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator).to(torch.bfloat16)
    context = torch.randn(1, 77, 32, generator=generator).to(torch.bfloat16)
    with pytest.raises(RuntimeError), torch.no_grad():
        unet(sample, 10, encoder_hidden_states=context)  # what sampling a full fine-tune met on CUDA
    with unet_dtype_bridge(unet, torch.float32, torch.bfloat16), torch.no_grad():
        out = unet(sample, 10, encoder_hidden_states=context).sample
    with torch.no_grad():
        reference = unet(sample.float(), 10, encoder_hidden_states=context.float()).sample
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), reference, atol=0.05)
    assert not unet._forward_hooks and not unet._forward_pre_hooks  # removed afterwards


def test_whole_unet_methods_default_to_a_full_model_learning_rate():
    assert _config("x", "method=finetune").train.learning_rate == 2e-6
    assert _config("x", "method=finetune", "train.learning_rate=1e-5").train.learning_rate == 1e-5
    assert _config("x").train.learning_rate == 1e-4  # LoRA keeps its own default


def test_gradient_buckets_keep_order_and_respect_the_limit():
    from lorastudio.train.distributed import _buckets

    tensors = [
        torch.zeros(4),
        torch.zeros(4),
        torch.zeros(2, dtype=torch.float64),
        torch.zeros(9),
        torch.zeros(1),
    ]
    groups = _buckets(tensors, limit=8)
    assert [[t.numel() for t in g] for g in groups] == [[4, 4], [2], [9], [1]]
    assert [t for g in groups for t in g] == tensors


def test_user_class_dir_is_used_as_is_never_filled(ws, red_set, tmp_path):
    kohya = tmp_path / "dogs" / "2_dog"  # a kohya repeat folder of the user's own class images
    kohya.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 64), (20, 20, 200 + i)).save(kohya / f"{i}.png")
    before = sorted(p.name for p in (tmp_path / "dogs").rglob("*"))
    prior = ("prior.class_prompt=a dog", f"prior.class_dir={tmp_path / 'dogs'}", "prior.num_images=8")
    result = run_training(
        ws, _config(red_set, "output.name=userprior", "train.steps=2", *prior), progress=False
    )
    assert result["finished"]
    assert sorted(p.name for p in (tmp_path / "dogs").rglob("*")) == before  # nothing generated into it
    assert not [p for p in ws.datasets.iterdir() if p.name.startswith("class-")]
    with safe_open(result["library_lora"], framework="pt") as handle:  # kohya's regularisation keys
        meta = handle.metadata()
    assert (meta["ss_num_reg_images"], meta["ss_prior_loss_weight"]) == ("6", "1.0")  # 3 images x 2 repeats
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {"2_dog": {"n_repeats": 2, "img_count": 3}}

    missing = _config(red_set, "output.name=nope", "prior.class_prompt=a dog", "prior.class_dir=nodogs")
    with pytest.raises(LorastudioError, match="prior.class_dir 'nodogs'"):
        run_training(ws, missing, progress=False)  # refused before any model is loaded


def test_fine_tune_saves_fp16_and_refuses_to_overwrite_a_model(ws, red_set):
    result = run_training(
        ws, _config(red_set, "method=finetune", "output.name=ft16", "train.steps=1"), progress=False
    )
    tensors = _tensors(result["library_model"])
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    with pytest.raises(LorastudioError, match="already exists"):
        run_training(ws, _config(red_set, "method=finetune", "output.name=tiny-sd15"), progress=False)
