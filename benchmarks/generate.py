"""Generation speed: lorastudio's sampling loop against plain diffusers, same model, same run.

    python benchmarks/generate.py [--model tiny-sd15] [--steps 20] [--repeats 5] [--device cpu]
    python benchmarks/generate.py --shape sd15-full --sizes 64,256 --steps 4 --repeats 3

Prints seconds per image for both, the ratio (lorastudio / diffusers; < 1 is faster), the
process's peak memory, and each path's time outside the model's networks (the loop's own cost,
which the whole-image ratio cannot resolve to 2 % on a shared CPU). `--shape sd15-full` builds the full-size SD1.5 model in memory with
random weights from the shipped configs (no download, nothing written but the configs): its
UNet dominates, so the ratio shows what lorastudio's loop adds around it. The tiny models
measure mostly Python overhead.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/queue.py would shadow the standard library's `queue` (torch imports it).
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SHAPES = {"sd15-full": "sd15", "sdxl-full": "sdxl"}


class ModelCallClock:
    """Seconds spent inside the model's networks (UNet, VAE, text encoders) while it is on.

    Both paths call the same modules with the same shapes, so what a path spends *outside* them is
    its own loop's cost: a figure a busy CPU's swings (±5 % per image at 256 px here) do not hide."""

    def __init__(self, modules) -> None:
        self.seconds = 0.0
        self._modules = list({id(m): m for m in modules if m is not None}.values())  # each timed once
        self._own: dict[int, object] = {}  # forwards set on the instances before (hooks), put back after

    def __enter__(self) -> ModelCallClock:
        for module in self._modules:
            if "forward" in module.__dict__:
                self._own[id(module)] = module.__dict__["forward"]
            forward = module.forward

            def timed(*args, _forward=forward, **kwargs):
                start = time.perf_counter()
                try:
                    return _forward(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - start

            module.forward = timed  # an instance attribute: `del` restores the class's forward
        return self

    def __exit__(self, *exc) -> None:
        for module in self._modules:
            if id(module) in self._own:
                module.forward = self._own.pop(id(module))
            else:
                del module.forward


def _time_interleaved(fns, repeats: int, clock: ModelCallClock | None = None) -> list[tuple[float, float]]:
    """(median seconds per call, median seconds outside the model's networks) per function,
    alternating the functions so machine load hits both alike."""
    for fn in fns:
        fn()  # warm-up: kernels, caches, lazy imports
    samples: list[list[float]] = [[] for _ in fns]
    outside: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            inside = clock.seconds if clock else 0.0
            start = time.perf_counter()
            fn()
            total = time.perf_counter() - start
            samples[i].append(total)
            outside[i].append(total - ((clock.seconds - inside) if clock else 0.0))
    return [(statistics.median(s), statistics.median(o)) for s, o in zip(samples, outside, strict=True)]


def random_loaded_model(family_name: str, work: Path, device: str | None = None):
    """A full-size `LoadedModel` with random weights, built in memory from the shipped configs."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from lorastudio.models.families import get_family
    from lorastudio.models.loading import LoadedModel, config_folder, pick_device

    family = get_family(family_name)
    configs = config_folder(family, work)
    device, dtype = pick_device(device)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(configs / "unet")))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(configs / "vae")))
    text_encoders, tokenizers = [], []
    for k, name in enumerate(family.text_encoders):
        cls = CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel
        text_encoders.append(cls(CLIPTextConfig.from_pretrained(str(configs / name))))
        tokenizers.append(CLIPTokenizer.from_pretrained(str(configs / ("tokenizer" if k == 0 else "tokenizer_2"))))
    for module in (unet, vae, *text_encoders):
        module.to(device, dtype).eval().requires_grad_(False)
    scheduler_json = json.loads((configs / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    scheduler = getattr(diffusers, scheduler_json["_class_name"]).from_config(scheduler_json)
    return LoadedModel(
        name=f"{family_name}-random",
        family=family,
        source=str(configs),
        sha256="0" * 64,
        unet=unet,
        vae=vae,
        text_encoders=text_encoders,
        tokenizers=tokenizers,
        scheduler_config=dict(scheduler.config),
        device=device,
        dtype=dtype,
    )


def plain_pipeline(model):
    """diffusers' own pipeline on the very same components, with the DPM++ 2M scheduler."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    pipe_cls = StableDiffusionXLPipeline if model.family.uses_pooled_text else StableDiffusionPipeline
    parts = {
        "unet": model.unet,
        "vae": model.vae,
        "text_encoder": model.text_encoders[0],
        "tokenizer": model.tokenizers[0],
    }
    if model.family.uses_pooled_text:
        parts.update(text_encoder_2=model.text_encoders[1], tokenizer_2=model.tokenizers[1])
    else:
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    scheduler = DPMSolverMultistepScheduler.from_config(model.scheduler_config, algorithm_type="dpmsolver++")
    pipe = pipe_cls(scheduler=scheduler, **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def compare_at_size(model, pipe, size: int, steps: int, repeats: int) -> tuple[tuple[float, float], ...]:
    """(lorastudio, diffusers) (seconds per image, seconds outside the networks) at `size` px,
    DPM++ 2M, CFG 7, one image."""
    import torch

    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.generate.pipeline import build_plan, generate_images

    prompt = "a red picture, highly detailed"
    cfg = GenerateConfig(
        model=model.name,
        prompt=prompt,
        steps=steps,
        sampler="DPM++ 2M",
        seed=1,
        width=size,
        height=size,
        cfg_scale=7.0,
    )

    def ours() -> None:
        plan = build_plan(cfg, model, cfg.prompt, cfg.negative_prompt)
        generate_images(model, cfg, plan, PromptEncoder(model))

    def baseline() -> None:
        pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=7.0,
            width=size,
            height=size,
            generator=torch.Generator("cpu").manual_seed(1),
        )

    networks = [model.unet, model.vae.decoder, model.vae.encoder, *model.text_encoders]
    with ModelCallClock(networks) as clock:
        return tuple(_time_interleaved([ours, baseline], repeats, clock))


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-sd15")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="a full-size model with random weights instead")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", type=int, default=None, help="one size (px); default the model's own")
    parser.add_argument("--sizes", default=None, help="comma list of sizes (px), e.g. 64,256")
    args = parser.parse_args()

    import torch

    from lorastudio.models.loading import load_model

    work = Path(tempfile.mkdtemp(prefix="lorastudio-bench-"))
    if args.shape:
        model = random_loaded_model(SHAPES[args.shape], work, args.device)
    else:
        model = load_model(args.model, work / "models", work / "cache", device=args.device)
    pipe = plain_pipeline(model)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.size or model.native_size]
    print(
        f"model={args.shape or args.model} device={model.device} dtype={model.dtype} steps={args.steps} "
        f"repeats={args.repeats} torch threads={torch.get_num_threads()}"
    )
    for size in sizes:
        (t_ours, own_ours), (t_base, own_base) = compare_at_size(model, pipe, size, args.steps, args.repeats)
        print(
            f"size={size}: diffusers {t_base:8.4f} s/image  lorastudio {t_ours:8.4f} s/image  "
            f"ratio (lorastudio / diffusers) = {t_ours / t_base:.3f}  peak {peak_memory_mb():.0f} MB"
        )
        if str(model.device) == "cpu":  # on a GPU the host returns before the kernels ran: no such split
            print(
                f"  outside the networks (UNet, VAE, text encoders): diffusers {own_base * 1000:.1f} ms/image, "
                f"lorastudio {own_ours * 1000:.1f} ms/image = {own_ours / t_base:.2%} of diffusers' image"
            )


if __name__ == "__main__":
    main()
