"""The kohya JSON export carries `tags` beside `caption`, as kohya's merged metadata does."""

from __future__ import annotations

import json

from PIL import Image

from lorastudio.data.dataset import Dataset
from lorastudio.data.export import split_caption_and_tags
from lorastudio.data.labeling import label_dataset
from lorastudio.service.datasets import dataset_folder, export_dataset, import_dataset


def test_split_keeps_prose_first_and_gives_the_caption_back():
    caption = "a girl standing in the rain with an umbrella, 1girl, umbrella, rain"
    text, tags = split_caption_and_tags(caption)
    assert text == "a girl standing in the rain with an umbrella" and tags == "1girl, umbrella, rain"
    assert f"{text}, {tags}" == caption  # kohya joins caption and tags with ", " when training
    assert split_caption_and_tags("1girl, solo") == ("", "1girl, solo")
    assert split_caption_and_tags("a photo of a red dog") == ("a photo of a red dog", "")
    # The tagger's own record decides where a short caption ends and the tags begin.
    assert split_caption_and_tags("red dog, 1girl, solo", ["1girl", "solo"]) == ("red dog", "1girl, solo")


def test_kohya_export_writes_caption_and_tags_from_the_tagger_record(workspace, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (40 * i, 90, 10)).save(src / f"{i}.png")
        (src / f"{i}.txt").write_text(["a dog on grass", "cat"][i], encoding="utf-8")
    import_dataset(workspace, "pets", [src])
    folder = dataset_folder(workspace, "pets")
    # A tagger appending its tags (the labeller is any images -> texts function).
    label_dataset(folder, lambda images: ["solo, grass"] * len(images), "tag", {"m": 1}, mode="append")
    folder = dataset_folder(workspace, "pets")  # the tag record is in the saved manifest
    assert sorted(tuple(item.extra["tags"]) for item in folder.items) == [("solo", "grass")] * 2

    dest = tmp_path / "out"
    export_dataset(workspace, "pets", dest, "kohya")
    meta = json.loads((dest / "meta_cap.json").read_text(encoding="utf-8"))
    records = sorted(meta.values(), key=lambda r: r["caption"])
    assert records == [
        {"caption": "a dog on grass", "tags": "solo, grass"},
        {"caption": "cat", "tags": "solo, grass"},  # one word, but not one of the tagger's tags
    ]
    # Training on the export reads back the very captions the data set trains with.
    originals = {folder.read_caption(item) for item in folder.items}
    assert {item.caption for item in Dataset.open(dest / "meta_cap.json")} == originals


def test_a_tags_only_caption_is_not_joined_behind_an_empty_prose_part(workspace, tmp_path):
    """kohya trains `caption + ", " + tags` when both keys are there: `{"caption": "", "tags": "alice,
    smile"}` became ", alice, smile". A caption with no prose is written as the caption alone."""
    import json

    from PIL import Image

    from lorastudio.data.dataset import Dataset
    from lorastudio.service.datasets import export_dataset, import_dataset

    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(src / "a.png")
    (src / "a.txt").write_text("alice, smile", encoding="utf-8")
    Image.new("RGB", (32, 32), (10, 10, 200)).save(src / "b.png")
    import_dataset(workspace, "tags", [src])
    dest = tmp_path / "out"
    export_dataset(workspace, "tags", dest, "kohya")
    meta = json.loads((dest / "meta_cap.json").read_text(encoding="utf-8"))
    assert sorted(meta.values(), key=lambda r: r["caption"]) == [{"caption": ""}, {"caption": "alice, smile"}]
    assert {item.caption for item in Dataset.open(dest / "meta_cap.json")} == {"", "alice, smile"}
