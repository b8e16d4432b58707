"""Preprocessors without weights: each on a drawn image, edges where the drawing has them, the A1111 frame."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.errors import LorastudioError
from lorastudio.generate.annotators.builtin import inpaint_hint
from lorastudio.generate.annotators.registry import (
    BUILTIN_ANNOTATORS,
    annotator_context,
    find_annotator,
    list_annotators,
    run_annotator,
)
from lorastudio.service.annotate import detect_map, list_modules

LINE = (100, 40, 100, 220)  # a vertical black line, 4 px wide, at x=100 of a 256x256 white image


@pytest.fixture(scope="module")
def drawing() -> Image.Image:
    """White ground, a black vertical line and a black square outline; large flat areas elsewhere."""
    image = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(image)
    draw.line(LINE, fill="black", width=4)
    draw.rectangle((160, 60, 230, 130), outline="black", width=3)
    return image


def _map(name: str, image: Image.Image, resolution: int = 256, **kwargs) -> np.ndarray:
    ctx = annotator_context(name, resolution=resolution, **kwargs)
    result = run_annotator(name, image, ctx)
    assert result.mode == "RGB"
    return np.asarray(result)


FLAT = (slice(20, 60), slice(20, 70))  # rows, cols far from every line
NEAR_LINE = (slice(80, 180), slice(94, 108))


def test_canny_marks_the_lines_and_nothing_on_flat_ground(drawing):
    edges = _map("canny", drawing)
    assert edges.shape == (256, 256, 3)
    assert edges[FLAT].max() == 0
    assert edges[NEAR_LINE].max() == 255
    # a high low-threshold above every gradient of the drawing leaves nothing
    assert _map("canny", drawing.convert("L").point(lambda v: 200 + v // 10), threshold_a=250, threshold_b=255).max() == 0


def test_lineart_standard_gives_white_lines_on_black(drawing):
    lines = _map("lineart_standard", drawing)
    assert lines[FLAT].max() == 0
    assert lines[120, 100].min() > 100  # on the line
    assert (lines == _map("lineart_standard (from white bg & black line)", drawing)).all()


def test_threshold_and_invert(drawing):
    binary = _map("threshold", drawing)
    assert set(np.unique(binary)) == {0, 255}
    assert binary[120, 100].max() == 0 and binary[FLAT].min() == 255
    assert _map("threshold", drawing, threshold_a=255).max() == 0  # nothing is brighter than 255
    inverted = _map("invert", drawing)
    assert (inverted == 255 - np.asarray(drawing)).all()


def test_blur_softens_the_line_more_with_a_larger_sigma(drawing):
    light = _map("blur_gaussian", drawing, threshold_a=1.0)
    heavy = _map("blur_gaussian", drawing, threshold_a=8.0)
    assert light[FLAT].min() == 255
    assert 0 < heavy[120, 100, 0] < 255
    assert heavy[120, 100, 0] > light[120, 100, 0]  # more of the white ground spread into the line


def test_tile_resample_shrinks_by_the_rate_and_colorfix_keeps_the_image(drawing):
    assert _map("tile_resample", drawing, threshold_a=2.0).shape == (128, 128, 3)
    assert (_map("tile_resample", drawing, threshold_a=1.0) == np.asarray(drawing)).all()
    assert (_map("tile_colorfix+sharp", drawing) == np.asarray(drawing)).all()


def test_shuffle_is_reproducible_by_seed_and_moves_the_content(drawing):
    first = _map("shuffle", drawing, seed=1)
    again = _map("shuffle", drawing, seed=1)
    other = _map("shuffle", drawing, seed=2)
    assert (first == again).all()
    assert (first != other).any()
    assert (first != np.asarray(drawing)).any()
    assert first.min() == 0 and first.max() == 255  # the drawing's own pixels, moved


def test_scribble_xdog_marks_dark_lines_and_the_threshold_drops_faint_ones(drawing):
    scribble = _map("scribble_xdog", drawing)
    assert scribble[FLAT].max() == 0
    assert scribble[120, 100].min() == 255
    faint = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(faint).line(LINE, fill=(225, 225, 225), width=4)
    assert _map("scribble_xdog", faint, threshold_a=8)[120, 100].min() == 255
    assert _map("scribble_xdog", faint, threshold_a=64).max() == 0


def test_inpaint_blacks_out_the_masked_pixels(drawing):
    rgba = drawing.convert("RGBA")
    alpha = np.zeros((256, 256), dtype=np.uint8)
    alpha[:50, :50] = 255
    rgba.putalpha(Image.fromarray(alpha))
    result = _map("inpaint", rgba)
    assert result[:50, :50].max() == 0
    assert (result[60:, 60:] == np.asarray(drawing)[60:, 60:]).all()
    assert (_map("inpaint_only", drawing) == np.asarray(drawing)).all()  # no alpha: nothing masked
    hint = inpaint_hint(np.asarray(drawing), alpha)
    assert hint[0, 0, 0] == -1.0 and hint[100, 60, 0] == 1.0


def test_frame_short_side_is_the_resolution_and_none_keeps_the_image(drawing):
    wide = drawing.resize((300, 200))
    assert _map("canny", wide, resolution=128).shape == (128, 192, 3)
    assert _map("canny", wide, resolution=100).shape == (100, 150, 3)  # padded to 64 inside, cut back after
    assert run_annotator("none", wide, annotator_context("none")) is not wide
    assert (np.asarray(run_annotator("none", wide, annotator_context("none"))) == np.asarray(wide)).all()
    assert annotator_context("canny", resolution=-1).resolution == 512  # A1111's "default"
    with pytest.raises(LorastudioError, match="processor_res: 32"):
        annotator_context("canny", resolution=32)


def test_names_aliases_defaults_and_unknown_modules():
    assert find_annotator("INVERT").name == "invert (from white bg & black line)"
    assert find_annotator("inpaint").name == "inpaint_global_harmonious"
    assert find_annotator("Lineart_Standard").name.startswith("lineart_standard")
    ctx = annotator_context("canny", threshold_a=-1, threshold_b=150)  # A1111 clients send -1 for "default"
    assert (ctx.value_a(), ctx.value_b()) == (100, 150)
    with pytest.raises(LorastudioError) as error:
        find_annotator("cany")
    message = str(error.value)
    assert "'cany'" in message and "canny" in message and "openpose_full" in message and "\n" not in message
    names = [row.name for row in list_annotators()]
    assert len(names) == len(set(names))
    assert [row.name for row in BUILTIN_ANNOTATORS] == names[: len(BUILTIN_ANNOTATORS)]


def test_detect_map_and_module_listing(workspace, drawing):
    result = detect_map(workspace, "canny", drawing, resolution=128)
    assert result.size == (128, 128)
    rows = {row["name"]: row for row in list_modules(workspace)}
    assert rows["canny"]["sliders"][1] == {"name": "Canny Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1.0}
    assert rows["canny"]["ready"] is True
    assert rows["openpose_full"]["missing_weights"] == ["body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"]
    workspace.annotators.mkdir(parents=True, exist_ok=True)
    (workspace.annotators / "body_pose_model.pth").write_bytes(b"x")
    assert list_modules(workspace)[[r["name"] for r in list_modules(workspace)].index("openpose")]["ready"] is True


def test_cli_control_detect_and_modules(workspace, drawing, tmp_path, monkeypatch):
    monkeypatch.delenv("LORASTUDIO_MEDIAPIPE_PYTHON", raising=False)
    source = tmp_path / "drawing.png"
    drawing.save(source)
    out = tmp_path / "maps" / "edges.png"
    _register()
    runner = CliRunner()
    done = runner.invoke(app, ["control", "detect", "--module", "canny", str(source), "--out", str(out),
                               "--resolution", "128", "--threshold-a", "50"])
    assert done.exit_code == 0, done.output
    assert Image.open(out).size == (128, 128)
    assert np.asarray(Image.open(out)).max() == 255
    as_json = runner.invoke(app, ["control", "detect", "-m", "canny", str(source), "--out", str(out), "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["map"] == str(out)

    done = runner.invoke(app, ["control", "detect", "--module", "openpose", str(source), "--out", str(out)])
    assert done.exit_code == 2
    assert "body_pose_model.pth" in done.output and "annotators" in done.output

    done = runner.invoke(app, ["control", "detect", "--module", "nope", str(source)])
    assert done.exit_code == 2 and "scribble_xdog" in done.output

    done = runner.invoke(app, ["control", "modules", "--json"])
    assert done.exit_code == 0, done.output
    rows = {row["name"]: row for row in json.loads(done.output)["modules"]}
    assert rows["openpose"]["ready"] is False and rows["shuffle"]["ready"] is True
    assert rows["mediapipe_openpose"]["ready"] is False and "LORASTUDIO_MEDIAPIPE_PYTHON" in rows["mediapipe_openpose"]["needs"]
    done = runner.invoke(app, ["control", "modules"])
    assert "needs body_pose_model.pth" in done.output and "Canny Low Threshold=100" in done.output
