"""Initial latent noise: seeds, A1111 variation seeds (subseeds) and "resize seed from", and the
fresh noise ancestral samplers mix in at each step, from one of A1111's random number sources.

A1111 makes the starting noise of image i from its seed; with a variation seed it walks
from that noise towards the noise of the variation seed along a great circle (slerp), so
strength 0 is the seed's image and strength 1 starts from the variation seed's noise.
"Resize seed from WxH" draws the noise as if the image had that size and pastes its centre
into noise of the real size, so an image keeps its composition when the size changes.

The source (`rng`, A1111's "Random number generator source"): "CPU" draws on torch's CPU generator,
the same on any machine; "NV" draws NVIDIA's Philox numbers on the CPU (`generate.philox`), which
are what a CUDA GPU draws; "GPU" draws on the CUDA device where there is one, else the NV numbers.

The per-step noise continues each image's generator after its starting noise, as A1111's ImageRNG;
with an ENSD (A1111's "eta noise seed delta") it comes from fresh generators seeded with seed + ENSD.
`old_step_noise` is lorastudio's way before images wrote `RNG`: a CPU generator seeded with seed + 1.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers import SchedulerMixin

__all__ = [
    "ImageNoise",
    "NoiseOptions",
    "StepNoise",
    "batch_noise",
    "image_noise",
    "new_generator",
    "seed_noise",
    "slerp",
]

@dataclass(frozen=True)
class NoiseOptions:
    """The variation settings and random source of a request; the defaults draw plain CPU seed noise."""

    subseed_strength: float = 0.0
    resize_from: tuple[int, int] | None = None  # (latent width, latent height)
    rng: str = "CPU"
    ensd: int = 0  # A1111's eta noise seed delta: the per-step noise is seeded with seed + ensd
    old_step_noise: bool = False  # the per-step noise of lorastudio images without `RNG`: seed + 1 on the CPU

    @property
    def plain(self) -> bool:
        return self.subseed_strength == 0 and self.resize_from is None


def new_generator(seed: int, rng: str = "CPU") -> Any:
    """A fresh generator of the source seeded with `seed` (a `torch.Generator` or a `PhiloxGenerator`)."""
    import torch

    from lorastudio.generate.philox import PhiloxGenerator

    if rng == "CPU":
        return torch.Generator("cpu").manual_seed(int(seed))
    if rng == "GPU" and torch.cuda.is_available():
        return torch.Generator("cuda").manual_seed(int(seed))
    return PhiloxGenerator(seed)  # NV, and GPU without CUDA: the numbers an NVIDIA GPU draws


def draw(generator: Any, shape: tuple[int, ...]) -> Any:
    """The generator's next standard normal draw of `shape`, a float32 CPU tensor."""
    import torch

    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=generator.device).cpu()
    return generator.randn(tuple(shape))


def seed_noise(seed: int, shape: tuple[int, ...], rng: str = "CPU") -> Any:
    """Standard normal noise of `shape`: the first draw of a fresh generator seeded with `seed`."""
    return draw(new_generator(seed, rng), shape)


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noises of one image, as A1111's `slerp`.

    Like A1111 the vectors are the columns along dim 1 (height) of a [C, H, W] noise, each
    normalised on its own; nearly parallel noises fall back to a straight line.
    """
    import torch

    low_dir = low / torch.norm(low, dim=1, keepdim=True)
    high_dir = high / torch.norm(high, dim=1, keepdim=True)
    cosine = (low_dir * high_dir).sum(1)
    if cosine.mean() > 0.9995:
        return low * (1 - strength) + high * strength
    angle = torch.acos(cosine)
    sine = torch.sin(angle)
    low_weight = (torch.sin((1.0 - strength) * angle) / sine).unsqueeze(1)
    high_weight = (torch.sin(strength * angle) / sine).unsqueeze(1)
    return low_weight * low + high_weight * high


def _paste_centre(small, big):
    """Centre `small` [C, h, w] on `big` [C, H, W], cropping it where it is larger."""
    out = big.clone()
    _, small_h, small_w = small.shape
    _, big_h, big_w = big.shape
    top, left = (big_h - small_h) // 2, (big_w - small_w) // 2
    h = small_h if top >= 0 else small_h + 2 * top
    w = small_w if left >= 0 else small_w + 2 * left
    out_top, out_left = max(top, 0), max(left, 0)
    in_top, in_left = max(-top, 0), max(-left, 0)
    out[:, out_top : out_top + h, out_left : out_left + w] = small[
        :, in_top : in_top + h, in_left : in_left + w
    ]
    return out


def image_noise(
    seed: int, subseed: int | None, shape: tuple[int, ...], options: NoiseOptions, generator: Any = None
) -> torch.Tensor:
    """The starting noise of one image, [C, H, W], following A1111's ImageRNG.first().

    `generator` is the image's own stream (fresh from `seed` when None): it draws the noise of the
    real size, so an ancestral sampler's per-step noise continues after it; the variation seed's
    noise and the noise of a "resize seed from" size come from fresh generators, as in A1111.
    """
    own = generator if generator is not None else new_generator(seed, options.rng)
    if options.plain:
        return draw(own, shape)
    draw_shape = tuple(shape)
    if options.resize_from is not None:
        draw_shape = (shape[0], options.resize_from[1], options.resize_from[0])
    noise = draw(own, draw_shape) if draw_shape == tuple(shape) else seed_noise(seed, draw_shape, options.rng)
    if options.subseed_strength != 0 and subseed is not None:
        noise = slerp(options.subseed_strength, noise, seed_noise(subseed, draw_shape, options.rng))
    if draw_shape != tuple(shape):
        noise = _paste_centre(noise, draw(own, shape))
    return noise


def batch_noise(
    seeds: list[int], subseeds: list[int] | None, shape: tuple[int, ...], options: NoiseOptions
) -> torch.Tensor:
    """[N, C, H, W] starting noise for a batch, one image per seed (CPU, float32)."""
    return ImageNoise(seeds, subseeds, shape, options).first()


class ImageNoise:
    """A batch's noise streams, one per image as A1111's ImageRNG: the starting noise (`first`), then
    what a sampler's step draws (`step_generator`).

    The per-step noise is the next draws of each image's own generator, on every source; with an ENSD
    each image's stream starts anew from seed + ENSD once the starting noise is drawn (A1111 does so
    whatever the sampler). `old_step_noise`: a CPU generator seeded with seed + 1, handed to diffusers.
    """

    def __init__(self, seeds: list[int], subseeds: list[int] | None, shape: tuple[int, ...], options: NoiseOptions):
        self.seeds = list(seeds)
        self.subseeds = list(subseeds or [])
        self.shape = tuple(shape)
        self.options = options
        self.generators = [new_generator(seed, options.rng) for seed in self.seeds]

    def first(self) -> torch.Tensor:
        """[N, C, H, W] starting noise (CPU, float32)."""
        import torch

        subs = self.subseeds
        noise = torch.stack(
            [
                image_noise(seed, subs[i] if i < len(subs) else None, self.shape, self.options, self.generators[i])
                for i, seed in enumerate(self.seeds)
            ]
        )
        if self.options.ensd:
            self.generators = [new_generator(seed + self.options.ensd, self.options.rng) for seed in self.seeds]
        return noise

    def step_generator(self, scheduler: SchedulerMixin) -> Any:
        """What `scheduler.step(generator=...)` takes to draw this batch's per-step noise."""
        import torch

        if self.options.old_step_noise:
            generators = [torch.Generator("cpu").manual_seed(seed + 1) for seed in self.seeds]
            return generators if len(generators) > 1 else generators[0]
        _route_step_noise(scheduler)
        return StepNoise(self.generators, self.seeds, self.options.rng)


class StepNoise:
    """Stands for `generator` in a diffusers scheduler's step: its `randn_tensor` (routed here by
    `_route_step_noise`) takes each image's next draw from the image's own stream. The seeds and the
    source are for the samplers whose noise is a Brownian tree (`generate.brownian`)."""

    def __init__(self, generators: list[Any], seeds: list[int], rng: str) -> None:
        self.generators = generators
        self.seeds = list(seeds)
        self.rng = rng

    def randn(
        self,
        shape: tuple[int, ...],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        import torch

        per_image = tuple(shape[1:])
        noise = torch.stack([draw(generator, per_image) for generator in self.generators])
        return noise.to(device=device, dtype=dtype)


_ROUTED_LOCK = threading.Lock()


def _route_step_noise(scheduler) -> None:
    """Let the scheduler's module draw its step noise from a `StepNoise` passed as its generator.

    diffusers' schedulers draw with their module's `randn_tensor(shape, generator=...)`, which takes
    only torch generators; this wraps it once per module: a `StepNoise` draws, anything else goes to
    diffusers' own function unchanged (so concurrent requests with other sources are unaffected). Every
    module of the scheduler's classes is routed: a scheduler of ours may step with its parent's code.
    """
    for cls in type(scheduler).__mro__:
        _route_module(sys.modules.get(cls.__module__))


def _route_module(module) -> None:
    with _ROUTED_LOCK:
        original = getattr(module, "randn_tensor", None)
        if original is None or getattr(original, "routes_step_noise", False):
            return

        def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
            if isinstance(generator, StepNoise):
                return generator.randn(tuple(shape), device=device, dtype=dtype)
            return original(shape, generator=generator, device=device, dtype=dtype, layout=layout)

        randn_tensor.routes_step_noise = True  # type: ignore[attr-defined]
        module.randn_tensor = randn_tensor
