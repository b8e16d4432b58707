"""What the trainer reads: image path + caption + repeats, from any layout users have.

`Dataset.open(path)` accepts, without importing anything:
- an imported data set (`studio/datasets/NAME`, has `manifest.json`),
- a plain folder of images with same-stem `.txt`/`.caption` files (only `caption_extension`'s
  when one is chosen, as kohya), including kohya `NN_name` sub-folders (NN = repeats) and a
  `metadata.csv`/`.jsonl` or kohya `meta*.json` in the folder,
- a `metadata.csv` / `metadata.jsonl` file, or a kohya `meta_*.json` file.
Images are not decoded here (training opens them with `images.open_image`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lorastudio.data.caption_notes import CaptionChoices, caption_notes
from lorastudio.data.manifest import DatasetFolder
from lorastudio.data.sources import iter_source
from lorastudio.errors import LorastudioError, NotFoundError

__all__ = ["Dataset", "DatasetItem"]


@dataclass(frozen=True)
class DatasetItem:
    image: Path
    caption: str
    repeats: int = 1
    subset: str = ""  # the kohya `NN_name` folder it came from ("10_alice"): the files' metadata key

    @staticmethod
    def kohya_subset(repeats: int, folder_caption: str) -> str:
        return f"{repeats}_{folder_caption}" if folder_caption else ""


class Dataset:
    """An ordered list of `DatasetItem`s plus where they came from."""

    def __init__(
        self,
        items: list[DatasetItem],
        root: Path,
        kind: str,
        skipped: list[tuple[str, str]] | None = None,
        notes: list[str] | None = None,
    ):
        self.root = root
        self.kind = kind  # "managed" | "folder" | "metadata" | "kohya-json"
        self._items = items
        self.skipped = skipped or []  # (name, reason) for entries that are not usable images
        self.notes = notes or []  # which captions were read where an image had several (data.caption_notes)

    @classmethod
    def open(
        cls,
        path: str | Path,
        default_caption: str = "",
        fallback_caption: str = "",
        caption_extension: str | None = None,
    ) -> Dataset:
        """An image without a caption trains on `default_caption` (data.default_caption), else on
        its kohya `NN_name` folder's name (kohya's class tokens), else on `fallback_caption` (the
        trigger). `caption_extension` (data.caption_extension): a folder's caption files, as kohya's."""
        path = Path(path).expanduser()
        if not path.exists():
            raise NotFoundError(
                f"{path}: data set not found; give an imported data set name or a folder path.",
                key="dataset_not_found",
                params={"name": path.name},
            )
        if path.is_dir() and (path / "manifest.json").is_file():
            return cls._from_manifest(DatasetFolder.load(path), default_caption, fallback_caption)
        if path.is_file() and path.suffix.lower() == ".zip":
            raise LorastudioError(
                f"{path}: train from a zip after `lorastudio dataset import {path} --name NAME`."
            )
        kind = "folder" if path.is_dir() else ("kohya-json" if path.suffix.lower() == ".json" else "metadata")
        items: list[DatasetItem] = []
        skipped: list[tuple[str, str]] = []
        choices = CaptionChoices()
        for entry in iter_source(path, caption_extension):
            choices.add(entry)
            if entry.problem or entry.read is None:
                skipped.append((entry.name, entry.problem or "unreadable"))
                continue
            # No caption file: data.default_caption, else the kohya folder's name (as kohya trains it).
            caption = entry.caption or default_caption or entry.folder_caption or fallback_caption
            subset = DatasetItem.kohya_subset(entry.repeats, entry.folder_caption)
            items.append(DatasetItem(Path(entry.source), caption, entry.repeats, subset))
        if not items:
            raise LorastudioError(
                f"{path}: no images found; add .png/.jpg/.webp files or point at the right folder."
            )
        notes = caption_notes(choices, caption_extension, choose="data.caption_extension={ext}")
        return cls(items, path if path.is_dir() else path.parent, kind, skipped, notes)

    @classmethod
    def _from_manifest(cls, folder: DatasetFolder, default_caption: str, fallback_caption: str = "") -> Dataset:
        items = [
            DatasetItem(
                folder.image_path(item),
                folder.read_caption(item) or default_caption or item.folder_caption or fallback_caption,
                item.repeats,
                DatasetItem.kohya_subset(item.repeats, item.folder_caption),
            )
            for item in folder.items
            if folder.image_path(item).is_file()
        ]
        if not items:
            raise LorastudioError(
                f"data set {folder.name!r} is empty; import images first.",
                key="dataset_empty",
                params={"name": folder.name},
            )
        return cls(items, folder.root, "managed")

    def items(self) -> list[DatasetItem]:
        return list(self._items)

    def __iter__(self) -> Iterator[DatasetItem]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def num_samples(self) -> int:
        """Images x repeats: what one epoch sees."""
        return sum(item.repeats for item in self._items)
