"""Import: every awkward file users bring, made on the fly; bad files reported, never fatal."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorastudio.data.images import ImageLoadError, open_image
from lorastudio.data.manifest import DatasetFolder
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.datasets import dataset_folder, import_dataset


def noise(seed: int, size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def items_by_original(ws, name: str) -> dict:
    return {item.original: item for item in dataset_folder(ws, name).items}


# -- open_image: one function normalises every mode ---------------------------------------


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    image = open_image(path)
    assert image.mode == "RGB" and image.size == (20, 10)
    r, g, b = image.getpixel((10, 5))
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_is_scaled_to_8bit(tmp_path):
    path = tmp_path / "deep.png"
    array = np.full((8, 8), 65535, dtype=np.uint16)
    array[:, :4] = 257 * 100
    Image.fromarray(array, "I;16").save(path)
    assert Image.open(path).mode.startswith("I")
    image = open_image(path)
    assert image.mode == "RGB"
    assert image.getpixel((6, 0)) == (255, 255, 255)
    assert image.getpixel((0, 0)) == (100, 100, 100)


def test_rgba_is_composited_on_the_chosen_background(tmp_path):
    path = tmp_path / "alpha.png"
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.save(path)
    image = open_image(path, background=(0, 255, 0))
    assert image.getpixel((5, 5)) == (0, 255, 0)
    assert image.getpixel((0, 0)) == (255, 0, 0)


def test_palette_with_transparency_uses_background(tmp_path):
    path = tmp_path / "pal.png"
    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.info["transparency"] = 0
    pal.save(path, transparency=0)
    image = open_image(path, background=(255, 255, 255))
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((5, 5)) == (0, 0, 255)


def test_gif_gives_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    r, g, b = open_image(path).getpixel((4, 4))
    assert r > 200 and b < 50


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (400, 300)).save(path)
    with pytest.raises(ImageLoadError, match="big.png.*pixel limit"):
        open_image(path, max_pixels=100_000)


def test_truncated_jpeg_names_file_and_reason(tmp_path):
    buffer = io.BytesIO()
    noise(1, (200, 200)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:600])
    with pytest.raises(ImageLoadError, match=r"cut\.jpg: damaged or truncated"):
        open_image(path)


# -- import ---------------------------------------------------------------------------------


@pytest.fixture
def messy_folder(tmp_path):
    """A phone/crawler folder: odd modes, Chinese names, captions, junk and broken files."""
    src = tmp_path / "messy"
    src.mkdir()
    noise(1).save(src / "plain.png")
    (src / "plain.txt").write_text("1girl, red hair\n", encoding="utf-8")
    noise(2).save(src / "角色_01.png")
    (src / "角色_01.caption").write_text("角色, smile", encoding="utf-8")
    noise(3).convert("CMYK").save(src / "cmyk.jpg")
    # EXIF orientation 6: stored 40x20, displayed rotated to 20x40.
    exif = Image.Exif()
    exif[0x0112] = 6
    noise(4, (40, 20)).save(src / "phone.jpg", exif=exif)
    rgba = noise(5).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(src / "alpha.png")
    Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20), "I;16").save(src / "deep.png")
    noise(6).save(src / "photo.webp")
    noise(7).save(src / "scan.bmp")
    buffer = io.BytesIO()
    noise(8, (300, 300)).save(buffer, "JPEG")
    (src / "broken.jpg").write_bytes(buffer.getvalue()[:500])
    (src / "notes.png").write_text("this is not a picture", encoding="utf-8")
    (src / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    return src


def test_import_messy_folder(workspace, messy_folder):
    result = import_dataset(workspace, "set", [messy_folder])
    assert result["imported"] == 8
    failed = {row["source"].split("/")[-1]: row["reason"] for row in result["failed_files"]}
    assert set(failed) == {"broken.jpg", "notes.png"}
    assert "truncated" in failed["broken.jpg"] and "not an image" in failed["notes.png"]
    assert any(row["source"].endswith("clip.mp4") for row in result["skipped_files"])

    folder = dataset_folder(workspace, "set")
    items = items_by_original(workspace, "set")
    # Chinese name: stored under an ASCII safe name, original kept in the manifest.
    chinese = items["角色_01.png"]
    assert chinese.file.isascii() and chinese.file.endswith(".png")
    assert folder.read_caption(chinese) == "角色, smile"
    assert folder.read_caption(items["plain.png"]) == "1girl, red hair"
    # EXIF-rotated photo is stored upright.
    phone = items["phone.jpg"]
    with Image.open(folder.image_path(phone)) as stored:
        assert stored.size == (20, 40)
        assert stored.getexif().get(0x0112, 1) == 1
    assert (phone.width, phone.height) == (20, 40)
    # Odd modes are stored as RGB; a plain RGB PNG is copied byte for byte.
    for name in ("cmyk.jpg", "alpha.png", "deep.png", "scan.bmp"):
        with Image.open(folder.image_path(items[name])) as stored:
            assert stored.mode == "RGB", name
    assert folder.image_path(items["plain.png"]).read_bytes() == (messy_folder / "plain.png").read_bytes()
    # The import report on disk lists the failures with reasons, and each common reason's key and
    # params, by which the web UI words it; the note on the renamed Chinese name has its own.
    report = json.loads(folder.import_report_path.read_text(encoding="utf-8"))
    assert len(report["runs"]) == 1 and len(report["runs"][0]["failed"]) == 2
    assert {row["key"] for row in report["runs"][0]["failed"]} == {"image_unreadable"}
    assert [row["params"] for row in report["runs"][0]["skipped"]] == [{"ext": ".mp4"}]
    [renamed] = [key for key in report["runs"][0]["note_keys"] if key["key"] == "renamed_files"]
    assert renamed["params"] == {"count": 1, "original": "角色_01.png", "stored": chinese.file}
    assert any(note.startswith("1 image with non-ASCII names stored under ASCII") for note in result["notes"])
    # The source folder is untouched.
    assert (messy_folder / "broken.jpg").stat().st_size == 500


def test_reimport_does_nothing_twice(workspace, messy_folder):
    import_dataset(workspace, "set", [messy_folder])
    before = sorted(p.name for p in dataset_folder(workspace, "set").images_dir.iterdir())
    again = import_dataset(workspace, "set", [messy_folder])
    assert again["imported"] == 0 and again["total_images"] == 8
    assert all(
        "already imported" in row["reason"] for row in again["skipped_files"] if "mp4" not in row["source"]
    )
    assert sorted(p.name for p in dataset_folder(workspace, "set").images_dir.iterdir()) == before


def test_interrupted_import_continues(workspace, messy_folder, monkeypatch):
    from lorastudio.data import importer

    calls = {"n": 0}
    real = importer._import_one

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(importer, "_import_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        import_dataset(workspace, "set", [messy_folder])
    partial = DatasetFolder.load(workspace.datasets / "set")
    assert 0 < len(partial.items) < 8  # what was done is recorded
    monkeypatch.setattr(importer, "_import_one", real)
    result = import_dataset(workspace, "set", [messy_folder])
    assert result["total_images"] == 8
    assert result["imported"] == 8 - len(partial.items)


def test_zip_source_with_kohya_repeat_folder(workspace, tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for index, name in enumerate(["10_alice/a.png", "10_alice/b.jpg", "other/c.webp"]):
            buffer = io.BytesIO()
            noise(20 + index).save(
                buffer, {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[name.rsplit(".", 1)[1]]
            )
            zf.writestr(name, buffer.getvalue())
        zf.writestr("10_alice/a.txt", "alice, smile")
        buffer = io.BytesIO()
        noise(29).save(buffer, "PNG")
        zf.writestr("top/3_bob/d.png", buffer.getvalue())
        zf.writestr("top/3_bob/metadata.jsonl", json.dumps({"file_name": "d.png", "text": "bob"}) + "\n")
        zf.writestr("junk.png", b"nope")
    result = import_dataset(workspace, "zipped", [archive])
    assert result["imported"] == 4 and result["failed"] == 1
    items = items_by_original(workspace, "zipped")
    assert items["top/3_bob/d.png"].repeats == 3
    assert dataset_folder(workspace, "zipped").read_caption(items["top/3_bob/d.png"]) == "bob"
    assert items["10_alice/a.png"].repeats == 10 and items["other/c.webp"].repeats == 1
    assert dataset_folder(workspace, "zipped").read_caption(items["10_alice/a.png"]) == "alice, smile"


def test_an_imported_kohya_folder_trains_and_exports_as_kohya_would_read_it(workspace, tmp_path):
    """`5_sks dog/a.png` without a caption: kohya trains it on "sks dog" five times. Imported, it
    keeps both (the folder's name only while the image has no caption and the run sets no default,
    as for the folder used in place); exported as a folder, it goes back into `5_sks dog/`."""
    from lorastudio.data.dataset import Dataset
    from lorastudio.service.datasets import export_dataset, open_training_dataset

    source = tmp_path / "train"
    (source / "5_sks dog").mkdir(parents=True)
    (source / "loose").mkdir()
    noise(40).save(source / "5_sks dog" / "a.png")
    noise(41).save(source / "5_sks dog" / "b.png")
    (source / "5_sks dog" / "b.txt").write_text("sks dog, running", encoding="utf-8")
    noise(42).save(source / "loose" / "c.png")
    import_dataset(workspace, "dogs", [source])

    def captions(opened) -> dict:
        return {Path(item.image).stem.split("-")[0]: (item.caption, item.repeats) for item in opened}

    in_place = captions(open_training_dataset(workspace, str(source)))
    imported = captions(open_training_dataset(workspace, "dogs"))
    assert imported == in_place == {"a": ("sks dog", 5), "b": ("sks dog, running", 5), "c": ("", 1)}
    with_default = captions(open_training_dataset(workspace, "dogs", default_caption="zqx"))
    assert with_default["a"] == ("zqx", 5) and with_default["c"] == ("zqx", 1)
    from lorastudio.service.datasets import dataset_info

    assert dataset_info(workspace, "dogs")["folder_captions"] == {"sks dog": 1}  # a's; b has its own
    manifest = json.loads((workspace.datasets / "dogs" / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(item.get("folder_caption", "") for item in manifest["items"]) == ["", "sks dog", "sks dog"]

    out = tmp_path / "out"
    result = export_dataset(workspace, "dogs", out)
    assert result["folders"] == ["1_dogs", "5_sks dog"]
    assert sorted(p.name for p in (out / "5_sks dog").iterdir() if p.suffix == ".txt") == [
        next(p.stem for p in (out / "5_sks dog").glob("b*.png")) + ".txt"
    ]  # a's caption is the folder's name, as kohya reads it: no file written
    # kohya trains an uncaptioned image on the name of the folder it sits in (as with --repeats N)
    assert captions(Dataset.open(out)) == {**in_place, "c": ("dogs", 1)}
    flat = tmp_path / "flat.jsonl"
    export_dataset(workspace, "dogs", flat.parent / "jsonl", "jsonl")
    lines = (flat.parent / "jsonl" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["text"] for line in lines) == ["", "sks dog", "sks dog, running"]


def test_metadata_and_kohya_json_sources(workspace, tmp_path):
    src = tmp_path / "meta"
    src.mkdir()
    for index in range(3):
        noise(30 + index).save(src / f"img{index}.png")
    (src / "metadata.csv").write_text(
        'file_name,text\nimg0.png,"a cat, sitting"\nimg1.png,a dog\n', encoding="utf-8"
    )
    (src / "metadata.jsonl").write_text(
        json.dumps({"file_name": "img2.png", "text": "a bird"}) + "\n", encoding="utf-8"
    )
    (src / "meta_cap.json").write_text(
        json.dumps({"img0": {"caption": "kohya cap", "tags": "t1, t2"}, "gone": {"caption": "x"}}),
        encoding="utf-8",
    )
    (src / "list.txt").write_text("img1.png\nmissing.png\n", encoding="utf-8")

    from_csv = import_dataset(workspace, "csv", [src / "metadata.csv"])
    assert from_csv["imported"] == 2
    folder = dataset_folder(workspace, "csv")
    assert {folder.read_caption(i) for i in folder.items} == {"a cat, sitting", "a dog"}

    from_jsonl = import_dataset(workspace, "jsonl", [src / "metadata.jsonl"])
    assert from_jsonl["imported"] == 1
    assert (
        dataset_folder(workspace, "jsonl").read_caption(dataset_folder(workspace, "jsonl").items[0])
        == "a bird"
    )

    kohya = import_dataset(workspace, "kohya", [src / "meta_cap.json"])
    assert kohya["imported"] == 1 and kohya["skipped"] == 1
    folder = dataset_folder(workspace, "kohya")
    assert folder.read_caption(folder.items[0]) == "kohya cap, t1, t2"

    listed = import_dataset(workspace, "listed", [src / "list.txt"])
    assert listed["imported"] == 1 and "not found" in listed["skipped_files"][0]["reason"]

    # A folder with metadata.csv picks captions from it.
    whole = import_dataset(workspace, "whole", [src])
    assert whole["imported"] == 3
    folder = dataset_folder(workspace, "whole")
    assert {folder.read_caption(i) for i in folder.items} == {"a cat, sitting", "a dog", "a bird"}


def test_bad_sources_and_names_fail_clearly(workspace, tmp_path):
    with pytest.raises(NotFoundError, match="nowhere"):
        import_dataset(workspace, "x", [tmp_path / "nowhere"])
    (tmp_path / "ok").mkdir()
    with pytest.raises(LorastudioError, match="not allowed"):
        import_dataset(workspace, "../escape", [tmp_path / "ok"])
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"not a zip")
    with pytest.raises(LorastudioError, match=r"bad\.zip: not a readable zip"):
        import_dataset(workspace, "x", [bad_zip])
    with pytest.raises(NotFoundError, match="not found"):
        dataset_folder(workspace, "never")


def test_bad_zip_creates_no_dataset(workspace, tmp_path):
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"not a zip")
    with pytest.raises(LorastudioError):
        import_dataset(workspace, "never_made", [bad_zip])
    assert not (workspace.datasets / "never_made").exists()


def test_more_formats_and_single_file_sources(workspace, tmp_path):
    from PIL import features

    src = tmp_path / "formats"
    src.mkdir()
    noise(40).save(src / "scan.tiff")
    noise(41).convert("L").save(src / "grey.jpg")
    la = noise(42).convert("LA")
    la.putalpha(0)
    la.save(src / "clear.png")
    if features.check("avif"):
        noise(43).save(src / "modern.avif")
    (src / "grey.txt").write_text("greyscale photo", encoding="utf-8")
    result = import_dataset(workspace, "formats", [src / "grey.jpg", src / "scan.tiff", src / "clear.png"])
    assert result["imported"] == 3 and result["failed"] == 0
    folder = dataset_folder(workspace, "formats")
    items = items_by_original(workspace, "formats")
    assert folder.read_caption(items["grey.jpg"]) == "greyscale photo"
    with Image.open(folder.image_path(items["clear.png"])) as stored:
        assert stored.mode == "RGB" and stored.getpixel((3, 3)) == (
            255,
            255,
            255,
        )  # fully transparent -> background
    if features.check("avif"):
        assert import_dataset(workspace, "formats", [src / "modern.avif"])["imported"] == 1


def test_zip_with_gbk_member_names(workspace, tmp_path):
    """Windows zips store Chinese names as GBK bytes without the UTF-8 flag."""
    archive = tmp_path / "gbk.zip"
    buffer = io.BytesIO()
    noise(50).save(buffer, "PNG")
    gbk_name = "角色.png".encode("gbk")
    placeholder = b"X" * (len(gbk_name) - 4) + b".png"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(placeholder.decode(), buffer.getvalue())
    # Swap in the raw GBK bytes (local header + central directory), as a Windows zipper writes them.
    archive.write_bytes(archive.read_bytes().replace(placeholder, gbk_name))
    with zipfile.ZipFile(archive) as zf:
        assert zf.infolist()[0].flag_bits & 0x800 == 0
    assert import_dataset(workspace, "gbk", [archive])["imported"] == 1
    assert dataset_folder(workspace, "gbk").items[0].original == "角色.png"
