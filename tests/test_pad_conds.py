"""A prompt and a negative prompt of different chunk counts: two UNet calls by default, as A1111
runs them (its "Pad prompt/negative prompt" option off); `pad_conds` pads the shorter with empty
chunks into one call and says so in the infotext (`Pad conds: True`); `pad_conds_v0` (A1111
before 1.6) fits the negative prompt to the prompt's length (`Pad conds v0: True`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorastudio.generate.config import GenerateConfig
from test_generate_core import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LONG = ", ".join(["red square"] * 40)  # over 75 tokens: two chunks
SHORT = "blue"


def _context_lengths(model, monkeypatch, **kw) -> tuple[list[list[int]], list[torch.Tensor], np.ndarray]:
    """Per UNet call, the token length of each row's text context and the call's output; the picture."""
    calls: list[list[int]] = []
    outputs: list[torch.Tensor] = []
    real_forward = model.unet.forward

    def recording(sample, t, encoder_hidden_states=None, **kwargs):
        calls.append([encoder_hidden_states.shape[1]] * encoder_hidden_states.shape[0])
        out = real_forward(sample, t, encoder_hidden_states=encoder_hidden_states, **kwargs)
        outputs.append(out.sample.detach().clone())
        return out

    monkeypatch.setattr(model.unet, "forward", recording)
    try:
        image = run(model, steps=2, width=64, height=64, **kw)[0].image
    finally:
        monkeypatch.undo()
    return calls, outputs, np.asarray(image, dtype=np.float32)


@pytest.mark.parametrize("prompt, negative", [(LONG, SHORT), (SHORT, LONG)])
def test_different_lengths_run_as_two_calls_unless_padded(sd15, monkeypatch, prompt, negative):
    split, split_out, _ = _context_lengths(sd15, monkeypatch, prompt=prompt, negative_prompt=negative)
    padded, padded_out, _ = _context_lengths(sd15, monkeypatch, prompt=prompt, negative_prompt=negative, pad_conds=True)
    uncond, cond = (77, 154) if len(negative) < len(prompt) else (154, 77)
    assert split == [[uncond], [cond]] * 2  # per step: the negative prompt's call, then the prompt's
    assert padded == [[154, 154]] * 2  # one call, both padded to two chunks
    # The first step's predictions (same latents): the longer text's row is the same either way,
    # the shorter one's changes with the empty chunk padded onto it.
    split_uncond, split_cond = split_out[0], split_out[1]
    padded_uncond, padded_cond = padded_out[0].chunk(2)
    longer, shorter = ((split_cond, padded_cond), (split_uncond, padded_uncond))[:: 1 if cond > uncond else -1]
    torch.testing.assert_close(longer[0], longer[1], rtol=1e-5, atol=1e-5)
    assert float((shorter[0] - shorter[1]).abs().mean()) > 1e-3


def test_the_same_length_is_one_call_and_the_same_picture_either_way(sd15, monkeypatch):
    plain, _, plain_image = _context_lengths(sd15, monkeypatch, prompt="red square", negative_prompt=SHORT)
    padded, _, padded_image = _context_lengths(sd15, monkeypatch, prompt="red square", negative_prompt=SHORT, pad_conds=True)
    assert plain == padded == [[77, 77]] * 2
    assert np.array_equal(plain_image, padded_image)


def test_and_sub_prompts_share_the_prompt_call(sd15, monkeypatch):
    calls, _, image = _context_lengths(sd15, monkeypatch, prompt=f"{LONG} AND blue :0.5", negative_prompt=SHORT)
    assert calls == [[77], [154, 154]] * 2  # sub-prompts stacked to one length (A1111's stack_conds)
    assert np.isfinite(image).all()


def test_sdxl_pooled_vectors_follow_each_call(sdxl, monkeypatch):
    calls, _, image = _context_lengths(sdxl, monkeypatch, prompt=LONG, negative_prompt=SHORT)
    assert calls == [[77], [154]] * 2 and np.isfinite(image).all()


def test_the_infotext_says_pad_conds_when_it_padded_and_reads_it_back():
    from lorastudio.generate.a1111_fields import InfotextFacts, config_fields_from_infotext, infotext_params

    facts = InfotextFacts(sampler="Euler", schedule="Automatic", width=64, height=64, seed=1)
    padded = InfotextFacts(sampler="Euler", schedule="Automatic", width=64, height=64, seed=1, padded_conds=True)
    on = GenerateConfig(model="m", prompt="p", pad_conds=True)
    assert infotext_params(on, padded)["Pad conds"] is True
    assert infotext_params(on, facts).get("Pad conds") is None  # on, but one length: nothing padded (A1111)
    assert config_fields_from_infotext({"Pad conds": "True"})["pad_conds"] is True
    assert "pad_conds" not in config_fields_from_infotext({"Steps": "20"})


@pytest.mark.parametrize("prompt, written", [(LONG, True), ("red square", False)])
def test_a_generated_png_says_pad_conds_only_when_a_prompt_was_padded(tiny_workspace, prompt, written):
    from lorastudio.service.generation import run_generation

    cfg = GenerateConfig(model="tiny-sd15", prompt=prompt, negative_prompt=SHORT, steps=2, width=64, height=64, pad_conds=True)
    result = run_generation(tiny_workspace, cfg)
    text = result.images[0].infotext
    assert ("Pad conds: True" in text) is written, text


def test_a_controlnet_counts_a_split_evaluation_as_one_step(sd15):
    """A unit ending at 0.25 of 4 steps (the extension's window: steps 0..2): two calls per step count one step."""
    from PIL import Image

    from controlnet_files import make_controlnet
    from lorastudio.generate.control import ControlStack, PreparedUnit

    image = Image.new("RGB", (64, 64), "white")
    unit = PreparedUnit("ControlNet unit 0", make_controlnet(sd15), image, guidance_end=0.25)
    stack = ControlStack([unit], "cpu", torch.float32)
    stack.begin_pass(64, 64, 4, 1, False)
    latents = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 77, sd15.unet.config.cross_attention_dim)
    active = []
    for _ in range(4):
        first = stack.residuals(latents, torch.tensor(500), context, {}, 1)
        second = stack.residuals(latents, torch.tensor(500), context, {}, 0, same_evaluation=True)
        active.append((bool(first), bool(second)))
    assert active == [(True, True)] * 3 + [(False, False)]


def test_controlnet_is_more_important_spares_only_the_negative_prompts_call(sd15):
    """The extension's cfg injection: no control on the negative prompt's rows, also when they are a call of their own."""
    from PIL import Image

    from controlnet_files import make_controlnet
    from lorastudio.generate.control import ControlStack, PreparedUnit

    image = Image.new("RGB", (64, 64), "white")
    unit = PreparedUnit("ControlNet unit 0", make_controlnet(sd15), image, control_mode="ControlNet is more important")
    stack = ControlStack([unit], "cpu", torch.float32)
    stack.begin_pass(64, 64, 1, 1, False)
    latents = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 77, sd15.unet.config.cross_attention_dim)
    negative = stack.residuals(latents, torch.tensor(500), context, {}, 1)["mid_block_additional_residual"]
    prompt = stack.residuals(latents, torch.tensor(500), context, {}, 0, same_evaluation=True)
    assert float(negative.abs().max()) == 0 and float(prompt["mid_block_additional_residual"].abs().max()) > 0


def test_two_calls_give_the_cfg_of_each_calls_own_prediction(sdxl):
    """Different lengths on SDXL: the guided prediction is uncond + cfg * (cond - uncond) of two plain
    UNet calls, each with its own text, pooled vector and time ids."""
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.guidance import GuidedUnet

    encoder = PromptEncoder(sdxl)
    cond, uncond = encoder.encode(LONG), encoder.encode(SHORT)
    assert cond.embeds.shape[1] != uncond.embeds.shape[1]
    cfg = GenerateConfig(model="tiny-sdxl", prompt=LONG, negative_prompt=SHORT, cfg_scale=5.0)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])

    def plain(text):
        added = {"text_embeds": text.pooled, "time_ids": time_ids}
        return sdxl.unet(latents, t, encoder_hidden_states=text.embeds, added_cond_kwargs=added).sample

    with torch.no_grad():
        guided = GuidedUnet(sdxl, cfg, encoder).predict(latents, t, cond, [1.0], uncond, 1, 64, 64)
        expected = plain(uncond) + 5.0 * (plain(cond) - plain(uncond))
    torch.testing.assert_close(guided, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prompt, negative", [(LONG, SHORT), (SHORT, LONG)])
def test_pad_conds_v0_fits_the_negative_prompt_to_the_prompts_length(sd15, monkeypatch, prompt, negative):
    """A1111 before 1.6: a shorter negative prompt repeats its last token vector (not an empty
    chunk, as pad_conds pads), a longer one is cut; the prompt is untouched; one call. v0 wins over
    pad_conds, as A1111 tries it first."""
    from lorastudio.generate.conditioning import PromptEncoder

    contexts: list[torch.Tensor] = []
    real_forward = sd15.unet.forward

    def recording(sample, t, encoder_hidden_states=None, **kwargs):
        contexts.append(encoder_hidden_states.detach().clone())
        return real_forward(sample, t, encoder_hidden_states=encoder_hidden_states, **kwargs)

    monkeypatch.setattr(sd15.unet, "forward", recording)
    run(sd15, steps=1, width=64, height=64, prompt=prompt, negative_prompt=negative, pad_conds_v0=True, pad_conds=True)
    monkeypatch.undo()
    assert len(contexts) == 1  # one call
    uncond, cond = contexts[0].chunk(2)
    encoder = PromptEncoder(sd15, 1)
    negative_embeds, prompt_embeds = encoder.encode(negative).embeds, encoder.encode(prompt).embeds
    torch.testing.assert_close(cond, prompt_embeds.to(cond.dtype))
    if negative == SHORT:  # 77 tokens -> 154: the last vector 77 more times
        torch.testing.assert_close(uncond[:, :77], negative_embeds.to(cond.dtype))
        torch.testing.assert_close(uncond[:, 77:], negative_embeds[:, -1:].expand(-1, 77, -1).to(cond.dtype))
        assert float((uncond[:, 77:] - encoder.empty_chunk().to(cond.dtype)).abs().max()) > 1e-3  # not pad_conds' filler
    else:  # 154 tokens -> 77: cut
        torch.testing.assert_close(uncond, negative_embeds[:, :77].to(cond.dtype))


def test_pad_conds_v0_is_written_when_it_fitted_and_read_from_old_webui_images(tiny_workspace):
    from lorastudio.generate.a1111_fields import config_fields_from_infotext
    from lorastudio.generate.infotext import parse_infotext
    from lorastudio.service.generation import run_generation

    base = {"model": "tiny-sd15", "negative_prompt": SHORT, "steps": 2, "width": 64, "height": 64, "pad_conds_v0": True}
    long_text = run_generation(tiny_workspace, GenerateConfig(prompt=LONG, **base)).images[0].infotext
    short_text = run_generation(tiny_workspace, GenerateConfig(prompt="red square", **base)).images[0].infotext
    assert "Pad conds v0: True" in long_text and "Pad conds v0" not in short_text
    assert config_fields_from_infotext(parse_infotext(long_text))["pad_conds_v0"] is True
    # A1111 sets the flag on DDIM/PLMS images of webuis before 1.6, whose infotexts do not carry it.
    old = "a cat\nSteps: 20, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 512x512, Version: v1.5.1"
    assert config_fields_from_infotext(parse_infotext(old))["pad_conds_v0"] is True
    newer = old.replace("v1.5.1", "v1.6.0")
    assert "pad_conds_v0" not in config_fields_from_infotext(parse_infotext(newer))
