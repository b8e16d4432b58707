"""Caption templates and bulk edits, search, info/report, export, training reads and the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.data.captions import CaptionEdit, apply_template, matches, tag_frequency
from lorastudio.data.dataset import Dataset
from lorastudio.errors import LorastudioError
from lorastudio.service.datasets import (
    dataset_folder,
    dataset_info,
    dataset_report,
    edit_captions,
    export_dataset,
    import_dataset,
    open_training_dataset,
    search_captions,
    template_captions,
)


def noise(seed: int, size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


@pytest.fixture
def tagged(workspace, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    captions = {
        "a": "1girl, Red Hair, smile, smile",
        "b": "solo, alice, red hair",
        "c": "",
    }
    for index, (stem, caption) in enumerate(captions.items()):
        noise(index, (64 + 32 * index, 64)).save(src / f"{stem}.png")
        if caption:
            (src / f"{stem}.txt").write_text(caption, encoding="utf-8")
    import_dataset(workspace, "t", [src])
    return workspace


def _by_original(ws, name: str = "t") -> dict[str, str | None]:
    folder = dataset_folder(ws, name)
    return {item.original: folder.read_caption(item) for item in folder.items}


# -- pure caption functions ---------------------------------------------------------------


def test_bulk_edits_compare_tags_case_insensitively_and_split_commas():
    edit = CaptionEdit(add=["masterpiece, best quality"])
    once = edit.apply("alice, smile")
    assert once == "alice, smile, masterpiece, best quality" and edit.apply(once) == once  # twice: no repeats
    assert CaptionEdit(replace={"Smile": "grin"}).apply("alice, smile") == "alice, grin"
    assert CaptionEdit(replace={"smile": "grin, happy"}).apply("alice, smile") == "alice, grin, happy"
    assert CaptionEdit(replace={"smile": ""}).apply("alice, smile") == "alice"
    assert CaptionEdit(remove=["SMILE, Alice"]).apply("alice, smile, solo") == "solo"
    assert CaptionEdit(trigger_first="Alice").apply("alice, smile") == "Alice, smile"


def test_templates_fill_fields_and_drop_empty_slots():
    assert (
        apply_template("a photo of {trigger}, {caption}", "red hair", trigger="sks")
        == "a photo of sks, red hair"
    )
    assert apply_template("{trigger}, {caption}", None, trigger="sks") == "sks"
    assert apply_template("fixed caption") == "fixed caption"
    once = apply_template("{trigger}, {caption}", "1girl, smile", trigger="sks")
    assert apply_template("{trigger}, {caption}", once, trigger="sks") == once == "sks, 1girl, smile"
    with pytest.raises(LorastudioError, match="unknown field"):
        apply_template("{trigge}")


def test_caption_edit_operations_in_order():
    caption = "1girl, Red Hair, smile, smile, sks"
    assert CaptionEdit(dedupe=True).apply(caption) == "1girl, Red Hair, smile, sks"
    assert CaptionEdit(lower=True, dedupe=True).apply(caption) == "1girl, red hair, smile, sks"
    assert CaptionEdit(trigger_first="sks").apply(caption) == "sks, 1girl, Red Hair, smile, smile"
    assert (
        CaptionEdit(remove=["smile"], add=["outdoors", "1girl"]).apply(caption)
        == "1girl, Red Hair, sks, outdoors"
    )
    assert CaptionEdit(replace={"Red Hair": "red hair", "smile": ""}).apply(caption) == "1girl, red hair, sks"
    assert CaptionEdit(sort=True, keep_tokens=1, dedupe=True).apply(caption) == "1girl, Red Hair, sks, smile"


def test_search_modes_and_tag_frequency():
    assert matches("1girl, red hair", "RED")
    assert not matches("1girl, red hair", "red", tag=True)
    assert matches("1girl, red hair", "red hair", tag=True)
    assert matches("1girl, red hair", r"^1\w+", regex=True)
    with pytest.raises(LorastudioError, match="not a valid regex"):
        matches("x", "(", regex=True)
    assert tag_frequency(["a, b, a", "b", None]) == {"a": 1, "b": 2}


# -- service over a data set ----------------------------------------------------------------


def test_bulk_edit_and_template_on_a_dataset(tagged):
    preview = edit_captions(tagged, "t", CaptionEdit(dedupe=True, lower=True), dry_run=True)
    assert preview["changed"] == 1 and _by_original(tagged)["a.png"] == "1girl, Red Hair, smile, smile"
    edit_captions(tagged, "t", CaptionEdit(dedupe=True, lower=True, trigger_first="sks"))
    captions = _by_original(tagged)
    assert captions["a.png"] == "sks, 1girl, red hair, smile"
    assert captions["c.png"] == "sks"
    template_captions(tagged, "t", "photo of {trigger}, {caption}", trigger="zz")
    assert _by_original(tagged)["b.png"] == "photo of zz, sks, solo, alice, red hair"
    with pytest.raises(LorastudioError, match="nothing to do"):
        edit_captions(tagged, "t", CaptionEdit())


def test_template_captions_follow_the_mode_and_refuse_an_unknown_one(tagged):
    template_captions(tagged, "t", "masterpiece", mode="append")
    captions = _by_original(tagged)
    assert captions["b.png"] == "solo, alice, red hair, masterpiece" and captions["c.png"] == "masterpiece"
    template_captions(tagged, "t", "best quality", mode="prepend")
    assert _by_original(tagged)["b.png"] == "best quality, solo, alice, red hair, masterpiece"
    with pytest.raises(LorastudioError, match="'apend'.*missing, overwrite, prepend, append"):
        template_captions(tagged, "t", "oops", mode="apend")
    assert "oops" not in " ".join(c or "" for c in _by_original(tagged).values())  # nothing written
    _register()
    result = CliRunner().invoke(app, ["dataset", "caption", "t", "--template", "solo", "--mode", "missing"], env={"LORASTUDIO_HOME": str(tagged.root)})
    assert result.exit_code == 0 and "0 of 3" in result.output
    template_captions(tagged, "t", "x", only_missing=False)  # the UI's checkbox off: overwrite
    assert set(_by_original(tagged).values()) == {"x"}


def test_captions_edited_in_notepad_read_as_written(tagged):
    """A caption saved again with a UTF-8 BOM, or as Notepad's "Unicode" (UTF-16), reads as its text."""
    folder = dataset_folder(tagged, "t")
    first, second = folder.items[0], folder.items[1]
    folder.caption_path(first).write_bytes("\ufeffalice, smile".encode())
    folder.caption_path(second).write_bytes("角色, smile".encode("utf-16"))
    assert folder.read_caption(first) == "alice, smile" and folder.read_caption(second) == "角色, smile"
    assert search_captions(tagged, "t", "alice", tag=True)["count"] >= 1


def test_info_lists_a_broken_file_once_and_not_after_it_was_fixed(workspace, tmp_path):
    src = tmp_path / "again"
    src.mkdir()
    noise(7).save(src / "good.png")
    (src / "broken.png").write_bytes(b"not a picture")
    for _ in range(3):  # importing the folder again reports the broken file every time
        import_dataset(workspace, "again", [src])
    failed = dataset_info(workspace, "again")["import_failed"]
    assert [row["source"].split("/")[-1] for row in failed] == ["broken.png"]
    noise(8).save(src / "broken.png")  # fixed and imported: no longer a failure
    import_dataset(workspace, "again", [src])
    assert dataset_info(workspace, "again")["import_failed"] == []


def test_search_info_and_html_report(tagged):
    found = search_captions(tagged, "t", "red hair", tag=True)
    assert found["count"] == 2 and {m["original"] for m in found["matches"]} == {"a.png", "b.png"}
    info = dataset_info(tagged, "t", resolution=512)
    assert info["images"] == 3 and info["captioned"] == 2
    assert len(info["uncaptioned"]) == 1 and info["uncaptioned"][0].startswith("c-")
    assert info["tag_frequency"]["red hair"] == 1 and info["tag_frequency"]["smile"] == 1
    assert sum(info["buckets"].values()) == 3 and "512x512" in info["buckets"]
    assert sum(info["aspect_histogram"].values()) == 3
    report = dataset_report(tagged, "t")
    html = open(report["report"], encoding="utf-8").read()
    assert html.count("data:image/jpeg;base64,") == 3
    assert "Images without captions (1)" in html and "red hair" in html


@pytest.mark.parametrize("fmt", ["folder", "csv", "jsonl", "kohya"])
def test_export_formats_round_trip_through_dataset(tagged, tmp_path, fmt):
    dest = tmp_path / f"out_{fmt}"
    result = export_dataset(
        tagged, "t", dest, fmt, repeats=5 if fmt == "folder" else None, caption_extension=".caption"
    )
    assert result["images"] == 3
    if fmt == "folder":
        assert (dest / "5_t").is_dir() and len(list((dest / "5_t").glob("*.caption"))) == 2
        loaded = Dataset.open(dest)
        assert {item.repeats for item in loaded} == {5} and loaded.num_samples == 15
    elif fmt == "csv":
        rows = list(csv.DictReader(open(dest / "metadata.csv", encoding="utf-8")))
        assert len(rows) == 3 and {"file_name", "text"} <= set(rows[0])
        loaded = Dataset.open(dest / "metadata.csv")
    elif fmt == "jsonl":
        loaded = Dataset.open(dest / "metadata.jsonl")
    else:
        meta = json.loads((dest / "meta_cap.json").read_text(encoding="utf-8"))
        assert len(meta) == 3 and all("caption" in v for v in meta.values())
        loaded = Dataset.open(dest / "meta_cap.json")
    assert len(loaded) == 3
    # the uncaptioned image: kohya trains it on its folder's name ("5_t"), the other formats on ""
    uncaptioned = "t" if fmt == "folder" else ""
    assert {item.caption for item in loaded} == {"1girl, Red Hair, smile, smile", "solo, alice, red hair", uncaptioned}
    assert all(item.image.is_file() for item in loaded.items())
    with pytest.raises(LorastudioError, match="not empty"):
        export_dataset(tagged, "t", dest, fmt)


def test_training_reads_plain_kohya_folder_without_import(workspace, tmp_path):
    root = tmp_path / "train"
    (root / "10_alice").mkdir(parents=True)
    (root / "2_style").mkdir()
    noise(1).save(root / "10_alice" / "x.png")
    (root / "10_alice" / "x.caption").write_text("alice, smile", encoding="utf-8")
    noise(2).save(root / "2_style" / "y.jpg")
    (root / "2_style" / "notes.md").write_text("ignored", encoding="utf-8")
    loaded = open_training_dataset(workspace, str(root), default_caption="fallback")
    assert loaded.kind == "folder"
    by_name = {item.image.name: item for item in loaded}
    assert by_name["x.png"].caption == "alice, smile" and by_name["x.png"].repeats == 10
    assert by_name["y.jpg"].caption == "fallback" and by_name["y.jpg"].repeats == 2
    assert not any(workspace.datasets.iterdir())  # nothing was imported
    # No default caption: kohya's, the folder's name ("2_style" -> "style"; DreamBooth's "5_sks dog").
    (root / "5_sks dog").mkdir()
    noise(3).save(root / "5_sks dog" / "z.png")
    by_name = {item.image.name: item for item in open_training_dataset(workspace, str(root))}
    assert by_name["y.jpg"].caption == "style" and by_name["z.png"].caption == "sks dog"
    assert by_name["x.png"].caption == "alice, smile"


def test_training_reads_managed_dataset_by_name(tagged):
    loaded = open_training_dataset(tagged, "t")
    assert loaded.kind == "managed" and len(loaded) == 3
    assert all(item.image.parent.name == "images" for item in loaded)


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_round_trip(workspace, tmp_path):
    _register()
    runner = CliRunner()
    src = tmp_path / "cli_src"
    src.mkdir()
    noise(1).save(src / "one.png")
    noise(2).save(src / "图片.png")
    (src / "bad.png").write_text("nope", encoding="utf-8")

    result = runner.invoke(app, ["dataset", "import", str(src), "--name", "cli", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["imported"] == 2 and data["failed"] == 1

    result = runner.invoke(
        app, ["dataset", "caption", "cli", "--template", "{trigger}, photo", "--trigger", "sks"]
    )
    assert result.exit_code == 0 and "2 of 2" in result.stdout
    result = runner.invoke(app, ["dataset", "edit", "cli", "--add", "outdoors", "--json"])
    assert json.loads(result.stdout)["changed"] == 2
    result = runner.invoke(app, ["dataset", "search", "cli", "outdoors", "--tag", "--json"])
    assert json.loads(result.stdout)["count"] == 2
    result = runner.invoke(app, ["dataset", "clean", "cli", "--kolors", "--dry-run", "--json"])
    data = json.loads(result.stdout)
    assert len(data["dropped"]) == 2 and all("too small" in row["reason"] for row in data["dropped"])
    result = runner.invoke(app, ["dataset", "info", "cli"])
    assert (
        result.exit_code == 0
        and "2 images, 2 captioned" in result.stdout
        and "import failures: 1" in result.stdout
    )
    result = runner.invoke(app, ["dataset", "list", "--json"])
    assert json.loads(result.stdout)["datasets"] == [{"name": "cli", "images": 2, "captioned": 2}]
    result = runner.invoke(
        app, ["dataset", "export", "cli", str(tmp_path / "exp"), "--format", "jsonl", "--json"]
    )
    assert json.loads(result.stdout)["images"] == 2 and (tmp_path / "exp" / "metadata.jsonl").is_file()
    result = runner.invoke(app, ["dataset", "report", "cli", "--json"])
    assert (workspace.datasets / "cli" / "report.html").is_file()

    result = runner.invoke(app, ["dataset", "info", "missing"])
    assert result.exit_code == 2 and "not found" in result.output


def test_a_template_keeps_the_kohya_folder_caption_and_needs_its_trigger(workspace, tmp_path):
    """An uncaptioned image of `10_alice/` trains on "alice": `{caption}` is that (the template wrote
    "a photo of" over it); a template naming {trigger} without a trigger is refused, nothing written."""
    root = tmp_path / "img"
    (root / "10_alice").mkdir(parents=True)
    noise(1).save(root / "10_alice" / "x.png")
    import_dataset(workspace, "k", [root])
    with pytest.raises(LorastudioError, match="--trigger"):
        template_captions(workspace, "k", "a photo of {trigger}, {caption}")
    assert _by_original(workspace, "k")["10_alice/x.png"] in ("", None)
    template_captions(workspace, "k", "a photo of {trigger}, {caption}", trigger="zq")
    assert _by_original(workspace, "k")["10_alice/x.png"] == "a photo of zq, alice"
