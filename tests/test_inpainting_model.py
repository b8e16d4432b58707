"""A dedicated inpainting checkpoint (a 9-channel UNet: latents, mask, masked-image latents) used
without a mask — txt2img, img2img, the hires pass — gets A1111's conditioning: a mask of ones over
the latents of a blank (mid-grey) picture. It crashed on the 4-channel input before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lorastudio.generate.config import GenerateConfig


@pytest.fixture(scope="module")
def inpainting(tiny_models_dir):
    """tiny-sd15 with its UNet's first conv widened to 9 inputs; the 5 new ones weigh nothing, so
    its pictures are the 4-channel model's and what reaches the extra inputs can be read off a hook."""
    from lorastudio.models.loading import load_model

    model = load_model("tiny-sd15", tiny_models_dir, tiny_models_dir / ".cache")
    plain = model.unet.conv_in
    wide = torch.nn.Conv2d(9, plain.out_channels, plain.kernel_size, padding=plain.padding)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, :4] = plain.weight
        wide.bias.copy_(plain.bias)
    model.unet.conv_in = wide
    model.unet.register_to_config(in_channels=9)
    seen: list[torch.Tensor] = []
    wide.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    return model, seen


def _run(model, **kw):
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.pipeline import build_plan, generate_images

    cfg = GenerateConfig(model=model.name, prompt="red", steps=4, seed=5, width=64, height=64, **kw)
    plan = build_plan(cfg, model, cfg.prompt, cfg.negative_prompt)
    return [g.image for g in generate_images(model, cfg, plan, PromptEncoder(model, cfg.clip_skip))]


def _blank_latents(model, size: int) -> torch.Tensor:
    vae = model.vae
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, size, size, dtype=vae.dtype)).latent_dist.mean
    return latents * vae.config.scaling_factor


def _assert_paints_everything(model, unet_input: torch.Tensor, size: int) -> None:
    assert unet_input.shape[1] == 9
    assert torch.all(unet_input[:, 4] == 1)  # the mask: everything is to be painted
    blank = _blank_latents(model, size).expand(unet_input.shape[0], -1, -1, -1)
    assert torch.allclose(unet_input[:, 5:], blank, atol=1e-5)


def _saved(image: Image.Image, folder, name: str) -> str:
    image.save(folder / name)
    return str(folder / name)


def test_txt2img_img2img_and_hires_feed_a_full_mask_over_a_blank_picture(inpainting, sd15, tmp_path):
    model, seen = inpainting
    seen.clear()
    images = _run(model)
    _assert_paints_everything(model, seen[0], 64)
    same_as_plain = _run(sd15)  # the extra inputs weigh nothing here: the plain model's picture
    assert np.array_equal(np.asarray(images[0]), np.asarray(same_as_plain[0]))

    seen.clear()
    _run(model, init_image=_saved(Image.new("RGB", (64, 64), (30, 160, 30)), tmp_path, "init.png"), strength=0.6)
    _assert_paints_everything(model, seen[0], 64)

    seen.clear()
    (image,) = _run(model, hires_scale=1.5, hires_steps=2)
    assert image.size == (96, 96)
    _assert_paints_everything(model, seen[-1], 96)


def test_an_inpainting_models_mask_still_marks_only_the_masked_area(inpainting, tmp_path):
    model, seen = inpainting
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # the left half
    seen.clear()
    init = _saved(Image.new("RGB", (64, 64), (30, 160, 30)), tmp_path, "init.png")
    _run(model, init_image=init, mask=_saved(mask, tmp_path, "mask.png"), strength=1.0, mask_blur=0)
    painted = seen[0][0, 4]
    assert torch.all(painted[:, :4] == 1) and torch.all(painted[:, 4:] == 0)


def test_the_result_says_an_inpainting_model_was_used(inpainting, tiny_workspace, monkeypatch):
    """A1111's info `is_using_inpainting_conditioning` comes from the job result (it was always False)."""
    from lorastudio.service.generation import run_generation
    from lorastudio.service.model_cache import ModelCache

    model, _ = inpainting
    cache = ModelCache(tiny_workspace)
    monkeypatch.setattr(cache, "get", lambda *args, **kwargs: model)
    cfg = GenerateConfig(model="tiny-sd15", prompt="red", steps=1, seed=1, width=64, height=64)
    assert run_generation(tiny_workspace, cfg, cache=cache).inpainting_model is True
