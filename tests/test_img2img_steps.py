"""img2img and the hires pass sample as many steps as A1111 does, and time prompt editing as it does.

A1111 (`setup_img2img_steps`): img2img samples the last `int(min(d, 0.999) * steps) + 1` steps of
the schedule; a hires pass samples exactly its steps, the tail of a schedule of `steps / d`. Its
denoiser's step counter restarts at 0 in every pass, so prompt editing over 20 steps in an
img2img at 0.5 sees steps 0..10 of its schedule.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lorastudio.generate.samplers import img2img_steps
from test_generate_core import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("steps", "strength", "exact", "expected"),
    [
        (20, 0.5, False, (20, 11)),  # A1111 issue 193's arithmetic: int(0.5 * 20) + 1
        (10, 0.3, False, (10, 4)),
        (20, 1.0, False, (20, 20)),  # capped at 0.999: every step
        (20, 0.0, False, (20, 1)),  # one step at the lowest noise, as A1111
        (10, 0.5, True, (20, 10)),  # hires: exactly its steps, the last 10 of 20
        (6, 0.7, True, (8, 6)),
        (10, 0.0, True, (10, 0)),
    ],
)
def test_the_step_arithmetic_is_a1111s(steps, strength, exact, expected):
    assert img2img_steps(steps, strength, exact) == expected


class _UnetCalls:
    """The text conditioning of every UNet call (one per step for first-order samplers)."""

    def __init__(self, unet) -> None:
        self.conds: list[torch.Tensor] = []
        self.handle = unet.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.conds.append((kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)).clone())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def _init(tmp_path) -> str:
    path = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (40, 90, 200)).save(path)
    return str(path)


def test_img2img_samples_int_d_times_steps_plus_one(sd15, tmp_path):
    common = {"prompt": "red", "sampler": "Euler", "width": 64, "height": 64, "init_image": _init(tmp_path)}
    for steps, strength, expected in ((10, 0.5, 6), (10, 0.3, 4), (4, 0.0, 1)):
        with _UnetCalls(sd15.unet) as calls:
            run(sd15, steps=steps, strength=strength, **common)
        assert len(calls.conds) == expected, (steps, strength)


def test_the_hires_pass_samples_its_own_step_count(sd15):
    common = {"prompt": "red", "sampler": "Euler", "width": 64, "height": 64, "hires_scale": 1.5}
    with _UnetCalls(sd15.unet) as calls:
        run(sd15, steps=6, hires_strength=0.5, **common)
    assert len(calls.conds) == 6 + 6  # was 6 + 3: int(6 * 0.5)
    with _UnetCalls(sd15.unet) as calls:
        run(sd15, steps=6, hires_steps=4, hires_strength=0.3, **common)
    assert len(calls.conds) == 6 + 4


def test_prompt_editing_in_img2img_counts_the_sampled_steps_from_zero(sd15, tmp_path):
    common = {"sampler": "Euler", "width": 64, "height": 64, "init_image": _init(tmp_path), "cfg_scale": 1.0}
    with _UnetCalls(sd15.unet) as red:
        run(sd15, prompt="red", steps=2, strength=1.0, **common)
    with _UnetCalls(sd15.unet) as blue:
        run(sd15, prompt="blue", steps=2, strength=1.0, **common)
    red_cond, blue_cond = red.conds[0], blue.conds[0]
    assert not torch.equal(red_cond, blue_cond)
    # 10 steps at 0.5 sample 6 steps, timed over 10: red up to step 5 of the schedule, so all six
    # are red (diffusers' arithmetic put them at steps 5..9 of the schedule: one red, then blue)
    with _UnetCalls(sd15.unet) as edited:
        run(sd15, prompt="[red:blue:0.5]", steps=10, strength=0.5, **common)
    assert [torch.equal(c, red_cond) for c in edited.conds] == [True] * 6
    with _UnetCalls(sd15.unet) as edited:
        run(sd15, prompt="[red:blue:0.2]", steps=10, strength=0.5, **common)
    assert [torch.equal(c, blue_cond) for c in edited.conds] == [False] * 3 + [True] * 3


def test_a_second_order_sampler_times_prompt_editing_over_model_calls(sd15):
    """A1111 times a second-order sampler's prompts over 2 x steps and counts model calls (Heun: two a
    step, one for the last): `[red:blue:3]` over 4 Heun steps is red for calls 0-3, blue for 4-6."""
    common = {"sampler": "Heun", "width": 64, "height": 64, "cfg_scale": 1.0, "steps": 4}
    with _UnetCalls(sd15.unet) as red:
        run(sd15, prompt="red", **common)
    with _UnetCalls(sd15.unet) as edited:
        run(sd15, prompt="[red:blue:3]", **common)
    assert len(edited.conds) == 7
    assert [torch.equal(c, red.conds[0]) for c in edited.conds] == [True] * 4 + [False] * 3
    with _UnetCalls(sd15.unet) as half:
        run(sd15, prompt="[red:blue:0.5]", **common)  # switch after call 4 of 8: calls 0-4 red
    assert [torch.equal(c, red.conds[0]) for c in half.conds] == [True] * 5 + [False] * 2


def test_a_hires_pass_at_a_tiny_strength_stays_within_the_models_timesteps(sd15):
    """12 hires steps at 0.01 stretch A1111's schedule to 1200 steps; DDIM has 1000 timesteps."""
    out = run(sd15, prompt="red", sampler="DDIM", steps=2, width=64, height=64, hires_scale=1.5, hires_steps=12,
              hires_strength=0.01)  # fmt: skip
    assert out[0].image.size == (96, 96)
