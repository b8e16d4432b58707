"""A1111's composable diffusion (`a AND b :0.7`) on the tiny models.

Guidance is `uncond + cfg * sum_i w_i * (cond_i - uncond)`, one UNet row per sub-prompt
plus the negative; a prompt without `AND` keeps the classic two-row CFG exactly.
tiny-sd15 knows colour words ("red" gives red images, "blue" blue ones), so mixtures are
measured by colour: blueness = mean blue - mean red.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from lorastudio.generate.config import GenerateConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Low guidance keeps the tiny model's colours unsaturated, so mixtures stay measurable.
MILD_CFG = 1.5


def run(model, encoder=None, **kw) -> np.ndarray:
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.pipeline import build_plan, generate_images

    kw.setdefault("steps", 6)
    kw.setdefault("seed", 11)
    cfg = GenerateConfig(model=model.name, **kw)
    plan = build_plan(cfg, model, cfg.prompt, cfg.negative_prompt)
    images = generate_images(model, cfg, plan, encoder or PromptEncoder(model, cfg.clip_skip))
    return np.asarray(images[0].image, dtype=np.float32)


def blueness(image: np.ndarray) -> float:
    return float(image[..., 2].mean() - image[..., 0].mean())


@pytest.fixture
def unet_calls(sd15):
    """Every UNet call of the test: (batch rows, encoder_hidden_states, added_cond_kwargs, output)."""
    calls = []

    def record(_module, args, kwargs, output):
        calls.append(
            (
                args[0].shape[0],
                kwargs["encoder_hidden_states"],
                kwargs.get("added_cond_kwargs"),
                output.sample,
            )
        )

    handle = sd15.unet.register_forward_hook(record, with_kwargs=True)
    yield calls
    handle.remove()


def test_and_mixes_the_sub_prompts(sd15):
    red = run(sd15, prompt="red", cfg_scale=MILD_CFG)
    blue = run(sd15, prompt="blue", cfg_scale=MILD_CFG)
    both = run(sd15, prompt="red AND blue", cfg_scale=MILD_CFG)
    assert np.abs(both - red).mean() > 5 and np.abs(both - blue).mean() > 5
    assert blueness(red) + 10 < blueness(both) < blueness(blue) - 10


def test_zero_weight_sub_prompt_contributes_nothing(sd15, unet_calls):
    red = run(sd15, prompt="red")
    assert {rows for rows, *_ in unet_calls} == {2}  # uncond + red
    unet_calls.clear()
    with_zero = run(sd15, prompt="red AND blue:0")
    # "blue" is really run (a third row) and its term 0 * (blue - uncond) adds exactly nothing
    assert {rows for rows, *_ in unet_calls} == {3}
    assert np.array_equal(with_zero, red)


def test_weights_shift_the_mixture_toward_the_heavier_sub_prompt(sd15):
    def at(prompt: str, cfg_scale: float = MILD_CFG) -> np.ndarray:
        return run(sd15, prompt=prompt, cfg_scale=cfg_scale)

    redder, even, bluer = at("red AND blue:0.5"), at("red AND blue"), at("red:0.5 AND blue")
    assert blueness(redder) + 5 < blueness(even) < blueness(bluer) - 5
    # only weight * cfg matters: halving every weight at twice the scale is the same image
    assert np.array_equal(at("red:0.5 AND blue:0.5", 2 * MILD_CFG), even)
    # A1111 reads a trailing weight without AND too: "red :0.5" at scale 3 is "red" at 1.5
    assert np.array_equal(at("red :0.5", 2 * MILD_CFG), at("red"))


def test_plain_prompt_keeps_the_classic_cfg(sd15, unet_calls, monkeypatch):
    """Without AND: rows [uncond, cond] and exactly `uncond + cfg * (cond - uncond)`, as before."""
    from lorastudio.generate import pipeline

    predictions = []
    real_make_scheduler = pipeline.make_scheduler

    def spying_scheduler(*args, **kwargs):
        scheduler = real_make_scheduler(*args, **kwargs)
        real_step = scheduler.step

        @functools.wraps(real_step)  # keeps the signature: the loop checks it for `generator`
        def step(model_output, *a, **kw):
            predictions.append(model_output.clone())
            return real_step(model_output, *a, **kw)

        scheduler.step = step
        return scheduler

    monkeypatch.setattr(pipeline, "make_scheduler", spying_scheduler)
    run(
        sd15, prompt="a (red:1.2) [cat:dog:0.5]", negative_prompt="blue", cfg_scale=5.0, steps=4, batch_size=2
    )
    assert len(predictions) == len(unet_calls) == 4
    for (rows, _, _, out), prediction in zip(unet_calls, predictions, strict=True):
        uncond, cond = out.chunk(2)
        assert rows == 4 and prediction.equal(uncond + 5.0 * (cond - uncond))

    unet_calls.clear()
    run(sd15, prompt="red", cfg_scale=1.0, steps=2)  # CFG 1: the prompt alone, one row
    assert [rows for rows, *_ in unet_calls] == [1, 1]


def test_each_sub_prompt_is_scheduled_alone_and_the_negative_is_not_split(sd15, unet_calls):
    from lorastudio.generate.conditioning import PromptEncoder

    class RecordingEncoder(PromptEncoder):
        def encode(self, text):
            self.texts.add(text)
            return super().encode(text)

    encoder = RecordingEncoder(sd15)
    encoder.texts = set()
    run(sd15, encoder, prompt="[red:blue:0.5] AND green :0.7", negative_prompt="yellow AND pink", steps=4)
    assert {"red", "blue", " green", "yellow AND pink"} <= encoder.texts
    assert not encoder.texts & {"yellow", " pink", "[red:blue:0.5] AND green :0.7"}
    assert [rows for rows, *_ in unet_calls] == [3] * 4
    # A1111 counts from step 0 and switches after step int(0.5 * 4) = 2: "red" thrice, then "blue";
    # the green row never changes
    contexts = [context for _, context, _, _ in unet_calls]
    assert contexts[0][1].equal(contexts[2][1]) and not contexts[2][1].equal(contexts[3][1])
    assert all(c[2].equal(contexts[0][2]) for c in contexts)


def test_sub_prompts_of_different_lengths_pad_like_a1111(sd15, unet_calls):
    from lorastudio.generate.conditioning import PromptEncoder, stack_conditionings

    encoder = PromptEncoder(sd15)
    long_text = ", ".join(["red cat"] * 40)  # two chunks
    stacked = stack_conditionings([encoder.encode(long_text), encoder.encode("blue")])
    short = encoder.encode("blue").embeds[0]
    assert stacked.embeds.shape[:2] == (2, 77 * 2)
    assert stacked.embeds[1, :77].equal(short)
    assert (stacked.embeds[1, 77:] == short[-1]).all()  # the last vector repeated (A1111's stack_conds)

    image = run(sd15, prompt=f"{long_text} AND blue", steps=2)
    assert np.isfinite(image).all()
    # the one-chunk negative runs in its own call, the two sub-prompts in one (A1111 without "Pad conds")
    assert [tuple(context.shape[:2]) for _, context, _, _ in unet_calls] == [(1, 77), (2, 77 * 2)] * 2
    unet_calls.clear()
    run(sd15, prompt=f"{long_text} AND blue", steps=2, pad_conds=True)
    # padded: the negative gets empty chunks up to the prompt's two, all in one call
    assert {tuple(context.shape[:2]) for _, context, _, _ in unet_calls} == {(3, 77 * 2)}


def test_sdxl_conditions_each_sub_prompt_with_its_own_pooled_vector(tiny_models_dir):
    from lorastudio.models.loading import load_model

    sdxl = load_model("tiny-sdxl", tiny_models_dir, tiny_models_dir / ".cache")
    pooled = []
    handle = sdxl.unet.register_forward_hook(
        lambda _m, _a, kwargs, _o: pooled.append(kwargs["added_cond_kwargs"]["text_embeds"]), with_kwargs=True
    )
    try:
        both = run(sdxl, prompt="red AND blue", steps=3)
    finally:
        handle.remove()
    red = run(sdxl, prompt="red", steps=3)
    assert all(p.shape[0] == 3 for p in pooled)
    uncond_row, red_row, blue_row = pooled[0]
    assert not red_row.equal(blue_row) and not red_row.equal(uncond_row)
    assert np.abs(both - red).mean() > 0.05


def test_a1111_api_passes_the_prompt_through(client):
    from lorastudio.generate.infotext import parse_infotext

    prompt = "red AND blue :0.5"
    body = {"prompt": prompt, "steps": 2, "width": 64, "height": 64, "seed": 3}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["parameters"]["prompt"] == prompt
    info = json.loads(data["info"])
    assert info["prompt"] == prompt and info["all_prompts"] == [prompt]
    assert parse_infotext(info["infotexts"][0])["Prompt"] == prompt
