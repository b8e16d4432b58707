"""Which caption a folder gives each image: kohya's BLIP `.caption` beside WD14's `.txt`, the
caption_extension that chooses (import, REST, kohya configs, training), and the kohya fine-tuning
metadata json (`meta_clean.json` / `meta_lat.json`) a folder holds."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.datasets import dataset_folder, dataset_info, import_dataset


def noise(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB")


def captions_by_original(ws, name: str) -> dict[str, str | None]:
    folder = dataset_folder(ws, name)
    return {item.original: folder.read_caption(item) for item in folder.items}


@pytest.fixture
def tagged_and_blip(tmp_path):
    """The seed guide's folder after make_captions (.caption) and the WD14 tagger (.txt)."""
    src = tmp_path / "pokemon_data"
    src.mkdir()
    for index in range(3):
        noise(index).save(src / f"p{index}.png")
    for index in (0, 1):
        (src / f"p{index}.txt").write_text(f"tag{index}, solo", encoding="utf-8")
        (src / f"p{index}.caption").write_text(f"a drawing of pokemon {index}", encoding="utf-8")
    (src / "p2.txt").write_text("tag2, solo", encoding="utf-8")  # tagged only
    return src


def test_both_sidecars_read_the_txt_and_the_report_says_so(workspace, tagged_and_blip):
    result = import_dataset(workspace, "both", [tagged_and_blip])
    assert captions_by_original(workspace, "both") == {"p0.png": "tag0, solo", "p1.png": "tag1, solo", "p2.png": "tag2, solo"}
    [note] = result["notes"]
    assert note.startswith("2 images had both .txt and .caption captions: read .txt, not .caption")
    assert "--caption-ext .caption" in note and "merge_dd_tags_to_metadata" in note
    report = json.loads(dataset_folder(workspace, "both").import_report_path.read_text(encoding="utf-8"))
    assert report["runs"][-1]["notes"] == [note]


def test_caption_ext_reads_only_the_blip_captions(workspace, tagged_and_blip, cli):
    result = cli("dataset", "import", tagged_and_blip, "--name", "blip", "--caption-ext", ".caption")
    assert result.exit_code == 0, result.output
    assert captions_by_original(workspace, "blip") == {
        "p0.png": "a drawing of pokemon 0", "p1.png": "a drawing of pokemon 1", "p2.png": None,
    }  # fmt: skip  -- as kohya with caption_extension=".caption": p2's tags are not read
    assert "note    1 image had no .caption caption; their .txt files were not read" in result.output
    refused = cli("dataset", "import", tagged_and_blip, "--name", "bad", "--caption-ext", ".png")
    assert refused.exit_code == 2 and "caption extension '.png': give the caption files' extension" in refused.output
    assert not (workspace.datasets / "bad").exists()


def test_caption_extension_over_rest_on_a_zip(client, studio, tagged_and_blip, tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tagged_and_blip.iterdir()):
            zf.write(path, path.name)
    upload = client.post("/api/v1/uploads", files={"file": ("set.zip", archive.read_bytes())})
    assert upload.status_code == 200, upload.text
    body = {"what": "dataset", "name": "rest", "uploads": [upload.json()["upload"]]}
    bad = client.post("/api/v1/jobs/import", json={**body, "caption_extension": "../x"})
    assert bad.status_code in (400, 422) and "caption extension" in bad.text
    job = client.post("/api/v1/jobs/import", json={**body, "caption_extension": "caption"})
    assert job.status_code == 200, job.text
    done = studio.wait_job(job.json()["id"], timeout=60)
    assert done.state == "succeeded", done.error
    assert done.result["caption_extension"] == ".caption"
    assert captions_by_original(studio.workspace, "rest")["p1.png"] == "a drawing of pokemon 1"


def test_kohya_caption_extension_sets_the_folder_captions_training_reads(workspace, tagged_and_blip, tmp_path):
    """kohya's `caption_extension = ".caption"` was "no setting needed" while the .txt won: it is now
    data.caption_extension, and a run on the folder trains on the BLIP captions."""
    from lorastudio.train.kohya_config import import_kohya_config, kohya_train_config
    from lorastudio.train.plan import prepare_plan

    toml = tmp_path / "config_file.toml"
    toml.write_text(
        f'[dataset_arguments]\ncaption_extension = ".caption"\ntrain_data_dir = "{tagged_and_blip.as_posix()}"\n',
        encoding="utf-8",
    )
    imported = import_kohya_config(toml)
    assert ("caption_extension", "data.caption_extension", ".caption") in [tuple(m[:3]) for m in imported.mapped]
    cfg = kohya_train_config(imported, ["model=tiny-sd15", "train.resolution=64", "data.max_upscale=2"])
    assert cfg.data.caption_extension == ".caption"
    plan = prepare_plan(cfg, workspace.datasets)
    assert {img.path.name: img.caption for img in plan.images} == {
        "p0.png": "a drawing of pokemon 0", "p1.png": "a drawing of pokemon 1", "p2.png": "",
    }  # fmt: skip
    assert any("had no .caption caption" in note for note in plan.notes)
    default = prepare_plan(cfg.model_copy(update={"data": cfg.data.model_copy(update={"caption_extension": None})}), workspace.datasets)
    assert any("data.caption_extension=.caption" in note for note in default.notes)  # training's wording
    with pytest.raises(ValueError, match="caption extension"):
        type(cfg.data).model_validate({"caption_extension": ".json"})


# -- kohya fine-tuning metadata in the folder ---------------------------------------------------


def kohya_finetune_folder(root: Path, sidecars: bool = False) -> Path:
    """merge_captions_to_metadata + merge_dd_tags_to_metadata -> meta_clean.json;
    prepare_buckets_latents -> meta_lat.json (+ .npz latents); keys are image stems."""
    root.mkdir(parents=True)
    clean, lat = {}, {}
    for index in range(4):
        noise(10 + index).save(root / f"img{index}.jpg")
        (root / f"img{index}.npz").write_bytes(b"latents")
        clean[f"img{index}"] = {"caption": f"a picture {index}", "tags": f"tag{index}, solo"}
        lat[f"img{index}"] = {**clean[f"img{index}"], "train_resolution": [512, 512]}
        if sidecars:
            (root / f"img{index}.txt").write_text(f"tag{index}, solo", encoding="utf-8")
    clean["img0"]["caption"] = "older caption"
    lat["gone"] = {"caption": "an image removed since"}
    (root / "meta_clean.json").write_text(json.dumps(clean), encoding="utf-8")
    (root / "meta_lat.json").write_text(json.dumps(lat), encoding="utf-8")
    return root


def test_a_kohya_finetune_folder_imports_with_its_metadata_captions(workspace, tmp_path):
    folder = kohya_finetune_folder(tmp_path / "pokemon_data")
    result = import_dataset(workspace, "ft", [folder])
    assert result["imported"] == 4
    assert captions_by_original(workspace, "ft") == {
        f"img{i}.jpg": f"a picture {i}, tag{i}, solo" for i in range(4)
    }  # meta_lat.json, the later step, with caption and tags joined as kohya's fine-tuning does
    assert dataset_info(workspace, "ft")["captioned"] == 4
    skipped = {Path(row["source"].split(": ")[0]).name: row["reason"] for row in result["skipped_files"]}
    assert skipped["meta_clean.json"] == "kohya metadata not read: meta_lat.json is a later step"
    assert skipped["meta_lat.json"] == "listed in meta_lat.json but no such image"
    assert result["notes"] == ["4 images captioned from meta_lat.json (kohya metadata: caption, tags)."]


def test_kohya_full_path_keys_and_caption_files_beside_the_metadata(workspace, tmp_path):
    """--full_path keys are paths (another machine's too); a caption file beside an image still wins,
    and the report says the json was left unused for it."""
    folder = kohya_finetune_folder(tmp_path / "set", sidecars=True)
    (folder / "img3.txt").unlink()
    lat = json.loads((folder / "meta_lat.json").read_text(encoding="utf-8"))
    lat = {f"/home/someone/train/set/{key}.jpg": value for key, value in lat.items()}
    (folder / "meta_lat.json").write_text(json.dumps(lat), encoding="utf-8")
    result = import_dataset(workspace, "paths", [folder])
    captions = captions_by_original(workspace, "paths")
    assert captions["img0.jpg"] == "tag0, solo" and captions["img3.jpg"] == "a picture 3, tag3, solo"
    assert "3 images that had another caption; import meta_lat.json itself" in " ".join(result["notes"])
    whole = import_dataset(workspace, "json", [folder / "meta_lat.json"])  # kohya's own way, unchanged
    assert whole["imported"] == 4


def test_a_kohya_blip_pth_is_named_as_not_a_transformers_captioner(tmp_path, monkeypatch):
    """kohya's make_captions takes --caption_weights model_large_caption.pth; lorastudio's captioner
    needs a transformers folder, and says so before loading anything."""
    import sys

    from lorastudio.data.captioner import Captioner
    from lorastudio.data.config import CaptionerConfig

    weights = tmp_path / "BLIP" / "model_large_caption.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"\x80\x02}q\x00.")
    monkeypatch.setitem(sys.modules, "transformers", None)  # nothing may be imported to say it
    for model in (str(weights), "BLIP/model_large_caption.pth", "model_large_caption.pth"):
        with pytest.raises(NotFoundError) as caught:
            Captioner(CaptionerConfig(model=model))
        message = str(caught.value)
        assert "transformers image-to-text model folder (BLIP, BLIP-2" in message, message
        assert "kohya's make_captions BLIP .pth" in message and "\n" not in message
    with pytest.raises(NotFoundError, match=r"'no_such_dir': no such folder; pass a transformers"):
        Captioner(CaptionerConfig(model="no_such_dir"))


def test_bad_caption_extensions_are_refused_in_one_line():
    from lorastudio.data.sources import caption_extension_of

    assert caption_extension_of("caption") == ".caption" and caption_extension_of("") is None
    for bad in (".png", ".json", "../x", ". txt"):
        with pytest.raises(LorastudioError, match="give the caption files' extension"):
            caption_extension_of(bad)


def test_zip_sidecars_follow_the_same_rule(workspace, tmp_path):
    archive = tmp_path / "z.zip"
    buffer = io.BytesIO()
    noise(30).save(buffer, "PNG")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.png", buffer.getvalue())
        zf.writestr("a.txt", "tags")
        zf.writestr("a.caption", "a blip caption")
    assert import_dataset(workspace, "z", [archive], caption_extension=".caption")["notes"] == []
    assert captions_by_original(workspace, "z") == {"a.png": "a blip caption"}


@pytest.mark.slow
def test_a_run_from_the_folder_says_which_captions_it_read(tiny_workspace, tmp_path, capsys):
    """Trained in place, the folder's choice is said on stderr and in the job log, in training's words."""
    from lorastudio.service.training import run_training
    from training_helpers import tiny_train_config, write_images

    data = write_images(tmp_path / "red", [((230, 20 + i, 25), f"zqx, tag{i}") for i in range(3)])
    for index in range(3):
        (data / f"{index}.caption").write_text(f"zqx, a red square {index}", encoding="utf-8")
    cfg = tiny_train_config(
        data, "zqx", "train.steps=1", "lora.rank=2", "output.name=both", "scoring.enabled=false",
    )  # fmt: skip
    events: list[dict] = []
    capsys.readouterr()
    run_training(tiny_workspace, cfg, callback=events.append, progress=True)
    lines = [event["line"] for event in events if event.get("event") == "log"]
    note = "data: 3 images had both .txt and .caption captions: read .txt, not .caption"
    assert any(line.startswith(note) and "data.caption_extension=.caption" in line for line in lines), lines
    assert note in capsys.readouterr().err
