"""The on-disk layout of an imported data set, and its `manifest.json`.

```
studio/datasets/NAME/
  images/<safe>.jpg|png|webp     the stored image (upright RGB, see images.py)
  images/<safe>.txt              its caption (kohya/HCP: same stem, one line)
  manifest.json                  {"version": 1, "name": NAME, "items": [Item, ...]}
  import_report.json             what each import did: imported / skipped / failed + reason
  clean_report.json              what `clean` dropped and why (dropped files go to removed/)
  removed/                       images taken out by `clean` (nothing is deleted)
```

An `Item` is `{"file": "<safe>.png", "original": "角色_01.png", "source": "/path/or/zip:member",
"sha256": "<of the source bytes>", "width": 512, "height": 768, "repeats": 1}`. The safe name
is an ASCII slug of the original stem plus 8 hex digits of the hash, so the same picture
always gets the same name and re-imports are no-ops. Every JSON file is written to a
temporary file and renamed, so an interrupted run never leaves half a manifest.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorastudio.config import decode_text
from lorastudio.errors import LorastudioError, NotFoundError

__all__ = [
    "MANIFEST_VERSION",
    "CAPTION_EXTENSION",
    "DatasetFolder",
    "decode_text",
    "ManifestItem",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "safe_stem",
]

MANIFEST_VERSION = 1
CAPTION_EXTENSION = ".txt"
_SLUG_DROP = re.compile(r"[^A-Za-z0-9_-]+")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def safe_stem(original: str, sha256: str) -> str:
    """'角色_01.png' + hash -> '01-3fa2b4c1': ASCII, no spaces, unique per content."""
    stem = unicodedata.normalize("NFKD", Path(original).stem).encode("ascii", "ignore").decode()
    slug = _SLUG_DROP.sub("_", stem).strip("_-")[:40]
    return f"{slug}-{sha256[:8]}" if slug else sha256[:12]


@dataclass
class ManifestItem:
    file: str
    original: str
    source: str
    sha256: str
    width: int
    height: int
    repeats: int = 1
    # A kohya `NN_name` source folder's name: kohya's caption for an image without one (used, as
    # kohya does, only while the image has no caption and the run sets no default caption).
    folder_caption: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return Path(self.file).stem

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("folder_caption", "extra"):
            if not data[optional]:
                data.pop(optional)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ManifestItem:
        known = {k: data[k] for k in ("file", "original", "source", "sha256", "width", "height") if k in data}
        return cls(
            **known,
            repeats=int(data.get("repeats", 1)),
            folder_caption=str(data.get("folder_caption", "")),
            extra=dict(data.get("extra", {})),
        )


class DatasetFolder:
    """One imported data set: paths, manifest items and caption files."""

    def __init__(self, root: Path, items: list[ManifestItem] | None = None):
        self.root = Path(root)
        self.items: list[ManifestItem] = items or []

    # -- layout -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.root.name

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def removed_dir(self) -> Path:
        return self.root / "removed"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def import_report_path(self) -> Path:
        return self.root / "import_report.json"

    @property
    def clean_report_path(self) -> Path:
        return self.root / "clean_report.json"

    def image_path(self, item: ManifestItem) -> Path:
        return self.images_dir / item.file

    def caption_path(self, item: ManifestItem) -> Path:
        return self.images_dir / (item.stem + CAPTION_EXTENSION)

    # -- manifest -----------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path) -> DatasetFolder:
        folder = cls(root)
        if folder.manifest_path.is_file():
            return cls.load(root)
        folder.images_dir.mkdir(parents=True, exist_ok=True)
        folder.save()
        return folder

    @classmethod
    def load(cls, root: Path) -> DatasetFolder:
        path = Path(root) / "manifest.json"
        if not path.is_file():
            raise NotFoundError(
                f"data set {Path(root).name!r}: no manifest.json; import it with `lorastudio dataset import`."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            items = [ManifestItem.from_json(entry) for entry in data.get("items", [])]
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            raise LorastudioError(
                f"{path}: damaged manifest ({exc}); re-run the import to rebuild it."
            ) from None
        return cls(Path(root), items)

    def save(self) -> None:
        atomic_write_json(
            self.manifest_path,
            {
                "version": MANIFEST_VERSION,
                "name": self.name,
                "items": [item.to_json() for item in self.items],
            },
        )

    def by_sha(self) -> dict[str, ManifestItem]:
        return {item.sha256: item for item in self.items}

    def find(self, file_or_stem: str) -> ManifestItem | None:
        for item in self.items:
            if file_or_stem in (item.file, item.stem, item.original):
                return item
        return None

    # -- captions -----------------------------------------------------------------------
    def read_caption(self, item: ManifestItem) -> str | None:
        """The caption as the user wrote it: a file edited since in Notepad may carry a BOM or be UTF-16."""
        path = self.caption_path(item)
        if not path.is_file():
            return None
        return decode_text(path.read_bytes()).strip()

    def write_caption(self, item: ManifestItem, caption: str) -> None:
        atomic_write_text(self.caption_path(item), caption.strip() + "\n")
