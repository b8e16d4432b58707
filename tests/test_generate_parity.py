"""lorastudio's sampling loop against diffusers' own pipeline on the same components.

The loop is written out (A1111 semantics need every step), so it must still be the plain
loop for a plain request: same noise, same CFG batch of two, same scheduler steps, same
decode. The benchmark in benchmarks/generate.py times the same two paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorastudio.generate.config import GenerateConfig


def ours(model, cfg: GenerateConfig) -> np.ndarray:
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.pipeline import build_plan, generate_images

    plan = build_plan(cfg, model, cfg.prompt, cfg.negative_prompt)
    images = generate_images(model, cfg, plan, PromptEncoder(model))
    return np.asarray(images[0].image, dtype=np.int16)


def plain(model, cfg: GenerateConfig) -> np.ndarray:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline

    parts = {"unet": model.unet, "vae": model.vae, "text_encoder": model.text_encoders[0]}
    parts["tokenizer"] = model.tokenizers[0]
    if model.family.uses_pooled_text:
        parts.update(text_encoder_2=model.text_encoders[1], tokenizer_2=model.tokenizers[1])
        pipe_cls = StableDiffusionXLPipeline
    else:
        from diffusers import StableDiffusionPipeline

        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe_cls = StableDiffusionPipeline
    scheduler = DPMSolverMultistepScheduler.from_config(model.scheduler_config, algorithm_type="dpmsolver++")
    pipe = pipe_cls(scheduler=scheduler, **parts)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        cfg.prompt,
        negative_prompt=cfg.negative_prompt,
        num_inference_steps=cfg.steps,
        guidance_scale=cfg.cfg_scale,
        width=cfg.width,
        height=cfg.height,
        generator=torch.Generator("cpu").manual_seed(cfg.seed),
    ).images[0]
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("negative", ["", "blurry, dark"])
def test_plain_request_matches_diffusers_pipeline(sd15, negative):
    cfg = GenerateConfig(
        model=sd15.name,
        prompt="a red picture, highly detailed",
        negative_prompt=negative,
        steps=6,
        sampler="DPM++ 2M",
        seed=3,
        width=64,
        height=64,
        cfg_scale=7.0,
    )
    a, b = ours(sd15, cfg), plain(sd15, cfg)
    assert a.std() > 1  # a real image, not a flat fill that would match anything
    assert np.abs(a - b).max() <= 1  # the same image up to fp rounding in the 8-bit conversion


def test_sdxl_plain_request_matches_diffusers_pipeline(sdxl):
    cfg = GenerateConfig(
        model=sdxl.name, prompt="a red picture", steps=4, sampler="DPM++ 2M", seed=3, width=64, height=64, cfg_scale=5.0
    )
    a, b = ours(sdxl, cfg), plain(sdxl, cfg)
    assert a.std() > 1
    assert np.abs(a - b).max() <= 1
