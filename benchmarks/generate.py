"""Generation speed: lorastudio's sampling loop against plain diffusers, same model, same run.

    python benchmarks/generate.py [--model tiny-sd15] [--steps 20] [--repeats 5] [--device cpu]

Prints seconds per image for both and the ratio (lorastudio / diffusers; < 1 is faster).
On a GPU pass a real model (`--model PATH`) for meaningful numbers; the tiny models
measure mostly Python overhead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/queue.py would shadow the standard library's `queue` (torch imports it).
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _time_interleaved(fns, repeats: int) -> list[float]:
    """Median seconds per call, alternating the functions so machine load hits both alike."""
    for fn in fns:
        fn()  # warm-up: kernels, caches, lazy imports
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-sd15")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", type=int, default=None)
    args = parser.parse_args()

    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.generate.pipeline import build_plan, generate_images
    from lorastudio.models.loading import load_model

    work = Path(tempfile.mkdtemp(prefix="lorastudio-bench-"))
    model = load_model(args.model, work / "models", work / "cache", device=args.device)
    size = args.size or model.native_size
    prompt = "a red picture, highly detailed"
    cfg = GenerateConfig(
        model=args.model,
        prompt=prompt,
        steps=args.steps,
        sampler="DPM++ 2M",
        seed=1,
        width=size,
        height=size,
        cfg_scale=7.0,
    )

    def ours() -> None:
        plan = build_plan(cfg, model, cfg.prompt, cfg.negative_prompt)
        generate_images(model, cfg, plan, PromptEncoder(model))

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

    def baseline() -> None:
        pipe(
            prompt,
            num_inference_steps=args.steps,
            guidance_scale=7.0,
            width=size,
            height=size,
            generator=torch.Generator("cpu").manual_seed(1),
        )

    t_ours, t_base = _time_interleaved([ours, baseline], args.repeats)
    print(f"model={args.model} device={model.device} dtype={model.dtype} size={size} steps={args.steps}")
    print(f"diffusers   {t_base:8.4f} s/image")
    print(f"lorastudio  {t_ours:8.4f} s/image")
    print(f"ratio (lorastudio / diffusers) = {t_ours / t_base:.3f}")


if __name__ == "__main__":
    main()
