"""The half-precision paths only a GPU runs: each once, with its result checked (`benchmarks/gpu.sh`).

On a CPU the training ones skip (the CPU trains in fp32); the fp16 VAE's overflow runs on the CPU's
fp16 kernels too.
"""

from __future__ import annotations

import json

import pytest
import torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TRIGGER = "zqx"


@pytest.fixture
def ws(workspace, tiny_models_dir):
    (workspace.models / "tiny-sd15").symlink_to(tiny_models_dir / "tiny-sd15", target_is_directory=True)
    return workspace


@pytest.fixture
def red_set(tmp_path):
    from training_helpers import write_images

    return write_images(tmp_path / "red", [((230, 20 + i, 25), TRIGGER) for i in range(4)])


def _train(ws, data, name: str, *extra: str, progress: bool = False) -> dict:
    from lorastudio.service.training import run_training
    from training_helpers import tiny_train_config

    settings = ("train.steps=4", "train.save_every_steps=1000", "lora.rank=4", "seed=3", f"output.name={name}")
    # tiny_train_config sets mixed_precision=no (the CPU's); the extras here set the GPU's.
    cfg = tiny_train_config(data, TRIGGER, *settings, *extra)
    return run_training(ws, cfg, progress=progress, device="cuda")  # progress: the run's lines on stderr


def _losses(ws, name: str) -> list[float]:
    return [json.loads(line)["loss"] for line in (ws.runs / name / "log.jsonl").read_text().splitlines()]


def _finite_file(path) -> bool:
    from safetensors.torch import load_file

    return all(torch.isfinite(t.float()).all() for t in load_file(str(path)).values())


@cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_training_gives_finite_losses_and_files(ws, red_set, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    result = _train(ws, red_set, f"mp-{precision}", f"train.mixed_precision={precision}")
    losses = _losses(ws, f"mp-{precision}")
    assert len(losses) == 4 and all(loss == loss and loss < 10 for loss in losses), losses
    assert _finite_file(result["lora"])


@cuda
def test_adamw8bit_trains_on_the_gpu(ws, red_set):
    pytest.importorskip("bitsandbytes")
    result = _train(ws, red_set, "adam8", "train.optimizer=adamw8bit", "train.mixed_precision=fp16")
    assert all(loss == loss for loss in _losses(ws, "adam8"))
    assert _finite_file(result["lora"])


@cuda
def test_full_finetune_samples_through_the_fp32_unet_bridge(ws, red_set):
    """A full fine-tune keeps the UNet in fp32 while the VAE and text encoder stay in half precision."""
    import numpy as np
    from PIL import Image

    result = _train(
        ws, red_set, "bridge", "method=finetune", "train.mixed_precision=fp16",
        "samples.prompts=[zqx]", "samples.every_steps=2",
    )  # fmt: skip
    samples = sorted((ws.runs / "bridge").rglob("samples/**/*.png"))
    assert samples, "no samples written"
    for path in samples:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        assert pixels.std() > 0  # not a flat NaN-turned-black image
    assert _finite_file(result["model"])


def test_an_fp16_vae_that_really_overflows_is_decoded_again_in_fp32(tiny_models_dir, tmp_path):
    """A real fp16 overflow (not a faked NaN): on the GPU when there is one, else with the CPU's fp16 kernels."""
    from lorastudio.generate.pipeline import _Sampler
    from lorastudio.models.loading import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model("tiny-sd15", tiny_models_dir, tmp_path / "cache", device=device)
    vae = model.vae.to(torch.float16)
    with torch.no_grad():
        # The tiny VAE's largest activation is ~23x the weight scale times the latents (checked in fp32):
        # 4000 and latents of 200 put it far past fp16's 65504 while fp32 stays finite.
        vae.post_quant_conv.weight.mul_(4000.0)
        latents = torch.full((1, 4, 8, 8), 200.0, device=device, dtype=torch.float16)
        half = vae.decode(latents / vae.config.scaling_factor).sample
        assert not torch.isfinite(half).all(), "the fp16 decode did not overflow: the test needs larger values"
        assert torch.isfinite(vae.float().decode(latents.float() / vae.config.scaling_factor).sample).all()
        vae.half()
        images = _Sampler(model, None, None, None, None, None).decode(latents)
    assert torch.isfinite(images).all() and vae.dtype == torch.float32



@cuda
def test_cached_captions_park_the_text_encoders_in_cpu_memory_and_samples_still_draw(ws, red_set, capfd, monkeypatch):
    """Parking changes where the encoders wait, not what trains: the same LoRA as a run without it."""
    from safetensors.torch import load_file
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # Deterministic kernels (cuDNN's, attention as plain matmuls): the runs may differ only where the
    # encoders wait (Adam moves every weight by ~lr on its first step, so a flipped near-zero gradient shows).
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    extra = ("samples.prompts=[zqx]", "samples.every_steps=2")
    with sdpa_kernel(SDPBackend.MATH):
        parked = _train(ws, red_set, "parked", *extra, progress=True)
        assert "the text encoders" in capfd.readouterr().err  # "... wait in CPU memory while the UNet trains"
        plain = _train(ws, red_set, "plain", "train.cache_text_encoder_outputs=false", *extra, progress=True)
    said = capfd.readouterr().err
    assert "attention:" in said and "the text encoders" not in said  # the lines are shown, this one not
    assert len(sorted((ws.runs / "parked").rglob("samples/**/*.png"))) == 2
    a, b = load_file(str(parked["lora"])), load_file(str(plain["lora"]))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4, msg=key)


@cuda
def test_the_caches_fill_while_the_unet_waits_in_cpu_memory(ws, red_set, monkeypatch):
    """Latents and captions are encoded with the UNet off the GPU; it is back for the first step,
    where the VAE waits in CPU memory. A second run on the same images (all cached) moves no UNet."""
    from lorastudio.train import latents, text_cache
    from lorastudio.train.trainer import Trainer

    models: list = []
    seen: dict[str, str] = {}

    def where(module) -> str:
        return next(module.parameters()).device.type

    def spy(cls, method: str, label: str) -> None:
        real = getattr(cls, method)

        def recording(self, *args, **kwargs):
            seen.setdefault(label, where(models[-1].unet))
            seen.setdefault(f"vae at {label}", where(models[-1].vae))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, recording)

    real_load = Trainer._load_model

    def load_and_keep(self):
        models.append(real_load(self))
        return models[-1]

    monkeypatch.setattr(Trainer, "_load_model", load_and_keep)
    spy(latents.LatentCache, "prepare", "latents")
    spy(text_cache.CaptionEncoder, "fill", "captions")
    spy(Trainer, "_loss", "first step")
    result = _train(ws, red_set, "staged")
    assert {k: seen[k] for k in ("latents", "captions", "first step")} == {
        "latents": "cpu", "captions": "cpu", "first step": "cuda"
    }  # fmt: skip
    assert seen["vae at latents"] == "cuda" and seen["vae at first step"] == "cpu"
    assert _finite_file(result["lora"])
    seen.clear()
    _train(ws, red_set, "staged-again")
    assert seen["latents"] == seen["captions"] == seen["first step"] == "cuda"


@cuda
def test_class_image_latents_are_encoded_while_the_unet_waits_in_cpu_memory(ws, red_set, monkeypatch):
    """Prior preservation: class images are drawn with the UNet on the GPU, their latents encoded
    with it aside, like the run's own."""
    from lorastudio.train import latents, prior

    where: list[tuple[int, str]] = []
    real_prepare, real_prior = latents.LatentCache.prepare, prior.prepare_prior
    models: list = []

    def recording(self, images, flip, progress=None):
        unet = models[-1].unet
        where.append((len(images), next(unet.parameters()).device.type))
        return real_prepare(self, images, flip, progress)

    def keep_model(cfg, model, *args, **kwargs):
        models.append(model)
        return real_prior(cfg, model, *args, **kwargs)

    monkeypatch.setattr(latents.LatentCache, "prepare", recording)
    monkeypatch.setattr(prior, "prepare_prior", keep_model)
    monkeypatch.setattr("lorastudio.train.trainer.prepare_prior", keep_model)
    class_images = ("prior.class_prompt=square", "prior.num_images=2", "prior.steps=4", "prior.sampler=Euler")
    result = _train(ws, red_set, "prior-staged", *class_images)
    assert where[0] == (2, "cpu") and where[1] == (4, "cpu"), where  # class latents, then the run's own
    assert _finite_file(result["lora"])


@cuda
def test_a_caption_is_encoded_where_the_encoders_wait(tiny_models_dir, tmp_path):
    """A caption missing from the cache while the encoders are parked: encoded on the CPU, used on the GPU."""
    from lorastudio.models.loading import load_model
    from lorastudio.train.text import encode_text

    for name in ("tiny-sd15", "tiny-sdxl"):
        model = load_model(name, tiny_models_dir, tmp_path / "cache", device="cuda")
        for encoder in model.text_encoders:
            encoder.float()  # fp32 both sides: half-precision CPU and GPU kernels round differently
        with torch.no_grad():
            on_gpu = encode_text(model, ["zqx, a red square"])
            for encoder in model.text_encoders:
                encoder.to("cpu")
            parked = encode_text(model, ["zqx, a red square"])
        for gpu, cpu in zip(on_gpu, parked, strict=True):
            if gpu is None:
                assert cpu is None
                continue
            assert cpu.device.type == "cuda"
            torch.testing.assert_close(cpu, gpu, rtol=1e-4, atol=1e-4)
