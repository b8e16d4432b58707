"""The X/Y/Z plot against A1111 1.10's script: its axes this studio's generation does not run are
refused by their label with the reason on every front (no stub axis), a one-value Z axis's sub-grid is
answered but not saved, and the web panel's values dropdown shows "Automatic" in the page's language."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from PIL import Image
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.errors import LorastudioError
from lorastudio.generate.grid_axes import AXES, UNSUPPORTED_AXES, find_axis
from lorastudio.generate.infotext import parse_infotext, read_infotext

pytestmark = pytest.mark.usefixtures("one_torch_thread")
_register()
runner = CliRunner()

# A1111 1.10's axes (scripts/xyz_grid.py) beyond those lorastudio had, with their labels as A1111 spells them
A1111_MORE_AXES = (
    "Schedule min sigma", "Schedule max sigma", "Schedule rho",
    "Sigma Churn", "Sigma min", "Sigma max", "Sigma noise",
    "Image CFG Scale", "Face restore", "Token merging ratio", "Token merging ratio high-res",
    "Refiner checkpoint", "Refiner switch at", "Always discard next-to-last sigma",
    "SGM noise multiplier", "Skip Early CFG", "Beta schedule alpha", "Beta schedule beta", "FP8 mode",
    "Negative Guidance minimum sigma", "Cond. Image Mask Weight",
)  # fmt: skip


def test_every_a1111_axis_is_an_axis_or_refused_with_its_reason():
    """Each of A1111's axes is either one lorastudio runs or refused by its label, in one line that says
    why; none is both, and any spelling of the label finds the refusal."""
    labels = {axis.label for axis in AXES.values()}
    for label in A1111_MORE_AXES:
        assert label in UNSUPPORTED_AXES and label not in labels, label
        for spelling in (label, label.lower(), label.upper().replace(" ", "_")):
            with pytest.raises(LorastudioError) as refused:
                find_axis(spelling)
            message = str(refused.value)
            assert message.startswith(f"A1111's X/Y/Z axis '{label}' is not supported here: "), message
            assert "\n" not in message and len(message) > len(label) + 45
    with pytest.raises(LorastudioError, match="unknown; choose one of"):
        find_axis("Wobble")  # a name A1111 lacks too: the list of axes


def test_the_refusal_reaches_the_cli_and_the_a1111_api_by_label_and_index(client):
    """`lorastudio grid --x 'Sigma Churn=...'`, the API's script_args by label and by A1111's index
    (12 is Negative Guidance minimum sigma in 1.6 to 1.10): one line naming the axis and why, nothing generated."""
    cli = runner.invoke(app, ["grid", "--model", "tiny-sd15", "--x", "Sigma Churn=0, 1"])
    assert cli.exit_code == 2 and "A1111's X/Y/Z axis 'Sigma Churn' is not supported here" in cli.output
    body = {"prompt": "red", "steps": 1, "width": 64, "height": 64, "script_name": "x/y/z plot"}
    nggms = "Negative Guidance minimum sigma"
    for kind, label in (("Sigma Churn", "Sigma Churn"), (12, nggms), ("20", "Schedule rho")):
        args = [kind, "0, 1", [], "Nothing", "", [], "Nothing", "", []]
        answer = client.post("/sdapi/v1/txt2img", json={**body, "script_args": args})
        assert answer.status_code == 400, answer.text
        assert f"A1111's X/Y/Z axis '{label}' is not supported here: " in answer.json()["detail"]
    # an index past A1111's shared list is still the list of indices lorastudio runs
    far = client.post("/sdapi/v1/txt2img", json={**body, "script_args": [99, "1", []]})
    assert far.status_code == 400 and "axis index 99 is not supported" in far.json()["detail"]


def test_the_values_dropdown_shows_automatic_in_the_pages_language(tiny_workspace):
    """The Chinese page shows 自动 for the VAE and schedule axes' "Automatic", as the form's own
    pickers do; the value picked and written into the text stays A1111's "Automatic"."""
    from lorastudio.ui.grid_panel import axis_picker_update, picked_text
    from lorastudio.ui.i18n import translator

    zh = SimpleNamespace(studio=SimpleNamespace(workspace=tiny_workspace), t=translator("zh"))
    for axis in ("VAE", "schedule"):
        update = axis_picker_update(zh, axis, "Automatic")
        assert update["choices"][0] == ("自动", "Automatic") and update["value"] == ["Automatic"]
        assert all(label == value for label, value in update["choices"][1:])
        assert picked_text(zh, axis, "", ["Automatic"]) == "Automatic"
    english = SimpleNamespace(studio=zh.studio, t=translator("en"))
    assert axis_picker_update(english, "vae", "")["choices"][0] == ("Automatic", "Automatic")
    samplers = axis_picker_update(zh, "sampler", "")["choices"]
    assert ("Euler a", "Euler a") in samplers  # names without a translation stay as they are


@pytest.mark.slow
def test_a_lone_z_values_sub_grid_is_answered_but_not_saved(tiny_workspace, tmp_path, monkeypatch):
    """A1111 saves the sub-grids only for two or more Z values: one Z value with Include Sub Grids
    writes the grid alone; its X/Y grid (the grid below the Z title, with its own infotext) is cut out
    for the answer, and the web page shows it from Gradio's temporary folder."""
    from lorastudio.service.grid import lone_sub_grid_png, run_grid
    from lorastudio.service.grid_request import GridRequest
    from lorastudio.ui.generate_run import _lone_sub_grid_file

    base = ["grid", "--model", "tiny-sd15", "--width", "64", "--height", "64", "--prompt", "red", "--seed", "3"]
    args = [*base, "--x", "cfg=2,6", "--z", "steps=1", "--include-sub-grids", "--out", str(tmp_path / "cli")]
    text = runner.invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "sub-grid: not saved" in text.output
    assert [p.name for p in (tmp_path / "cli").glob("grid-*.png")] == ["grid-00000.png"]
    out = json.loads(runner.invoke(app, [*args, "--json"]).stdout.strip().splitlines()[-1])
    assert out["sub_grids"] == [] and out["lone_sub_grid_top"] > 0
    assert not list((tmp_path / "cli").glob("grid-*-z*.png"))

    from lorastudio.generate.config import GenerateConfig

    config = GenerateConfig(model="tiny-sd15", prompt="red", seed=3, width=64, height=64, steps=1)
    request = GridRequest.model_validate(
        {"x": {"axis": "cfg", "values": "2, 6"}, "z": {"axis": "steps", "values": "1"}, "include_sub_grids": True}
    )
    result = run_grid(tiny_workspace, config, request, out_dir=tmp_path / "service")
    grid = Image.open(result.grid)
    lone = Image.open(io.BytesIO(lone_sub_grid_png(result.grid, result.lone_sub_grid_top, result.sub_infotexts[0])))
    assert lone.size == (grid.width, grid.height - result.lone_sub_grid_top) and lone.height >= 64
    assert lone.tobytes() == grid.convert("RGB").crop((0, result.lone_sub_grid_top, *grid.size)).tobytes()
    own = parse_infotext(read_infotext(lone))
    assert own["X Type"] == "CFG Scale" and "Z Type" not in own
    assert parse_infotext(result.infotext)["Z Type"] == "Steps"
    # the web page: a file in Gradio's temporary folder, not in outputs/, with the sub-grid's infotext
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    ctx = SimpleNamespace(studio=SimpleNamespace(workspace=tiny_workspace))
    shown = _lone_sub_grid_file(ctx, "job1", result.grid, {
        "lone_sub_grid_top": result.lone_sub_grid_top, "sub_grid_infotexts": result.sub_infotexts})  # fmt: skip
    assert shown.startswith(str(tmp_path / "gradio")) and Image.open(shown).size == lone.size
    assert parse_infotext(read_infotext(shown))["X Type"] == "CFG Scale"
    # two Z values: both sub-grids saved, no lone one
    request = request.model_copy(update={"z": request.z.model_copy(update={"values": "1, 2"})})
    result = run_grid(tiny_workspace, config, request, out_dir=tmp_path / "two")
    assert [p.name for p in result.sub_grids] == ["grid-00000-z1.png", "grid-00000-z2.png"]
    assert result.lone_sub_grid_top is None
