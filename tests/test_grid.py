"""Comparison grids (A1111's X/Y/Z plot): value lists, layout, CJK labels, runs, CLI and API."""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.errors import LorastudioError
from lorastudio.generate.grid import draw_grid
from lorastudio.generate.grid_axes import find_axis, parse_axis_option, parse_values
from lorastudio.generate.infotext import parse_infotext, read_infotext

pytestmark = pytest.mark.usefixtures("one_torch_thread")
_register()
runner = CliRunner()
WHITE = (255, 255, 255)


def arr(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def redness(image: np.ndarray) -> float:
    return float((image[..., 0] - (image[..., 1] + image[..., 2]) / 2).mean())


# --- value lists ----------------------------------------------------------------------------


def test_value_lists_follow_a1111_syntax():
    steps, cfg, weight, sampler = (find_axis(n) for n in ("steps", "CFG Scale", "lora_weight", "Sampler"))
    assert parse_values("1-5", steps) == [1, 2, 3, 4, 5]
    assert parse_values("1-9 (+2)", steps) == [1, 3, 5, 7, 9]
    assert parse_values("10-1 (-3)", steps) == [10, 7, 4, 1]
    assert parse_values("1-10 [4]", steps) == [1, 4, 7, 10]
    assert parse_values("20, 30-40 (+5)", steps) == [20, 30, 35, 40]
    assert parse_values("0.4-1.0 [4]", weight) == pytest.approx([0.4, 0.6, 0.8, 1.0])
    assert parse_values("0.5-1.5 (+0.25)", cfg) == pytest.approx([0.5, 0.75, 1.0, 1.25, 1.5])
    assert parse_values("4, 7.5", cfg) == [4.0, 7.5]
    # strings: CSV quoting keeps commas inside a value; a range means nothing for a string axis
    assert parse_values('Euler a, "DPM++ 2M, Karras", 1-5', sampler) == ["Euler a", "DPM++ 2M, Karras", "1-5"]
    assert parse_values(["Euler", "DDIM"], sampler) == ["Euler", "DDIM"]  # A1111's dropdown lists
    axis, values = parse_axis_option("prompt_sr=红色, 蓝色")
    assert axis.name == "prompt_sr" and parse_values(values, axis) == ["红色", "蓝色"]
    assert parse_values("cat, ", axis) == ["cat", ""]  # A1111: the second cell replaces "cat" by nothing
    assert parse_values("5, ,6", find_axis("steps")) == [5, 6]  # other axes skip empty items
    assert {find_axis(n).name for n in ("Prompt S/R", "prompt-sr", "Checkpoint name", "LoRA checkpoint")} == {
        "prompt_sr",
        "model",
        "checkpoint",
    }
    for bad, axis in (("abc", steps), ("1.5", steps), ("1-5 (-1)", steps), ("", cfg)):
        with pytest.raises(LorastudioError):
            parse_values(bad, axis)
    with pytest.raises(LorastudioError, match="unknown; choose one of"):
        find_axis("colour")
    with pytest.raises(LorastudioError, match="NAME=VALUES"):
        parse_axis_option("0.4,0.7")


# --- drawing --------------------------------------------------------------------------------


def test_grid_puts_each_cell_at_its_place_with_label_bands():
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200), (200, 0, 200)]
    cells = [Image.new("RGB", (48, 40), c) for c in colours]
    grid, layout = draw_grid(cells, 3, ["A: 1", "A: 2", "A: 3"], ["row one", "row two"], margin=2)
    assert layout.left > 0 and layout.top > 0 and layout.caption_h == 0
    assert grid.size == (layout.left + 3 * 48 + 2 * 2, layout.top + 2 * 40 + 2)
    pixels = np.asarray(grid)
    for index, colour in enumerate(colours):
        x0, y0, x1, y1 = layout.cell_box(index % 3, index // 3)
        assert (pixels[y0:y1, x0:x1] == colour).all(), index
    assert (pixels[: layout.top, layout.left :] != WHITE).any()  # column labels drawn
    assert (pixels[layout.top :, : layout.left] != WHITE).any()  # row labels drawn
    # captions add a strip under every cell; no legend means no label bands
    captioned, with_captions = draw_grid(cells, 3, ["1", "2", "3"], ["a", "b"], captions=["x"] * 6)
    assert with_captions.caption_h > 0 and captioned.height == with_captions.top + 2 * (
        40 + with_captions.caption_h
    )
    bare, bare_layout = draw_grid(cells, 3, ["1", "2", "3"], ["a", "b"], draw_legend=False)
    assert bare.size == (3 * 48, 2 * 40) and (bare_layout.left, bare_layout.top) == (0, 0)


def test_long_labels_shrink_and_end_in_an_ellipsis_only_when_lines_run_out(monkeypatch):
    """A1111 draws a long label in a smaller font: a Prompt S/R value is shown whole in a smaller
    font, a caption too long even for that ends in an ellipsis, and a long row label stays in its row."""
    from PIL import ImageDraw

    from lorastudio.generate.fonts import load_font, wrap_text
    from lorastudio.generate.grid import MAX_CAPTION_LINES, MAX_LABEL_LINES, fit_label, label_font_size

    drawn: list[tuple[tuple, str]] = []
    original = ImageDraw.ImageDraw.text

    def text(self, xy, text, *args, **kwargs):
        drawn.append((xy, text))
        return original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
    size = label_font_size(64, 64)
    prompt = "a red apple on a wooden table in the morning light"
    assert len(wrap_text(load_font(size), prompt, 64 - 8)) > MAX_LABEL_LINES  # too long at the grid's size
    label = fit_label(prompt, 64 - 8, size, MAX_LABEL_LINES)
    assert label.font.size < size and len(label.lines) <= MAX_LABEL_LINES and " ".join(label.lines) == prompt
    caption = "validation_loss 0.1234 " * 20
    cells = [Image.new("RGB", (64, 64), "gray")] * 2
    grid, layout = draw_grid(cells, 1, [prompt], [prompt * 4, ""], captions=[caption, None])
    column = [t for (x, y), t in drawn if y < layout.top]
    rows = [t for (x, y), t in drawn if x < layout.left and t]
    captions = [t for (x, y), t in drawn if y >= layout.cell_box(0, 0)[3] and x >= layout.left]
    assert column == label.lines  # the whole value in the smaller font, no word lost
    assert 1 <= len(captions) <= MAX_CAPTION_LINES and captions[-1].endswith("…")
    assert rows[-1].endswith("…") and len(rows) * 8 <= 64  # cut where the row's height runs out
    # the long row label is drawn inside its own row: nothing above it or in the empty second row
    band = np.asarray(grid)[:, : layout.left]
    first = layout.cell_box(0, 0)[1]
    second = layout.cell_box(0, 1)[1]
    assert (band[first : first + 64] != WHITE).any()
    assert not (band[:first] != WHITE).any() and not (band[second:] != WHITE).any()


def test_chinese_labels_are_drawn_as_glyphs_not_boxes():
    from lorastudio.generate.fonts import has_cjk_font

    if not has_cjk_font() and not os.environ.get("CI"):
        pytest.skip("no CJK font here; install fonts-noto-cjk or fonts-wqy-microhei (CI must have one)")
    cells = [Image.new("RGB", (64, 64), "gray")]
    first, layout = draw_grid(cells, 1, ["中"], ["红"])
    second, _ = draw_grid(cells, 1, ["画"], ["蓝"])
    top_a = np.asarray(first)[: layout.top]
    top_b = np.asarray(second)[: layout.top]
    assert (top_a != WHITE).any() and (top_b != WHITE).any()
    # tofu boxes are the same box for every character; real glyphs differ
    assert (top_a != top_b).any()
    left_a = np.asarray(first)[layout.top :, : layout.left]
    left_b = np.asarray(second)[layout.top :, : layout.left]
    assert (left_a != left_b).any()


def test_contact_sheet_draws_chinese_captions_with_the_cjk_font(tmp_path):
    from lorastudio.generate.fonts import has_cjk_font
    from lorastudio.generate.series import contact_sheet

    if not has_cjk_font() and not os.environ.get("CI"):
        pytest.skip("no CJK font here; install fonts-noto-cjk or fonts-wqy-microhei (CI must have one)")
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64), "gray").save(image)
    one = arr(contact_sheet([image], ["红色"], tmp_path / "one.png", cell=128))
    two = arr(contact_sheet([image], ["蓝色"], tmp_path / "two.png", cell=128))
    strip_one, strip_two = one[128:], two[128:]
    assert (strip_one != 255).any() and (strip_one != strip_two).any()


# --- end to end -----------------------------------------------------------------------------


def _grid_cli(*args: str) -> dict:
    result = runner.invoke(
        app, ["grid", "--model", "tiny-sd15", "--width", "64", "--height", "64", *args, "--json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_cli_grid_cells_carry_their_axis_values(tiny_workspace):
    out = _grid_cli(
        "--prompt", "red flower", "--negative", "red", "--steps", "2", "--seed", "-1",
        "--x", "seed=11-12", "--y", "prompt_sr=red,blue", "--z", "steps=2,3", "--include-sub-grids",
    )  # fmt: skip
    cells = out["cells"]
    assert len(cells) == 2 * 2 * 2 and len(out["sub_grids"]) == 2
    for cell in cells:
        info = parse_infotext(read_infotext(cell["image"]))
        colour = cell["values"]["prompt_sr"]
        assert int(info["Seed"]) == cell["values"]["seed"] == [11, 12][cell["x"]]
        assert int(info["Steps"]) == cell["values"]["steps"] == [2, 3][cell["z"]]
        # Prompt S/R replaces in the prompt and the negative prompt
        assert info["Prompt"] == f"{colour} flower" and info["Negative prompt"] == colour
        assert colour == ["red", "blue"][cell["y"]]
    layout = out["layout"]
    sub = Image.open(out["sub_grids"][0])
    assert sub.size == (layout["left"] + 2 * 64, layout["top"] + 2 * 64)
    grid = Image.open(out["grid"])
    assert grid.width == 2 * sub.width and grid.height > sub.height  # Z grids side by side under their labels
    info = parse_infotext(read_infotext(out["grid"]))
    assert info["Script"] == "X/Y/Z plot" and info["X Type"] == "Seed" and info["Y Type"] == "Prompt S/R"
    assert info["Z Type"] == "Steps" and info["Fixed X Values"] == "11, 12" and int(info["Seed"]) == 11
    text = read_infotext(out["grid"])  # the first cell's own line, the script's keys after it
    assert text.startswith(read_infotext(cells[0]["image"]) + ", Script: X/Y/Z plot, X Type: Seed")
    assert "Size: 64x64" in text and "Size-1" not in text
    # one seed for the whole grid when the base seed is -1 and no axis sets it
    again = _grid_cli("--prompt", "green", "--steps", "1", "--seed", "-1", "--x", "cfg=2,6")
    assert len({c["seed"] for c in again["cells"]}) == 1


def test_cli_grid_errors_are_one_line(tiny_workspace):
    for args, message in (
        (["--x", "colour=1,2"], "unknown; choose one of"),
        (["--x", "lora_weight=0.5,1"], "which LoRA?"),
        (["--x", "prompt_sr=purple,red"], "neither the prompt nor"),
        (["--x", "prompt_sr=,red"], "first value is empty"),
        (["--x", "cfg=3", "--y", "cfg=4"], "same axis"),
        (["--x", "cfg=3,abc"], "grid axis CFG Scale (cfg): 'abc' is not a number"),
        (["--x", "sampler=Euler a,Nope"], "Nope"),
        (["--x", "checkpoint=step-1"], "--run RUN"),
        (["--x", "cfg=7,60", "--y", "width=64"], "grid cell CFG Scale: 60, Width: 64: cfg_scale = 60.0: Input should be less than or equal to 50."),
    ):
        result = runner.invoke(
            app, ["grid", "--model", "tiny-sd15", "--prompt", "red", "--steps", "1", *args]
        )
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1


@pytest.fixture
def red_run(tiny_workspace, tmp_path):
    """A tiny LoRA run on red pictures with a checkpoint every 10 steps, scored."""
    from lorastudio.service.training import run_training
    from lorastudio.train.scoring import score_run
    from training_helpers import tiny_train_config, write_images

    data = write_images(tmp_path / "red", [((230, 20 + i, 25), "zqx") for i in range(8)])
    cfg = tiny_train_config(
        data, "zqx",
        "train.steps=20", "train.save_every_steps=10", "train.batch_size=4", "train.learning_rate=1e-2",
        "train.min_snr_gamma=1", "lora.rank=8", "lora.alpha=8", "seed=3", "output.name=reddish",
        "scoring.steps=2", "scoring.prompts=[zqx]",
    )  # fmt: skip
    run_training(tiny_workspace, cfg, progress=False)
    score_run(tiny_workspace, "reddish")
    return tiny_workspace


@pytest.mark.slow
def test_lora_weight_by_checkpoint_grid_from_a_training_run(red_run):
    from lorastudio.adapters.hashing import lora_short_hash

    run_dir = red_run.runs / "reddish"
    scores = json.loads((run_dir / "scores.json").read_text(encoding="utf-8"))
    out = _grid_cli(
        "--prompt", "blue", "--steps", "8", "--cfg", "1", "--run", "reddish",
        "--x", "lora_weight=0, 0.5, 1", "--y", "checkpoint=step-10,final", "--z", "seed=0-2", "--include-sub-grids",
    )  # fmt: skip
    cells, layout = out["cells"], out["layout"]
    assert len(cells) == 3 * 2 * 3 and out["axes"]["y"]["labels"] == [
        "LoRA checkpoint: step-10",
        "LoRA checkpoint: final",
    ]
    grids = [Image.open(p) for p in out["sub_grids"]]
    assert layout["caption_height"] > 0  # scores under the checkpoint cells
    assert all(
        g.size == (layout["left"] + 3 * 64, layout["top"] + 2 * (64 + layout["caption_height"]))
        for g in grids
    )
    step10 = run_dir / "checkpoints" / "step-10" / "reddish.safetensors"
    final = run_dir / "reddish.safetensors"
    for cell in cells:
        info = parse_infotext(read_infotext(cell["image"]))
        weight = [0, 0.5, 1][cell["x"]]
        expected_file = [step10, final][cell["y"]]
        assert f"<lora:reddish:{weight:g}>" in info["Prompt"]
        assert info["Lora hashes"] == f"reddish: {lora_short_hash(expected_file)}"
        # scores of the cell's checkpoint as its caption (final holds step 20's weights)
        row = next(r for r in scores["rows"] if r["step"] == [10, 20][cell["y"]])
        assert cell["caption"].startswith(f"validation_loss {row['scores']['validation_loss']:.4g}")
        # the caption strip under each cell has text exactly when the cell has a caption
        x0 = layout["left"] + cell["x"] * 64
        y0 = layout["top"] + cell["y"] * (64 + layout["caption_height"]) + 64
        strip = np.asarray(grids[cell["z"]])[y0 : y0 + layout["caption_height"], x0 : x0 + 64]
        assert (strip != WHITE).any() == bool(cell["caption"])
    assert lora_short_hash(step10) != lora_short_hash(final)
    # the weight axis reaches the model: weight 0 is the base model whatever the checkpoint,
    # full weight is redder than none (the mean over the three seeds of the final checkpoint), and
    # half weight is a third image (a LoRA trained this hard need not be monotonic in between)
    def image_at(x, y, z):
        return arr(next(c["image"] for c in cells if (c["x"], c["y"], c["z"]) == (x, y, z)))

    for z in range(3):
        assert np.array_equal(image_at(0, 0, z), image_at(0, 1, z))
        assert not np.array_equal(image_at(1, 1, z), image_at(0, 1, z))
        assert not np.array_equal(image_at(1, 1, z), image_at(2, 1, z))
    reds = [np.mean([redness(image_at(x, 1, z)) for z in range(3)]) for x in range(3)]
    assert reds[2] > reds[0] + 5, reds
    # each cell is its own crop of the grid
    for cell in cells:
        x0 = layout["left"] + cell["x"] * 64
        y0 = layout["top"] + cell["y"] * (64 + layout["caption_height"])
        crop = np.asarray(grids[cell["z"]], dtype=np.float64)[y0 : y0 + 64, x0 : x0 + 64]
        assert np.array_equal(crop, arr(cell["image"]))


def test_a1111_xyz_plot_script(client):
    body = {
        "prompt": "red sky",
        "steps": 2,
        "width": 64,
        "height": 64,
        "seed": 7,
        "script_name": "x/y/z plot",
        # A1111 1.7+ positional arguments: CFG Scale by index, Prompt S/R by name
        "script_args": [6, "3, 7", [], "Prompt S/R", "red,blue", [], 0, "", [], True, True, False, False,
                        False, False, False, 0, False],
    }  # fmt: skip
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    info = json.loads(data["info"])
    assert len(data["images"]) == 1 + 4 and len(info["infotexts"]) == 5
    grid = Image.open(io.BytesIO(base64.b64decode(data["images"][0])))
    assert grid.width > 2 * 64 and grid.height > 2 * 64
    grid_info = parse_infotext(info["infotexts"][0])
    assert grid_info["Script"] == "X/Y/Z plot" and grid_info["X Type"] == "CFG Scale"
    assert grid_info["X Values"] == "3, 7" and grid_info["Y Type"] == "Prompt S/R"
    cells = [parse_infotext(t) for t in info["infotexts"][1:]]
    assert [(float(c["CFG scale"]), c["Prompt"]) for c in cells] == [
        (3.0, "red sky"),
        (7.0, "red sky"),
        (3.0, "blue sky"),
        (7.0, "blue sky"),
    ]
    assert all(int(c["Seed"]) == 7 for c in cells)
    # without include_lone_images: the grid alone; an unknown script is one clear error
    body["script_args"] = [
        1,
        "1,2",
        [],
        0,
        "",
        [],
        0,
        "",
        [],
        True,
        False,
        False,
        False,
        0,
        False,
    ]  # A1111 1.6
    alone = client.post("/sdapi/v1/txt2img", json=body).json()
    assert len(alone["images"]) == 1
    assert parse_infotext(json.loads(alone["info"])["infotexts"][0])["X Type"] == "Seed"
    missing = client.post("/sdapi/v1/txt2img", json={**body, "script_name": "prompt matrix"})
    assert missing.status_code == 400 and "not available" in missing.text
    listed = client.get("/sdapi/v1/scripts").json()  # ControlNet beside the plot (tests/test_api_controlnet.py)
    assert "x/y/z plot" in listed["txt2img"] and "x/y/z plot" not in listed["img2img"]
    assert client.get("/sdapi/v1/script-info").json()[0]["name"] == "x/y/z plot"


def test_font_lookup_env_then_system_then_pillow_default_with_one_warning(monkeypatch, caplog, tmp_path):
    from lorastudio.generate import fonts

    def fresh():
        fonts.font_path.cache_clear()
        fonts.load_font.cache_clear()

    monkeypatch.setattr(fonts, "KNOWN_CJK_FONTS", ())
    monkeypatch.setattr(fonts, "_fc_match_cjk", lambda: None)
    try:
        fresh()
        with caplog.at_level("WARNING", logger="lorastudio.fonts"):
            assert fonts.font_path() is None and fonts.font_path() is None
            assert not fonts.has_cjk_font()
        warnings = [r.getMessage() for r in caplog.records if r.name == "lorastudio.fonts"]
        assert len(warnings) == 1 and "fonts-noto-cjk" in warnings[0] and fonts.FONT_ENV in warnings[0]
        font = fonts.load_font(20)  # Pillow's scalable default: Latin text still has a width
        assert fonts.text_width(font, "CFG Scale: 7") > fonts.text_width(font, "CFG")
        fresh()
        monkeypatch.setenv(fonts.FONT_ENV, str(tmp_path / "missing.ttf"))
        with pytest.raises(LorastudioError, match=fonts.FONT_ENV):
            fonts.font_path()
        dejavu = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
        if os.path.isfile(dejavu):
            monkeypatch.setenv(fonts.FONT_ENV, dejavu)
            assert fonts.font_path() == dejavu and not fonts.has_cjk_font()  # DejaVu has no CJK glyphs
    finally:
        monkeypatch.undo()
        fresh()


def test_a1111_script_args_map_to_grid_axes():
    from lorastudio.api.a1111_scripts import grid_request_from_script_args

    # A1111 1.6 order; a Sampler axis takes its values from the dropdown list
    request = grid_request_from_script_args(
        [
            9,
            "",
            ["Euler", "DDIM"],
            "LoRA weight",
            "0.5-1 [2]",
            [],
            0,
            "",
            [],
            False,
            True,
            True,
            True,
            4,
            False,
        ]
    )
    assert (request.x.axis, request.x.values) == ("sampler", ["Euler", "DDIM"])
    assert (request.y.axis, request.y.values) == ("lora_weight", "0.5-1 [2]")
    assert request.z.axis == "nothing" and not request.draw_legend and not request.fixed_seeds
    assert request.margin == 4 and request.include_sub_images and request.include_sub_grids
    assert not request.vary_seeds_x  # A1111 1.6 has none
    # csv_mode: the text wins over the dropdown
    request = grid_request_from_script_args(
        ["Sampler", "Euler a", ["DDIM"], 0, "", [], 0, "", [], True, False, False, False, 0, True]
    )
    assert request.x.values == "Euler a"
    # an axis without choices takes its text, whatever dropdown list a client leaves beside it (A1111)
    request = grid_request_from_script_args(["CFG Scale", "3, 7", ["Euler"], "Prompt order", "red, blue", ["x"]])
    assert (request.x.values, request.y.values) == ("3, 7", "red, blue")
    # A1111 1.7+: vary_seeds_x/y/z after no_fixed_seeds, then margin_size and csv_mode
    request = grid_request_from_script_args(
        [1, "1,2", [], 0, "", [], 0, "", [], True, False, False, False, False, True, False, 6, False]
    )
    assert (request.vary_seeds_x, request.vary_seeds_y, request.vary_seeds_z, request.margin) == (False, True, False, 6)
    with pytest.raises(LorastudioError, match="not supported"):
        grid_request_from_script_args([13, "0, 1", [], 0, "", [], 0, "", []])  # Sigma Churn: not here
    hires = grid_request_from_script_args([10, "", ["Euler", "DDIM"], 0, "", [], 0, "", []])  # Hires sampler
    assert (hires.x.axis, hires.x.values) == ("hires_sampler", ["Euler", "DDIM"])  # from its values dropdown


def test_a_checkpoint_file_brings_its_own_bundled_trigger(tiny_workspace, tmp_path):
    """A grid's checkpoint LoRA uses the trigger bundled in it, not the library's newer embedding."""
    import torch

    from lorastudio.adapters import Embedding, LoraFile, save_embedding
    from lorastudio.adapters.hashing import lora_short_hash
    from lorastudio.adapters.kohya import save_kohya
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.models.families import get_family
    from lorastudio.service.generation import run_generation

    family = get_family("sd15")
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(5)) * 3
    lora = LoraFile(source_format="lorastudio")
    lora.embeddings["zkbund"] = [vectors]
    checkpoint = tmp_path / "step-10" / "bund.safetensors"
    checkpoint.parent.mkdir()
    save_kohya(lora, checkpoint, family=family)
    save_embedding(Embedding("zkbund", [-vectors]), tiny_workspace.embeddings / "zkbund.safetensors", family)
    cfg = GenerateConfig(prompt="zkbund picture <lora:bund:1>", steps=2, seed=2, width=64, height=64)
    pinned = run_generation(tiny_workspace, cfg, lora_files={"bund": checkpoint}, out_dir=tmp_path / "a")
    info = parse_infotext(pinned.images[0].infotext)
    assert info["TI hashes"] == f"zkbund: {lora_short_hash(checkpoint)}"
    assert info["Lora hashes"] == f"bund: {lora_short_hash(checkpoint)}"
    # the same file from loras/: the standalone embedding wins, as in A1111
    (tiny_workspace.loras / "bund.safetensors").write_bytes(checkpoint.read_bytes())
    library = run_generation(tiny_workspace, cfg, out_dir=tmp_path / "b")
    assert parse_infotext(library.images[0].infotext)["TI hashes"] != info["TI hashes"]
    assert np.abs(arr(library.images[0].path) - arr(pinned.images[0].path)).mean() > 0.1


def test_a1111_xyz_plot_is_held_to_the_server_limits(studio, client):
    """A grid is many generations: each cell within --max-steps, the cells within --max-grid-cells."""
    studio.settings.max_grid_cells = 3
    studio.settings.max_steps = 10
    body = {"prompt": "red", "steps": 2, "width": 64, "height": 64, "script_name": "x/y/z plot"}
    too_many = [4, "1, 2", [], 6, "3, 7", [], 0, "", [], True, True, False, False, False, False, False, 0, False]
    response = client.post("/sdapi/v1/txt2img", json={**body, "script_args": too_many})
    assert response.status_code == 422 and "--max-grid-cells" in response.text, response.text
    too_long = [4, "2, 40", [], 0, "", [], 0, "", [], True, True, False, False, False, False, False, 0, False]
    response = client.post("/sdapi/v1/txt2img", json={**body, "script_args": too_long})
    assert response.status_code == 422 and "--max-steps" in response.text, response.text
    assert studio.list_jobs() == []  # nothing was queued


def test_an_interrupted_a1111_xyz_plot_answers_the_grid_of_the_cells_done(client, studio, monkeypatch):
    """As A1111: /interrupt during the second cell ends the plot; the answer holds the grid (the
    cell not rendered left blank), the cell done and the one interrupted as far as it got, and the
    job is recorded cancelled."""
    from lorastudio.generate.pipeline import _Sampler

    steps = 4
    calls = []
    real_predict = _Sampler._predict

    def predict_and_interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == steps + 2:  # during the second cell, from another client
            assert client.post("/sdapi/v1/interrupt").json() == {}
        return real_predict(self, *args, **kwargs)

    monkeypatch.setattr(_Sampler, "_predict", predict_and_interrupt)
    body = {
        "prompt": "red sky",
        "steps": steps,
        "width": 64,
        "height": 64,
        "seed": 7,
        "script_name": "x/y/z plot",
        "script_args": [1, "7,8,9", [], 0, "", [], 0, "", [], True, True, False, False, 0, False],  # Seed; lone images
    }
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert len(data["images"]) == 1 + 2  # the grid, then the cell done and the one interrupted (A1111 keeps it)
    grid = Image.open(io.BytesIO(base64.b64decode(data["images"][0])))
    assert grid.width >= 3 * 64
    assert [int(parse_infotext(t)["Seed"]) for t in json.loads(data["info"])["infotexts"][1:]] == [7, 8]
    assert studio.list_jobs()[0].state == "cancelled"
    assert len(calls) < 2 * steps + 1  # the third cell never ran
