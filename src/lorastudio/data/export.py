"""Write a data set out in the layouts other trainers read.

- `folder`:  `DEST/[NN_name/]image.png` + `image.txt` or `.caption` (kohya/HCP). With `repeats`, one
  `NN_<data set>` folder; without, images imported from kohya `NN_name` folders (or given repeats)
  go back into `NN_name` folders (repeats and, for an uncaptioned image, its folder caption kept),
  the rest into `1_<data set>`; a set with neither is written flat.
- `csv`:     images + `metadata.csv` with `file_name,text` (HF imagefolder), UTF-8
- `metadata-csv`: the same with a UTF-8 BOM, as pandas' `to_csv(encoding="utf-8-sig")` in the
  DiffSynth-Studio / Kolors walk-through writes it (Excel then shows Chinese captions right)
- `diffsynth`: `metadata-csv` inside `DEST/train/`, the layout DiffSynth-Studio's trainers read
  (`--dataset_path DEST`)
- `jsonl`:   images + `metadata.jsonl` with `{"file_name", "text"}` per line
- `kohya`:   images + `meta_cap.json` `{stem: {"caption": ..., "tags": ...}}` (the merged
  caption + tag metadata kohya's `merge_dd_tags_to_metadata` makes); point kohya's
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

from lorastudio.data.captions import join_tags, split_tags
from lorastudio.data.manifest import DatasetFolder, atomic_write_json, atomic_write_text
from lorastudio.errors import LorastudioError

__all__ = ["EXPORT_FORMATS", "export_dataset", "split_caption_and_tags"]

SENTENCE_WORDS = 4  # a caption part of this many words or more is prose (BLIP), not a booru tag

ExportFormat = Literal["folder", "csv", "metadata-csv", "diffsynth", "jsonl", "kohya"]
EXPORT_FORMATS = ("folder", "csv", "metadata-csv", "diffsynth", "jsonl", "kohya")
BOM = "\ufeff"


def split_caption_and_tags(caption: str, known_tags: list[str] | None = None) -> tuple[str, str]:
    """One training caption -> kohya's (`caption`, `tags`), so that `caption, tags` gives it back.

    The leading parts that are prose go to `caption`, the rest to `tags`. A part is a tag when
    the tagger wrote it (`known_tags`, kept in the manifest by `dataset tag`) or, without
    that record, when it has fewer than SENTENCE_WORDS words.
    """
    parts = split_tags(caption)
    known = {t.lower() for t in known_tags} if known_tags else None

    def is_prose(part: str) -> bool:
        if known is not None:
            return part.lower() not in known
        return len(part.split()) >= SENTENCE_WORDS

    split_at = next((i for i, part in enumerate(parts) if not is_prose(part)), len(parts))
    return join_tags(parts[:split_at]), join_tags(parts[split_at:])


def _metadata_csv(records: list[tuple[str, str]], bom: bool) -> str:
    """`file_name,text` rows, quoted where a caption holds commas or quotes (csv module rules)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file_name", "text"])
    writer.writerows(records)
    return (BOM if bom else "") + buffer.getvalue()


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
    if fmt == "diffsynth":
        images_dir = dest / "train"
    images_dir.mkdir(parents=True, exist_ok=True)
    grouped = fmt == "folder" and not repeats and any(i.repeats != 1 or i.folder_caption for i in folder.items)
    records = []
    kohya_meta: dict[str, dict[str, str]] = {}
    subfolders: set[str] = set()
    for item in folder.items:
        source = folder.image_path(item)
        if not source.is_file():
            continue
        target_dir = images_dir
        if grouped:  # the kohya folder the image came from: its repeats, its name as the caption
            subfolder = f"{item.repeats}_{item.folder_caption or folder.name}"
            subfolders.add(subfolder)
            target_dir = dest / subfolder
            target_dir.mkdir(exist_ok=True)
        shutil.copy2(source, target_dir / item.file)
        own = folder.read_caption(item) or ""
        # An uncaptioned image of a kohya folder trains on the folder's name: written out as its
        # caption where the layout has no such folder to carry it.
        caption = own or ("" if grouped else item.folder_caption)
        records.append((item.file, caption))
        text, tags = split_caption_and_tags(caption, item.extra.get("tags"))
        # kohya joins `caption + ", " + tags` whenever both keys are there: an empty prose part is left
        # out, or its captions would start with ", " (and keep_tokens would pin an empty token).
        kohya_meta[item.stem] = {"caption": text, "tags": tags} if text and tags else {"caption": text or tags}
        if fmt == "folder" and caption:
            atomic_write_text(target_dir / (item.stem + caption_extension), caption + "\n")
    if fmt in ("csv", "metadata-csv", "diffsynth"):
        atomic_write_text(images_dir / "metadata.csv", _metadata_csv(records, bom=fmt != "csv"))
    elif fmt == "jsonl":
        lines = [json.dumps({"file_name": f, "text": c}, ensure_ascii=False) for f, c in records]
        atomic_write_text(dest / "metadata.jsonl", "\n".join(lines) + "\n")
    elif fmt == "kohya":
        atomic_write_json(dest / "meta_cap.json", kohya_meta)
    summary = {"format": fmt, "dest": str(dest), "images": len(records), "images_dir": str(images_dir)}
    if grouped:
        summary["folders"] = sorted(subfolders)
    return summary
