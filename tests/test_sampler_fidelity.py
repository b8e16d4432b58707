"""Samplers as A1111 runs them: every sampler a pure function of its request, DPM++ 2S a's ancestral steps,
Euler a on a Karras schedule, the SDE samplers' seeded Brownian trees, ENSD, and the per-step noise of the
CPU source (continuing each seed's generator; lorastudio's older seed + 1 with `old_step_noise`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.noise import ImageNoise, NoiseOptions, StepNoise
from lorastudio.generate.samplers import SAMPLERS, SamplerChoice, make_scheduler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = {  # SD 1.5's training schedule, epsilon prediction
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False, "timestep_spacing": "leading",
}  # fmt: skip


def _images(model, **fields) -> np.ndarray:
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.pipeline import build_plan, generate_images

    cfg = GenerateConfig(**{"model": model.name, "prompt": "red", "steps": 2, "seed": 6, "width": 64, "height": 64,
                            "eta": 0.5, **fields})  # fmt: skip
    plan = build_plan(cfg, model, cfg.prompt, cfg.negative_prompt)
    images = generate_images(model, cfg, plan, PromptEncoder(model, 1))
    return np.stack([np.asarray(item.image, dtype=np.float32) for item in images])


# the samplers that draw noise after the start (ancestral, SDE, LCM, DDIM with eta): where a source's
# numbers could be replaced by the global generator's; the deterministic ones are checked on CPU
DRAWING_SAMPLERS = [name for name in SAMPLERS if name.endswith(" a") or "SDE" in name or name in ("LCM", "DDIM")]


@pytest.mark.parametrize("rng", ["CPU", "GPU", "NV"])
def test_every_sampler_gives_the_same_pixels_whatever_ran_before(sd15, rng):
    """A server runs requests one after another: torch's global generator, moved by anything, must not
    reach a sampler (diffusers' DPM++ SDE seeded its Brownian tree from it)."""
    assert len(DRAWING_SAMPLERS) == 8
    for sampler in SAMPLERS if rng == "CPU" else DRAWING_SAMPLERS:
        for batch in (1, 2):
            torch.manual_seed(1)
            first = _images(sd15, sampler=sampler, rng=rng, batch_size=batch)
            torch.manual_seed(2)
            torch.randn(7)
            again = _images(sd15, sampler=sampler, rng=rng, batch_size=batch)
            assert first.std() > 1 and np.array_equal(first, again), (sampler, batch)


def _k_dpmpp_2s_ancestral(denoise, x, sigmas, noises):
    """k-diffusion's `sample_dpmpp_2s_ancestral` (eta 1, s_noise 1) from its equations, in float64."""
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        denoised = denoise(x, sigma)
        sigma_up = min(sigma_next, math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
        sigma_down = math.sqrt(sigma_next**2 - sigma_up**2)
        if sigma_down == 0:
            x = x + (x - denoised) / sigma * (sigma_down - sigma)  # an Euler step
        else:
            t, t_next = -math.log(sigma), -math.log(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = math.exp(-s) / math.exp(-t) * x - math.expm1(-h / 2) * denoised
            denoised_2 = denoise(x_2, math.exp(-s))
            x = math.exp(-t_next) / math.exp(-t) * x - math.expm1(-h) * denoised_2
        if sigma_next > 0:
            x = x + noises.pop(0) * sigma_up
    return x


@pytest.mark.parametrize("schedule", ["Automatic", "Karras"])
def test_dpmpp_2s_a_steps_as_k_diffusion(schedule):
    """The scheduler, driven as the sampling loop drives it by a toy model, lands where k-diffusion's
    equations land with the same sigmas and the same per-step noise."""
    from diffusers import EulerDiscreteScheduler

    steps, shape = 5, (1, 4, 3, 3)

    def epsilon(scaled):  # the toy model: a function of its scaled input
        return torch.tanh(scaled) * 0.8 + 0.1 * scaled

    def denoise(x, sigma):
        return x - sigma * epsilon(x / math.sqrt(sigma**2 + 1))

    scheduler = make_scheduler(SamplerChoice("DPM++ 2S a", schedule), CONFIG)
    scheduler.set_timesteps(steps)
    reference = EulerDiscreteScheduler.from_config({**CONFIG, "use_karras_sigmas": schedule == "Karras"})
    reference.set_timesteps(steps)
    sigmas = [float(s) for s in reference.sigmas]
    start = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * sigmas[0]
    draws = torch.Generator().manual_seed(9)
    noises = [torch.randn(shape, generator=draws).double() for _ in range(steps - 1)]
    expected = _k_dpmpp_2s_ancestral(denoise, start.clone(), sigmas, list(noises))

    x, generator = start.float(), torch.Generator().manual_seed(9)
    for t in scheduler.timesteps:
        output = epsilon(scheduler.scale_model_input(x, t))
        x = scheduler.step(output, t, x, generator=generator).prev_sample
    assert len(scheduler.timesteps) == 2 * steps - 1  # two model calls a step, one for the last
    assert torch.allclose(x.double(), expected, atol=2e-4), (x.double() - expected).abs().max()
    assert not torch.allclose(expected, _k_dpmpp_2s_ancestral(denoise, start.clone(), sigmas, [n * 0 for n in noises]))


def test_dpmpp_2s_a_takes_the_images_step_noise(sd15, monkeypatch):
    """The picture depends on its per-step noise (the old mapping, a deterministic solver, drew none)."""
    made = _images(sd15, sampler="DPM++ 2S a", rng="NV")
    monkeypatch.setattr(ImageNoise, "step_generator", lambda self, _: torch.Generator().manual_seed(self.seeds[0] + 5))
    assert not np.array_equal(made, _images(sd15, sampler="DPM++ 2S a", rng="NV"))


@pytest.mark.parametrize("schedule,flag", [("Karras", "use_karras_sigmas"), ("Exponential", "use_exponential_sigmas")])
def test_euler_a_samples_the_schedule_type(sd15, schedule, flag):
    """Euler a Karras steps through Euler Karras's sigmas (A1111 1.9+ gives Euler a any schedule), not
    plain Euler a's."""
    from diffusers import EulerDiscreteScheduler

    euler_a = make_scheduler(SamplerChoice("Euler a", schedule), CONFIG)
    euler_a.set_timesteps(8)
    euler = EulerDiscreteScheduler.from_config({**CONFIG, flag: True})
    euler.set_timesteps(8)
    plain = make_scheduler(SamplerChoice("Euler a"), CONFIG)
    plain.set_timesteps(8)
    assert torch.equal(euler_a.sigmas, euler.sigmas) and not torch.equal(euler_a.sigmas, plain.sigmas)
    assert torch.equal(euler_a.timesteps, euler.timesteps)
    four = {"sampler": "Euler a", "steps": 4}  # two steps run from the same first to the same last sigma
    assert not np.array_equal(_images(sd15, **four), _images(sd15, **four, schedule=schedule))


def test_step_noise_continues_the_seeds_generator_and_ensd_seeds_it_anew():
    """CPU, as A1111: the step noise is the seed generator's next draws; with an ENSD a fresh generator of
    seed + ENSD; `old_step_noise` hands diffusers lorastudio's older seed + 1 generator."""
    shape = (4, 8, 8)
    streams = ImageNoise([7, 8], None, shape, NoiseOptions())
    streams.first()
    step = streams.step_generator(object())
    assert isinstance(step, StepNoise) and step.seeds == [7, 8]
    for seed, generator in zip((7, 8), step.generators, strict=True):
        own = torch.Generator().manual_seed(seed)
        torch.randn(shape, generator=own)  # the starting noise
        assert torch.equal(torch.randn(shape, generator=generator), torch.randn(shape, generator=own))
    delta = ImageNoise([7], None, shape, NoiseOptions(ensd=31337))
    assert torch.equal(delta.first()[0], torch.randn(shape, generator=torch.Generator().manual_seed(7)))
    drawn = delta.step_generator(object()).randn((1, *shape))
    assert torch.equal(drawn[0], torch.randn(shape, generator=torch.Generator().manual_seed(7 + 31337)))
    nv = ImageNoise([7], None, shape, NoiseOptions(rng="NV", ensd=5))
    nv.first()
    from lorastudio.generate.philox import PhiloxGenerator

    assert torch.equal(nv.step_generator(object()).randn((1, *shape))[0], PhiloxGenerator(12).randn(shape))
    old = ImageNoise([7], None, shape, NoiseOptions(old_step_noise=True)).step_generator(object())
    assert isinstance(old, torch.Generator) and old.initial_seed() == 8


def test_ensd_and_old_step_noise_change_only_samplers_that_draw_step_noise(sd15):
    for sampler in ("Euler a", "DPM2 a", "DPM++ 2S a", "LCM", "DDIM"):
        plain = _images(sd15, sampler=sampler)
        assert not np.array_equal(plain, _images(sd15, sampler=sampler, ensd=31337)), sampler
        assert not np.array_equal(plain, _images(sd15, sampler=sampler, old_step_noise=True)), sampler
    for sampler in ("Euler", "DPM++ SDE", "DPM++ 2M SDE"):  # no step noise; a tree seeded by the seeds alone
        assert np.array_equal(_images(sd15, sampler=sampler), _images(sd15, sampler=sampler, ensd=31337)), sampler
    assert np.array_equal(_images(sd15, sampler="DDIM", eta=0), _images(sd15, sampler="DDIM", eta=0, ensd=3))


def test_the_brownian_tree_is_seeded_by_the_image_seeds_and_draws_from_the_source():
    """One tree per image seed, as A1111; on the CPU source its numbers are torchsde's own CPU draws, NV
    draws others; outside a tree of ours torchsde draws as ever."""
    import torchsde._brownian.brownian_interval as interval
    from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

    from lorastudio.generate.brownian import BrownianNoise

    sample, sigmas = torch.zeros(2, 4, 8, 8), torch.tensor([14.6, 3.0, 0.5, 0.0])
    ours = BrownianNoise(sample, sigmas, [5, 6], "CPU")(3.0, 0.5)
    diffusers_own = BrownianTreeNoiseSampler(torch.zeros(2, 4, 8, 8), 0.5, 14.6, [5, 6])(3.0, 0.5)
    assert torch.equal(ours, diffusers_own)
    alone = BrownianNoise(sample[:1], sigmas, [6], "CPU")(3.0, 0.5)
    assert torch.equal(ours[1:], alone)  # image 2 of a batch draws what seed 6 draws alone
    nv = BrownianNoise(sample, sigmas, [5, 6], "NV")(3.0, 0.5)
    assert not torch.allclose(nv, ours) and abs(float(nv.std()) - 1) < 0.3
    plain = interval._randn((3,), torch.float32, torch.device("cpu"), 11)  # routed, but outside a tree of ours
    assert torch.equal(plain, torch.randn(3, generator=torch.Generator().manual_seed(11)))
