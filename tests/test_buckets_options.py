"""kohya's bucket options: min/max side, step, and bucket_no_upscale."""

from __future__ import annotations

import pytest
from PIL import Image

from lorastudio.data.buckets import no_upscale_bucket
from lorastudio.data.dataset import DatasetItem
from lorastudio.errors import LorastudioError
from lorastudio.train.config import load_train_config
from lorastudio.train.data import BucketOptions, scan_images


def test_bucket_set_respects_min_max_and_step():
    options = BucketOptions(min_reso=320, max_reso=768, step=32)
    buckets = options.buckets(512)
    assert (512, 512) in buckets
    for w, h in buckets:
        assert 320 <= w <= 768 and 320 <= h <= 768
        assert w % 32 == 0 and h % 32 == 0
        assert w * h <= 512 * 512
    # A finer step gives more buckets; a narrower range fewer.
    assert len(buckets) > len(BucketOptions(min_reso=320, max_reso=768, step=64).buckets(512))
    assert len(BucketOptions(min_reso=448, max_reso=576, step=32).buckets(512)) < len(buckets)


def test_no_upscale_keeps_small_images_at_their_size_rounded_down():
    assert no_upscale_bucket(300, 200, 512, 64) == (256, 192)
    assert no_upscale_bucket(300, 200, 512, 8) == (296, 200)
    assert no_upscale_bucket(1024, 1024, 512, 64) == (512, 512)  # big images still fit the area
    w, h = no_upscale_bucket(2000, 1000, 512, 64)
    assert w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 and w == 2 * h + 64


def test_scan_images_with_no_upscale_trains_small_images_without_enlarging(tmp_path):
    items = []
    for i, size in enumerate([(300, 200), (640, 640)]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", size, (i * 40, 0, 0)).save(path)
        items.append(DatasetItem(path, "x"))
    with pytest.raises(LorastudioError, match="smaller than train.resolution"):
        scan_images(items, 512)  # the 300x200 image needs upscaling to any 512 bucket
    images = scan_images(items, 512, options=BucketOptions(step=64, no_upscale=True))
    assert [img.bucket for img in images] == [(256, 192), (512, 512)]


def test_bucket_keys_are_validated_against_the_resolution():
    cfg = load_train_config(
        overrides=[
            "data.min_bucket_reso=256",
            "data.max_bucket_reso=1024",
            "data.bucket_reso_steps=32",
            "data.bucket_no_upscale=true",
        ]
    )
    assert BucketOptions.from_config(cfg.data) == BucketOptions(256, 1024, 32, True)
    with pytest.raises(LorastudioError, match="multiple of data.bucket_reso_steps"):
        load_train_config(overrides=["train.resolution=520", "data.bucket_reso_steps=64"])
    with pytest.raises(LorastudioError, match="max_bucket_reso"):
        load_train_config(overrides=["data.max_bucket_reso=256"])
    with pytest.raises(LorastudioError, match="bucket_reso_steps"):
        load_train_config(overrides=["data.bucket_reso_steps=12"])


def test_training_plan_uses_bucket_options_and_data_repeats(tmp_path):
    from lorastudio.train.plan import prepare_plan
    from training_helpers import write_images

    folder = write_images(tmp_path / "small", [((200, 10, 10), "red")] * 2, size=40)
    common = ["model=tiny-sd15", f"data.dir={folder}", "train.resolution=64", "data.bucket_reso_steps=8"]
    with pytest.raises(LorastudioError, match="smaller than train.resolution"):
        prepare_plan(load_train_config(overrides=common), tmp_path)
    plan = prepare_plan(load_train_config(overrides=[*common, "data.bucket_no_upscale=true", "data.repeats=7"]), tmp_path)
    assert {img.bucket for img in plan.images} == {(40, 40)}
    assert plan.num_samples == 14  # 2 images x data.repeats


def test_sdxl_crop_time_ids_name_the_box_resize_to_bucket_cuts(tmp_path):
    """The trainer's (top, left) crop conditioning and the latents' crop come from one arithmetic."""
    import numpy as np

    from lorastudio.data.buckets import bucket_crop, resize_to_bucket
    from lorastudio.train.losses import time_ids

    sizes = [(96 + 23 * i, 200 - 7 * i) if i % 2 else (210 - 9 * i, 90 + 17 * i) for i in range(20)]
    items = []
    for i, (w, h) in enumerate(sizes):
        x, y = np.meshgrid(np.arange(w), np.arange(h))
        pixels = np.stack([x * 255 // w, y * 255 // h, (x * 7 + y * 3) % 256], axis=-1).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        items.append(DatasetItem(tmp_path / f"{i}.png", "x"))
    images = scan_images(items, 128, max_upscale=4.0, options=BucketOptions(step=32))
    rows = time_ids(images, [(i, False) for i in range(len(images))], "cpu").int().tolist()
    cropped = 0
    for image, (h, w, top, left, bh, bw) in zip(images, rows, strict=True):
        assert (w, h) == image.size and (bw, bh) == image.bucket
        with Image.open(image.path) as source:
            source = source.convert("RGB")
            scaled = bucket_crop(source.size, image.bucket).size
            whole = source.resize(scaled, Image.Resampling.LANCZOS) if scaled != source.size else source
            expected = whole.crop((left, top, left + bw, top + bh))
            assert np.array_equal(np.asarray(resize_to_bucket(source, image.bucket)), np.asarray(expected))
        cropped += bool(top or left)
    assert len(rows) == 20 and cropped >= 10  # most sizes are cut on one side
