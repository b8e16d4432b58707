"""A1111 1.10's hires pass settings and img2img noise knobs on the tiny model: the hires sampler,
schedule type and prompts change the hires pass alone; `initial_noise_multiplier` scales img2img's
starting noise (1.0: the pixels as before); `extra_noise` adds the noise once more in img2img and the
hires pass; each is written into the infotext only where A1111 writes it, and read back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate import pipeline
from lorastudio.generate.a1111_fields import InfotextFacts, config_fields_from_infotext, infotext_params
from lorastudio.generate.conditioning import PromptEncoder
from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.infotext import format_infotext, parse_infotext
from lorastudio.generate.plan import hires_sampler_choice
from lorastudio.generate.samplers import SamplerChoice, make_scheduler
from lorastudio.generate.start_noise import noised_start

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HIRES = {"prompt": "red flower", "negative_prompt": "blue", "seed": 3, "steps": 3, "width": 64, "height": 64,
         "hires_scale": 2.0, "hires_steps": 2}  # fmt: skip


def _pixels(model, **fields) -> np.ndarray:
    cfg = GenerateConfig(**fields)
    plan = pipeline.build_plan(cfg, model, cfg.prompt, cfg.negative_prompt)
    images = pipeline.generate_images(model, cfg, plan, PromptEncoder(model, clip_skip=1))
    return np.asarray(images[0].image, dtype=np.float32)


@pytest.fixture
def picture(tmp_path) -> str:
    path = tmp_path / "in.png"
    gradient = np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint8)
    Image.fromarray(gradient).save(path)
    return str(path)


def test_the_hires_pass_samples_with_its_own_sampler_and_schedule(sd15):
    base = _pixels(sd15, **HIRES)
    # "Use same sampler" / the first pass's own name / nothing: today's pixels exactly
    assert np.array_equal(base, _pixels(sd15, **HIRES, hires_sampler="Use same sampler", hires_schedule="Use same scheduler"))
    assert np.array_equal(base, _pixels(sd15, **HIRES, hires_sampler="Euler a"))
    other = _pixels(sd15, **HIRES, hires_sampler="DPM++ 2M")
    assert np.abs(base - other).max() > 2
    # (diffusers' Euler a has no Karras sigmas: the schedule type is shown on Euler)
    euler = _pixels(sd15, **HIRES, hires_sampler="Euler")
    karras = _pixels(sd15, **HIRES, hires_sampler="Euler", hires_schedule="Karras")
    assert np.abs(euler - karras).max() > 2 and np.abs(euler - base).max() > 2
    # the first pass keeps its sampler: without a hires pass the hires sampler changes nothing
    plain = {**HIRES, "hires_scale": 1.0}
    assert np.array_equal(_pixels(sd15, **plain), _pixels(sd15, **plain, hires_sampler="DPM++ 2M"))


def test_the_hires_sampler_and_schedule_are_picked_as_a1111_picks_them():
    first = SamplerChoice("DPM++ 2M", "Karras")

    def choice(**fields) -> SamplerChoice:
        return hires_sampler_choice(GenerateConfig(hires_scale=2, **fields), first)

    assert choice() is first
    assert choice(hires_sampler="Euler") == SamplerChoice("Euler", "Karras")  # the first pass's schedule
    assert choice(hires_schedule="exponential") == SamplerChoice("DPM++ 2M", "Exponential")
    assert choice(hires_sampler="Euler Karras", hires_schedule="Exponential") == SamplerChoice("Euler", "Karras")
    assert choice(hires_sampler="DDIM") == SamplerChoice("DDIM", "Automatic")  # inherited Karras it cannot take
    with pytest.raises(LorastudioError, match="hires sampler: sampler 'DDIM' has no Karras schedule"):
        choice(hires_sampler="DDIM", hires_schedule="Karras")
    with pytest.raises(LorastudioError, match="hires sampler: unknown sampler 'Wobble'"):
        choice(hires_sampler="Wobble")
    with pytest.raises(ValueError, match="Use same scheduler"):
        GenerateConfig(hires_schedule="Align Your Steps")


def test_the_hires_prompts_condition_the_hires_pass_only(sd15):
    base = _pixels(sd15, **HIRES)
    assert np.array_equal(base, _pixels(sd15, **HIRES, hires_prompt="red flower", hires_negative_prompt="blue"))
    prompt = _pixels(sd15, **HIRES, hires_prompt="green car")
    negative = _pixels(sd15, **HIRES, hires_negative_prompt="green car")
    assert np.abs(base - prompt).max() > 2 and np.abs(base - negative).max() > 2
    plain = {**HIRES, "hires_scale": 1.0}  # no hires pass: the hires prompt is not used
    assert np.array_equal(_pixels(sd15, **plain), _pixels(sd15, **plain, hires_prompt="green car"))


def test_the_noise_multiplier_scales_img2imgs_starting_noise_only(sd15, picture):
    img2img = {**HIRES, "hires_scale": 1.0, "init_image": picture, "strength": 0.6}
    base = _pixels(sd15, **img2img)
    assert np.array_equal(base, _pixels(sd15, **img2img, initial_noise_multiplier=1.0))
    quiet = _pixels(sd15, **img2img, initial_noise_multiplier=0.5)
    assert np.abs(base - quiet).max() > 2
    # A1111 applies it to img2img alone: a txt2img hires pass keeps its noise
    assert np.array_equal(_pixels(sd15, **HIRES), _pixels(sd15, **HIRES, initial_noise_multiplier=0.5))


def test_extra_noise_acts_in_img2img_and_the_hires_pass(sd15, picture):
    img2img = {**HIRES, "hires_scale": 1.0, "init_image": picture, "strength": 0.6}
    assert np.abs(_pixels(sd15, **img2img) - _pixels(sd15, **img2img, extra_noise=0.3)).max() > 2
    assert np.abs(_pixels(sd15, **HIRES) - _pixels(sd15, **HIRES, extra_noise=0.3)).max() > 2
    plain = {**HIRES, "hires_scale": 1.0}  # txt2img without a hires pass starts from pure noise
    assert np.array_equal(_pixels(sd15, **plain), _pixels(sd15, **plain, extra_noise=0.3))


def test_the_start_noise_is_a1111s_in_either_latent_space(sd15):
    """k-diffusion samplers: x + noise * (sigma + extra); DDIM's scaled latents: the extra noise times
    sqrt(alpha_cumprod), as A1111's timestep samplers add it. Multiplier 1: diffusers' add_noise as is."""
    init, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for sampler in ("Euler", "DDIM"):
        scheduler = make_scheduler(SamplerChoice(sampler), sd15.scheduler_config)
        scheduler.set_timesteps(10)
        t = scheduler.timesteps[4:5].repeat(2)
        plain = scheduler.add_noise(init, noise, t)
        assert torch.equal(noised_start(scheduler, init, noise, t), plain)
        assert torch.allclose(noised_start(scheduler, init, noise, t, 0.5), scheduler.add_noise(init, noise * 0.5, t))
        added = noised_start(scheduler, init, noise, t, extra=0.3) - plain
        if sampler == "Euler":
            weight = torch.tensor(1.0)
        else:
            weight = scheduler.alphas_cumprod[int(t[0])].sqrt()
        assert torch.allclose(added, noise * 0.3 * weight, atol=1e-5), sampler


def _facts(cfg: GenerateConfig, hires: SamplerChoice | None = None) -> InfotextFacts:
    first = SamplerChoice(cfg.sampler, cfg.schedule or "Automatic")
    hires = hires or (hires_sampler_choice(cfg, first) if cfg.hires_on else None)
    return InfotextFacts(
        sampler=first.sampler, schedule=first.schedule, width=64, height=64, seed=1,
        hires_sampler=hires.sampler if hires else "", hires_schedule=hires.schedule if hires else "",
    )  # fmt: skip


def _round_trip(cfg: GenerateConfig) -> tuple[dict, dict]:
    params = infotext_params(cfg, _facts(cfg))
    text = format_infotext(cfg.prompt, cfg.negative_prompt, params)
    return parse_infotext(text, fill_defaults=False), config_fields_from_infotext(parse_infotext(text, fill_defaults=False))


def test_the_infotext_writes_each_key_where_a1111_does_and_reads_it_back():
    cfg = GenerateConfig(
        prompt="red", negative_prompt="blue", sampler="Euler a", hires_scale=2, hires_sampler="DPM++ 2M Karras",
        hires_prompt="red, sharp: yes", hires_negative_prompt="blue, dull", extra_noise=0.25,
    )  # fmt: skip
    written, read = _round_trip(cfg)
    assert written["Hires sampler"] == "DPM++ 2M" and written["Hires schedule type"] == "Karras"
    assert written["Hires prompt"] == "red, sharp: yes" and written["Extra noise"] == "0.25"
    assert "Noise multiplier" not in written  # txt2img: A1111's multiplier is img2img's
    again = GenerateConfig(**read)
    for name in ("hires_prompt", "hires_negative_prompt", "extra_noise", "hires_scale"):
        assert getattr(again, name) == getattr(cfg, name), name
    assert hires_sampler_choice(again, SamplerChoice("Euler a")) == SamplerChoice("DPM++ 2M", "Karras")
    # the same as the first pass: not written (A1111's "Use same sampler"), so nothing to read back
    same = GenerateConfig(prompt="red", hires_scale=2, hires_sampler="Euler a", hires_prompt="red", sampler="Euler a")
    written, read = _round_trip(same)
    assert not {"Hires sampler", "Hires schedule type", "Hires prompt", "Extra noise"} & set(written)
    assert read.get("hires_sampler") is None and read.get("hires_prompt") is None
    # only the schedule differs: the hires sampler stays "same", the schedule is written
    written, read = _round_trip(GenerateConfig(prompt="red", hires_scale=2, schedule="Karras", hires_schedule="Automatic"))
    assert "Hires sampler" not in written and written["Hires schedule type"] == "Automatic"
    assert read["hires_schedule"] == "Automatic"
    # img2img: the noise multiplier where it is not 1; no hires pass keys
    written, read = _round_trip(GenerateConfig(init_image="in.png", initial_noise_multiplier=0.5, hires_prompt="x"))
    assert written["Noise multiplier"] == "0.5" and "Hires prompt" not in written and read["initial_noise_multiplier"] == 0.5
    written, _ = _round_trip(GenerateConfig(init_image="in.png"))
    assert "Noise multiplier" not in written and "Extra noise" not in written
    # A1111's own words for "the first pass's" read as nothing set
    read = config_fields_from_infotext({"Hires sampler": "Use same sampler", "Hires schedule type": "Use same scheduler"})
    assert "hires_sampler" not in read and "hires_schedule" not in read
