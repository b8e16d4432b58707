"""Schedulers of our own where diffusers' do not sample what A1111's k-diffusion samplers sample.

Each is a small subclass of the diffusers scheduler that already walks the right timesteps, so the
sampling loop (`generate.pipeline`) runs it like any other:
- `DPMPlusPlus2SAncestralScheduler`: A1111's "DPM++ 2S a" (k-diffusion's `sample_dpmpp_2s_ancestral`,
  MIT): DPM-Solver++(2S) steps towards the ancestral sigma_down, then fresh noise times sigma_up.
- `ScheduledEulerAncestralScheduler`: "Euler a" on a Karras or Exponential schedule, which diffusers'
  EulerAncestralDiscreteScheduler ignores; the sigmas are EulerDiscreteScheduler's for the same config.
- `SeededDPMSolverSDEScheduler`, `BrownianDPMSolverMultistepScheduler`: DPM++ SDE, 2M SDE and 3M SDE
  with A1111's Brownian-tree noise (`generate.brownian`), seeded by the image seeds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
)
from diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete import KDPM2AncestralDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from lorastudio.generate.brownian import BrownianNoise, step_noise_seeds

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerOutput

__all__ = [
    "BrownianDPMSolverMultistepScheduler",
    "DPMPlusPlus2SAncestralScheduler",
    "ScheduledEulerAncestralScheduler",
    "SeededDPMSolverSDEScheduler",
]


class DPMPlusPlus2SAncestralScheduler(KDPM2AncestralDiscreteScheduler):
    """DPM-Solver++(2S) ancestral: two model calls a step, the second at the midpoint sqrt(sigma * sigma_down).

    KDPM2AncestralDiscreteScheduler (DPM2 a) already calls the model at those sigmas (its `sigmas_interpol`
    is that midpoint) and keeps sigma_up / sigma_down per step; only the update differs: DPM2 a follows
    the noise derivative, DPM++(2S) moves in data-prediction form, x' = (s_to / s) x + (1 - s_to / s) x0.
    The last step (sigma_down 0) is one Euler step to the denoised image, with no noise, as k-diffusion.
    """

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
    ) -> KDPM2AncestralDiscreteSchedulerOutput | tuple:
        if self.step_index is None:
            self._init_step_index(timestep)
        first = self.state_in_first_order
        index = self.step_index if first else self.step_index - 1
        sigma, sigma_down, sigma_up = self.sigmas[index], self.sigmas_down[index], self.sigmas_up[index]
        sigma_mid = self.sigmas_interpol[index]
        denoised = self._denoised(model_output, sample, sigma if first else sigma_mid)
        if first and sigma_down == 0:
            prev_sample = denoised  # Euler to sigma 0: the denoised image
        elif first:
            self.sample = sample  # x, for the second half of the step
            prev_sample = _towards(sample, denoised, sigma, sigma_mid)
        else:
            sample, self.sample = self.sample, None
            prev_sample = _towards(sample, denoised, sigma, sigma_down)
            noise = randn_tensor(model_output.shape, dtype=model_output.dtype, device=model_output.device, generator=generator)
            prev_sample = prev_sample + noise * sigma_up
        self._step_index += 1
        if not return_dict:
            return (prev_sample, denoised)
        return KDPM2AncestralDiscreteSchedulerOutput(prev_sample=prev_sample, pred_original_sample=denoised)

    def _denoised(self, model_output: torch.Tensor, sample: torch.Tensor, sigma) -> torch.Tensor:
        """The model's data prediction x0 at `sigma` (epsilon or v prediction)."""
        if self.config.prediction_type == "epsilon":
            return sample - sigma * model_output
        if self.config.prediction_type == "v_prediction":
            return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        raise ValueError(f"prediction_type {self.config.prediction_type!r}: use epsilon or v_prediction.")


def _towards(sample, denoised, sigma, sigma_to):
    """One DPM-Solver++ first-order step from `sigma` to `sigma_to` with the data prediction `denoised`."""
    h = torch.log(sigma) - torch.log(sigma_to)  # t_to - t with t = -log(sigma)
    return (sigma_to / sigma) * sample - torch.expm1(-h) * denoised


class ScheduledEulerAncestralScheduler(EulerAncestralDiscreteScheduler):
    """Euler a whose sigmas follow the request's schedule type (Karras, Exponential), as A1111 1.9+ samples
    it with any schedule; `sigma_schedule` holds the schedule's config (`samplers.SCHEDULE_TYPES`)."""

    sigma_schedule: dict | None = None

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        super().set_timesteps(num_inference_steps, device)
        if not self.sigma_schedule:
            return
        euler = EulerDiscreteScheduler.from_config({**dict(self.config), **self.sigma_schedule})
        euler.set_timesteps(num_inference_steps, device=device)
        self.sigmas, self.timesteps = euler.sigmas.to("cpu"), euler.timesteps


class SeededDPMSolverSDEScheduler(DPMSolverSDEScheduler):
    """DPM++ SDE with its Brownian tree seeded by the image seeds (diffusers seeds it from torch's global
    generator when no seed is configured) and drawn from the request's source."""

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
        s_noise: float = 1.0,
    ) -> SchedulerOutput | tuple:
        seeded = step_noise_seeds(generator, sample.shape[0])
        if self.noise_sampler is None and seeded is not None:
            self.noise_sampler = BrownianNoise(sample, self.sigmas, *seeded)
        return super().step(model_output, timestep, sample, return_dict=return_dict, s_noise=s_noise)


class BrownianDPMSolverMultistepScheduler(DPMSolverMultistepScheduler):
    """DPM++ 2M SDE / 3M SDE with A1111's noise: each step's increment of the images' Brownian trees between
    its two sigmas (k-diffusion's `noise_sampler(sigma, sigma_next)`), given to diffusers as `variance_noise`.
    Torch generators (`old_step_noise`, lorastudio's noise before images wrote `RNG`) keep diffusers' own draws."""

    brownian: BrownianNoise | None = None

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: Any = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        sde = self.config.algorithm_type in ("sde-dpmsolver", "sde-dpmsolver++")
        if sde and variance_noise is None and hasattr(generator, "seeds"):
            if self.step_index is None:
                self._init_step_index(timestep)
            if self.brownian is None:
                self.brownian = BrownianNoise(sample, self.sigmas, *step_noise_seeds(generator, sample.shape[0]))
            sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
            # the last step lands on sigma 0, where the noise term is 0 (k-diffusion draws none there)
            variance_noise = self.brownian(sigma, sigma_next) if sigma_next > 0 else torch.zeros_like(model_output)
        return super().step(model_output, timestep, sample, generator, variance_noise, return_dict)
