"""Pyramid (multires) noise, caption tag dropout and colour augmentation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.train.config import load_train_config
from lorastudio.train.data import COLOR_AUG_BRIGHTNESS, color_jitter
from lorastudio.train.noise import training_noise
from lorastudio.train.text import build_caption

SIZE, LOW = 64, 4  # latents of 64x64; "low frequencies": |kx|, |ky| <= 4


def _low_frequency_share(noise: torch.Tensor) -> float:
    """Share of the spectral energy in the (2*LOW+1)^2 lowest-frequency bins."""
    power = torch.fft.fft2(noise.double()).abs() ** 2
    k = torch.fft.fftfreq(SIZE, d=1.0 / SIZE).abs()
    low = (k[:, None] <= LOW) & (k[None, :] <= LOW)
    return float(power[..., low].sum() / power.sum())


def _noise(iterations: int, discount: float = 0.3, seed: int = 7) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return training_noise((32, 4, SIZE, SIZE), gen, "cpu", multires_iterations=iterations, multires_discount=discount)


def test_multires_noise_moves_energy_to_low_frequencies():
    white_share = ((2 * LOW + 1) / SIZE) ** 2  # white noise: energy spread evenly over the bins
    measured_white = _low_frequency_share(_noise(0))
    assert measured_white == pytest.approx(white_share, rel=0.15)
    # Control: the spread of white noise's share across seeds; one pyramid layer must clear all of it.
    white_max = max(_low_frequency_share(_noise(0, seed=s)) for s in range(5))
    assert min(_low_frequency_share(_noise(1, seed=s)) for s in range(5)) > white_max
    shares = [_low_frequency_share(_noise(n)) for n in (1, 2, 3)]
    assert shares[0] < shares[1] < shares[2]  # each coarser layer adds low-frequency energy
    assert _low_frequency_share(_noise(3, discount=0.1)) < shares[2]  # a smaller discount, less of it
    # Still unit-variance noise per sample, as the diffusion loss expects.
    stds = _noise(3).std(dim=(1, 2, 3))
    assert torch.allclose(stds, torch.ones_like(stds), atol=1e-5)


def test_noise_without_pyramid_is_unchanged():
    gen = torch.Generator().manual_seed(3)
    expected = torch.randn((2, 4, 8, 8), generator=gen)
    expected = expected + 0.1 * torch.randn((2, 4, 1, 1), generator=gen)
    got = training_noise((2, 4, 8, 8), torch.Generator().manual_seed(3), "cpu", offset=0.1)
    assert torch.equal(got, expected)


def test_tag_dropout_drops_at_the_rate_and_keeps_the_first_tokens():
    tags = [f"tag{i}" for i in range(10)]
    caption = ", ".join(tags)
    rng = random.Random(0)
    trials, rate, keep = 2000, 0.3, 2
    dropped = 0
    for _ in range(trials):
        out = build_caption(caption, "", False, False, keep, 0.0, rng, tag_dropout=rate)
        parts = out.split(", ")
        assert parts[:keep] == tags[:keep]
        dropped += len(tags) - len(parts)
    observed = dropped / (trials * (len(tags) - keep))
    sigma = (rate * (1 - rate) / (trials * (len(tags) - keep))) ** 0.5
    assert abs(observed - rate) < 5 * sigma
    # The trigger word is never dropped, wherever it is.
    for _ in range(200):
        out = build_caption("a, b, mira, c", "mira", True, False, 0, 0.0, rng, tag_dropout=0.9)
        assert "mira" in out.split(", ")


@pytest.mark.parametrize("shuffle, keep", [(False, 0), (True, 0), (True, 1)])
def test_tag_dropout_keeps_a_tag_that_holds_the_trigger_in_any_case(shuffle, keep):
    rng = random.Random(0)
    for caption, tag in [("1girl, Surtr, red hair", "Surtr"), ("surtr (arknights), red hair", "surtr (arknights)")]:
        for _ in range(50):
            out = build_caption(caption, "surtr", True, shuffle, keep, 0.0, rng, tag_dropout=0.99)
            assert tag in out.split(", ")
            assert "surtr" not in out.split(", ")  # the caption holds it, so it is not prefixed


def test_tag_dropout_is_a_validated_data_key():
    assert load_train_config(overrides=["data.tag_dropout=0.1"]).data.tag_dropout == 0.1
    with pytest.raises(LorastudioError, match="tag_dropout"):
        load_train_config(overrides=["data.tag_dropout=1.5"])


def test_color_aug_changes_pixel_statistics_within_its_range():
    image = Image.new("RGB", (16, 16), (200, 80, 40))
    base = np.asarray(image, dtype=np.float64)
    rng = random.Random(1)
    hues, values = [], []
    for _ in range(50):
        out = color_jitter(image, rng)
        hsv = np.asarray(out.convert("HSV"), dtype=np.float64)
        hues.append(hsv[..., 0].mean())
        values.append(hsv[..., 2].mean())
        assert out.size == image.size
    base_hsv = np.asarray(image.convert("HSV"), dtype=np.float64)
    assert np.std(hues) > 1.0 and np.std(values) > 1.0  # hue and brightness both vary
    ratio = np.array(values) / base_hsv[..., 2].mean()
    assert ratio.min() >= 1 - COLOR_AUG_BRIGHTNESS - 0.01 and ratio.max() <= 1 + COLOR_AUG_BRIGHTNESS + 0.01
    assert np.abs(np.asarray(color_jitter(image, rng), dtype=np.float64) - base).mean() > 0.5

