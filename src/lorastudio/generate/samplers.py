"""A1111 sampler names -> diffusers schedulers (or ours, `generate.k_samplers`, where diffusers lacks one;
A1111's UniPC, `generate.unipc`).

Users type what A1111 shows ("DPM++ 2M Karras", "Euler a"); a name may carry a schedule
type suffix. Unknown names fail with the list of valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

__all__ = [
    "SAMPLERS",
    "SCHEDULE_TYPES",
    "SamplerChoice",
    "a1111_unipc",
    "img2img_steps",
    "make_scheduler",
    "prompt_calls",
    "parse_sampler",
    "sampler_names",
    "schedule_label",
    "takes_eta",
    "a1111_step_noise",
    "draws_step_noise",
]


@dataclass(frozen=True)
class SamplerSpec:
    scheduler: str  # diffusers class name, or one of ours in generate/k_samplers.py
    options: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    takes_eta: bool = False  # the scheduler's step mixes in `eta` fresh noise (A1111's "Eta DDIM")
    second_order: bool = False  # A1111 calls the model twice a step and times prompts over 2 x steps
    # The fresh noise A1111 adds at each step: "stream", the next draws of each image's random source
    # (its ImageRNG, seeded anew with seed + ENSD where one is set); "brownian", a Brownian tree per image
    # seeded with its seed, its numbers from the source (`generate.brownian`). DDIM draws only at an eta above 0.
    a1111_step_noise: str = ""


SAMPLERS: dict[str, SamplerSpec] = {
    "Euler a": SamplerSpec(
        "ScheduledEulerAncestralScheduler", aliases=("k_euler_a", "euler_ancestral"), a1111_step_noise="stream"
    ),
    "Euler": SamplerSpec("EulerDiscreteScheduler", aliases=("k_euler", "euler")),
    "LMS": SamplerSpec("LMSDiscreteScheduler", aliases=("k_lms", "lms")),
    "Heun": SamplerSpec("HeunDiscreteScheduler", aliases=("k_heun", "heun"), second_order=True),
    "DPM2": SamplerSpec("KDPM2DiscreteScheduler", aliases=("k_dpm_2", "dpm_2"), second_order=True),
    "DPM2 a": SamplerSpec(
        "KDPM2AncestralDiscreteScheduler",
        aliases=("k_dpm_2_a", "dpm_2_ancestral"),
        second_order=True,
        a1111_step_noise="stream",
    ),
    "DPM++ 2S a": SamplerSpec(
        "DPMPlusPlus2SAncestralScheduler", aliases=("k_dpmpp_2s_a",), second_order=True, a1111_step_noise="stream"
    ),
    "DPM++ 2M": SamplerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        ("k_dpmpp_2m", "dpmpp_2m"),
    ),
    "DPM++ SDE": SamplerSpec(
        "SeededDPMSolverSDEScheduler", aliases=("k_dpmpp_sde", "dpmpp_sde"), second_order=True, a1111_step_noise="brownian"
    ),
    "DPM++ 2M SDE": SamplerSpec(
        "BrownianDPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
        ("k_dpmpp_2m_sde", "dpmpp_2m_sde"),
        a1111_step_noise="brownian",
    ),
    "DPM++ 3M SDE": SamplerSpec(
        "BrownianDPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        ("k_dpmpp_3m_sde", "dpmpp_3m_sde"),
        a1111_step_noise="brownian",
    ),
    "DDIM": SamplerSpec("DDIMScheduler", aliases=("ddim",), takes_eta=True, a1111_step_noise="stream"),
    "PLMS": SamplerSpec("PNDMScheduler", {"skip_prk_steps": True}, ("plms",)),
    # A1111's own UniPC (`generate.unipc`) on Automatic/Uniform; diffusers' on another schedule type (A1111 has
    # none) and for lorastudio's images made before (`old_unipc`)
    "UniPC": SamplerSpec("UniPCMultistepScheduler", aliases=("unipc",)),
    "LCM": SamplerSpec("LCMScheduler", aliases=("lcm",), a1111_step_noise="stream"),
}

# Schedule type -> scheduler config changes. "Automatic" keeps the sampler's default.
SCHEDULE_TYPES: dict[str, dict] = {
    "Automatic": {},
    "Uniform": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}
_KARRAS_SAMPLERS = {
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM++ 2S a",
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 3M SDE",
    "UniPC",
    "Euler a",
}


@dataclass(frozen=True)
class SamplerChoice:
    sampler: str
    schedule: str = "Automatic"

    @property
    def label(self) -> str:
        """The name A1111 shows in infotext `Sampler:` (schedule goes in `Schedule type:`)."""
        return self.sampler


def sampler_names() -> list[str]:
    return list(SAMPLERS)


def takes_eta(name: str) -> bool:
    """Whether the sampler `name` (any spelling, schedule suffix allowed) uses DDIM's eta; the
    others ignore it, so an infotext must not claim it."""
    try:
        return SAMPLERS[parse_sampler(name).sampler].takes_eta
    except LorastudioError:
        return False


def a1111_step_noise(name: str) -> str:
    """How A1111 draws the sampler `name`'s per-step noise (`SamplerSpec.a1111_step_noise`); "" when it
    draws none or the name is unknown."""
    try:
        return SAMPLERS[parse_sampler(name).sampler].a1111_step_noise
    except LorastudioError:
        return ""


def draws_step_noise(name: str, eta: float = 0.0) -> bool:
    """Whether the sampler `name` draws its per-step noise from the images' streams (where an ENSD and
    `old_step_noise` act): the ancestral samplers and LCM, DDIM at an eta above 0."""
    return a1111_step_noise(name) == "stream" and (eta > 0 or not takes_eta(name))


def _lookup(name: str) -> str | None:
    lowered = name.strip().lower()
    for canonical, spec in SAMPLERS.items():
        if lowered == canonical.lower() or lowered in spec.aliases:
            return canonical
    return None


def parse_sampler(name: str, schedule: str | None = None) -> SamplerChoice:
    """ "DPM++ 2M Karras" -> (DPM++ 2M, Karras). The name's suffix wins over `schedule`, as in A1111's
    `get_sampler_and_scheduler` (a client sending "DPM++ 2M Karras" with scheduler "exponential" gets Karras)."""
    sampler = _lookup(name)
    suffix = "Automatic"
    if sampler is None:
        for sched in sorted(SCHEDULE_TYPES, key=len, reverse=True):
            if name.strip().lower().endswith(" " + sched.lower()):
                sampler = _lookup(name.strip()[: -len(sched) - 1])
                suffix = sched
                break
    if sampler is None:
        raise LorastudioError(
            f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)} (optionally + ' Karras').",
            key="sampler_unknown",
            params={"name": name},
        )
    chosen = suffix if suffix != "Automatic" else (schedule or suffix)
    match = find_schedule(chosen)
    if match is None:
        raise LorastudioError(
            f"unknown schedule type {chosen!r}; choose one of: {', '.join(SCHEDULE_TYPES)}.",
            key="schedule_unknown",
            params={"name": chosen},
        )
    if match == "Karras" and sampler not in _KARRAS_SAMPLERS:
        raise LorastudioError(
            f"sampler {sampler!r} has no Karras schedule; use it without 'Karras'.",
            key="sampler_no_karras",
            params={"name": sampler},
        )
    return SamplerChoice(sampler, match)


def _spelling(schedule: str) -> str:
    """"SGM Uniform", "sgm_uniform" and "sgm-uniform" name one schedule type (A1111's UI and API)."""
    return schedule.strip().lower().replace("_", " ").replace("-", " ")


def find_schedule(name: str) -> str | None:
    """The schedule type's label for any of its spellings, or None when there is no such type."""
    return next((s for s in SCHEDULE_TYPES if s.lower() == _spelling(str(name))), None)


def schedule_label(name: str | None) -> str | None:
    """"karras", "sgm_uniform", "SGM Uniform" -> the schedule type's label; None stays None."""
    if name is None:
        return None
    match = find_schedule(name)
    if match is None:
        raise LorastudioError(f"schedule type {name!r}: not supported; use one of: {', '.join(SCHEDULE_TYPES)}.")
    return match


def a1111_unipc(choice: SamplerChoice, old_unipc: bool = False) -> bool:
    """Whether `choice` samples A1111's UniPC (`generate.unipc`): UniPC on its own schedule, unless the request
    asks for lorastudio's UniPC from before (`old_unipc`)."""
    return choice.sampler == "UniPC" and choice.schedule in ("Automatic", "Uniform") and not old_unipc


def make_scheduler(choice: SamplerChoice, base_config: dict, request: Any = None) -> SchedulerMixin:
    """A fresh scheduler (they are stateful) from the model's own training schedule; `request` (a
    GenerateConfig) gives A1111's UniPC its settings (A1111's defaults without one)."""
    import diffusers

    from lorastudio.generate import k_samplers

    spec = SAMPLERS[choice.sampler]
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    if a1111_unipc(choice, bool(getattr(request, "old_unipc", False))):
        from lorastudio.generate.unipc import A1111UniPCScheduler, unipc_settings

        return A1111UniPCScheduler.from_config(config, unipc_settings(request))
    cls = getattr(k_samplers, spec.scheduler, None) or getattr(diffusers, spec.scheduler)
    config.update(spec.options)
    config.update(SCHEDULE_TYPES[choice.schedule])
    if spec.scheduler in {"DDIMScheduler", "PNDMScheduler"}:
        config.setdefault("set_alpha_to_one", False)
    try:
        scheduler = cls.from_config(config)
    except ImportError as exc:  # DPM++ SDE needs torchsde
        raise LorastudioError(
            f"sampler {choice.sampler!r} needs an extra package ({exc}); pick another sampler."
        ) from None
    if hasattr(scheduler, "sigma_schedule"):  # Euler a: Karras, Exponential from EulerDiscreteScheduler's sigmas
        scheduler.sigma_schedule = {k: v for k, v in SCHEDULE_TYPES[choice.schedule].items() if k.startswith("use_")}
    return scheduler


def img2img_steps(steps: int, strength: float, exact: bool = False) -> tuple[int, int]:
    """(steps of the noise schedule, steps sampled) of a pass that starts from a picture, as A1111's
    `setup_img2img_steps` counts them.

    img2img samples the last `int(min(strength, 0.999) * steps) + 1` steps of a `steps` schedule
    (20 steps at 0.5: 11). A hires pass (`exact`, A1111 passes its step count) samples exactly
    `steps` steps, the last ones of a schedule stretched to `steps / strength` (10 at 0.5: the last
    10 of 20). A hires pass at strength 0 samples nothing (the upscaled picture is kept).
    """
    capped = min(float(strength), 0.999)
    if exact:
        return (int(steps / capped), steps) if capped > 0 else (steps, 0)
    return steps, min(int(max(capped, 0.0) * steps) + 1, steps)


def prompt_calls(sampler: str, steps: int) -> int:
    """How many model calls A1111 times prompt editing over for `steps` steps of `sampler`: its
    `total_steps` (twice the steps for a second-order sampler, whose denoiser counts calls)."""
    return steps * 2 if SAMPLERS[sampler].second_order else steps
