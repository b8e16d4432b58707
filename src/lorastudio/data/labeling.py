"""Run a captioner or tagger over a data set in batches, resumably.

The labeller is any `fn(list[PIL.Image]) -> list[str]`. Captions are written per batch
(atomically) and the files done so far are kept in `.progress-<job>.json`; an interrupted
run with the same settings skips them, so `prepend`/`append` never apply twice. The
progress file is removed when the run finishes.

Modes: `missing` (only images without a caption), `overwrite`, `prepend`/`append` (join
the new text and the existing caption with ", ").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from lorastudio.data.captions import join_tags, split_tags
from lorastudio.data.images import ImageLoadError, open_image
from lorastudio.data.manifest import DatasetFolder, ManifestItem, atomic_write_json
from lorastudio.errors import LorastudioError

__all__ = ["LabelResult", "label_dataset", "combine"]

MODES = ("missing", "overwrite", "prepend", "append")
Labeller = Callable[[list], list[str]]
Progress = Callable[[int, int], None]


@dataclass
class LabelResult:
    written: int = 0
    skipped: int = 0
    failed: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"written": self.written, "skipped": self.skipped, "failed": self.failed}


def combine(new: str, old: str | None, mode: str) -> str:
    """The caption to write for `mode`; duplicate tags from the join are dropped."""
    if mode in {"missing", "overwrite"} or not old:
        return new
    first, second = (new, old) if mode == "prepend" else (old, new)
    seen: set[str] = set()
    tags = [
        t for t in split_tags(first) + split_tags(second) if not (t.lower() in seen or seen.add(t.lower()))
    ]
    return join_tags(tags)


def _pending(folder: DatasetFolder, mode: str, done: set[str]) -> list[ManifestItem]:
    return [
        item
        for item in folder.items
        if item.file not in done and not (mode == "missing" and folder.read_caption(item))
    ]


def label_dataset(
    folder: DatasetFolder,
    labeller: Labeller,
    job: str,
    settings: dict,
    mode: str = "missing",
    batch_size: int = 4,
    progress: Progress | None = None,
) -> LabelResult:
    """Label every pending image; `settings` identify the run for resuming."""
    if mode not in MODES:
        raise LorastudioError(f"caption mode {mode!r} is not known; use one of {', '.join(MODES)}.")
    state_path = folder.root / f".progress-{job}.json"
    key = json.dumps({"mode": mode, **settings}, sort_keys=True, default=str)
    done: set[str] = set()
    if state_path.is_file():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if state.get("key") == key:
            done = set(state.get("done", []))
    result = LabelResult(skipped=len(done))
    pending = _pending(folder, mode, done)
    result.skipped += len(folder.items) - len(done) - len(pending)
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        loaded = []
        for item in batch:
            try:
                loaded.append((item, open_image(folder.image_path(item))))
            except ImageLoadError as exc:
                result.failed.append({"file": item.file, "reason": str(exc)})
        if loaded:
            texts = labeller([image for _, image in loaded])
            for (item, _), text in zip(loaded, texts, strict=True):
                folder.write_caption(item, combine(text, folder.read_caption(item), mode))
                if job == "tag":  # kept apart so a kohya export can carry `tags` beside `caption`
                    item.extra["tags"] = split_tags(text)
                done.add(item.file)
                result.written += 1
            if job == "tag":
                folder.save()
        atomic_write_json(state_path, {"key": key, "done": sorted(done)})
        if progress:
            progress(min(start + batch_size, len(pending)), len(pending))
    state_path.unlink(missing_ok=True)
    return result
