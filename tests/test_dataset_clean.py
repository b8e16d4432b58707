"""Clean filters, perceptual hashes and training buckets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from lorastudio.data.buckets import assign_bucket, plan_buckets, resize_to_bucket
from lorastudio.data.config import CleanConfig
from lorastudio.data.phash import blur_score, hamming, near_duplicate_groups, phash
from lorastudio.service.datasets import clean_dataset, dataset_folder, import_dataset, resize_dataset


def noise(seed: int, size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # coarse blocks: survive resizing, sharp edges
    return Image.fromarray(blocks, "RGB").resize(size, Image.Resampling.NEAREST)


# -- phash ----------------------------------------------------------------------------------


def test_phash_near_for_resized_copy_far_for_other_image():
    original = noise(1, (256, 192))
    copy = original.resize((128, 96)).convert("L")
    other = noise(2, (256, 192))
    assert hamming(phash(original), phash(copy)) <= 4
    assert hamming(phash(original), phash(other)) > 12


def test_near_duplicate_groups_are_transitive():
    groups = near_duplicate_groups([0b0000, 0b0001, 0b0011, 0xFFFF_0000_0000], threshold=1)
    assert groups == [[0, 1, 2]]


def test_blur_score_drops_for_blurred_image():
    pixels = np.random.default_rng(3).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    sharp = Image.fromarray(pixels, "RGB")
    assert blur_score(sharp.filter(ImageFilter.GaussianBlur(4))) < blur_score(sharp) / 5


# -- buckets --------------------------------------------------------------------------------


def test_plan_buckets_respects_area_step_and_range():
    buckets = plan_buckets(512)
    assert (512, 512) in buckets and (256, 1024) in buckets and (1024, 256) in buckets
    for w, h in buckets:
        assert w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0
        assert 256 <= w <= 1024 and 256 <= h <= 1024
    assert all((h, w) in buckets for w, h in buckets)  # symmetric
    assert max(w for w, _ in plan_buckets(1024)) == 2048  # max scales with resolution
    with pytest.raises(ValueError):
        plan_buckets(500)


def test_assign_bucket_by_nearest_aspect():
    buckets = plan_buckets(512)
    assert assign_bucket(1000, 1000, buckets) == (512, 512)
    w, h = assign_bucket(600, 900, buckets)
    assert (w, h) == (384, 640)  # 0.60 is nearer 0.67 than 448x576 (0.78)
    w, h = assign_bucket(1920, 1080, buckets)
    assert (w, h) == (640, 384)


def test_resize_to_bucket_covers_then_crops_only_the_excess():
    image = Image.new("RGB", (300, 200), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 10, 200))  # red strip on the far left
    out = resize_to_bucket(image, (128, 128))
    assert out.size == (128, 128)
    assert out.getpixel((0, 64))[0] < 50  # left strip cropped away (centre crop)
    kept = resize_to_bucket(image, (128, 128), focus=(0.0, 0.5))
    assert kept.getpixel((0, 64))[0] > 200  # a focus point keeps it (face-aware crop hook)
    exact = resize_to_bucket(Image.new("RGB", (640, 448)), (320, 224))
    assert exact.size == (320, 224)


# -- clean ----------------------------------------------------------------------------------


@pytest.fixture
def clean_set(workspace, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    noise(1, (256, 256)).save(src / "keep_big.png")
    noise(1, (256, 256)).resize((200, 200)).save(src / "near_copy.png")
    noise(1, (256, 256)).save(src / "exact_copy.jpg", quality=100)  # same picture, other encoding
    noise(2, (64, 64)).save(src / "tiny.png")
    noise(3, (600, 200)).save(src / "wide.png")
    noise(4, (256, 256)).filter(ImageFilter.GaussianBlur(8)).save(src / "blurry.png")
    noise(5, (256, 240)).save(src / "other.png")
    import_dataset(workspace, "c", [src])
    return workspace


def _dropped(result) -> dict[str, str]:
    folder_names = {row["file"]: row["reason"] for row in result["dropped"]}
    return {name.rsplit("-", 1)[0]: reason for name, reason in folder_names.items()}


def test_clean_dry_run_reports_and_changes_nothing(clean_set):
    config = CleanConfig(min_width=128, min_height=128, min_ratio=0.5, max_ratio=2.0, min_sharpness=5.0)
    before = len(dataset_folder(clean_set, "c").items)
    result = clean_dataset(clean_set, "c", config, dry_run=True)
    dropped = _dropped(result)
    assert "too small" in dropped["tiny"]
    assert "aspect ratio 3.00 above 2.0" in dropped["wide"]
    assert "blurry" in dropped["blurry"]
    # keep_big and exact_copy (a JPEG of it) have the same size: one is kept, the rest drop.
    assert "near duplicate of" in dropped["near_copy"]
    assert ("keep_big" in dropped) != ("exact_copy" in dropped)
    assert "other" not in dropped
    assert result["kept"] == 2
    assert len(dataset_folder(clean_set, "c").items) == before


def test_clean_moves_drops_to_removed_and_records_them(clean_set):
    result = clean_dataset(clean_set, "c", CleanConfig(min_width=128, min_height=128, dedupe="off"))
    folder = dataset_folder(clean_set, "c")
    assert len(folder.items) == result["kept"] == 6
    assert any(p.name.startswith("tiny") for p in folder.removed_dir.iterdir())
    assert not any(p.name.startswith("tiny") for p in folder.images_dir.iterdir())
    report = json.loads(folder.clean_report_path.read_text(encoding="utf-8"))
    assert report["dropped"][0]["reason"].startswith("too small")


def test_resize_to_buckets_updates_files_and_manifest(clean_set):
    preview = resize_dataset(clean_set, "c", 128, "buckets", dry_run=True)
    assert preview["resized"] == 7
    result = resize_dataset(clean_set, "c", 128, "square")
    folder = dataset_folder(clean_set, "c")
    assert result["resized"] == 7
    for item in folder.items:
        with Image.open(folder.image_path(item)) as stored:
            assert stored.size == (128, 128) == (item.width, item.height)
    assert resize_dataset(clean_set, "c", 128, "square")["resized"] == 0  # idempotent


def test_exact_mode_finds_same_pixels_in_other_formats(workspace, tmp_path):
    src = tmp_path / "same"
    src.mkdir()
    noise(9, (96, 96)).save(src / "a.png")
    noise(9, (96, 96)).save(src / "b.bmp")  # other bytes, same pixels
    noise(9, (96, 96)).resize((90, 90)).save(src / "c.png")  # near, not exact
    import_dataset(workspace, "same", [src])
    result = clean_dataset(workspace, "same", CleanConfig(dedupe="exact"), dry_run=True)
    assert [row["reason"].split(" of ")[0] for row in result["dropped"]] == ["exact duplicate"]
    assert result["kept"] == 2
