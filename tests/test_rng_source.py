"""A1111's random number sources (`rng`: CPU, GPU, NV): NVIDIA's Philox numbers drawn on the CPU, the
starting and per-step noise they make, and the setting on every front (CLI, A1111 API, infotext, recipes,
the X/Y/Z axis)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.generate.infotext import parse_infotext, read_infotext
from lorastudio.generate.noise import ImageNoise, NoiseOptions, image_noise, seed_noise, slerp
from lorastudio.generate.philox import PhiloxGenerator, philox_normal

pytestmark = pytest.mark.usefixtures("one_torch_thread")
_register()
runner = CliRunner()

# torch.randn(12, device="cuda") after torch.manual_seed(0)
CUDA_SEED_0 = [
    -0.92466259, -0.42534414, -2.64384580, 0.14518388, -0.12086648, -0.57972562,
    -0.62285119, -0.32838708, -1.07454228, -0.36314407, -1.67105067, 2.26550508,
]  # fmt: skip


def test_philox_draws_cudas_numbers_for_seed_0():
    assert np.allclose(philox_normal(0, 0, 12), CUDA_SEED_0, atol=1e-6, rtol=0)
    generator = PhiloxGenerator(0)
    first = generator.randn((3, 4))
    assert first.dtype == torch.float32 and generator.offset == 1
    assert np.allclose(first.flatten().numpy(), CUDA_SEED_0, atol=1e-6, rtol=0)
    second = generator.randn((3, 4))  # the next draw: the counter's offset moved on by one
    assert torch.equal(second, PhiloxGenerator(0, offset=1).randn((3, 4)))
    assert not torch.allclose(first, second)
    assert not np.allclose(philox_normal(2**32, 0, 12), CUDA_SEED_0)  # the seed's high half is the key's


def test_nv_noise_of_a_latent_is_element_by_element_and_a_gpu_without_cuda_draws_it(monkeypatch):
    """Element i of any shape is counter i: a 4x128x128 latent starts with the 12 numbers above, is
    standard normal, differs from the CPU's and is what GPU draws on a machine without CUDA."""
    shape = (4, 128, 128)
    noise = seed_noise(0, shape, "NV")
    assert noise.shape == shape and noise.dtype == torch.float32
    assert np.allclose(noise.flatten()[:12].numpy(), CUDA_SEED_0, atol=1e-6, rtol=0)
    assert abs(noise.mean().item()) < 0.02 and abs(noise.std().item() - 1) < 0.02
    assert not torch.allclose(noise, seed_noise(0, shape, "CPU"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch.equal(seed_noise(0, shape, "GPU"), noise)
    assert torch.equal(seed_noise(0, shape), torch.randn(shape, generator=torch.Generator().manual_seed(0)))


def test_variation_seeds_and_resize_from_mix_nv_noise_as_a1111():
    """A variation seed's noise is a fresh NV draw of its own, slerped as A1111; "resize seed from" draws
    the small noise fresh and pastes it into the image's own draw."""
    shape = (4, 8, 8)
    seed, sub = seed_noise(5, shape, "NV"), seed_noise(9, shape, "NV")
    mixed = image_noise(5, 9, shape, NoiseOptions(0.3, rng="NV"))
    assert torch.allclose(mixed, slerp(0.3, seed, sub))
    assert torch.equal(image_noise(5, 9, shape, NoiseOptions(1.0, rng="NV")), sub)
    assert not torch.allclose(mixed, image_noise(5, 9, shape, NoiseOptions(0.3)))  # the CPU's mix
    resized = image_noise(3, None, shape, NoiseOptions(resize_from=(6, 4), rng="NV"))
    assert torch.equal(resized[:, 2:6, 1:7], seed_noise(3, (4, 4, 6), "NV"))
    assert torch.equal(resized[:, :2], seed_noise(3, shape, "NV")[:, :2])


def test_per_step_noise_continues_each_images_stream():
    """An ancestral sampler's step noise under NV is each image's next draws (offsets 1, 2, ...), drawn
    through diffusers' own randn_tensor; a torch generator still goes to diffusers unchanged."""
    from diffusers import EulerAncestralDiscreteScheduler
    from diffusers.schedulers import scheduling_euler_ancestral_discrete as module

    shape = (4, 8, 8)
    streams = ImageNoise([7, 8], None, shape, NoiseOptions(rng="NV"))
    first = streams.first()
    assert torch.equal(first[1], seed_noise(8, shape, "NV"))
    scheduler = EulerAncestralDiscreteScheduler()
    generator = streams.step_generator(scheduler)
    for offset in (1, 2):
        step = module.randn_tensor((2, *shape), generator=generator, dtype=torch.float16)
        assert step.dtype == torch.float16
        for image, seed in enumerate((7, 8)):
            expected = PhiloxGenerator(seed, offset).randn(shape).half()
            assert torch.equal(step[image], expected), (offset, image)
    plain = module.randn_tensor((1, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain, torch.randn((1, 4), generator=torch.Generator().manual_seed(3)))
    old = ImageNoise([7], None, shape, NoiseOptions(old_step_noise=True)).step_generator(scheduler)  # seed + 1
    assert isinstance(old, torch.Generator) and old.initial_seed() == 8


def _generate(*args: str) -> dict:
    result = runner.invoke(
        app, ["generate", "--model", "tiny-sd15", "--steps", "3", "--width", "64", "--height", "64", "--json", *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_rng_round_trips_through_infotext_and_recipes(tiny_workspace, monkeypatch):
    """`generate --rng NV` writes `RNG: NV`; its PNG and YAML recipe bring NV back and remake the image;
    GPU (no CUDA here) makes NV's picture; an A1111 image without `RNG` comes back as GPU."""
    from lorastudio.service.recipes import read_recipe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    nv = _generate("--prompt", "red", "--seed", "4", "--rng", "NV", "--sampler", "Euler a")
    assert parse_infotext(read_infotext(nv["images"][0]))["RNG"] == "NV"
    for source in (nv["images"][0], nv["recipes"][0]):
        recipe = read_recipe(source, tiny_workspace)
        assert recipe.config.rng == "NV" and recipe.notes == []
    again = _generate("--recipe", nv["images"][0])
    assert np.array_equal(_pixels(again["images"][0]), _pixels(nv["images"][0]))
    cpu = _generate("--prompt", "red", "--seed", "4", "--sampler", "Euler a")
    assert parse_infotext(read_infotext(cpu["images"][0]))["RNG"] == "CPU"
    assert not np.array_equal(_pixels(cpu["images"][0]), _pixels(nv["images"][0]))
    gpu = _generate("--prompt", "red", "--seed", "4", "--rng", "GPU", "--sampler", "Euler a")
    assert parse_infotext(read_infotext(gpu["images"][0]))["RNG"] == "GPU"  # written: lorastudio's old images lack it
    assert np.array_equal(_pixels(gpu["images"][0]), _pixels(nv["images"][0]))
    a1111 = Image.open(nv["images"][0])
    a1111.save(
        tiny_workspace.root / "a1111.png",
        pnginfo=_pnginfo("red\nSteps: 3, Sampler: Euler a, Seed: 4, Size: 64x64, Model: tiny-sd15, Version: v1.10.1"),
    )
    assert read_recipe(tiny_workspace.root / "a1111.png", tiny_workspace).config.rng == "GPU"


def _pnginfo(text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    return info


def test_the_rng_source_axis_varies_the_noise(tiny_workspace):
    """A1111's "RNG source" axis is a real axis: values in any case, its three choices in the values
    dropdown, a bad value refused in one line, and each cell drawn from its own source."""
    from lorastudio.errors import LorastudioError
    from lorastudio.generate.grid_axes import UNSUPPORTED_AXES, apply_axis_value, find_axis, parse_values
    from lorastudio.service.choices import axis_offers_choices, grid_axis_value_choices

    axis = find_axis("RNG source")
    assert axis.name == "rng" and find_axis("randn_source") is axis and "RNG source" not in UNSUPPORTED_AXES
    assert parse_values("gpu, CPU, nv", axis) == ["GPU", "CPU", "NV"]
    with pytest.raises(LorastudioError, match="'XPU'; use one of CPU, GPU, NV"):
        parse_values("XPU", axis)
    fields: dict = {}
    apply_axis_value(axis, "NV", ["NV"], fields, {})
    assert fields == {"rng": "NV"}
    assert axis_offers_choices("RNG source") and grid_axis_value_choices(tiny_workspace, "rng") == ["GPU", "CPU", "NV"]
    out = runner.invoke(
        app,
        ["grid", "--model", "tiny-sd15", "--steps", "2", "--width", "64", "--height", "64", "--prompt", "red",
         "--seed", "2", "--x", "RNG source=CPU, NV", "--json"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    grid = json.loads(out.stdout.strip().splitlines()[-1])
    assert parse_infotext(read_infotext(grid["grid"]))["X Type"] == "RNG source"
    cells = Image.open(grid["grid"]).convert("RGB")
    left, right = (np.asarray(cells.crop((x, cells.height - 64, x + 64, cells.height))) for x in (0, cells.width - 64))
    assert not np.array_equal(left, right)


def test_the_a1111_api_takes_randn_source(client):
    """`override_settings.randn_source` and /options set the source (any case, checked); /options shows
    lorastudio's default, CPU, and the image's infotext says what drew it."""
    body = {"prompt": "red", "steps": 2, "width": 64, "height": 64, "seed": 3}
    assert client.get("/sdapi/v1/options").json()["randn_source"] == "CPU"
    answer = client.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"randn_source": "nv"}})
    assert answer.status_code == 200, answer.text
    assert "RNG: NV" in json.loads(answer.json()["info"])["infotexts"][0]
    bad = client.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"randn_source": "TPU"}})
    assert bad.status_code == 422 and "override_settings.randn_source: 'TPU'; use one of CPU, GPU, NV" in bad.text
    assert client.post("/sdapi/v1/options", json={"randn_source": "gpu"}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["randn_source"] == "GPU"
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert "RNG: GPU" in json.loads(answer.json()["info"])["infotexts"][0]


def test_every_sampler_runs_on_nv_noise_and_ancestral_ones_take_its_step_noise(sd15, monkeypatch):
    """Each sampler samples from NV noise; an ancestral one's picture follows its step noise's source (the
    same NV starting noise with the CPU's step noise, drawn by hand here, makes another picture)."""
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.pipeline import build_plan, generate_images
    from lorastudio.generate.samplers import SAMPLERS

    def image(sampler: str, rng: str) -> np.ndarray:
        from lorastudio.generate.config import GenerateConfig

        cfg = GenerateConfig(model=sd15.name, prompt="red", steps=3, seed=6, width=64, height=64, sampler=sampler, rng=rng)
        plan = build_plan(cfg, sd15, cfg.prompt, cfg.negative_prompt)
        return np.asarray(generate_images(sd15, cfg, plan, PromptEncoder(sd15, 1))[0].image, dtype=np.float32)

    for sampler in SAMPLERS:
        assert np.isfinite(image(sampler, "NV")).all(), sampler
    nv = image("Euler a", "NV")
    assert np.array_equal(nv, image("Euler a", "NV"))
    # NV's starting noise with the CPU's step noise (seed + 1)
    monkeypatch.setattr(ImageNoise, "step_generator", lambda self, _: torch.Generator().manual_seed(self.seeds[0] + 1))
    assert not np.array_equal(nv, image("Euler a", "NV"))
