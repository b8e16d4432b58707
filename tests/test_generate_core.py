"""Generation on the tiny models: seeds, prompts, samplers, img2img, inpainting, hires."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lorastudio.generate.config import GenerateConfig


def run(model, **kw):
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.pipeline import build_plan, generate_images

    kw.setdefault("steps", 6)
    kw.setdefault("seed", 11)
    cfg = GenerateConfig(model=model.name, **kw)
    plan = build_plan(cfg, model, cfg.prompt, cfg.negative_prompt)
    return generate_images(model, cfg, plan, PromptEncoder(model, cfg.clip_skip))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def test_same_seed_same_image_and_batch_seeds_increment(sd15):
    a = run(sd15, prompt="red", seed=5, batch_size=2)
    b = run(sd15, prompt="red", seed=5, batch_size=2)
    assert [i.seed for i in a] == [5, 6]
    assert np.array_equal(pixels(a[0].image), pixels(b[0].image))
    assert not np.array_equal(pixels(a[0].image), pixels(a[1].image))
    alone = run(sd15, prompt="red", seed=6)
    # Image 1 of the batch is the image seed 6 gives alone, up to batched float rounding that
    # the sampler may amplify by a machine-dependent amount: far closer than another seed's.
    another_seed = np.abs(pixels(a[0].image) - pixels(a[1].image)).mean()
    assert np.abs(pixels(alone[0].image) - pixels(a[1].image)).mean() < 0.1 * another_seed


def test_random_seed_is_recorded(sd15):
    out = run(sd15, prompt="red", seed=-1, steps=2)
    assert 0 <= out[0].seed < 2**32


@pytest.mark.parametrize(
    "sampler",
    [
        "Euler a",
        "Euler",
        "DPM++ 2M Karras",
        "DPM++ SDE Karras",
        "DDIM",
        "UniPC",
        "LMS",
        "Heun",
        "DPM++ 2M SDE",
        "PLMS",
    ],
)
def test_every_sampler_makes_a_finite_image(sd15, sampler):
    out = run(sd15, prompt="green", sampler=sampler, steps=4)
    arr = pixels(out[0].image)
    assert arr.shape == (64, 64, 3) and np.isfinite(arr).all() and arr.std() >= 0


def test_samplers_differ(sd15):
    a = pixels(run(sd15, prompt="blue", sampler="Euler a")[0].image)
    b = pixels(run(sd15, prompt="blue", sampler="DDIM")[0].image)
    assert np.abs(a - b).mean() > 0.5


def test_sdxl_generates_and_prompt_matters(sdxl):
    a = pixels(run(sdxl, prompt="red", steps=5)[0].image)
    b = pixels(run(sdxl, prompt="blue, (blue:1.4), many words to change things", steps=5)[0].image)
    assert a.shape == (64, 64, 3)
    # the tiny SDXL UNet learned colour words only weakly; the prompt still changes pixels
    assert np.abs(a - b).mean() > 0.05


def test_weighted_word_scales_its_conditioning(sd15):
    from lorastudio.generate.conditioning import PromptEncoder

    enc = PromptEncoder(sd15)
    plain = enc.encode("a red cat").embeds[0]
    weighted = enc.encode("a (red:1.5) cat").embeds[0]
    # token 2 is "red" (after BOS, "a"); every other token is scaled by the same mean-restoring factor
    restore = (weighted[1] / plain[1]).mean()
    ratio = (weighted[2] / plain[2]).mean()
    assert float(ratio / restore) == pytest.approx(1.5, rel=1e-3)
    assert float((weighted[4] / plain[4]).mean()) == pytest.approx(float(restore), rel=1e-4)


def test_long_prompt_uses_several_chunks_and_break(sd15):
    from lorastudio.generate.conditioning import PromptEncoder

    enc = PromptEncoder(sd15)
    long_prompt = ", ".join(["red cat"] * 40)
    assert enc.encode(long_prompt).embeds.shape[1] == 77 * 2
    assert enc.encode("red BREAK blue").embeds.shape[1] == 77 * 2
    assert enc.encode("red blue").embeds.shape[1] == 77


def test_clip_skip_changes_conditioning(sd15):
    from lorastudio.generate.conditioning import PromptEncoder

    one = PromptEncoder(sd15, clip_skip=1).encode("red").embeds
    two = PromptEncoder(sd15, clip_skip=2).encode("red").embeds
    assert one.shape == two.shape and not np.allclose(one.numpy(), two.numpy())


def test_prompt_editing_switches_conditioning_mid_way(sd15):
    red = pixels(run(sd15, prompt="red", steps=8, sampler="DDIM")[0].image)
    blue = pixels(run(sd15, prompt="blue", steps=8, sampler="DDIM")[0].image)
    edited = pixels(run(sd15, prompt="[red:blue:0.5]", steps=8, sampler="DDIM")[0].image)
    assert np.abs(edited - red).mean() > 0.5 and np.abs(edited - blue).mean() > 0.5


def test_img2img_strength_controls_change(sd15, tmp_path):
    src = tmp_path / "src.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(src)
    base = pixels(Image.open(src))
    low = pixels(run(sd15, prompt="blue", init_image=str(src), strength=0.2, steps=10)[0].image)
    high = pixels(run(sd15, prompt="blue", init_image=str(src), strength=0.9, steps=10)[0].image)
    assert np.abs(low - base).mean() < np.abs(high - base).mean()


GREEN = np.array([30, 200, 30])


def _green_and_square_mask(tmp_path, grey: int = 255) -> tuple[str, str]:
    """A 64x64 green picture and a mask whose 32x32 centre square has `grey` (the rest black)."""
    src, mask = tmp_path / "src.png", tmp_path / "mask.png"
    Image.new("RGB", (64, 64), tuple(GREEN)).save(src)
    square = Image.new("L", (64, 64), 0)
    square.paste(grey, (16, 16, 48, 48))
    square.save(mask)
    return str(src), str(mask)


def test_inpainting_keeps_unmasked_pixels(sd15, tmp_path):
    src, mask = _green_and_square_mask(tmp_path)
    for only_masked in (False, True):
        out = pixels(
            run(
                sd15,
                prompt="red",
                init_image=src,
                mask=mask,
                mask_blur=0,
                strength=1.0,
                steps=8,
                inpaint_only_masked=only_masked,
                inpaint_padding=4,
            )[0].image
        )
        assert np.abs(out[:8, :8] - np.array([30, 200, 30])).max() <= 1  # untouched corner
        assert np.abs(out[24:40, 24:40] - np.array([30, 200, 30])).mean() > 5  # repainted centre


def test_a_grey_mask_below_a1111s_threshold_repaints_nothing(sd15, tmp_path):
    """A1111 makes masks black and white (> 128 repaints) before blurring them."""
    src, mask = _green_and_square_mask(tmp_path, grey=100)  # a soft mask's faint part
    common = {"prompt": "red", "init_image": src, "mask": mask, "mask_blur": 0, "strength": 1.0, "steps": 4}
    assert np.abs(pixels(run(sd15, **common)[0].image) - np.array([30, 200, 30])).max() <= 1
    _green_and_square_mask(tmp_path, grey=140)
    assert np.abs(pixels(run(sd15, **common)[0].image)[24:40, 24:40] - np.array([30, 200, 30])).mean() > 5


def test_an_inverted_mask_repaints_outside_and_the_infotext_says_so(sd15, tmp_path):
    """A1111's "Inpaint not masked" (API inpainting_mask_invert): written as `Mask mode` and read back."""
    from lorastudio.generate.a1111_fields import config_fields_from_infotext
    from lorastudio.generate.infotext import parse_infotext

    src, mask = _green_and_square_mask(tmp_path)
    common = {"prompt": "red", "init_image": src, "mask": mask, "mask_blur": 0, "strength": 1.0, "steps": 4}
    out = run(sd15, mask_invert=True, **common)[0]
    picture = pixels(out.image)
    assert np.abs(picture[24:40, 24:40] - np.array([30, 200, 30])).max() <= 1  # the masked centre is kept
    assert np.abs(picture[:8, :8] - np.array([30, 200, 30])).mean() > 5  # the corners are repainted
    from lorastudio.generate.a1111_fields import InfotextFacts, infotext_params
    from lorastudio.generate.infotext import format_infotext

    cfg = GenerateConfig(model="tiny-sd15", mask_invert=True, **common)
    text = format_infotext("red", "", infotext_params(cfg, InfotextFacts("Euler", "Automatic", 64, 64, out.seed)))
    assert "Mask mode: Inpaint not masked" in text
    assert config_fields_from_infotext(parse_infotext(text, fill_defaults=False))["mask_invert"] is True
    plain = format_infotext("red", "", infotext_params(cfg.model_copy(update={"mask_invert": False}),
                                                       InfotextFacts("Euler", "Automatic", 64, 64, out.seed)))  # fmt: skip
    assert "Mask mode" not in plain


def test_only_masked_with_a_blank_mask_is_img2img_of_the_whole_picture(sd15, tmp_path):
    """A1111: "Unable to perform Inpaint Only mask because mask is blank, switch to img2img mode"."""
    src, mask = _green_and_square_mask(tmp_path, grey=0)
    common = {"prompt": "red", "init_image": src, "strength": 0.9, "steps": 4, "seed": 3}
    blank = pixels(run(sd15, mask=mask, inpaint_only_masked=True, **common)[0].image)
    plain = pixels(run(sd15, **common)[0].image)
    assert np.abs(blank - plain).max() <= 1  # the whole picture sampled (it came back untouched)


def test_only_masked_crops_around_the_blurred_mask_so_its_feather_fades_inside(sd15, tmp_path):
    """A1111 takes the "only masked" region from the blurred mask: the pixels just outside the hard
    mask, where the blur still reaches, are blended (they were cut off, leaving a seam)."""
    src, mask = tmp_path / "src.png", tmp_path / "mask.png"
    Image.new("RGB", (128, 128), (128, 128, 128)).save(src)
    m = Image.new("L", (128, 128), 0)
    m.paste(255, (48, 48, 80, 80))
    m.save(mask)
    out = pixels(
        run(sd15, prompt="red", init_image=str(src), mask=str(mask), mask_blur=4, strength=1.0, steps=4,
            inpaint_only_masked=True, inpaint_padding=0, width=64, height=64)[0].image
    )  # fmt: skip
    assert out.shape[:2] == (128, 128)
    changed = np.abs(out - 128).max(axis=2) > 2
    assert changed[64, 46] and changed[46, 64]  # in the feather outside the 48..80 square
    assert not changed[64, 30] and not changed[4, 4]  # beyond the blur: untouched


def test_hires_fix_doubles_size(sd15):
    out = run(sd15, prompt="yellow", hires_scale=2.0, hires_steps=3, hires_strength=0.5, steps=4)
    assert out[0].image.size == (128, 128)
    lanczos = run(sd15, prompt="yellow", hires_scale=1.5, hires_upscaler="Lanczos", steps=4)
    assert lanczos[0].image.size == (96, 96)


def test_hires_pass_continues_the_prompt_editing_timeline(sd15, monkeypatch):
    """As in A1111 >= 1.6: in the hires pass decimals count on from 1.0, so [red:blue:1.5]
    is red for the whole first pass and turns blue half-way through the hires pass."""
    from lorastudio.generate import prompt_parser

    schedules = []
    original = prompt_parser.get_learned_conditioning_prompt_schedules

    def recording(prompts, steps, hires_steps=None, use_old_scheduling=False):
        result = original(prompts, steps, hires_steps, use_old_scheduling)
        schedules.append((prompts[0], steps, hires_steps, result[0]))
        return result

    monkeypatch.setattr(prompt_parser, "get_learned_conditioning_prompt_schedules", recording)
    hires = {"steps": 4, "sampler": "DDIM", "hires_scale": 2.0, "hires_steps": 6, "hires_strength": 0.7}
    edited = pixels(run(sd15, prompt="[red:blue:1.5]", **hires)[0].image)
    assert ("[red:blue:1.5]", 4, None, [[4, "red"]]) in schedules  # first pass: red throughout
    assert ("[red:blue:1.5]", 4, 6, [[3, "red"], [6, "blue"]]) in schedules  # hires pass: half-way
    red = pixels(run(sd15, prompt="red", **hires)[0].image)
    assert np.abs(edited - red).mean() > 1
    assert np.array_equal(
        pixels(run(sd15, prompt="[red:blue:1.5]", steps=4, sampler="DDIM")[0].image),
        pixels(run(sd15, prompt="red", steps=4, sampler="DDIM")[0].image),
    )  # without hires the edit never happens


def test_size_must_be_multiple_of_8():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="multiple of 8"):
        GenerateConfig(width=100)


def test_unknown_sampler_is_a_clear_error():
    from lorastudio.errors import LorastudioError
    from lorastudio.generate.samplers import parse_sampler

    with pytest.raises(LorastudioError, match="unknown sampler 'Eulr a'.*Euler a"):
        parse_sampler("Eulr a")
    assert parse_sampler("DPM++ 2M Karras").schedule == "Karras"
    assert parse_sampler("DPM++ 2M Karras").sampler == "DPM++ 2M"


def test_half_precision_vae_nans_are_retried_in_fp32(sd15, monkeypatch):
    """An fp16 VAE that overflows gives NaNs; the decode is redone in fp32 and the VAE kept there."""
    import torch

    from lorastudio.generate.pipeline import _Sampler

    vae = sd15.vae
    real_decode = vae.decode
    calls = []

    def overflowing_decode(latents, *args, **kwargs):
        calls.append(latents.dtype)
        out = real_decode(latents, *args, **kwargs)
        if latents.dtype != torch.float32:
            out.sample[:] = float("nan")
        return out

    monkeypatch.setattr(vae, "decode", overflowing_decode)
    vae.to(torch.bfloat16)
    try:
        sampler = _Sampler(sd15, None, None, None, None, None)
        images = sampler.decode(torch.zeros(1, 4, 8, 8))
        assert calls == [torch.bfloat16, torch.float32]
        assert torch.isfinite(images).all() and vae.dtype == torch.float32
    finally:
        vae.to(torch.float32)


def test_preview_images_every_n_steps(sd15):
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.pipeline import build_plan, generate_images

    cfg = GenerateConfig(model="tiny-sd15", prompt="red", steps=6, seed=1, sampler="Euler a")
    plan = build_plan(cfg, sd15, cfg.prompt, cfg.negative_prompt)
    previews = []
    generate_images(sd15, cfg, plan, PromptEncoder(sd15), preview=previews.append, preview_every=2)
    assert len(previews) == 3 and all(p.size == (64, 64) for p in previews)
    # the last preview is the denoised estimate, close to the final image's colours
    assert pixels(previews[-1]).std() >= 0
