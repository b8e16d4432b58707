"""Model upscalers: the real files' key layouts load, sniff, upscale 4x, and tile without seams."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate.upscalers.model import load_model_upscaler
from upscaler_files import compact_state, old_esrgan_state, rrdbnet_state, save

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _same_weights(model, state: dict) -> bool:
    loaded = model.network.state_dict()
    return all(torch.equal(loaded[k], v) for k, v in state.items())


def _picture(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size))
    image.putdata([((x * 4) % 256, (y * 4) % 256, (x * y) % 256) for y in range(size) for x in range(size)])
    return image


@pytest.mark.parametrize(
    ("name", "wrapper"),
    [("RealESRGAN_x4plus.pth", "params_ema"), ("plain.pth", None), ("params.pth", "params"), ("x4.safetensors", None)],
)
def test_real_esrgan_layout_loads_the_same_weights_in_every_container(tmp_path, name, wrapper):
    state = rrdbnet_state(4)
    model = load_model_upscaler(save(state, tmp_path / name, wrapper))
    assert (model.arch, model.scale, model.multiple) == ("RRDBNet", 4, 1)
    assert _same_weights(model, state)
    assert model.upscale(_picture()).size == (256, 256)


def test_old_esrgan_layout_converts_to_the_same_network(tmp_path):
    state = rrdbnet_state(4, seed=3)
    new = load_model_upscaler(save(state, tmp_path / "new.pth"))
    old = load_model_upscaler(save(old_esrgan_state(state), tmp_path / "4x-UltraSharp.pth", None))
    assert _same_weights(old, state)
    picture = _picture(24)
    assert list(old.upscale(picture).getdata()) == list(new.upscale(picture).getdata())


@pytest.mark.parametrize(("scale", "channels"), [(2, 12), (1, 48)])
def test_x2plus_and_1x_fold_the_input_with_a_pixel_unshuffle(tmp_path, scale, channels):
    state = rrdbnet_state(scale)
    assert state["conv_first.weight"].shape[1] == channels
    model = load_model_upscaler(save(state, tmp_path / f"x{scale}.pth"))
    assert (model.scale, model.multiple) == (scale, {2: 2, 1: 4}[scale])
    assert model.upscale(_picture(30)).size == (30 * scale, 30 * scale)  # odd sizes are padded, then cropped


def test_anime_6b_block_count_is_read_from_the_keys(tmp_path):
    model = load_model_upscaler(save(rrdbnet_state(4, num_block=6), tmp_path / "RealESRGAN_x4plus_anime_6B.pth"))
    assert len(model.network.body) == 6


@pytest.mark.parametrize("scale", [4, 2])
def test_compact_network_scale_comes_from_the_last_conv(tmp_path, scale):
    state = compact_state(scale)
    model = load_model_upscaler(save(state, tmp_path / "realesr-general-x4v3.pth"))
    assert (model.arch, model.scale) == ("SRVGGNetCompact", scale)
    assert _same_weights(model, state)
    assert model.upscale(_picture()).size == (64 * scale, 64 * scale)
    safetensors = load_model_upscaler(save(state, tmp_path / "compact.safetensors"))
    assert list(safetensors.upscale(_picture(16)).getdata()) == list(model.upscale(_picture(16)).getdata())


def test_compact_output_is_the_nearest_upscale_plus_the_learned_residual(tmp_path):
    state = {k: torch.zeros_like(v) for k, v in compact_state(4).items()}
    model = load_model_upscaler(save(state, tmp_path / "zero.pth"))
    picture = _picture(16)
    assert list(model.upscale(picture).getdata()) == list(picture.resize((64, 64), Image.Resampling.NEAREST).getdata())


@pytest.mark.parametrize("make", [lambda: rrdbnet_state(4, seed=1), lambda: rrdbnet_state(2, seed=1), lambda: compact_state(4, seed=1)])
def test_tiled_equals_untiled_within_tolerance(tmp_path, make):
    import numpy as np

    model = load_model_upscaler(save(make(), tmp_path / "m.pth"))
    picture = _picture(64)
    whole = np.asarray(model.upscale(picture, tile=0), dtype=np.float32)
    ticks: list[tuple[int, int]] = []
    tiled = np.asarray(model.upscale(picture, tile=32, overlap=8, progress=lambda d, t: ticks.append((d, t))), dtype=np.float32)
    assert ticks[-1] == (9, 9)  # 3 x 3 tiles of 32 with 8 overlap over 64
    assert whole.shape == tiled.shape
    assert np.abs(whole - tiled).mean() < 4.0  # tiles see less context at their edges; blending hides the seams
    # without overlap the seams are hard cuts: blending must do better than that
    hard = np.asarray(model.upscale(picture, tile=32, overlap=0), dtype=np.float32)
    assert np.abs(whole - tiled).mean() <= np.abs(whole - hard).mean()


def test_should_stop_cancels_between_tiles(tmp_path):
    from lorastudio.generate.upscalers.tiling import UpscaleCancelled

    model = load_model_upscaler(save(compact_state(4), tmp_path / "m.pth"))
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(UpscaleCancelled):
        model.upscale(_picture(64), tile=32, overlap=8, should_stop=stop)
    assert len(asked) == 3


def test_upscale_to_runs_the_model_until_large_enough_then_lanczos(tmp_path):
    model = load_model_upscaler(save(compact_state(2), tmp_path / "x2.pth"))
    assert model.passes_to((10, 10), (35, 35)) == [(10, 10), (20, 20)]
    assert model.upscale_to(_picture(10), (35, 35), tile=0).size == (35, 35)


@pytest.mark.parametrize(
    ("state", "what"),
    [
        ({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8), "lora_unet_down_blocks_0.alpha": torch.tensor(4.0)}, "LoRA"),
        ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, "Stable Diffusion checkpoint"),
        ({"control_model.input_hint_block.0.weight": torch.zeros(16, 3, 3, 3)}, "ControlNet"),
        ({"some.unknown.weight": torch.zeros(3, 3)}, "network this build does not know"),
    ],
)
def test_other_files_are_refused_naming_the_file_and_what_is_supported(tmp_path, state, what):
    path = save(state, tmp_path / "thing.safetensors")
    with pytest.raises(LorastudioError, match=f"thing.safetensors: .*{what}.*RRDBNet.*spandrel") as err:
        load_model_upscaler(path)
    assert "\n" not in str(err.value)


def test_garbage_and_unsafe_pickles_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(LorastudioError, match="garbage.pth: cannot be read"):
        load_model_upscaler(garbage)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"params_ema": {"w": torch.zeros(1)}, "opt": Image.new("RGB", (1, 1))}, unsafe)
    with pytest.raises(LorastudioError, match="unsafe.pth: refused, it needs unsafe unpickling"):
        load_model_upscaler(unsafe)
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(LorastudioError, match="model.bin: unknown file type"):
        load_model_upscaler(other)


def test_spandrel_is_optional(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name == "spandrel":
            raise ImportError("spandrel needs torchvision")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    path = save({"layers.0.attn.qkv.weight": torch.zeros(6, 2)}, tmp_path / "4x-SwinIR.safetensors")
    with pytest.raises(LorastudioError, match="4x-SwinIR.safetensors: .*pip install --no-deps spandrel"):
        load_model_upscaler(path)


def test_old_layout_2x_and_the_mmsr_layout_convert(tmp_path):
    from lorastudio.generate.upscalers.networks import RRDBNet

    torch.manual_seed(0)
    net = RRDBNet(3, 3, 8, 1, 4, num_upsamples=1)  # an old-style 2x ESRGAN: one nearest upsample
    state = {k: v.normal_(0, 0.1).clone() for k, v in net.state_dict().items()}
    old = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "body":
            n, rdb, conv, kind = rest.split(".")
            old[f"model.1.sub.{n}.RDB{rdb[-1]}.{conv}.0.{kind}"] = value
        elif head == "conv_body":
            old[f"model.1.sub.1.{rest}"] = value
        else:
            old[f"model.{ {'conv_first': 0, 'conv_up1': 3, 'conv_hr': 5, 'conv_last': 7}[head] }.{rest}"] = value
    model = load_model_upscaler(save(old, tmp_path / "2x-old.pth", None))
    assert model.scale == 2 and _same_weights(model, state)
    mmsr = {
        key.replace("conv_body", "trunk_conv").replace("body.", "RRDB_trunk.").replace(".rdb", ".RDB")
        .replace("conv_up1", "upconv1").replace("conv_hr", "HRconv"): value
        for key, value in state.items()
    }  # fmt: skip
    assert "RRDB_trunk.0.RDB1.conv1.weight" in mmsr and "HRconv.weight" in mmsr
    assert _same_weights(load_model_upscaler(save(mmsr, tmp_path / "RRDB_ESRGAN_x2.pth", None)), state)
