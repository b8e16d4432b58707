"""The weight-based preprocessors: random weights saved under the real file names and key names.

Each network is built with a fixed seed, its state dict written as the original file is laid
out (prefixes, wrappers, stored kernels), then the row's function runs through an
AnnotatorContext. Key names the real files hold are asserted, so a drifting layout fails here.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lorastudio.errors import LorastudioError
from lorastudio.generate.annotators.base import AnnotatorContext
from lorastudio.generate.annotators.networks import NET_ANNOTATORS


def _row(name: str):
    return next(row for row in NET_ANNOTATORS if row.name == name)


def _context(name: str, folder: Path | None, **settings) -> AnnotatorContext:
    return AnnotatorContext(annotator=_row(name), resolution=64, weights_dir=folder, **settings)


def _run(name: str, image: np.ndarray, folder: Path | None, **settings) -> np.ndarray:
    module_name, function_name = _row(name).run.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return function(image, _context(name, folder, **settings))


def _drawing(height: int = 64, width: int = 64) -> np.ndarray:
    """White paper, a dark filled rectangle, a red diagonal and a blue circle."""
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    cv2.rectangle(image, (8, 8), (width // 2, height // 2), (20, 20, 20), -1)
    cv2.line(image, (0, height - 1), (width - 1, 0), (200, 0, 0), 2)
    cv2.circle(image, (3 * width // 4, 3 * height // 4), min(height, width) // 8, (0, 0, 220), 2)
    return image


def _assert_map(result: np.ndarray, height: int, width: int) -> None:
    assert result.dtype == np.uint8
    assert result.shape[:2] == (height, width)
    assert result.ndim == 2 or result.shape[2] == 3


def _save(state: dict, path: Path) -> set[str]:
    torch.save(state, path)
    keys = set(state.get("state_dict", state))
    return keys


# --- HED -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hed_folder(tmp_path_factory) -> Path:
    from lorastudio.generate.annotators.hed import HedNetwork

    torch.manual_seed(0)
    network = HedNetwork()
    with torch.no_grad():
        network.norm.copy_(torch.tensor([120.0, 115.0, 105.0]).reshape(1, 3, 1, 1))
    folder = tmp_path_factory.mktemp("hed")
    keys = _save(network.state_dict(), folder / "ControlNetHED.pth")
    assert {"norm", "block1.convs.0.weight", "block1.convs.1.bias", "block5.convs.2.weight", "block3.projection.weight",
            "block5.projection.bias"} <= keys
    assert len(keys) == 37
    return folder


def test_softedge_hed_runs_on_the_real_layout_and_is_deterministic(hed_folder):
    image = _drawing(64, 96)
    first = _run("softedge_hed", image, hed_folder)
    _assert_map(first, 64, 96)
    assert first.max() > first.min()  # edges differ from flat paper
    np.testing.assert_array_equal(first, _run("softedge_hed", image, hed_folder))


def test_hed_safe_quantises_and_scribble_binarises(hed_folder):
    image = _drawing()
    safe = _run("softedge_hedsafe", image, hed_folder)
    _assert_map(safe, 64, 64)
    assert set(np.unique(safe)) == {0, 127, 255}
    scribble = _run("scribble_hed", image, hed_folder)
    _assert_map(scribble, 64, 64)
    assert set(np.unique(scribble)) == {0, 255}


def test_hed_refuses_a_file_with_a_missing_key(tmp_path, hed_folder):
    state = torch.load(hed_folder / "ControlNetHED.pth", weights_only=True)
    del state["block2.projection.weight"]
    torch.save(state, tmp_path / "ControlNetHED.pth")
    with pytest.raises(LorastudioError, match=r"ControlNetHED\.pth.*block2\.projection\.weight"):
        _run("softedge_hed", _drawing(), tmp_path)


def test_an_extra_key_is_refused_and_a_half_precision_copy_loads(tmp_path, hed_folder, pidinet_folder):
    stored = torch.load(pidinet_folder / "table5_pidinet.pth", weights_only=True)
    stored["state_dict"]["module.block5_1.conv1.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(stored, tmp_path / "table5_pidinet.pth")
    with pytest.raises(LorastudioError, match=r"table5_pidinet\.pth.*1 unexpected \(e\.g\. block5_1\.conv1\.weight\)"):
        _run("softedge_pidinet", _drawing(), tmp_path)
    state = torch.load(hed_folder / "ControlNetHED.pth", weights_only=True)
    torch.save({key: value.half() for key, value in state.items()}, tmp_path / "ControlNetHED.pth")
    half = _run("softedge_hed", _drawing(), tmp_path).astype(int)
    assert np.abs(half - _run("softedge_hed", _drawing(), hed_folder).astype(int)).max() <= 3


def test_missing_weights_name_the_file_and_folder(tmp_path):
    for name, file_name in [("softedge_hed", "ControlNetHED.pth"), ("softedge_pidinet", "table5_pidinet.pth"),
                            ("lineart_realistic", "sk_model.pth"), ("lineart_coarse", "sk_model2.pth"),
                            ("lineart_anime", "netG.pth"), ("lineart_anime_denoise", "erika.pth"),
                            ("mlsd", "mlsd_large_512_fp32.pth")]:
        with pytest.raises(LorastudioError) as error:
            _run(name, _drawing(), tmp_path)
        message = str(error.value)
        assert file_name in message and str(tmp_path) in message and "\n" not in message
        assert _row(name).weights == (file_name,)


# --- PiDiNet ---------------------------------------------------------------------------------


def _pidinet_file_state(seed: int = 0) -> dict:
    """What table5_pidinet.pth holds: {"state_dict": {"module.<key>": ...}}, difference kernels as 3x3."""
    from lorastudio.generate.annotators.pidinet import PidiNetwork

    torch.manual_seed(seed)
    state = PidiNetwork().state_dict()
    for key, value in list(state.items()):
        if value.ndim == 4 and value.shape[2:] == (5, 5):  # radial-difference kernels are stored 3x3
            state[key] = torch.randn(value.shape[0], value.shape[1], 3, 3) * 0.3
    state["classifier.weight"] = state["classifier.weight"] * 200.0  # spread the fused edge around 0.5
    state["classifier.bias"] = torch.tensor([12.5])
    return {"epoch": 10, "state_dict": {f"module.{key}": value for key, value in state.items()}}


@pytest.fixture(scope="module")
def pidinet_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pidinet")
    keys = _save(_pidinet_file_state(), folder / "table5_pidinet.pth")
    assert {"module.init_block.weight", "module.block1_1.conv1.weight", "module.block1_3.conv2.weight",
            "module.block2_1.shortcut.weight", "module.block4_1.shortcut.bias", "module.dilations.0.conv1.bias",
            "module.dilations.3.conv2_4.weight", "module.attentions.2.conv2.weight", "module.conv_reduces.1.conv.weight",
            "module.classifier.weight", "module.classifier.bias"} <= keys
    assert len(keys) == 83
    stored = torch.load(folder / "table5_pidinet.pth", weights_only=True)["state_dict"]
    assert stored["module.block1_2.conv1.weight"].shape == (60, 1, 3, 3)  # radial: 3x3 in the file
    return folder


def test_pidinet_variants_on_the_real_layout(pidinet_folder):
    image = _drawing(64, 96)
    soft = _run("softedge_pidinet", image, pidinet_folder)
    _assert_map(soft, 64, 96)
    assert soft.max() > soft.min()
    np.testing.assert_array_equal(soft, _run("softedge_pidinet", image, pidinet_folder))
    assert set(np.unique(_run("softedge_pidisafe", image, pidinet_folder))) == {0, 127, 255}
    scribble = _run("scribble_pidinet", image, pidinet_folder)
    _assert_map(scribble, 64, 96)
    assert set(np.unique(scribble)) == {0, 255}
    sketch = _run("t2ia_sketch_pidi", image, pidinet_folder)
    assert set(np.unique(sketch)) == {0, 255}
    assert (sketch[soft >= 128] == 255).all() and (sketch[soft < 127] == 0).all()  # cut at 0.5 of the edge


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x[i + dy, j + dx] with zero padding."""
    padded = F.pad(x, (2, 2, 2, 2))
    height, width = x.shape[2:]
    return padded[:, :, 2 + dy : 2 + dy + height, 2 + dx : 2 + dx + width]


def test_pixel_difference_kernels_convert_to_the_same_convolution():
    """Central: sum w_i (x_i - x_centre); radial: sum w_i (x at 2 steps - x at 1 step) per direction."""
    from lorastudio.generate.annotators.pidinet import vanilla_kernel

    torch.manual_seed(1)
    x = torch.randn(1, 1, 9, 11)
    weight = torch.randn(1, 1, 3, 3)
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]

    central = sum(weight[0, 0, i // 3, i % 3] * (_shifted(x, dy, dx) - x) for i, (dy, dx) in enumerate(offsets))
    torch.testing.assert_close(F.conv2d(x, vanilla_kernel(weight, "cd"), padding=1), central)

    flat = weight.reshape(-1)
    directions = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    radial = sum(flat[k + 1] * (_shifted(x, 2 * dy, 2 * dx) - _shifted(x, dy, dx)) for k, (dy, dx) in enumerate(directions))
    torch.testing.assert_close(F.conv2d(x, vanilla_kernel(weight, "rd"), padding=2), radial)

    angular = F.conv2d(x, vanilla_kernel(weight, "ad"), padding=1)
    assert angular.shape == x.shape
    torch.testing.assert_close(vanilla_kernel(weight, "ad").sum(), torch.tensor(0.0), atol=1e-5, rtol=0)


# --- lineart ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lineart_folder(tmp_path_factory) -> Path:
    from lorastudio.generate.annotators.lineart import LineartGenerator

    folder = tmp_path_factory.mktemp("lineart")
    for seed, file_name in [(0, "sk_model.pth"), (1, "sk_model2.pth")]:
        torch.manual_seed(seed)
        keys = _save(LineartGenerator().state_dict(), folder / file_name)
        assert {"model0.1.weight", "model1.0.weight", "model1.3.bias", "model2.0.conv_block.1.weight",
                "model2.2.conv_block.5.bias", "model3.0.weight", "model3.3.weight", "model4.1.weight"} <= keys
        assert len(keys) == 24
    return folder


def test_lineart_realistic_and_coarse(lineart_folder):
    image = _drawing(64, 80)
    realistic = _run("lineart_realistic", image, lineart_folder)
    _assert_map(realistic, 64, 80)
    assert realistic.max() > realistic.min()
    np.testing.assert_array_equal(realistic, _run("lineart_realistic", image, lineart_folder))
    coarse = _run("lineart_coarse", image, lineart_folder)
    _assert_map(coarse, 64, 80)
    assert not np.array_equal(realistic, coarse)  # two files, two networks


# --- lineart anime ---------------------------------------------------------------------------


def test_lineart_anime_on_the_real_layout(tmp_path):
    from lorastudio.generate.annotators.lineart_anime import AnimeUnet

    torch.manual_seed(0)
    state = AnimeUnet().state_dict()
    innermost = "model.model.1" + ".model.3" * 6 + ".model.1.weight"
    assert {"model.model.0.weight", "model.model.0.bias", "model.model.3.weight", "model.model.1.model.1.weight",
            "model.model.1.model.5.bias", innermost} <= set(state)
    assert state[innermost].shape == (512, 512, 4, 4)
    assert len(state) == 32
    torch.save({f"module.{key}": value for key, value in state.items()}, tmp_path / "netG.pth")  # DataParallel prefix
    image = _drawing(64, 64)
    first = _run("lineart_anime", image, tmp_path)
    _assert_map(first, 64, 64)
    np.testing.assert_array_equal(first, _run("lineart_anime", image, tmp_path))


def test_lineart_anime_denoise_on_the_real_layout(tmp_path):
    from lorastudio.generate.annotators.manga_line import MangaLineNetwork

    torch.manual_seed(0)
    network = MangaLineNetwork()
    with torch.no_grad():
        network.conv15.model[2].bias.fill_(150.0)  # a grey page, so the random lines show both ways
    state = network.state_dict()
    assert {"block0.model.0.conv1.model.0.running_mean", "block0.model.0.conv1.model.2.weight",
            "block0.model.0.shortcut.model.0.weight", "block1.model.2.shortcut.model.0.weight",
            "block4.model.11.residual.model.2.bias", "block5.model.0.shortcut.model.0.weight",
            "block5.model.0.conv1.model.2.weight", "block9.model.1.residual.model.0.running_var",
            "conv15.model.2.bias"} <= set(state)
    assert "block1.model.1.shortcut.model.0.weight" not in state  # same shape: a plain sum
    assert len(state) == 707
    torch.save({f"module.{key}": value for key, value in state.items()}, tmp_path / "erika.pth")
    image = _drawing(72, 88)  # not a multiple of 16: padded, then cropped back
    first = _run("lineart_anime_denoise", image, tmp_path)
    _assert_map(first, 72, 88)
    assert first.max() > first.min()
    np.testing.assert_array_equal(first, _run("lineart_anime_denoise", image, tmp_path))


# --- MLSD ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlsd_folder(tmp_path_factory) -> Path:
    from lorastudio.generate.annotators.mlsd import MlsdLarge

    torch.manual_seed(0)
    network = MlsdLarge()
    folder = tmp_path_factory.mktemp("mlsd")
    keys = _save(network.state_dict(), folder / "mlsd_large_512_fp32.pth")
    assert {"backbone.features.0.0.weight", "backbone.features.0.1.running_var", "backbone.features.1.conv.0.0.weight",
            "backbone.features.1.conv.1.weight", "backbone.features.2.conv.0.0.weight",
            "backbone.features.13.conv.3.running_mean", "block15.conv1.0.weight", "block16.conv2.1.bias",
            "block23.conv1.0.weight", "block23.conv3.bias"} <= keys
    assert not any(key.startswith("backbone.features.14") for key in keys)
    return folder


def test_mlsd_draws_lines_from_the_decoded_maps(mlsd_folder):
    image = _drawing(64, 96)
    lines = _run("mlsd", image, mlsd_folder, threshold_a=0.0, threshold_b=0.0)
    _assert_map(lines, 64, 96)
    assert set(np.unique(lines)) <= {0, 255}
    np.testing.assert_array_equal(lines, _run("mlsd", image, mlsd_folder, threshold_a=0.0, threshold_b=0.0))
    assert _run("mlsd", image, mlsd_folder, threshold_a=2.0).max() == 0  # no centre scores above 2


def test_mlsd_sliders_are_the_extensions():
    row = _row("mlsd")
    assert (row.threshold_a.name, row.threshold_a.value, row.threshold_a.min, row.threshold_a.max) == (
        "MLSD Value Threshold", 0.1, 0.01, 2.0)
    assert (row.threshold_b.name, row.threshold_b.value, row.threshold_b.max) == ("MLSD Distance Threshold", 0.1, 20.0)


def test_mlsd_decoding_finds_a_planted_line():
    from lorastudio.generate.annotators.mlsd import decode_lines

    prediction = torch.full((1, 5, 16, 16), -10.0)
    prediction[0, 0, 8, 4] = 10.0  # one confident centre at x=4, y=8 (half-size map)
    prediction[0, 1:5, 8, 4] = torch.tensor([-3.0, 0.0, 3.0, 0.0])  # ends 3 px left and right
    segments = decode_lines(prediction, 0.1, 0.1)
    np.testing.assert_allclose(segments, [[2.0, 16.0, 14.0, 16.0]])
    assert len(decode_lines(prediction, 0.1, 6.5)) == 0  # length 6 is under the distance threshold


# --- network cache ---------------------------------------------------------------------------


def test_a_replaced_weight_file_is_loaded_again(tmp_path, lineart_folder):
    image = _drawing()
    (tmp_path / "sk_model.pth").write_bytes((lineart_folder / "sk_model.pth").read_bytes())
    before = _run("lineart_realistic", image, tmp_path)
    (tmp_path / "sk_model.pth").write_bytes((lineart_folder / "sk_model2.pth").read_bytes())
    stat = (tmp_path / "sk_model.pth").stat()
    os.utime(tmp_path / "sk_model.pth", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    np.testing.assert_array_equal(_run("lineart_realistic", image, tmp_path), _run("lineart_coarse", image, lineart_folder))
    assert not np.array_equal(before, _run("lineart_realistic", image, tmp_path))


# --- depth -----------------------------------------------------------------------------------


def _tiny_dpt(folder: Path) -> None:
    from transformers import DPTConfig, DPTForDepthEstimation

    config = DPTConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, image_size=64,
                       patch_size=8, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 16, 16],
                       fusion_hidden_size=8, head_hidden_size=8)
    torch.manual_seed(0)
    DPTForDepthEstimation(config).save_pretrained(str(folder))


def test_depth_midas_from_a_local_dpt_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_dpt(tmp_path / "dpt-hybrid-midas")
    image = _drawing(64, 96)
    depth = _run("depth_midas", image, tmp_path)
    _assert_map(depth, 64, 96)
    assert depth.min() == 0 and depth.max() == 255  # stretched to the full range
    np.testing.assert_array_equal(depth, _run("depth_midas", image, tmp_path))
    plain = np.full_like(image, 128)
    assert not np.array_equal(depth, _run("depth_midas", plain, tmp_path))  # the map follows the image


def test_normal_midas_from_the_dpt_depth(tmp_path, monkeypatch):
    from lorastudio.generate.annotators import depth

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _tiny_dpt(tmp_path / "dpt-hybrid-midas")
    image = _drawing(64, 96)
    normal = _run("normal_midas", image, tmp_path)
    _assert_map(normal, 64, 96)
    assert normal.shape == (64, 96, 3)
    assert _row("normal_midas").threshold_a.value == 0.4

    # A known depth: nearer to the right on the right half, flat (background) on the left.
    ramp = np.zeros((64, 96), dtype=np.float32)
    ramp[:, 48:] = 10.0 + 100.0 * np.arange(48, dtype=np.float32)
    monkeypatch.setattr(depth, "predict_depth", lambda *_: ramp)
    normal = _run("normal_midas", image, tmp_path, threshold_a=0.05)
    assert (normal[:, :40] == (255, 127, 127)).all()  # background faces the camera (RGB = z, y, x)
    assert (normal[:, 60:90, 2] > 250).all() and (normal[:, 60:90, 1] == 127).all()  # the slope points along x


def test_depth_anything_from_a_local_folder(tmp_path, monkeypatch):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            patch_size=14, image_size=518, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8,
                                 head_hidden_size=8, reassemble_hidden_size=16)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(str(tmp_path / "depth-anything-small-hf"))
    depth = _run("depth_anything", _drawing(64, 96), tmp_path)
    _assert_map(depth, 64, 96)
    assert depth.min() == 0 and depth.max() == 255


def test_depth_folder_is_found_case_insensitively_and_missing_is_one_line(tmp_path):
    with pytest.raises(LorastudioError) as error:
        _run("depth_anything", _drawing(), tmp_path)
    message = str(error.value)
    assert "depth-anything-small-hf" in message and str(tmp_path) in message and "\n" not in message
    with pytest.raises(LorastudioError, match="dpt-hybrid-midas"):
        _run("depth_midas", _drawing(), None)
    from lorastudio.generate.annotators.depth import find_depth_folder

    (tmp_path / "DPT-Hybrid-MiDaS").mkdir()
    (tmp_path / "DPT-Hybrid-MiDaS" / "config.json").write_text("{}")
    assert find_depth_folder("depth_midas", _context("depth_midas", tmp_path)).name == "DPT-Hybrid-MiDaS"
    with pytest.raises(LorastudioError, match="DPT-Hybrid-MiDaS.*not a transformers depth model"):
        _run("depth_midas", _drawing(), tmp_path)  # a config.json that names no model


def test_rows_use_the_extensions_names_and_aliases():
    names = {row.name for row in NET_ANNOTATORS}
    assert {"softedge_hed", "softedge_hedsafe", "scribble_hed", "softedge_pidinet", "softedge_pidisafe",
            "scribble_pidinet", "lineart_realistic", "lineart_coarse", "lineart_anime", "mlsd", "depth_midas",
            "depth_anything"} <= names
    aliases = {alias: row.name for row in NET_ANNOTATORS for alias in row.aliases}
    assert aliases["hed"] == "softedge_hed" and aliases["pidinet_safe"] == "softedge_pidisafe"
    assert aliases["lineart"] == "lineart_realistic" and aliases["depth"] == "depth_midas"
    assert aliases["normal_map"] == "normal_midas" and aliases["pidinet_sketch"] == "t2ia_sketch_pidi"
    for row in NET_ANNOTATORS:
        module_name, function_name = row.run.split(":")
        assert callable(getattr(importlib.import_module(module_name), function_name))


class _Payload:
    """Stands for code a pickled file could carry."""


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path):
    torch.save({"norm": _Payload()}, tmp_path / "ControlNetHED.pth")
    with pytest.raises(LorastudioError, match=r"ControlNetHED\.pth.*weights-only"):
        _run("softedge_hed", _drawing(), tmp_path)


def test_every_row_names_what_it_needs_and_the_table_imports_no_torch():
    import subprocess
    import sys

    from lorastudio.generate.annotators.networks import DEPTH_FOLDERS

    for row in NET_ANNOTATORS:
        assert bool(row.weights) != (row.name in DEPTH_FOLDERS), row.name  # a file, or a folder: exactly one
    code = "import sys, lorastudio.generate.annotators.networks; sys.exit('torch' in sys.modules or 'cv2' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ}, check=False).returncode == 0


# --- through the registry's frame (resize, pad to 64, crop, RGB) ------------------------------


def test_networks_run_through_the_registry_by_name_and_alias(hed_folder, tmp_path, monkeypatch):
    from PIL import Image

    from lorastudio.generate.annotators.registry import annotator_context, find_annotator, run_annotator
    from lorastudio.service.annotate import module_row

    image = Image.fromarray(_drawing(80, 100))
    for name in ("hed", "softedge_hed"):
        result = run_annotator(name, image, annotator_context(name, 96, weights_dir=hed_folder))
        assert result.mode == "RGB" and result.size == (120, 96)  # short side 96, padding cut off
    with pytest.raises(LorastudioError, match=r"table5_pidinet\.pth"):
        run_annotator("pidinet", image, annotator_context("pidinet", 96, weights_dir=hed_folder))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    row = module_row(find_annotator("depth"), tmp_path)
    assert row["ready"] is False and "dpt-hybrid-midas" in row["needs"]
    _tiny_dpt(tmp_path / "dpt-hybrid-midas")
    assert module_row(find_annotator("depth"), tmp_path)["ready"] is True
    depth = run_annotator("depth", image, annotator_context("depth", 64, weights_dir=tmp_path))
    assert depth.mode == "RGB" and depth.size == (80, 64)
    assert np.asarray(depth).max() == 255
