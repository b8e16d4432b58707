"""ESRGAN+ files and old-layout nearest 3x ESRGAN files: told from their keys (and, for 3x, the name), run as
a reference written here from the papers' equations computes them."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from lorastudio.generate.upscalers.loading import names_3x, read_upscaler_state_dict, sniff_upscaler
from lorastudio.generate.upscalers.model import load_model_upscaler
from upscaler_arch_files import old_esrgan_nearest_state
from upscaler_files import save

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ESRGAN's residual scaling: every dense block's and every RRDB's output is added to its input times 0.2.
RESIDUAL_SCALE = 0.2


# -- a reference from the equations, on the file's own keys ----------------------------------------


def _conv(state: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    weight = state[f"{name}.weight"]
    return F.conv2d(x, weight, state.get(f"{name}.bias"), padding=weight.shape[-1] // 2)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def _dense_block(state: dict, name: str, x: torch.Tensor, plus: bool, scale: float) -> torch.Tensor:
    """ESRGAN's dense block; with `plus`, ESRGAN+'s residual of residual (Rakotonirina & Rasoanaivo 2020,
    fig. 2): x2 += conv1x1(x), then x4 += x2.

        x1 = σ(W1 * x)          x2 = σ(W2 * [x, x1]) (+ W1x1 * x)
        x3 = σ(W3 * [x, x1, x2])  x4 = σ(W4 * [x, x1, x2, x3]) (+ x2)
        out = scale · W5 * [x, x1, x2, x3, x4] + x
    """
    x1 = _act(_conv(state, f"{name}.conv1.0", x))
    x2 = _act(_conv(state, f"{name}.conv2.0", torch.cat([x, x1], 1)))
    if plus:
        x2 = x2 + _conv(state, f"{name}.conv1x1", x)
    x3 = _act(_conv(state, f"{name}.conv3.0", torch.cat([x, x1, x2], 1)))
    x4 = _act(_conv(state, f"{name}.conv4.0", torch.cat([x, x1, x2, x3], 1)))
    if plus:
        x4 = x4 + x2
    return scale * _conv(state, f"{name}.conv5.0", torch.cat([x, x1, x2, x3, x4], 1)) + x


def _reference(state: dict, x: torch.Tensor, *, plus: bool, factor: int = 2, scale: float = RESIDUAL_SCALE) -> torch.Tensor:
    """The old-layout ESRGAN generator: conv, RRDB trunk + LR conv as a shortcut, nearest upsample +
    conv per step (each by `factor`), HR conv, last conv."""
    blocks = 1 + max(int(key.split(".")[3]) for key in state if ".RDB" in key)
    steps = sorted(int(key.split(".")[1]) for key in state if key.count(".") == 2 and key.endswith(".weight"))[1:-2]
    feat = _conv(state, "model.0", x)
    trunk = feat
    for n in range(blocks):
        out = trunk
        for rdb in (1, 2, 3):
            out = _dense_block(state, f"model.1.sub.{n}.RDB{rdb}", out, plus, scale)
        trunk = scale * out + trunk
    feat = feat + _conv(state, f"model.1.sub.{blocks}", trunk)
    for step in steps:
        feat = _act(_conv(state, f"model.{step}", F.interpolate(feat, scale_factor=factor, mode="nearest")))
    hr, last = sorted(int(key.split(".")[1]) for key in state if key.count(".") == 2 and key.endswith(".weight"))[-2:]
    return _conv(state, f"model.{last}", _act(_conv(state, f"model.{hr}", feat)))


def _input(height: int = 7, width: int = 9, seed: int = 41) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


# -- ESRGAN+ ---------------------------------------------------------------------------------------


def _plus_state(seed: int = 40) -> dict:
    state = old_esrgan_nearest_state(num_feat=8, num_block=2, grow=6, upsamples=2, plus=True, seed=seed)
    for key in state:  # the 1x1 shortcuts as strong as a trained one's, so dropping them shows
        if key.endswith("conv1x1.weight"):
            state[key] = state[key] * 5
    return state


def test_an_esrgan_plus_file_is_read_from_its_conv1x1_keys_and_loads_every_weight(tmp_path):
    state = _plus_state()
    path = save(state, tmp_path / "4x_ESRGANplus_nf8.pth", None)
    spec = sniff_upscaler(read_upscaler_state_dict(path), path)
    assert (spec.arch, spec.layout, spec.scale) == ("RRDBNet", "esrgan-old", 4)
    assert (spec.kwargs["plus"], spec.kwargs["num_block"], spec.kwargs["num_grow_ch"]) == (True, 2, 6)
    model = load_model_upscaler(path)
    shortcut = model.network.body[1].rdb3.conv1x1
    assert shortcut.bias is None and torch.equal(shortcut.weight, state["model.1.sub.1.RDB3.conv1x1.weight"])
    assert len(model.network.state_dict()) == len(state)  # every key, none made up
    assert model.upscale(Image.new("RGB", (10, 6), (90, 140, 30))).size == (40, 24)


def test_esrgan_plus_gives_the_papers_numbers(tmp_path):
    """Golden numbers from `_reference`; a dropped 1x1 shortcut, a dropped x4 += x2 or a wrong residual scale miss them."""
    state = _plus_state()
    model = load_model_upscaler(save(state, tmp_path / "4x_ESRGANplus.pth", None))
    x = _input()
    with torch.inference_mode():
        got = model.network(x)
        want = _reference(state, x, plus=True)
    assert got.shape == want.shape == (1, 3, 28, 36)
    error = (got - want).abs().max().item()
    assert error < 1e-5
    for wrong in (_reference(state, x, plus=False), _reference(state, x, plus=True, scale=0.25)):
        assert (got - wrong).abs().max().item() > 1000 * max(error, 1e-7)  # what the test would catch


def test_plain_esrgan_still_gives_the_papers_numbers(tmp_path):
    state = old_esrgan_nearest_state(num_feat=8, num_block=2, grow=6, upsamples=1, seed=42)
    model = load_model_upscaler(save(state, tmp_path / "2x_plain.pth", None))
    assert not model.network.body[0].rdb1.conv1x1
    x = _input(seed=43)
    with torch.inference_mode():
        assert torch.allclose(model.network(x), _reference(state, x, plus=False), atol=1e-5)


def test_an_esrgan_plus_file_is_listed_and_runs_through_extras(workspace):
    from lorastudio.service.extras import upscale_image
    from lorastudio.service.settings import StudioSettings
    from lorastudio.service.upscalers import find_upscaler

    save(_plus_state(), workspace.upscalers / "4x_ESRGANplus.pth", None)
    row = find_upscaler(workspace, "4x_esrganplus")
    assert (row["scale"], row["error"]) == (4, None)
    out = upscale_image(Image.new("RGB", (12, 8), (200, 40, 90)), StudioSettings(), scale=2, upscaler="4x_ESRGANplus", workspace=workspace)
    assert out.size == (24, 16)


# -- old-layout nearest 3x ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "says_3x"),
    [
        ("3x_BigFace_v3", True), ("3xSomething", True), ("ESRGAN_x3", True), ("foo-3x-bar", True),
        ("RealESRGAN_x3plus", True), ("2x_Foo", False), ("4x-UltraSharp", False), ("net_3x3conv", False),
        ("nx3", False), ("foo_x32", False),
    ],
)  # fmt: skip
def test_a_file_name_says_3x_only_as_a_scale_tag(stem, says_3x):
    assert names_3x(stem) is says_3x


@pytest.mark.parametrize(("name", "factor"), [("3x_Foo.pth", 3), ("Foo_x3.pth", 3), ("2x_Foo.pth", 2), ("Foo.pth", 2)])
def test_an_old_nearest_file_with_one_step_is_3x_when_its_name_says_so(tmp_path, name, factor):
    """One nearest step has the same keys and shapes at 2x and 3x (A1111's `infer_params` and spandrel read
    both as 2x): the name tells, and the network upsamples by that factor as the reference does."""
    state = old_esrgan_nearest_state(num_feat=8, num_block=1, grow=4, upsamples=1, seed=44)
    path = save(state, tmp_path / name, None)
    spec = sniff_upscaler(read_upscaler_state_dict(path), path)
    assert (spec.scale, spec.kwargs["upsampler"], spec.kwargs["up_factor"]) == (factor, "nearest", factor)
    model = load_model_upscaler(path)
    x = _input(seed=45)
    with torch.inference_mode():
        got = model.network(x)
    assert got.shape == (1, 3, 7 * factor, 9 * factor)
    assert torch.allclose(got, _reference(state, x, plus=False, factor=factor), atol=1e-5)
    assert model.upscale(Image.new("RGB", (10, 6))).size == (10 * factor, 6 * factor)


def test_a_3x_name_does_not_override_the_keys_of_a_4x_file(tmp_path):
    state = old_esrgan_nearest_state(upsamples=2, seed=46)
    path = save(state, tmp_path / "3x_mislabelled.pth", None)
    assert sniff_upscaler(read_upscaler_state_dict(path), path).scale == 4


def test_a_3x_old_file_is_listed_at_3x(workspace):
    from lorastudio.service.upscalers import find_upscaler

    save(old_esrgan_nearest_state(upsamples=1, seed=47), workspace.upscalers / "3x_Foo.pth", None)
    assert find_upscaler(workspace, "3x_Foo")["scale"] == 3
