"""Write a data set out in the layouts other trainers read.

- `folder`:  `DEST/[NN_name/]image.png` + `image.txt` or `.caption` (kohya/HCP; NN = repeats when given)
- `csv`:     images + `metadata.csv` with `file_name,text` (HF imagefolder, DiffSynth)
- `jsonl`:   images + `metadata.jsonl` with `{"file_name", "text"}` per line
- `kohya`:   images + `meta_cap.json` `{stem: {"caption": ...}}`; point kohya's
  `--in_json` at it and `--train_data_dir` at DEST.
Images are copied as stored; DEST must be empty or new (nothing is overwritten).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Literal

from lorastudio.data.manifest import DatasetFolder, atomic_write_json, atomic_write_text
from lorastudio.errors import LorastudioError

__all__ = ["EXPORT_FORMATS", "export_dataset"]

ExportFormat = Literal["folder", "csv", "jsonl", "kohya"]
EXPORT_FORMATS = ("folder", "csv", "jsonl", "kohya")


def export_dataset(
    folder: DatasetFolder,
    dest: Path,
    fmt: ExportFormat = "folder",
    repeats: int | None = None,
    caption_extension: str = ".txt",
) -> dict:
    """Copy images (and captions in the chosen form) to `dest`; returns a summary."""
    if fmt not in EXPORT_FORMATS:
        raise LorastudioError(f"export format {fmt!r} is not known; use one of {', '.join(EXPORT_FORMATS)}.")
    if caption_extension not in {".txt", ".caption"}:
        raise LorastudioError(f"caption extension {caption_extension!r}: use '.txt' or '.caption'.")
    dest = Path(dest).expanduser()
    if dest.exists() and any(dest.iterdir()):
        raise LorastudioError(f"{dest}: folder is not empty; choose a new or empty folder to export into.")
    images_dir = dest / f"{repeats}_{folder.name}" if fmt == "folder" and repeats else dest
    images_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for item in folder.items:
        source = folder.image_path(item)
        if not source.is_file():
            continue
        shutil.copy2(source, images_dir / item.file)
        caption = folder.read_caption(item) or ""
        records.append((item.file, caption))
        if fmt == "folder" and caption:
            atomic_write_text(images_dir / (item.stem + caption_extension), caption + "\n")
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file_name", "text"])
        writer.writerows(records)
        atomic_write_text(dest / "metadata.csv", buffer.getvalue())
    elif fmt == "jsonl":
        lines = [json.dumps({"file_name": f, "text": c}, ensure_ascii=False) for f, c in records]
        atomic_write_text(dest / "metadata.jsonl", "\n".join(lines) + "\n")
    elif fmt == "kohya":
        atomic_write_json(dest / "meta_cap.json", {Path(f).stem: {"caption": c} for f, c in records})
    return {"format": fmt, "dest": str(dest), "images": len(records), "images_dir": str(images_dir)}
