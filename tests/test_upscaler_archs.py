"""Pixel-shuffle ESRGAN, SwinIR and SCUNet files: told from their keys, loaded strictly, run and tiled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate.upscalers.loading import read_upscaler_state_dict, sniff_upscaler
from lorastudio.generate.upscalers.model import load_model_upscaler
from upscaler_arch_files import old_esrgan_pixelshuffle_state, scunet_state, swin_relative_state, swinir_state
from upscaler_files import save

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SWINIR_4X = "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth"


def _every_key_loaded(model, state: dict) -> bool:
    """The network holds exactly the file's keys, with the file's values (a strict load)."""
    loaded = model.network.state_dict()
    return set(loaded) == set(state) and all(torch.equal(loaded[k], v) for k, v in state.items())


def _picture(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 9) % 256, (y * 7) % 256, (x * y) % 256) for y in range(height) for x in range(width)])
    return image


def _tiling_error(model, picture: Image.Image, tile: int, overlap: int) -> tuple[float, float]:
    """Mean |untiled - tiled| with blended overlaps, and with hard cuts (no overlap)."""
    whole = np.asarray(model.upscale(picture, tile=0), dtype=np.float32)
    tiled = np.asarray(model.upscale(picture, tile=tile, overlap=overlap), dtype=np.float32)
    hard = np.asarray(model.upscale(picture, tile=tile, overlap=0), dtype=np.float32)
    assert whole.shape == tiled.shape == hard.shape
    return float(np.abs(whole - tiled).mean()), float(np.abs(whole - hard).mean())


# -- ESRGAN with a pixel-shuffle upsampler ---------------------------------------------------------


@pytest.mark.parametrize(("num_feat", "num_block"), [(8, 1), (16, 3)])
def test_old_esrgan_with_a_pixel_shuffle_upsampler_loads_every_key(tmp_path, num_feat, num_block):
    state = old_esrgan_pixelshuffle_state(num_feat=num_feat, num_block=num_block)
    path = save(state, tmp_path / "4x_PixelShuffle.pth", None)
    spec = sniff_upscaler(read_upscaler_state_dict(path), path)
    assert (spec.arch, spec.scale, spec.kwargs["upsampler"]) == ("RRDBNet", 4, "pixelshuffle")
    assert (spec.kwargs["num_feat"], spec.kwargs["num_block"]) == (num_feat, num_block)
    model = load_model_upscaler(path)
    assert model.network.conv_up1.weight.shape[0] == 4 * num_feat
    assert torch.equal(model.network.conv_up2.weight, state["model.5.weight"])
    assert torch.equal(model.network.conv_last.bias, state["model.10.bias"])
    assert model.upscale(_picture(20, 12)).size == (80, 48)


@pytest.mark.parametrize("scale", [2, 3])
def test_old_esrgan_2x_and_3x_pixel_shuffle_files_read_their_factor_and_run(tmp_path, scale):
    """One conv to 4 or 9 times the features, PixelShuffle(2 or 3): checked against the layers run by hand."""
    from torch.nn import functional as F

    state = old_esrgan_pixelshuffle_state(num_feat=8, num_block=0, scale=scale, seed=4)
    path = save(state, tmp_path / f"{scale}x_PixelShuffle.pth", None)
    spec = sniff_upscaler(read_upscaler_state_dict(path), path)
    assert (spec.scale, spec.kwargs["upsampler"], spec.kwargs["up_factor"]) == (scale, "pixelshuffle", scale)
    model = load_model_upscaler(path)
    x = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(5))

    def conv(name: str, feat):
        return F.conv2d(feat, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)

    feat = conv("model.0", x)
    feat = feat + conv("model.1.sub.0", feat)  # no dense blocks: the trunk is the LR conv
    feat = F.leaky_relu(F.pixel_shuffle(conv("model.2", feat), scale), 0.2)
    want = conv("model.7", F.leaky_relu(conv("model.5", feat), 0.2))
    with torch.inference_mode():
        got = model.network(x)
    assert got.shape == (1, 3, 6 * scale, 5 * scale)
    assert torch.allclose(got, want, atol=1e-5)
    assert model.upscale(_picture(20, 12)).size == (20 * scale, 12 * scale)


def test_an_esrgan_with_odd_upsampling_widths_is_refused_when_read(tmp_path):
    state = old_esrgan_pixelshuffle_state(num_feat=8, num_block=0, scale=2)
    state["model.2.weight"], state["model.2.bias"] = torch.zeros(40, 8, 3, 3), torch.zeros(40)
    path = save(state, tmp_path / "5x_odd.pth", None)
    with pytest.raises(LorastudioError, match="5x_odd.pth: is an RRDBNet whose upsampling convs give 5 times its 8"):
        sniff_upscaler(read_upscaler_state_dict(path), path)


# -- SwinIR ----------------------------------------------------------------------------------------


def test_swinir_real_sr_x4_layout_is_read_from_the_keys(tmp_path):
    state = swinir_state(embed_dim=16, depths=(2, 2, 2), heads=(2, 4, 2), window=4, img_size=16)
    path = save(state, tmp_path / SWINIR_4X)  # released inside `params_ema`
    spec = sniff_upscaler(read_upscaler_state_dict(path), path)
    assert (spec.arch, spec.scale) == ("SwinIR", 4)
    kwargs = spec.kwargs
    assert (kwargs["embed_dim"], kwargs["depths"], kwargs["num_heads"]) == (16, (2, 2, 2), (2, 4, 2))
    assert (kwargs["window_size"], kwargs["img_size"], kwargs["mlp_ratio"]) == (4, 16, 2.0)
    assert (kwargs["upsampler"], kwargs["resi_connection"], kwargs["num_feat"]) == ("nearest+conv", "3conv", 16)
    model = load_model_upscaler(path)
    assert _every_key_loaded(model, state)
    assert (model.arch, model.scale, model.multiple) == ("SwinIR", 4, 4)
    assert model.upscale(_picture(30, 22)).size == (120, 88)  # padded to whole windows, then cropped


@pytest.mark.parametrize(
    ("upsampler", "resi", "scale"),
    [("pixelshuffle", "1conv", 2), ("pixelshuffle", "1conv", 3), ("pixelshuffledirect", "1conv", 3), ("", "1conv", 1)],
)
def test_swinir_classical_lightweight_and_denoising_heads(tmp_path, upsampler, resi, scale):
    state = swinir_state(upsampler=upsampler, resi=resi, scale=scale, seed=3)
    model = load_model_upscaler(save(state, tmp_path / f"swinir_x{scale}.safetensors"))
    assert _every_key_loaded(model, state)
    assert (model.scale, model.network.upsampler) == (scale, upsampler)
    assert model.upscale(_picture(18, 10)).size == (18 * scale, 10 * scale)


def test_swinir_with_zero_weights_gives_back_its_mean_colour(tmp_path):
    """The normalisation around the network: (x - mean) in, out + mean back; zero weights leave the mean."""
    state = {k: torch.zeros_like(v) for k, v in swinir_state().items()}
    model = load_model_upscaler(save(state, tmp_path / "zero.pth"))
    out = np.asarray(model.upscale(_picture(8, 8)), dtype=np.float32)
    assert np.allclose(out[0, 0], np.round(np.array([0.4488, 0.4371, 0.4040]) * 255), atol=1)
    assert np.ptp(out.reshape(-1, 3), axis=0).max() == 0


def test_swinir_tiles_blend_closer_to_the_untiled_result_than_hard_cuts(tmp_path):
    model = load_model_upscaler(save(swinir_state(seed=5), tmp_path / "swinir.pth"))
    blended, hard = _tiling_error(model, _picture(48, 48), tile=24, overlap=8)  # tiles at 0, 16, 24 (hard: 0, 24)
    assert blended < 2.0 and blended < hard


def test_a_broken_swinir_file_is_refused_in_one_line_naming_it(tmp_path):
    state = swinir_state()
    state["layers.0.residual_group.blocks.0.attn.relative_position_bias_table"] = torch.zeros(50, 2)
    path = save(state, tmp_path / "odd-swinir.pth")
    with pytest.raises(LorastudioError, match="odd-swinir.pth: is a SwinIR-like network with a 50-row") as err:
        load_model_upscaler(path)
    assert "\n" not in str(err.value)
    del state["layers.0.residual_group.blocks.0.attn.relative_position_bias_table"]
    with pytest.raises(LorastudioError, match="odd-swinir.pth: .*SwinIR and SCUNet"):
        load_model_upscaler(save(state, path))


@pytest.mark.parametrize(("upscale", "unshuffle"), [(2, 2), (4, 2)])
def test_swinir_with_an_unshuffled_first_conv_runs_its_body_at_the_folded_size(tmp_path, upscale, unshuffle):
    """DiffBIR v1's stage-1 layout (`conv_first.1`): the normalised picture is pixel-unshuffled before the first
    conv, so the same weights as a plain SwinIR taking the unshuffled channels give the same output."""
    from lorastudio.generate.upscalers.swinir import SwinIR

    state = swinir_state(upsampler="nearest+conv", resi="1conv", scale=upscale, unshuffle=unshuffle, window=4, img_size=8, seed=14)
    path = save(state, tmp_path / "general_swinir_v1.pth", None)
    spec = sniff_upscaler(read_upscaler_state_dict(path), path)
    assert (spec.arch, spec.scale, spec.channels) == ("SwinIR", upscale // unshuffle, 3)
    assert (spec.kwargs["unshuffle"], spec.kwargs["upscale"], spec.kwargs["in_chans"]) == (unshuffle, upscale, 3)
    model = load_model_upscaler(path)
    assert _every_key_loaded(model, state)
    assert (model.scale, model.multiple) == (upscale // unshuffle, 4 * unshuffle)  # whole windows after the unshuffle

    folded = 3 * unshuffle * unshuffle
    plain = SwinIR(**{**spec.kwargs, "in_chans": folded, "out_chans": 3, "unshuffle": 1})
    plain.load_state_dict({key.replace("conv_first.1.", "conv_first."): value for key, value in state.items()})
    plain.mean = torch.zeros(1, 1, 1, 1)  # the mean is taken off and put back by hand below
    mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
    x = torch.rand(1, 3, 8 * unshuffle, 12 * unshuffle, generator=torch.Generator().manual_seed(15))
    with torch.inference_mode():
        got = model.network(x)
        want = plain.eval()(torch.nn.functional.pixel_unshuffle(x - mean, unshuffle)) + mean
    assert got.shape == (1, 3, x.shape[2] * upscale // unshuffle, x.shape[3] * upscale // unshuffle)
    assert torch.allclose(got, want, atol=1e-5)
    out = model.upscale(_picture(21, 13))  # padded to whole folded windows, then cropped
    assert out.size == (21 * upscale // unshuffle, 13 * upscale // unshuffle)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"upsampler": "", "scale": 1}, "is a SwinIR unshuffling its input by 2 for a 1x reconstruction"),
        ({"upsampler": "nearest+conv", "scale": 2, "unshuffle": 3}, "is a SwinIR unshuffling its input by 3 for a 2x"),
    ],
)
def test_an_unshuffled_swinir_that_cannot_give_a_whole_scale_is_refused_naming_it(tmp_path, changes, says):
    state = swinir_state(**{"resi": "1conv", "unshuffle": 2, **changes})
    path = save(state, tmp_path / "odd_unshuffle.pth", None)
    with pytest.raises(LorastudioError, match=f"odd_unshuffle.pth: {says}") as err:
        sniff_upscaler(read_upscaler_state_dict(path), path)
    assert "\n" not in str(err.value)


def _fake_spandrel(monkeypatch, arch: str, scale: int = 2) -> list:
    """`spandrel` as installed: its loader answers every state dict with a descriptor of `arch`; the calls are kept."""
    import sys
    import types

    calls: list = []

    class Loader:
        def load_from_state_dict(self, state):
            calls.append(set(state))
            return types.SimpleNamespace(scale=scale, architecture=type(arch, (), {})())

    monkeypatch.setitem(sys.modules, "spandrel", types.SimpleNamespace(ModelLoader=Loader))
    return calls


@pytest.mark.parametrize("kind", ["HAT", "Swin2SR"])
def test_hat_and_swin2sr_files_are_not_taken_for_swinir(workspace, monkeypatch, kind):
    """They share SwinIR's key names: told apart by their own keys, refused naming spandrel, run by it when installed."""
    from lorastudio.service.upscalers import list_upscalers

    state = swin_relative_state(kind)
    path = save(state, workspace.upscalers / f"4x_{kind}.pth")
    with pytest.raises(LorastudioError, match=f"4x_{kind}.pth: is a {kind} network, .*pip install --no-deps spandrel") as err:
        sniff_upscaler(read_upscaler_state_dict(path), path)
    assert "\n" not in str(err.value)
    row = next(row for row in list_upscalers(workspace) if row["name"] == f"4x_{kind}")
    assert row["scale"] is None and f"is a {kind} network" in row["error"]  # listed as unusable, not as a SwinIR 2x

    calls = _fake_spandrel(monkeypatch, kind)
    spec = sniff_upscaler(read_upscaler_state_dict(path), path)
    assert (spec.arch, spec.layout, spec.scale) == ("spandrel", kind, 2)
    assert calls == [set(state)]


def test_a_swinir_like_file_that_does_not_fit_is_refused_when_listed_or_handed_to_spandrel(tmp_path, monkeypatch):
    state = swinir_state()
    state["layers.0.residual_group.blocks.0.attn.gate.weight"] = torch.zeros(16)  # a variant's extra weight
    path = save(state, tmp_path / "swinir-variant.pth")
    with pytest.raises(LorastudioError, match=r"swinir-variant.pth: SwinIR weights do not fit \(unexpected .*attn.gate") as err:
        sniff_upscaler(read_upscaler_state_dict(path), path)
    assert "\n" not in str(err.value)
    _fake_spandrel(monkeypatch, "SwinIRVariant", scale=4)
    assert sniff_upscaler(read_upscaler_state_dict(path), path).layout == "SwinIRVariant"


# -- SCUNet ----------------------------------------------------------------------------------------


def test_scunet_layout_is_read_from_the_keys_and_keeps_the_size(tmp_path):
    state = scunet_state(dim=16, config=(2, 1, 1, 2, 1, 1, 2), head_dim=8, window=2)
    path = save(state, tmp_path / "scunet_color_real_gan.pth", None)
    spec = sniff_upscaler(read_upscaler_state_dict(path), path)
    assert (spec.arch, spec.scale) == ("SCUNet", 1)
    assert spec.kwargs == {"in_nc": 3, "config": (2, 1, 1, 2, 1, 1, 2), "dim": 16, "head_dim": 8, "window_size": 2}
    model = load_model_upscaler(path)
    assert _every_key_loaded(model, state)
    picture = _picture(37, 21)  # not a multiple of 16: the network pads and crops itself
    out = model.upscale(picture, tile=0)
    assert out.size == (37, 21)
    assert np.abs(np.asarray(out, dtype=np.float32) - np.asarray(picture, dtype=np.float32)).mean() > 1


def test_scunet_shifted_blocks_mask_the_wrapped_edges(tmp_path):
    """The shifted windows' mask: tokens rolled in from the far edge never attend to the others."""
    from lorastudio.generate.upscalers.windows import shifted_window_regions

    regions = shifted_window_regions(8, 8, 4, 2)
    assert regions.shape == (4, 16, 16)
    assert not regions[0].any()  # the top-left window holds one region
    assert regions[3].sum() > regions[1].sum() > 0  # the corner window holds four


def test_scunet_tiles_blend_closer_to_the_untiled_result_than_hard_cuts(tmp_path):
    model = load_model_upscaler(save(scunet_state(seed=7, std=0.05), tmp_path / "scunet.pth", None))
    blended, hard = _tiling_error(model, _picture(64, 64), tile=32, overlap=8)  # tiles at 0, 24, 32 (hard: 0, 32)
    assert blended < 0.5 and blended < hard / 2


# -- greyscale models (SwinIR 004_grayDN, scunet_gray_*) ------------------------------------------


def _grey_state(kind: str) -> dict:
    if kind == "swinir-denoise":
        return swinir_state(upsampler="", resi="1conv", scale=1, in_chans=1, seed=9)
    if kind == "swinir-x2":
        return swinir_state(upsampler="pixelshuffle", resi="1conv", scale=2, in_chans=1, seed=10)
    return scunet_state(in_nc=1, seed=9, std=0.05)


@pytest.mark.parametrize("kind", ["swinir-denoise", "swinir-x2", "scunet"])
def test_a_greyscale_model_runs_on_the_luminance_and_fills_rgb(tmp_path, kind):
    model = load_model_upscaler(save(_grey_state(kind), tmp_path / f"gray_{kind}.pth", None))
    assert model.channels == 1
    picture = _picture(24, 16)
    out = model.upscale(picture, tile=0)
    scale = model.scale
    assert (out.mode, out.size) == ("RGB", (24 * scale, 16 * scale))
    red, green, blue = (np.asarray(channel, dtype=np.float32) for channel in out.split())
    assert np.array_equal(red, green) and np.array_equal(green, blue)
    luma = np.asarray(picture.convert("L"), dtype=np.float32)
    with torch.inference_mode():
        want = model.network(torch.from_numpy(luma / 255.0)[None, None]).clamp(0, 1)[0, 0].numpy() * 255.0
    assert np.abs(red - want).max() <= 1  # the network's own answer on the L channel
    if scale == 1:
        assert np.abs(red - luma).mean() > 1  # and it did something
    tiled = model.upscale(picture, tile=12, overlap=4)
    assert tiled.mode == "RGB" and tiled.size == out.size


def test_a_greyscale_model_is_listed_and_runs_through_extras(workspace):
    from lorastudio.service.extras import upscale_image
    from lorastudio.service.settings import StudioSettings
    from lorastudio.service.upscalers import find_upscaler

    save(_grey_state("scunet"), workspace.upscalers / "scunet_gray_25.pth", None)
    assert find_upscaler(workspace, "scunet_gray_25")["scale"] == 1
    out = upscale_image(_picture(24, 16), StudioSettings(), scale=2, upscaler="scunet_gray_25", workspace=workspace)
    assert out.size == (48, 32)
    red, green, blue = (np.asarray(channel) for channel in out.split())
    assert np.array_equal(red, green) and np.array_equal(green, blue)


def test_a_model_for_other_than_rgb_or_greyscale_images_is_refused_naming_the_file(tmp_path):
    path = save(swinir_state(upsampler="", resi="1conv", scale=1, in_chans=4), tmp_path / "rgba-denoise.pth")
    with pytest.raises(LorastudioError, match=r"rgba-denoise.pth: a SwinIR for 4-channel images; only RGB \(3\) and grey"):
        sniff_upscaler(read_upscaler_state_dict(path), path)


# -- dtypes: half only where the arch is half-safe --------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "requested", "runs_in"),
    [
        ("swinir", torch.float16, torch.float32),  # spandrel: supports_half=False
        ("swinir", torch.bfloat16, torch.bfloat16),  # spandrel: supports_bfloat16=True
        ("scunet", torch.float16, torch.float16),  # spandrel: supports_half=True
        ("esrgan", torch.float16, torch.float16),
        ("swinir", None, torch.float32),
    ],
)
def test_an_upscaler_runs_in_half_only_where_its_arch_is_half_safe(tmp_path, kind, requested, runs_in):
    """The hires fix asks for the generation's dtype (fp16 on a GPU without bf16): SwinIR keeps fp32 there."""
    from lorastudio.service.upscalers import load_upscaler

    state = {"swinir": swinir_state, "scunet": scunet_state, "esrgan": old_esrgan_pixelshuffle_state}[kind](seed=16)
    path = save(state, tmp_path / f"{kind}.pth", None)
    model = load_upscaler(path, "cpu", requested)
    assert model.dtype == runs_in
    assert model.upscale(_picture(16, 8), tile=0).size == (16 * model.scale, 8 * model.scale)


def test_a_spandrel_network_takes_half_as_its_descriptor_says():
    import types

    from lorastudio.generate.upscalers.loading import UpscalerSpec
    from lorastudio.generate.upscalers.model import upscaler_dtype

    def spec(**flags) -> UpscalerSpec:
        return UpscalerSpec("spandrel", 4.0, {"descriptor": types.SimpleNamespace(**flags)}, "DAT")

    assert upscaler_dtype(spec(supports_half=False, supports_bfloat16=True), torch.float16) == torch.float32
    assert upscaler_dtype(spec(supports_half=False, supports_bfloat16=True), torch.bfloat16) == torch.bfloat16
    assert upscaler_dtype(spec(supports_half=True, supports_bfloat16=False), torch.bfloat16) == torch.float32
    assert upscaler_dtype(spec(supports_half=True, supports_bfloat16=False), torch.float16) == torch.float16


# -- through the service: Extras and the hires fix --------------------------------------------------


def test_extras_run_swinir_and_scunet_found_by_a1111_title_or_stem(workspace):
    from lorastudio.service.extras import upscale_image
    from lorastudio.service.settings import StudioSettings
    from lorastudio.service.upscalers import find_upscaler, list_upscalers

    save(swinir_state(seed=11), workspace.upscalers / SWINIR_4X)
    save(scunet_state(seed=12, std=0.05), workspace.upscalers / "scunet_color_real_gan.pth", None)
    save(old_esrgan_pixelshuffle_state(seed=13), workspace.upscalers / "4x_PixelShuffle.pth", None)
    rows = {row["name"]: row for row in list_upscalers(workspace)}
    assert (rows["SwinIR 4x"]["scale"], rows["ScuNET GAN"]["scale"], rows["4x_PixelShuffle"]["scale"]) == (4, 1, 4)
    assert not any(rows[name]["error"] for name in ("SwinIR 4x", "ScuNET GAN", "4x_PixelShuffle"))
    assert find_upscaler(workspace, SWINIR_4X[: -len(".pth")].lower())["name"] == "SwinIR 4x"
    image, settings = _picture(24, 16), StudioSettings()
    lanczos = np.asarray(upscale_image(image, settings, scale=2, upscaler="Lanczos"), dtype=np.float32)
    for name in ("SwinIR 4x", "scunet_color_real_gan", "4x_PixelShuffle"):
        out = upscale_image(image, settings, scale=2, upscaler=name, workspace=workspace)
        assert out.size == (48, 32), name
        assert np.abs(np.asarray(out, dtype=np.float32) - lanczos).mean() > 1, name


def test_the_hires_fix_runs_swinir_through_the_a1111_api(client, studio):
    from test_api_a1111 import decode

    save(swinir_state(seed=11), studio.workspace.upscalers / SWINIR_4X)
    body = {"prompt": "red", "seed": 7, "steps": 2, "width": 64, "height": 64, "hr_scale": 2, "hr_second_pass_steps": 1}

    def hires(upscaler: str) -> np.ndarray:
        response = client.post("/sdapi/v1/txt2img", json={**body, "enable_hr": True, "hr_upscaler": upscaler, "denoising_strength": 0.3})
        assert response.status_code == 200, response.text
        image = decode(response.json()["images"][0])
        assert image.size == (128, 128)
        return np.asarray(image.convert("RGB"), dtype=np.float32)

    assert np.abs(hires("SwinIR 4x") - hires("Lanczos")).mean() > 1.0


def test_a1111s_saved_downloads_swinir_4x_and_scunet_take_their_titles(workspace, tmp_path):
    """A1111 saves its SwinIR and ScuNET downloads as `SwinIR_4x.pth` and `ScuNET.pth`: a copied models
    folder lists them as `SwinIR 4x` / `ScuNET GAN`, and a recipe's `Hires upscaler: SwinIR 4x` finds the file."""
    from lorastudio.generate.infotext import save_png
    from lorastudio.service.recipes import read_recipe
    from lorastudio.service.upscalers import check_hires_upscaler, find_upscaler, list_upscalers

    save(swinir_state(seed=11), workspace.upscalers / "SwinIR_4x.pth")
    save(scunet_state(seed=12, std=0.05), workspace.upscalers / "ScuNET.pth", None)
    rows = {row["name"]: row for row in list_upscalers(workspace) if row["kind"] == "model"}
    assert (rows["SwinIR 4x"]["model_name"], rows["ScuNET GAN"]["model_name"]) == ("SwinIR_4x", "ScuNET")
    assert find_upscaler(workspace, "scunet gan")["model_name"] == "ScuNET"
    assert find_upscaler(workspace, "ScuNET")["name"] == "ScuNET GAN"  # the stem still works
    text = (
        "a cat\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64, Model: tiny-sd15, Denoising strength: 0.4, "
        "Hires upscale: 2, Hires upscaler: SwinIR 4x"
    )
    image = save_png(Image.new("RGB", (8, 8)), tmp_path / "a1111.png", text)
    form = read_recipe(image, workspace, form=True)
    assert form.config.hires_upscaler == "SwinIR 4x"
    assert "hires_upscaler_missing" not in {note.key for note in form.notes}
    row = check_hires_upscaler(workspace, read_recipe(image, workspace).config)
    assert Path(row["model_path"]).name == "SwinIR_4x.pth" and row["scale"] == 4
