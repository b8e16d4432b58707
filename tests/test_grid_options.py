"""A1111's X/Y/Z plot options and axes beyond the basics (tests/test_grid.py): Include Sub Images and
Sub Grids, Vary seeds, the Hires upscaler, VAE, Eta, Styles and Prompt order axes, and the web UI
panel's values typed as text (every axis type) or picked from its dropdown."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.grid_axes import AXES, find_axis, parse_values
from lorastudio.generate.infotext import parse_infotext, read_infotext

pytestmark = pytest.mark.usefixtures("one_torch_thread")
_register()
runner = CliRunner()


def _grid_cli(*args: str) -> tuple[str, dict]:
    """(the text output, the --json object) of `lorastudio grid ARGS` on the tiny model at 64x64."""
    base = ["grid", "--model", "tiny-sd15", "--width", "64", "--height", "64", "--steps", "1", *args]
    text = runner.invoke(app, base)
    assert text.exit_code == 0, text.output
    result = runner.invoke(app, [*base, "--json"])
    assert result.exit_code == 0, result.output
    return text.stdout, json.loads(result.stdout.strip().splitlines()[-1])


def test_text_ranges_parse_like_a1111s_examples():
    """The examples of A1111's X/Y/Z plot documentation, for int and float axes."""
    steps, cfg = find_axis("Steps"), find_axis("CFG Scale")
    assert parse_values("1-5", steps) == [1, 2, 3, 4, 5]
    assert parse_values("1-5 (+2)", steps) == [1, 3, 5]
    assert parse_values("10-5 (-3)", steps) == [10, 7]
    assert parse_values("1-3 (+0.5)", cfg) == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert parse_values("1-10 [5]", steps) == [1, 3, 5, 7, 10]  # evenly spaced, whole numbers cut down
    assert parse_values("0.0-1.0 [6]", cfg) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert parse_values("-2-2", steps) == [-2, -1, 0, 1, 2]
    sampler = find_axis("Sampler")
    assert parse_values('Euler a, "DPM++ 2M, odd", DDIM', sampler) == ["Euler a", "DPM++ 2M, odd", "DDIM"]


# --- the web UI panel ------------------------------------------------------------------------


def _panel():
    """A GridPanel whose controls are plain keys, as a Gradio handler's `form` dict is keyed."""
    from lorastudio.ui.grid_panel import _CHECKBOXES, GridPanel

    panel = GridPanel()
    panel.axes = {a: (f"{a}_type", f"{a}_values", f"{a}_picks") for a in "xyz"}
    panel.options = {name: name for name in (*_CHECKBOXES, "margin", "lora", "run")}
    return panel


def _form(**axes) -> dict:
    form = {"draw_legend": True, "keep_seeds": False, "include_sub_images": True, "include_sub_grids": False,
            "vary_seeds_x": False, "vary_seeds_y": False, "vary_seeds_z": False, "margin": 2, "lora": "", "run": ""}  # fmt: skip
    for letter in "xyz":
        kind, text, picks = axes.get(letter, ("nothing", "", []))
        form.update({f"{letter}_type": kind, f"{letter}_values": text, f"{letter}_picks": picks})
    return form


# every axis the service has, as text, and what its cells' requests must hold
TYPED = {
    "seed": ("3-5", "seed", [3, 4, 5]),
    "subseed": ("7, 9", "subseed", [7, 9]),
    "subseed_strength": ("0-1 [3]", "subseed_strength", [0.0, 0.5, 1.0]),
    "steps": ("2-6 (+2)", "steps", [2, 4, 6]),
    "cfg": ("4.5-6 (+0.75)", "cfg_scale", [4.5, 5.25, 6.0]),
    "prompt_sr": ('red, "blue, dark"', "prompt", ["red flower", "blue, dark flower"]),
    "prompt_order": ("red, flower", "prompt", ["red flower", "flower red"]),
    "sampler": ('Euler a, "DPM++ 2M Karras"', "sampler", ["Euler a", "DPM++ 2M Karras"]),
    "schedule": ("Automatic, Karras", "schedule", ["Automatic", "Karras"]),
    "eta": ("0, 0.5", "eta", [0.0, 0.5]),
    "model": ("tiny-sd15, tiny-sd2", "model", ["tiny-sd15", "tiny-sd2"]),
    "vae": ("Automatic, None", "vae", [None, None]),
    "styles": ('ink, "ink, sharp"', "prompt", ["ink wash, red flower", "ink wash, red flower, sharp focus"]),
    "lora_weight": ("0.5-1 [2]", "prompt", ["red flower <lora:mine:0.5>", "red flower <lora:mine:1>"]),
    "width": ("64-128 (+64)", "width", [64, 128]),
    "height": ("64, 96", "height", [64, 96]),
    "size": ("64x96, 96x64", "width", [64, 96]),
    "clip_skip": ("1-2", "clip_skip", [1, 2]),
    "hires_steps": ("1-3 [2]", "hires_steps", [1, 3]),
    "hires_strength": ("0.2-0.6 (+0.2)", "hires_strength", [0.2, 0.4, 0.6]),
    "hires_upscaler": ("latent, lanczos", "hires_upscaler", ["Latent", "Lanczos"]),
    "rng": ("gpu, NV", "rng", ["GPU", "NV"]),
    "hires_sampler": ('Euler, "DPM++ 2M Karras"', "hires_sampler", ["Euler", "DPM++ 2M Karras"]),
    "hires_schedule": ("Automatic, karras", "hires_schedule", ["Automatic", "karras"]),
    "extra_noise": ("0-0.2 [3]", "extra_noise", [0.0, 0.1, 0.2]),
    "initial_noise_multiplier": ("0.5, 1.2", "initial_noise_multiplier", [0.5, 1.2]),  # over a picture
    "unipc_order": ("1-3", "unipc_order", [1, 2, 3]),
}


def test_the_panels_text_values_work_for_every_axis_type(tiny_workspace):
    """The UI handler turns typed values (ranges, quotes) of any axis into the cells' requests."""
    from lorastudio.service.grid_plan import plan_cells
    from lorastudio.ui.grid_panel import grid_request_from_form

    (tiny_workspace.root / "styles.csv").write_text(
        'name,prompt,negative_prompt\nink,"ink wash, {prompt}",""\nsharp,"sharp focus",""\n', encoding="utf-8"
    )
    base = GenerateConfig(prompt="red flower", steps=4, seed=11, hires_scale=2, width=64, height=64)  # UniPC Order < 4
    untested = set(AXES) - set(TYPED) - {"nothing", "checkpoint"}  # a run's checkpoints: test_grid.py
    assert not untested, f"add a typed example for {untested}"
    panel = _panel()
    for axis, (text, field, expected) in TYPED.items():
        form = _form(x=(axis, text, []))
        form["lora"] = "mine" if axis == "lora_weight" else ""
        request = grid_request_from_form(panel, form)
        assert request.include_sub_images and request.margin == 2 and not request.include_sub_grids
        pictured = base.model_copy(update={"init_image": "in.png"})  # img2img's own setting needs a picture
        cells, _, _ = plan_cells(tiny_workspace, pictured if axis == "initial_noise_multiplier" else base, request)
        got = [getattr(c.config, field) for c in cells]
        assert got == pytest.approx(expected) if isinstance(expected[0], float) else got == expected, axis
    # A1111's Denoising over a picture is the img2img strength (there is no hires pass then)
    pictured = base.model_copy(update={"init_image": "in.png", "hires_scale": 1.0})
    cells, _, _ = plan_cells(tiny_workspace, pictured, grid_request_from_form(panel, _form(x=("Denoising", "0.3, 0.6", []))))
    assert [c.config.strength for c in cells] == [0.3, 0.6] and {c.config.hires_strength for c in cells} == {0.5}
    # a typed value the axis refuses is one clear error, as on the CLI
    with pytest.raises(LorastudioError, match="not a whole number"):
        plan_cells(tiny_workspace, base, grid_request_from_form(panel, _form(x=("steps", "1-3 (+0.5)", []))))
    with pytest.raises(LorastudioError, match="upscaler 'nope'"):
        plan_cells(tiny_workspace, base, grid_request_from_form(panel, _form(y=("hires_upscaler", "nope", []))))


def test_the_values_dropdown_writes_its_picks_into_the_text(tiny_workspace):
    """A1111's dropdown for axes with choices: the picks go into the text, which stays what runs;
    values typed that are not choices (an alias) stay."""
    from lorastudio.service.choices import grid_axis_value_choices, picks_from_text, text_with_picks
    from lorastudio.ui.grid_panel import grid_request_from_form

    samplers = grid_axis_value_choices(tiny_workspace, "Sampler")
    assert "Euler a" in samplers and "DDIM" in samplers
    assert grid_axis_value_choices(tiny_workspace, "cfg") == []  # numbers are typed
    assert "tiny-sd15" in grid_axis_value_choices(tiny_workspace, "Checkpoint name")
    assert grid_axis_value_choices(tiny_workspace, "hires_upscaler")[0] == "Latent"
    text = "Euler a, euler-alias"
    assert picks_from_text(text, samplers) == ["Euler a"]
    assert text_with_picks(text, ["Euler a", "DDIM"], samplers) == "Euler a, euler-alias, DDIM"
    assert text_with_picks(text, ["DDIM"], samplers) == "euler-alias, DDIM"  # "Euler a" un-picked
    assert text_with_picks("", ["DPM++ 2M, odd"], ["DPM++ 2M, odd"]) == '"DPM++ 2M, odd"'
    panel = _panel()
    typed = grid_request_from_form(panel, _form(x=("sampler", "DDIM", ["Euler"])))
    assert typed.x.values == "DDIM"
    stale = grid_request_from_form(panel, _form(x=("sampler", "", ["Euler", "DDIM"])))
    assert stale.x.values == ""  # the text is the only thing that runs: cleared, the stale picks are not values


def test_the_values_dropdown_follows_the_text_when_it_is_edited(tiny_workspace):
    """Pick DDIM then Euler, edit the text to `DDIM`, pick LMS: the text says `DDIM, LMS` (the
    dropdown was re-synced from the edited text, so Euler does not come back)."""
    from types import SimpleNamespace

    from lorastudio.ui.grid_panel import picked_text, synced_picks

    ctx = SimpleNamespace(studio=SimpleNamespace(workspace=tiny_workspace))
    text = picked_text(ctx, "sampler", picked_text(ctx, "sampler", "", ["DDIM"]), ["DDIM", "Euler"])
    assert text == "DDIM, Euler" and synced_picks(ctx, "sampler", text)["value"] == ["DDIM", "Euler"]
    picks = synced_picks(ctx, "sampler", "DDIM")["value"]  # the user edits the text
    assert picks == ["DDIM"]
    assert picked_text(ctx, "sampler", "DDIM", [*picks, "LMS"]) == "DDIM, LMS"
    assert synced_picks(ctx, "sampler", "")["value"] == []


def test_png_info_of_a_grid_image_restores_the_xyz_panel(workspace, tmp_path):
    """A1111's script pastes a grid's axes back: type, values text, the values dropdown's picks and
    "Keep -1 for seeds" (no `Fixed X Values` written); an axis type this studio lacks is noted."""
    from types import SimpleNamespace

    from lorastudio.generate.infotext import save_png
    from lorastudio.service.recipes import read_recipe
    from lorastudio.ui.tabs.png_info import grid_panel_updates

    text = ("a cat\nSteps: 5, Sampler: Euler, Seed: 1, Size: 64x64, Script: X/Y/Z plot, X Type: CFG Scale, "
            'X Values: "3-7 [3]", Y Type: Sampler, Y Values: "DDIM, Euler, odd", Z Type: Seed, Z Values: "1-2"')  # fmt: skip
    image = save_png(Image.new("RGB", (8, 8)), tmp_path / "grid.png", text)
    recipe = read_recipe(image, workspace, model="tiny-sd15", form=True)
    assert recipe.grid == {"x": {"axis": "cfg", "values": "3-7 [3]"}, "y": {"axis": "sampler", "values": "DDIM, Euler, odd"},
                           "z": {"axis": "seed", "values": "1-2"}, "keep_seeds": True}  # fmt: skip
    updates = grid_panel_updates(SimpleNamespace(studio=SimpleNamespace(workspace=workspace)), recipe.grid)
    (x_type, x_text, x_picks), (y_type, y_text, y_picks) = updates[0:3], updates[3:6]
    assert (x_type["value"], x_text["value"], x_picks["visible"]) == ("cfg", "3-7 [3]", False)
    assert (y_type["value"], y_text["value"]) == ("sampler", "DDIM, Euler, odd")
    assert (y_picks["value"], y_picks["visible"]) == (["DDIM", "Euler"], True)
    assert updates[-1]["value"] is True  # Keep -1 for seeds
    fixed = text.replace("Z Type: Seed", "Z Type: Seed, Fixed Z Values: \"1, 2\"").replace("Y Type: Sampler", "Y Type: Refiner")
    recipe = read_recipe(save_png(Image.new("RGB", (8, 8)), tmp_path / "fixed.png", fixed), workspace, model="tiny-sd15", form=True)
    assert recipe.grid["keep_seeds"] is False and recipe.grid["y"] == {"axis": "nothing", "values": ""}
    assert "grid_axis_unknown" in {n.key for n in recipe.notes}
    plain = read_recipe(save_png(Image.new("RGB", (8, 8)), tmp_path / "plain.png", "a cat\nSteps: 5, Seed: 1"),
                        workspace, model="tiny-sd15", form=True)  # fmt: skip
    assert plain.grid is None and grid_panel_updates(None, None)[0] == {"__type__": "update"}


# --- options through the CLI and the API -----------------------------------------------------


@pytest.mark.slow
def test_cli_include_sub_images_and_sub_grids(tiny_workspace, tmp_path):
    """Cells are always saved (with infotext and recipe); the flags add them, and each Z value's
    grid, to what the command lists; a sub-grid is written only with --include-sub-grids (A1111)."""
    args = ["--prompt", "red", "--seed", "5", "--x", "cfg=2,6", "--z", "seed=1,2"]
    text, plain = _grid_cli(*args, "--out", str(tmp_path / "plain"))
    assert plain["images"] == [plain["grid"]] and plain["sub_grids"] == []
    assert "cell:" not in text and not list((tmp_path / "plain").glob("grid-*-z*.png"))
    assert len(list((tmp_path / "plain").glob("*.yaml"))) >= 4  # the four cells' recipes anyway
    text, full = _grid_cli(*args, "--include-sub-images", "--include-sub-grids", "--out", str(tmp_path / "full"))
    cells = [c["image"] for c in full["cells"]]
    assert len(cells) == 4 and len(full["sub_grids"]) == 2
    assert full["images"] == [full["grid"], *full["sub_grids"], *cells]
    listed = [line.split(": ", 1)[1] for line in text.splitlines() if line.strip().startswith("cell: ")]
    assert len(listed) == 4 and all(Image.open(path).size == (64, 64) for path in listed)
    assert text.count("sub-grid: ") == 2
    for path in full["sub_grids"]:
        assert Image.open(path).width >= 2 * 64
    # Vary seeds for X: each column the next seed, on top of the Z axis's seed
    _, varied = _grid_cli(*args, "--vary-seeds", "x", "--out", str(tmp_path / "vary"))
    assert [c["seed"] for c in varied["cells"]] == [1, 2, 2, 3]
    bad = runner.invoke(app, ["grid", "--x", "cfg=2,6", "--vary-seeds", "w"])
    assert bad.exit_code == 2 and "--vary-seeds" in bad.output


@pytest.mark.slow
def test_the_hires_upscaler_axis_renders_each_upscaler(tiny_workspace, tmp_path):
    """Two upscalers of the hires fix: cells of the hires size, with different pixels, each
    infotext naming its upscaler by A1111's title; with the hires fix off, a clear refusal."""
    _, out = _grid_cli(
        "--prompt", "red", "--seed", "3", "--hires-scale", "2", "--hires-steps", "1",
        "--x", "Hires upscaler=latent (nearest), Lanczos", "--out", str(tmp_path),
    )  # fmt: skip
    images = [np.asarray(Image.open(c["image"]).convert("RGB"), dtype=np.float64) for c in out["cells"]]
    assert all(image.shape == (128, 128, 3) for image in images)
    assert np.abs(images[0] - images[1]).mean() > 1.0
    names = [parse_infotext(read_infotext(c["image"]))["Hires upscaler"] for c in out["cells"]]
    assert names == ["Latent (nearest)", "Lanczos"]
    assert out["axes"]["x"]["labels"] == ["Hires upscaler: Latent (nearest)", "Hires upscaler: Lanczos"]
    off = runner.invoke(app, ["grid", "--model", "tiny-sd15", "--prompt", "red", "--x", "hires_upscaler=Latent,Lanczos"])
    assert off.exit_code == 2 and "hires fix is off" in off.output
    # the VAE axis: Automatic is the model's own, a name a VAE in models/ (recorded in the infotext)
    vae = tiny_workspace.models / "tiny-vae"
    vae.symlink_to((tiny_workspace.models / "tiny-sd15").resolve() / "vae", target_is_directory=True)
    _, out = _grid_cli("--prompt", "red", "--x", "VAE=Automatic, tiny-vae", "--out", str(tmp_path / "vae"))
    infos = [parse_infotext(read_infotext(c["image"])) for c in out["cells"]]
    assert "VAE" not in infos[0] and infos[1]["VAE"] == "tiny-vae"


@pytest.mark.slow
def test_a1111_xyz_plot_answers_sub_grids_and_varies_seeds(client):
    """A1111 1.7+ script_args: Include Sub Grids adds one grid per Z value after the grid; Vary
    seeds for X gives each column the next seed; Hires upscaler by name."""
    body = {"prompt": "red", "steps": 1, "width": 64, "height": 64, "seed": 40, "script_name": "x/y/z plot",
            "enable_hr": True, "hr_scale": 2, "hr_second_pass_steps": 1}  # fmt: skip
    args = ["Hires upscaler", "Latent, Nearest", [], 0, "", [], 4, "1, 2", [],
            True, True, True, False, True, False, False, 0, False]  # fmt: skip
    data = client.post("/sdapi/v1/txt2img", json={**body, "script_args": args}).json()
    assert len(data["images"]) == 1 + 2 + 4, data.get("detail")  # grid, two sub-grids (Steps 1, 2), cells
    info = json.loads(data["info"])
    sub = Image.open(io.BytesIO(base64.b64decode(data["images"][1])))
    assert sub.width >= 2 * 128 and sub.height >= 128
    cells = [parse_infotext(t) for t in info["infotexts"][3:]]
    assert [int(c["Seed"]) for c in cells] == [40, 41, 40, 41]
    # each sub-grid its own infotext: its first cell's (Steps of its Z value) and the X axis, no Z keys
    main, *subs = [parse_infotext(t) for t in info["infotexts"][:3]]
    assert main["Z Type"] == "Steps" and main["X Type"] == "Hires upscaler"
    assert [int(s["Steps"]) for s in subs] == [1, 2] and all(s["X Type"] == "Hires upscaler" for s in subs)
    assert not any("Z Type" in s for s in subs)
    assert [c["Hires upscaler"] for c in cells] == ["Latent", "Nearest", "Latent", "Nearest"]
    args[11] = False  # without Include Sub Grids: the grid and the cells
    data = client.post("/sdapi/v1/txt2img", json={**body, "script_args": args}).json()
    assert len(data["images"]) == 1 + 4


@pytest.mark.slow
def test_a1111_xyz_plot_answers_a_lone_sub_grid(client, tiny_workspace):
    """A single Z value with Include Sub Grids: A1111 answers the grid (under its Z title, with the Z
    keys) and that one X/Y sub-grid (no title, no Z keys), saving the grid alone; with Z "Nothing" the
    sub-grid is the grid."""
    body = {"prompt": "red", "steps": 1, "width": 64, "height": 64, "seed": 7, "script_name": "x/y/z plot"}
    args = ["CFG Scale", "2, 6", [], "Nothing", "", [], "Steps", "1", [],
            True, False, True, False, False, False, False, 0, False]  # fmt: skip
    data = client.post("/sdapi/v1/txt2img", json={**body, "script_args": args, "save_images": True}).json()
    assert len(data["images"]) == 2, data.get("detail")
    grid, sub = (Image.open(io.BytesIO(base64.b64decode(b))) for b in data["images"])
    assert sub.width == grid.width and sub.height < grid.height  # the grid has the "Steps: 1" title band
    main, lone = (parse_infotext(t) for t in json.loads(data["info"])["infotexts"])
    assert main["Z Type"] == "Steps" and "Z Type" not in lone and lone["X Type"] == "CFG Scale"
    assert len(list(tiny_workspace.outputs.rglob("grid-*.png"))) == 1  # answered, not saved (A1111)
    args[6], args[7] = "Nothing", ""
    data = client.post("/sdapi/v1/txt2img", json={**body, "script_args": args}).json()
    assert len(data["images"]) == 2 and data["images"][0] == data["images"][1]


# --- Prompt order ------------------------------------------------------------------------------

# A1111's txt2img axis labels by index, 0 to 20: the same in 1.6 to 1.10 (1.10 renumbered from 21 on)
A1111_TXT2IMG_LABELS = [
    "Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale", "Prompt S/R",
    "Prompt order", "Sampler", "Hires sampler", "Checkpoint name", "Negative Guidance minimum sigma",
    "Sigma Churn", "Sigma min", "Sigma max", "Sigma noise", "Schedule type", "Schedule min sigma",
    "Schedule max sigma", "Schedule rho",
]  # fmt: skip


def test_prompt_order_values_are_every_order_of_the_terms():
    """A1111's Prompt order: every permutation of the terms, labelled by the joined order; the places the
    terms hold take them in the new order, the text between kept; a missing term is one clear error."""
    from lorastudio.api.a1111_scripts import A1111_TXT2IMG_AXES, grid_request_from_script_args
    from lorastudio.generate.grid_axes import format_value, reorder_prompt

    axis = find_axis("Prompt order")
    orders = parse_values('red, blue, "tall, green"', axis)
    assert orders == [
        ("red", "blue", "tall, green"), ("red", "tall, green", "blue"), ("blue", "red", "tall, green"),
        ("blue", "tall, green", "red"), ("tall, green", "red", "blue"), ("tall, green", "blue", "red"),
    ]  # fmt: skip
    assert [format_value(axis, o) for o in orders[:3]] == ["red, blue, tall, green", "red, tall, green, blue",
                                                          "blue, red, tall, green"]  # fmt: skip
    prompt = "a blue house, tall, green trees and a red door"
    # the terms' places are taken earliest first, whatever order the values list them in
    assert reorder_prompt(prompt, ["red", "blue", "tall, green"]) == "a red house, blue trees and a tall, green door"
    assert reorder_prompt(prompt, ["blue", "tall, green", "red"]) == prompt
    assert reorder_prompt("red hair, red eyes", ["red eyes", "red"]) == "red eyes hair, red"
    with pytest.raises(LorastudioError, match="'purple' is not in the prompt"):
        reorder_prompt(prompt, ["red", "purple"])
    with pytest.raises(LorastudioError, match="6 terms or fewer"):
        parse_values("a, b, c, d, e, f, g", axis)  # 5040 orders
    # the A1111 API: Prompt order by its index and by name; every A1111 axis lorastudio has below 21 by index
    for kind in (8, "8", "Prompt order"):
        request = grid_request_from_script_args([kind, "red, blue", [], 0, "", [], 0, "", []])
        assert (request.x.axis, request.x.values) == ("prompt_order", "red, blue")
    for index, label in enumerate(A1111_TXT2IMG_LABELS):
        known = _knows(label)
        assert (index in A1111_TXT2IMG_AXES) == known, label
        assert not known or A1111_TXT2IMG_AXES[index] == label


def _knows(label: str) -> bool:
    try:
        find_axis(label)
    except LorastudioError:
        return False
    return True


@pytest.mark.slow
def test_cli_prompt_order_grid_puts_each_order_in_its_cells_prompt(tiny_workspace, tmp_path):
    """Each cell's infotext prompt holds its order, the pictures differ, and the grid's infotext names
    the axis and its values as A1111 writes them."""
    _, out = _grid_cli("--prompt", "red sky, blue sea", "--seed", "9", "--x", "prompt_order=red, blue",
                       "--out", str(tmp_path))  # fmt: skip
    infos = [parse_infotext(read_infotext(c["image"])) for c in out["cells"]]
    assert [i["Prompt"] for i in infos] == ["red sky, blue sea", "blue sky, red sea"]
    assert [int(i["Seed"]) for i in infos] == [9, 9]
    images = [np.asarray(Image.open(c["image"]).convert("RGB"), dtype=np.float64) for c in out["cells"]]
    assert np.abs(images[0] - images[1]).mean() > 0.5
    assert out["axes"]["x"]["labels"] == ["red, blue", "blue, red"]
    grid = parse_infotext(read_infotext(out["grid"]))
    assert grid["X Type"] == "Prompt order" and grid["X Values"] == "red, blue"
    bad = runner.invoke(app, ["grid", "--model", "tiny-sd15", "--prompt", "red sky", "--x", "prompt_order=red,sea"])
    assert bad.exit_code == 2 and "'sea' is not in the prompt" in bad.output


@pytest.mark.slow
def test_a1111_xyz_plot_prompt_order_by_index(client):
    """A1111's script_args with X type 8 (Prompt order): each cell answered with its reordered prompt."""
    body = {"prompt": "red sky, blue sea", "steps": 1, "width": 64, "height": 64, "seed": 4,
            "script_name": "x/y/z plot",
            "script_args": [8, "red, blue", [], 0, "", [], 0, "", [], True, True, False, False, 0, False]}  # fmt: skip
    data = client.post("/sdapi/v1/txt2img", json=body).json()
    assert len(data["images"]) == 1 + 2, data.get("detail")
    info = json.loads(data["info"])
    grid, *cells = (parse_infotext(t) for t in info["infotexts"])
    assert grid["X Type"] == "Prompt order" and grid["X Values"] == "red, blue"
    assert [c["Prompt"] for c in cells] == ["red sky, blue sea", "blue sky, red sea"]
    assert info["all_prompts"][1:] == ["red sky, blue sea", "blue sky, red sea"]
    first, second = (np.asarray(Image.open(io.BytesIO(base64.b64decode(b))), dtype=np.float64) for b in data["images"][1:])
    assert np.abs(first - second).mean() > 0.5
