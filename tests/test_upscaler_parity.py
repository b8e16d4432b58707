"""SwinIR and SCUNet give the original networks' output on the same weights (golden numbers).

How the numbers in `GOLDEN` were made, once, outside the repository: the original networks,
JingyunLiang/SwinIR `models/network_swinir.py` (commit 6545850f) and cszn/SCUNet
`models/network_scunet.py` (commit 52e440a8), with the timm helpers they import for training
(`DropPath` as identity, `to_2tuple`, `trunc_normal_`) and thop's `profile` stubbed; each case's state
dict (`_state`: the seeded tiny file of `upscaler_arch_files` with `GAINS` applied) loaded strictly into
the original built with `ORIGINAL`'s arguments, run in eval mode, fp32 on the CPU (torch 2.13, one
thread), on `_input` (seeded `torch.rand`); the output summarised by `_summary`. The script imported
`_state`, `_input`, `_summary`, `CASES` and `ORIGINAL` from this module, so both sides saw the same.
Here the same file goes through `load_model_upscaler` (sizes read from the keys) and our network
must give the same summary. The tolerances sit well above float noise (the two implementations
differ by a few millionths of the output's size) and far below what a maths slip costs: a dropped reverse
roll, a flipped mask sign, a transposed position bias or a dropped shifted-window mask each fail
these tests (checked on a mutated copy when the numbers were written).
"""

from __future__ import annotations

import math

import pytest
import torch

from lorastudio.generate.upscalers.model import load_model_upscaler
from upscaler_arch_files import scunet_state, swinir_state
from upscaler_files import save

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Weight gains by key ending, so that attention decides much of the output (with plain random weights
# the skip connections drown it): position tables of std 2 (as trained ones), stronger attention
# outputs, and the convs that close each residual group and the body (3conv's bottleneck included).
GAINS: dict[str, float] = {
    "relative_position_bias_table": 20.0,
    "relative_position_params": 20.0,
    "attn.proj.weight": 4.0,
    "msa.linear.weight": 4.0,
    "conv.weight": 2.0,
    "conv_after_body.weight": 2.0,
    "conv.0.weight": 3.0,
    "conv.2.weight": 5.0,
    "conv.4.weight": 3.0,
    "conv_after_body.0.weight": 3.0,
    "conv_after_body.2.weight": 5.0,
    "conv_after_body.4.weight": 3.0,
}
# The JPEG models work in 0..255 (img_range): their first conv takes, and their last gives, 255-sized values.
JPEG_GAINS = {"conv_first.weight": 1 / 255, "conv_first.bias": 1 / 255, "conv_last.weight": 255.0, "conv_last.bias": 255.0}

# name -> (state-dict builder, its arguments, extra gains, input shape, input seed)
CASES: dict[str, tuple] = {
    "swinir_real_sr_x4": (
        swinir_state,
        {"embed_dim": 16, "depths": (2, 2), "heads": (2, 2), "window": 4, "img_size": 16,
         "upsampler": "nearest+conv", "resi": "3conv", "num_feat": 64, "scale": 4, "seed": 21},
        {},
        (1, 3, 20, 24),
        22,
    ),
    "swinir_classical_x3": (
        swinir_state,
        {"embed_dim": 24, "depths": (2, 2), "heads": (3, 6), "window": 4, "img_size": 8,
         "upsampler": "pixelshuffle", "resi": "1conv", "num_feat": 64, "scale": 3, "seed": 23},
        {},
        (1, 3, 12, 16),
        24,
    ),
    "swinir_jpeg_w7": (
        swinir_state,
        {"embed_dim": 14, "depths": (2,), "heads": (2,), "window": 7, "img_size": 14, "upsampler": "",
         "resi": "1conv", "scale": 1, "seed": 25},
        JPEG_GAINS,
        (1, 3, 21, 28),
        26,
    ),
    "scunet": (
        scunet_state,
        {"dim": 64, "config": (2, 2, 2, 2, 2, 2, 2), "head_dim": 32, "window": 8, "seed": 31, "std": 0.04},
        {},
        (1, 3, 64, 128),
        32,
    ),
}

# The originals' constructor arguments for the same cases (SCUNet's head_dim 32 and window 8 are fixed there).
ORIGINAL: dict[str, dict] = {
    "swinir_real_sr_x4": {"img_size": 16, "in_chans": 3, "embed_dim": 16, "depths": [2, 2], "num_heads": [2, 2],
                          "window_size": 4, "mlp_ratio": 2, "upscale": 4, "img_range": 1.0,
                          "upsampler": "nearest+conv", "resi_connection": "3conv"},
    "swinir_classical_x3": {"img_size": 8, "in_chans": 3, "embed_dim": 24, "depths": [2, 2], "num_heads": [3, 6],
                            "window_size": 4, "mlp_ratio": 2, "upscale": 3, "img_range": 1.0,
                            "upsampler": "pixelshuffle", "resi_connection": "1conv"},
    "swinir_jpeg_w7": {"img_size": 14, "in_chans": 3, "embed_dim": 14, "depths": [2], "num_heads": [2],
                       "window_size": 7, "mlp_ratio": 2, "upscale": 1, "img_range": 255.0, "upsampler": "",
                       "resi_connection": "1conv"},
    "scunet": {"in_nc": 3, "config": [2, 2, 2, 2, 2, 2, 2], "dim": 64},
}

# The originals' summaries (see the module docstring); max |ours - original| was 1.1e-5 (real-SR x4, outputs of size ~3).
GOLDEN: dict[str, dict] = {
    "swinir_real_sr_x4": {
        "shape": (1, 3, 80, 96), "sum": 28149.52341, "abs_sum": 64826.02471, "ramp_sum": 34373.09818,
        "values": {0: 0.143876, 7680: 1.13024, 11520: 1.740267, 15360: 1.273032, 23039: -0.449168},
    },
    "swinir_classical_x3": {
        "shape": (1, 3, 36, 48), "sum": 1578.46715, "abs_sum": 7227.55638, "ramp_sum": -678.56073,
        "values": {0: 0.005586, 1728: 0.01761, 2592: -0.543471, 3456: -0.162746, 5183: 0.827236},
    },
    "swinir_jpeg_w7": {
        "shape": (1, 3, 21, 28), "sum": 542.80307, "abs_sum": 726.98781, "ramp_sum": 170.32983,
        "values": {0: 0.886086, 588: 0.788331, 882: -0.034451, 1176: 0.646173, 1763: 0.533502},
    },
    "scunet": {
        "shape": (1, 3, 64, 128), "sum": 686.72636, "abs_sum": 6424.07771, "ramp_sum": -1129.97726,
        "values": {0: -0.06511, 8192: 0.081625, 12288: -0.019201, 16384: 0.080191, 24575: -0.175481},
    },
}


def _state(name: str) -> dict:
    build, kwargs, gains, _, _ = CASES[name]
    state = build(**kwargs)
    for key, value in state.items():
        gain = gains.get(key) or next((gain for ending, gain in GAINS.items() if key.endswith(f".{ending}") or key == ending), 1.0)
        state[key] = value * gain
    return state


def _input(name: str) -> torch.Tensor:
    _, _, _, shape, seed = CASES[name]
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _summary(out: torch.Tensor) -> dict:
    """Shape, sum, sum of |x|, a position-weighted sum (a ramp from -1 to 1 over the flat output) and five values."""
    flat = out.detach().flatten().double()
    count = flat.numel()
    ramp = torch.linspace(-1, 1, count, dtype=torch.float64)
    picks = (0, count // 3, count // 2, 2 * count // 3, count - 1)
    return {
        "shape": tuple(out.shape),
        "sum": round(flat.sum().item(), 5),
        "abs_sum": round(flat.abs().sum().item(), 5),
        "ramp_sum": round((flat * ramp).sum().item(), 5),
        "values": {i: round(flat[i].item(), 6) for i in picks},
    }


@pytest.mark.parametrize("name", list(CASES))
def test_our_network_gives_the_original_networks_output(tmp_path, name):
    want = GOLDEN[name]
    model = load_model_upscaler(save(_state(name), tmp_path / f"{name}.pth", None))
    with torch.inference_mode():
        got = _summary(model.network(_input(name)))
    assert got["shape"] == want["shape"]
    scale = want["abs_sum"] / math.prod(want["shape"])  # the output's mean size
    assert got["abs_sum"] == pytest.approx(want["abs_sum"], rel=1e-5)
    for key in ("sum", "ramp_sum"):
        assert got[key] == pytest.approx(want[key], abs=1e-5 * want["abs_sum"]), key
    for index, value in want["values"].items():
        assert got["values"][index] == pytest.approx(value, abs=1e-4 * (scale + abs(value))), index
