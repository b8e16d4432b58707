"""A1111's "UniPC": the multistep UniPC solver (Zhao et al. 2023, arXiv 2302.04867) as A1111 runs it.

A1111 samples UniPC on a continuous time t in (0, 1] over the model's discrete schedule, not on
diffusers' integer timesteps: log(alpha_t) is piecewise linear between the training steps n at
t = (n + 1) / N (N = 1000), sigma_t = sqrt(1 - alpha_t^2), lambda_t = log(alpha_t / sigma_t), and the
model sees the fractional time (t - 1/N) * 1000 (999 down to 0). The steps' times come from A1111's
settings (`UniPCSettings`):
- `skip_type`: "time_uniform" (default) spaces t evenly from 1 to 1/N; "time_quadratic" evenly in
  sqrt(t); "logSNR" evenly in lambda_t;
- `order` (1..50, default 3): the solver order; the first steps warm up at orders 1, 2, ...; a pass of
  fewer steps than the order runs at its step count's order (A1111 refuses it);
- `lower_order_final` (default on): the last steps lower the order to the steps left;
- `variant`: "bh1" (default) or "bh2", the B(h) of the unified predictor/corrector (B(h) = h or
  e^h - 1), or "vary_coeff", the paper's varying-coefficient form.
The solver predicts x0 ("data prediction"); after each model call the previous step is corrected
(UniC, no extra call) and the next predicted (UniP); the last step is not corrected, and the last
time (t = 1/N) is never evaluated. A v-prediction model's output becomes noise with the schedule at
the time truncated to a whole step, as A1111's timestep denoiser does.
img2img and the hires fix follow A1111's timestep samplers: the picture is noised at a DDIM timestep
of the pass's schedule and UniPC samples from the step before it (`Img2imgWindow`).

`A1111UniPCScheduler` walks this in the sampling loop like a diffusers scheduler: one model call per
step, `timesteps` the fractional model times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["A1111UniPCScheduler", "ContinuousSchedule", "UniPCSettings", "unipc_settings"]

# as `GenerateConfig` spells them (generate.config, which imports the samplers table, so not imported here)
UNIPC_VARIANTS = ("bh1", "bh2", "vary_coeff")
UNIPC_SKIP_TYPES = ("time_uniform", "time_quadratic", "logSNR")


@dataclass(frozen=True)
class UniPCSettings:
    """A1111's options uni_pc_order, uni_pc_variant, uni_pc_skip_type, uni_pc_lower_order_final (its defaults)."""

    order: int = 3
    variant: str = "bh1"
    skip_type: str = "time_uniform"
    lower_order_final: bool = True


def unipc_settings(cfg: Any = None) -> UniPCSettings:
    """A request's UniPC settings (`GenerateConfig.unipc_*`); A1111's defaults without one."""
    if cfg is None:
        return UniPCSettings()
    return UniPCSettings(cfg.unipc_order, cfg.unipc_variant, cfg.unipc_skip_type, cfg.unipc_lower_order_final)


class ContinuousSchedule:
    """A discrete VP schedule on continuous time: log(alpha) linear between t_n = (n + 1) / N (float64)."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        self.log_alphas = 0.5 * torch.log(alphas_cumprod.to(torch.float64).cpu())
        self.total = len(self.log_alphas)
        self.t_nodes = torch.arange(1, self.total + 1, dtype=torch.float64) / self.total

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return _interp(t, self.t_nodes, self.log_alphas)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lam(self, t: torch.Tensor) -> torch.Tensor:
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))

    def time_of_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)
        return _interp(log_alpha, self.log_alphas.flip(0), self.t_nodes.flip(0))

    def times(self, skip_type: str, t_start: float, steps: int) -> torch.Tensor:
        """`steps + 1` times from `t_start` down to 1/N, spaced as `skip_type` says (in float32, as A1111
        computes them: the model sees these times; returned as float64 for the coefficients)."""
        f32, t_end = torch.float32, 1.0 / self.total
        if skip_type == "time_uniform":
            times = torch.linspace(t_start, t_end, steps + 1, dtype=f32)
        elif skip_type == "time_quadratic":
            times = torch.linspace(t_start**0.5, t_end**0.5, steps + 1, dtype=f32).pow(2)
        elif skip_type == "logSNR":
            ends = self.lam(torch.tensor([t_start, t_end], dtype=f32).double()).float()
            times = self.time_of_lambda(torch.linspace(float(ends[0]), float(ends[1]), steps + 1, dtype=f32).double())
        else:
            raise ValueError(f"UniPC skip type {skip_type!r}: use one of {', '.join(UNIPC_SKIP_TYPES)}.")
        return times.to(f32).double()

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The time the model is called with: (t - 1/N) * 1000, in float32 as A1111."""
        return (t.to(torch.float32) - torch.tensor(1.0 / self.total, dtype=torch.float32)) * 1000.0


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise linear through (xp, fp), xp increasing, extended past both ends by the outer segments."""
    index = torch.clamp(torch.searchsorted(xp, x, right=True) - 1, 0, len(xp) - 2)
    x0, x1, f0, f1 = xp[index], xp[index + 1], fp[index], fp[index + 1]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


@dataclass
class _Output:
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


@dataclass
class _Pending:
    """A predicted step waiting for the model's output at its target time to be corrected."""

    sample: torch.Tensor  # x at the step's start
    history: list[tuple[int, torch.Tensor]]  # (grid index, x0) the step was predicted from, newest last
    target: int
    order: int


class A1111UniPCScheduler:
    """A1111's UniPC as a scheduler of the sampling loop (`generate.pipeline`)."""

    order = 1
    init_noise_sigma = 1.0

    def __init__(self, config: dict[str, Any], settings: UniPCSettings | None = None) -> None:
        from diffusers import DDIMScheduler

        ddim = DDIMScheduler.from_config(config)  # the model's training schedule (betas, zero-SNR rescale)
        self.config = ddim.config
        self.alphas_cumprod = ddim.alphas_cumprod.to(torch.float32)
        self.prediction_type = self.config.prediction_type
        self.settings = settings or UniPCSettings()
        self.schedule = ContinuousSchedule(self.alphas_cumprod)
        self.timesteps = torch.zeros(0)
        self._reset(torch.tensor([1.0, 1.0 / self.schedule.total], dtype=torch.float64))

    @classmethod
    def from_config(cls, config: dict[str, Any], settings: UniPCSettings | None = None) -> A1111UniPCScheduler:
        return cls(dict(config), settings)

    # -- the grid -------------------------------------------------------------------------
    def _reset(self, times: torch.Tensor, device: Any = None) -> None:
        self._times = times
        self._lambdas = self.schedule.lam(times)
        self._log_alphas = self.schedule.log_alpha(times)
        self._sigmas = self.schedule.sigma(times)
        steps = len(times) - 1
        self.timesteps = self.schedule.model_time(times[:steps])
        if device is not None:
            self.timesteps = self.timesteps.to(device)
        self._order = max(1, min(int(self.settings.order), steps))  # A1111 asserts order <= steps
        self._step_index = 0
        self._history: list[tuple[int, torch.Tensor]] = []
        self._pending: _Pending | None = None

    def set_timesteps(self, num_inference_steps: int, device: Any = None) -> None:
        """txt2img: `num_inference_steps` steps from t = 1."""
        self._steps = int(num_inference_steps)
        self._reset(self.schedule.times(self.settings.skip_type, 1.0, self._steps), device)

    def img2img_window(self, sampled: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A pass from a picture sampling the last `sampled` steps of the `set_timesteps` schedule, as A1111's
        timestep samplers: the picture noised at DDIM timestep `1 + k * (1000 // steps)` of step k = sampled - 1,
        UniPC over k steps from the DDIM timestep before it. Returns (the timesteps to call the model at, the
        timestep to noise the picture at)."""
        device = self.timesteps.device
        ddim = torch.clamp(torch.arange(0, 1000, 1000 // self._steps) + 1, 0, 999)
        k = max(0, min(int(sampled), len(ddim)) - 1)
        if k == 0:
            self.timesteps = torch.zeros(0, device=device)
            return self.timesteps, ddim[:1].to(device)
        t_start = float(ddim[k - 1].to(torch.float32) / 1000 + 1 / 1000)  # float32, as A1111
        self._reset(self.schedule.times(self.settings.skip_type, t_start, k), device)
        return self.timesteps, ddim[k : k + 1].to(device)

    def scale_model_input(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return sample

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """alpha_t x + sigma_t noise at the model times `timesteps` (one per image)."""
        t = timesteps.detach().to("cpu", torch.float64) / 1000.0 + 1.0 / self.schedule.total
        alpha = torch.exp(self.schedule.log_alpha(t)).to(original.device, torch.float32).view(-1, 1, 1, 1)
        sigma = self.schedule.sigma(t).to(original.device, torch.float32).view(-1, 1, 1, 1)
        return (alpha * original.float() + sigma * noise.float()).to(original.dtype)

    # -- one step -------------------------------------------------------------------------
    def _x0(self, model_output: torch.Tensor, sample: torch.Tensor, index: int) -> torch.Tensor:
        """The data prediction at grid time `index` from the model's noise (or v) prediction."""
        out, x = model_output.float(), sample.float()
        if self.prediction_type == "v_prediction":  # A1111: the schedule at the whole step below the time
            n = int(float(self.timesteps[index]))
            a = float(self.alphas_cumprod[n])
            out = math.sqrt(a) * out + math.sqrt(1.0 - a) * x
        elif self.prediction_type != "epsilon":
            raise ValueError(f"UniPC: prediction_type {self.prediction_type!r}; use epsilon or v_prediction.")
        alpha, sigma = math.exp(float(self._log_alphas[index])), float(self._sigmas[index])
        return (x - sigma * out) / alpha

    def _step_order(self, target: int) -> int:
        order, steps = self._order, len(self._times) - 1
        if target < order:  # warm-up
            return target
        return min(order, steps + 1 - target) if self.settings.lower_order_final else order

    def step(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True
    ) -> _Output | tuple[torch.Tensor]:
        index = self._step_index
        x0 = self._x0(model_output, sample, index)
        x = sample.float()
        if self._pending is not None:  # UniC: the step into this time, corrected with the model's output here
            x = self._update(self._pending, x0)
            self._pending = None
        self._history = (self._history + [(index, x0)])[-self._order :]
        target = index + 1
        pending = _Pending(x, list(self._history), target, self._step_order(target))
        prev = self._update(pending, None)  # UniP
        if target < len(self._times) - 1:
            self._pending = pending
        self._step_index += 1
        out = _Output(prev.to(sample.dtype), x0.to(sample.dtype))
        return out if return_dict else (out.prev_sample,)

    def _update(self, step: _Pending, x0_target: torch.Tensor | None) -> torch.Tensor:
        """The predictor (`x0_target` None) or the corrector of `step`."""
        (i, m0), s, order = step.history[-1], step.target, step.order
        lam_i, lam_s = float(self._lambdas[i]), float(self._lambdas[s])
        h = lam_s - lam_i
        rks, d1s = [], []
        for j in range(1, order):
            k, m = step.history[-(j + 1)]
            rk = (float(self._lambdas[k]) - lam_i) / h
            rks.append(rk)
            d1s.append((m - m0) / rk)
        rks.append(1.0)
        alpha_s = math.exp(float(self._log_alphas[s]))
        hh = -h
        base = (float(self._sigmas[s]) / float(self._sigmas[i])) * step.sample - alpha_s * math.expm1(hh) * m0
        d1_t = None if x0_target is None else x0_target - m0
        if self.settings.variant == "vary_coeff":
            return _vary_coeff(base, d1s, d1_t, rks, hh, alpha_s)
        return _bh(base, d1s, d1_t, rks, hh, alpha_s, self.settings.variant)


def _phis(hh: float, count: int) -> list[float]:
    """h*phi_1(h), then each next as the last / h - 1/k! (the series' remainders)."""
    out, value, factorial = [], math.expm1(hh), 1
    for k in range(1, count + 1):
        out.append(value)
        value = value / hh - 1.0 / factorial
        factorial *= k + 1
    return out


def _bh(base, d1s, d1_t, rks, hh: float, alpha_s: float, variant: str) -> torch.Tensor:
    """UniPC with B(h): the coefficients solve R rho = b, R the powers of the r_k, b from the phi functions."""
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"UniPC variant {variant!r}: use one of {', '.join(UNIPC_VARIANTS)}.")
    order = len(rks)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    phis = _phis(hh, order + 1)[1:]
    b = torch.tensor([phis[j] * math.factorial(j + 1) / b_h for j in range(order)], dtype=torch.float64)
    r = torch.stack([torch.tensor(rks, dtype=torch.float64) ** j for j in range(order)])
    if d1_t is None:  # predictor: the older outputs' differences only
        if not d1s:
            return base
        rhos = [0.5] if order == 2 else torch.linalg.solve(r[:-1, :-1], b[:-1]).tolist()
        return base - alpha_s * b_h * sum(rho * d for rho, d in zip(rhos, d1s, strict=True))
    rhos = [0.5] if order == 1 else torch.linalg.solve(r, b).tolist()
    residual = sum((rho * d for rho, d in zip(rhos[:-1], d1s, strict=True)), rhos[-1] * d1_t)
    return base - alpha_s * b_h * residual


def _vary_coeff(base, d1s, d1_t, rks, hh: float, alpha_s: float) -> torch.Tensor:
    """UniPC's varying-coefficient form: the inverse of C (C[r][k] = r_r^k / (k+1)!) weighs the differences,
    the last inverse row's last entry the corrector's new difference, as A1111 runs it."""
    order = len(rks)
    c = torch.tensor([[rk**k / math.factorial(k + 1) for k in range(order)] for rk in rks], dtype=torch.float64)
    phis = _phis(hh, order + 1)
    if d1_t is None:
        if not d1s:
            return base
        a_p = torch.linalg.inv(c[:-1, :-1]).tolist()
        for k in range(order - 1):
            base = base - alpha_s * phis[k + 1] * sum(w * d for w, d in zip(a_p[k], d1s, strict=True))
        return base
    a_c = torch.linalg.inv(c).tolist()
    for k in range(order - 1):
        base = base - alpha_s * phis[k + 1] * sum(w * d for w, d in zip(a_c[k][:-1], d1s, strict=True))
    last = max(order - 2, 0)
    return base - alpha_s * phis[order] * a_c[last][-1] * d1_t
