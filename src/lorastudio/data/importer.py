"""Copy images from any source into a data set folder, one bad file never stopping the rest.

Sources are only read. Each image is decoded once (see `images.open_image`); files that are
already upright RGB JPEG/PNG/WebP are stored byte-for-byte, everything else is stored
normalised (JPEG sources as quality-95 JPEG, the rest as PNG). Existing captions come along.

Re-running is safe and cheap: an image whose source hash is already in the manifest is
skipped, and the manifest is saved every few images, so an interrupted import continues
where it stopped. `import_report.json` keeps one record per run:
`{"runs": [{"sources": [...], "imported": [{"source", "file"}], "skipped": [{"source", "reason"}],
"failed": [{"source", "reason"}], "notes": [...], "note_keys": [{"key", "params"}]}]}`; the notes say
which captions were chosen where an image had several (`data.caption_notes`) and which files were
stored under ASCII names. A skipped or failed row whose reason is a common one also has its `key` and
`params` beside the English `reason`, and each note its own in `note_keys` (in the same order): the web
UI words them in the page's language; the CLI and the REST API show the English.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from lorastudio.data.caption_notes import CaptionChoices, keyed_caption_notes
from lorastudio.data.images import MAX_PIXELS, RGB, ImageLoadError, needs_normalising, open_image
from lorastudio.data.manifest import (
    DatasetFolder,
    ManifestItem,
    atomic_write_bytes,
    atomic_write_json,
    safe_stem,
)
from lorastudio.data.sources import SourceEntry
from lorastudio.errors import LorastudioError

__all__ = ["ImportReport", "import_entries", "read_import_report"]

SAVE_EVERY = 25
_STORED_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}

Progress = Callable[[int, str], None]


@dataclass
class ImportReport:
    sources: list[str] = field(default_factory=list)
    imported: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # which captions were read where there was a choice
    note_keys: list[dict] = field(default_factory=list)  # each note's {"key", "params"}, in the same order

    def to_json(self) -> dict:
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sources": self.sources,
            "imported": self.imported,
            "skipped": self.skipped,
            "failed": self.failed,
            "notes": self.notes,
            "note_keys": self.note_keys,
        }

    def summary(self) -> dict:
        return {"imported": len(self.imported), "skipped": len(self.skipped), "failed": len(self.failed)}


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=95, subsampling=0)
    else:
        image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue()


def _stored_bytes(data: bytes, image: Image.Image) -> tuple[bytes, str]:
    """(bytes to store, extension): the original when it is already fine, else a re-encode."""
    with Image.open(io.BytesIO(data)) as probe:
        fmt = probe.format or ""
    if not needs_normalising(data):
        return data, _STORED_EXT[fmt]
    if fmt == "JPEG":
        return _encode(image, "JPEG"), ".jpg"
    return _encode(image, "PNG"), ".png"


def _import_one(
    folder: DatasetFolder,
    entry: SourceEntry,
    background: RGB,
    max_pixels: int,
    known: dict[str, ManifestItem],
) -> tuple[str, dict]:
    """-> ("imported" | "skipped" | "failed", report row). Never raises for one bad file."""
    if entry.problem or entry.read is None:
        return "skipped", _row(entry.source, entry.problem or "nothing to read", entry.problem_key, entry.problem_params)
    try:
        data = entry.read()
    except (OSError, LorastudioError) as exc:
        return "failed", _row(entry.source, f"cannot read ({exc})", "cannot_read", {"error": str(exc)})
    sha = hashlib.sha256(data).hexdigest()
    if sha in known:
        file = known[sha].file
        return "skipped", _row(entry.source, f"already imported as {file}", "duplicate", {"file": file})
    try:
        image = open_image(data, background=background, max_pixels=max_pixels, name=entry.source)
        stored, ext = _stored_bytes(data, image)
    except ImageLoadError as exc:  # image_unreadable, image_too_large: the web UI words a refused import by it
        return "failed", _row(entry.source, str(exc).split(": ", 1)[-1], exc.key or "", exc.params)
    item = ManifestItem(
        file=safe_stem(entry.name, sha) + ext,
        original=entry.name,
        source=entry.source,
        sha256=sha,
        width=image.width,
        height=image.height,
        repeats=entry.repeats,
        folder_caption=entry.folder_caption,
    )
    target = folder.image_path(item)
    if not target.is_file():  # present when a previous, interrupted run got this far
        atomic_write_bytes(target, stored)
    if entry.caption and folder.read_caption(item) is None:
        folder.write_caption(item, entry.caption)
    folder.items.append(item)
    known[sha] = item
    return "imported", {"source": entry.source, "file": item.file}


def _row(source: str, reason: str, key: str = "", params: dict | None = None) -> dict:
    """A report row: the English `reason` (CLI, REST) and, for a common one, its `key` and `params`."""
    row = {"source": source, "reason": reason}
    return {**row, "key": key, "params": dict(params or {})} if key else row


def _renamed_note(renamed: list[tuple[str, str]]) -> tuple[str, dict]:
    """The note for images whose names lost characters to the ASCII file names a data set stores."""
    (original, stored), count = renamed[0], len(renamed)
    text = (
        f"{count} image{'s' if count != 1 else ''} with non-ASCII names stored under ASCII file names"
        f" ({original} -> {stored}); the manifest keeps each original name."
    )
    return text, {"key": "renamed_files", "params": {"count": count, "original": original, "stored": stored}}


def import_entries(
    folder: DatasetFolder,
    entries: Iterable[SourceEntry],
    sources: list[str] | None = None,
    background: RGB = (255, 255, 255),
    max_pixels: int = MAX_PIXELS,
    progress: Progress | None = None,
    caption_extension: str | None = None,
) -> ImportReport:
    """Import every entry into `folder`; the report lists what happened to each.

    `caption_extension` is the one the entries were read with (None: `.txt`, else `.caption`);
    the report's notes name it where an image had another caption beside it.
    """
    report = ImportReport(sources=[str(s) for s in sources or []])
    known = folder.by_sha()
    rows = {"imported": report.imported, "skipped": report.skipped, "failed": report.failed}
    choices = CaptionChoices()
    renamed: list[tuple[str, str]] = []
    try:
        for count, entry in enumerate(entries, 1):
            choices.add(entry)
            outcome, row = _import_one(folder, entry, background, max_pixels, known)
            rows[outcome].append(row)
            if outcome == "imported" and not PurePosixPath(entry.name).name.isascii():
                renamed.append((PurePosixPath(entry.name).name, row["file"]))
            if outcome == "imported" and len(report.imported) % SAVE_EVERY == 0:
                folder.save()
            if progress:
                progress(count, entry.source)
    finally:  # what was copied before an error or Ctrl-C stays recorded
        folder.save()
    keyed = keyed_caption_notes(choices, caption_extension)
    if renamed:
        keyed.append(_renamed_note(renamed))
    report.notes = [text for text, _ in keyed]
    report.note_keys = [key for _, key in keyed]
    history = read_import_report(folder)
    history.append(report.to_json())
    atomic_write_json(folder.import_report_path, {"runs": history})
    return report


def read_import_report(folder: DatasetFolder) -> list[dict]:
    """All recorded import runs, oldest first ([] when none)."""
    path: Path = folder.import_report_path
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8")).get("runs", []))
    except (json.JSONDecodeError, AttributeError):
        return []
