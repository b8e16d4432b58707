"""The data-set service functions the web UI needs: files uploaded one by one become one data
set (captions beside their images kept), and a caption editor reads and writes captions."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.service.datasets import dataset_captions, import_uploaded_files, write_captions


def noise(seed: int, size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _browser_upload(tmp_path, name: str, data: bytes | None = None, image: Image.Image | None = None):
    """A file as Gradio stores an upload: alone in a folder of its own, under the client's name."""
    folder = tmp_path / f"upload-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    path = folder / name
    if image is not None:
        image.save(path)
    else:
        path.write_bytes(data or b"")
    return path


def test_uploaded_images_captions_and_zips_become_one_data_set(workspace, tmp_path):
    uploads = tmp_path / "browser"
    uploads.mkdir()
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        buffer = tmp_path / "z.png"
        noise(3).save(buffer)
        zf.write(buffer, "z.png")
        zf.writestr("z.txt", "from the zip")
    files = [
        _browser_upload(uploads, "角色_01.png", image=noise(1)),
        _browser_upload(uploads, "角色_01.txt", "红发, smile".encode()),
        _browser_upload(uploads, "plain.png", image=noise(2)),
        _browser_upload(uploads, "more.zip", archive.read_bytes()),
    ]
    seen = []
    result = import_uploaded_files(workspace, "角色集", files, progress=lambda done, source: seen.append(done))
    assert result["name"] == "角色集" and result["total_images"] == 3
    assert seen and seen[-1] == 3  # the UI's progress bar counts the images
    captions = {row["original"].split("/")[-1]: row["caption"] for row in dataset_captions(workspace, "角色集")["items"]}
    assert captions == {"角色_01.png": "红发, smile", "plain.png": "", "z.png": "from the zip"}
    assert not [p for p in workspace.cache.iterdir() if p.name.startswith("dataset-upload-")]  # staging removed


def test_two_uploads_with_one_name_are_both_kept(workspace, tmp_path):
    uploads = tmp_path / "browser"
    uploads.mkdir()
    files = [_browser_upload(uploads, "a.png", image=noise(1)), _browser_upload(uploads, "a.png", image=noise(2))]
    assert import_uploaded_files(workspace, "twice", files)["total_images"] == 2


def test_an_empty_upload_is_refused_with_the_fix(workspace):
    with pytest.raises(LorastudioError, match="choose at least one"):
        import_uploaded_files(workspace, "none", [])


def test_edited_captions_are_written_and_a_wrong_file_changes_nothing(workspace, tmp_path):
    uploads = tmp_path / "browser"
    uploads.mkdir()
    import_uploaded_files(workspace, "set", [_browser_upload(uploads, f"{i}.png", image=noise(i)) for i in range(2)])
    rows = dataset_captions(workspace, "set")["items"]
    assert all(row["caption"] == "" and row["path"].endswith(row["file"]) for row in rows)
    first, second = rows[0]["file"], rows[1]["file"]
    with pytest.raises(LorastudioError, match="no image 'nope.png'"):
        write_captions(workspace, "set", {first: "changed", "nope.png": "x"})
    assert dataset_captions(workspace, "set")["items"][0]["caption"] == ""
    result = write_captions(workspace, "set", {first: "  a cat,\n sitting ", second: ""})
    assert result["changed"] == 1
    assert [row["caption"] for row in dataset_captions(workspace, "set")["items"]] == ["a cat, sitting", ""]


def test_a_browser_upload_is_imported_as_a_job_with_each_caption_beside_its_image(studio, tmp_path):
    from PIL import Image

    from lorastudio.errors import LorastudioError
    from lorastudio.service.job_kinds import submit_dataset_upload

    folder = tmp_path / "picked"
    folder.mkdir()
    for i, stem in enumerate(("角色_1", "b")):
        Image.new("RGB", (96, 96), (40 * i, 200, 30)).save(folder / f"{stem}.png")
    (folder / "角色_1.txt").write_text("zq, green square", encoding="utf-8")
    files = sorted(folder.iterdir())
    job = submit_dataset_upload(studio, "greens", files, user="ann")
    assert job.kind == "import" and job.user == "ann"
    job = studio.wait_job(job.id, timeout=120)
    assert job.state == "succeeded", job.error
    assert job.result["total_images"] == 2
    captions = [p.read_text(encoding="utf-8").strip() for p in (studio.workspace.datasets / "greens").rglob("*.txt")]
    assert "zq, green square" in captions  # paired by the original name, not the upload's
    assert not any((studio.workspace.cache / "uploads").glob("*"))  # the uploads are used up
    (folder / "bad.txt").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(LorastudioError, match="none of the 1 files.*UTF-8"):
        submit_dataset_upload(studio, "bad", [folder / "bad.txt"])
    assert not any((studio.workspace.cache / "uploads").glob("*"))  # a refused upload leaves nothing
    # one broken picture (and a .bmp, which kohya reads) among good ones: the others are imported, it is reported
    (folder / "坏.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.new("RGB", (96, 96), (10, 20, 200)).save(folder / "c.bmp")
    job = studio.wait_job(submit_dataset_upload(studio, "mixed", sorted(folder.glob("*.*"))).id, timeout=120)
    assert job.state == "succeeded", job.error
    assert job.result["total_images"] == 3  # 角色_1, b and c.bmp
    assert [(row["source"], "readable" in row["reason"] or "UTF-8" in row["reason"]) for row in job.result["failed_files"]] == [
        ("bad.txt", True), ("坏.png", True)]  # fmt: skip


def test_an_import_where_nothing_reads_is_refused_and_leaves_no_set(workspace, tmp_path):
    from lorastudio.errors import LorastudioError
    from lorastudio.service.datasets import import_dataset, list_datasets

    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(LorastudioError, match="no image could be imported"):
        import_dataset(workspace, "allbad", [tmp_path / "zero.png", tmp_path / "text.png"])
    assert not (workspace.datasets / "allbad").exists() and "allbad" not in str(list_datasets(workspace))


def test_a_browser_upload_reads_caption_files_and_a_kohya_metadata_json_as_a_folder_import(studio, tmp_path):
    """kohya's BLIP `.caption` beside an image, and a `meta_*.json`, as `dataset import` reads a folder;
    a .json that is no kohya metadata is refused with the reason, the rest imported."""
    import json

    from lorastudio.service.job_kinds import submit_dataset_upload

    folder = tmp_path / "picked"
    folder.mkdir()
    for i, stem in enumerate(("blip", "both", "tagged")):
        noise(i).save(folder / f"{stem}.png")
    (folder / "blip.caption").write_text("a photo of a cat", encoding="utf-8")
    (folder / "both.txt").write_text("cat, tags", encoding="utf-8")
    (folder / "both.caption").write_text("a cat sleeping", encoding="utf-8")
    (folder / "meta_cap.json").write_text(json.dumps({"tagged": {"caption": "a dog", "tags": "dog"}}), encoding="utf-8")
    (folder / "config.json").write_text("{}", encoding="utf-8")
    job = studio.wait_job(submit_dataset_upload(studio, "cats", sorted(folder.iterdir())).id, timeout=120)
    assert job.state == "succeeded", job.error
    captions = {row["original"].split("/")[-1]: row["caption"] for row in dataset_captions(studio.workspace, "cats")["items"]}
    assert captions == {"blip.png": "a photo of a cat", "both.png": "cat, tags", "tagged.png": "a dog, dog"}
    assert [row["source"] for row in job.result["failed_files"]] == ["config.json"]
    assert "'meta'" in job.result["failed_files"][0]["reason"]
    assert any("had both .txt and .caption" in note for note in job.result["notes"])
    # the import's caption file chosen, as kohya's caption_extension: only the .caption is read
    files = [folder / name for name in ("both.png", "both.txt", "both.caption")]
    job = studio.wait_job(submit_dataset_upload(studio, "blips", files, caption_extension=".caption").id, timeout=120)
    assert [row["caption"] for row in dataset_captions(studio.workspace, "blips")["items"]] == ["a cat sleeping"]
    bad = folder / "meta_lat.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(LorastudioError, match="meta_lat.json.*not kohya metadata"):
        submit_dataset_upload(studio, "bad", [bad])
