"""What an import (or a training run from a folder) says about the captions it chose.

The readers in `data.sources` record on each entry where its caption came from and which other
captions sat beside it unread; these lines tell the user, once per kind of choice, with the
setting that changes it. kohya reads only its `caption_extension`; lorastudio, given none, reads
`.txt` before `.caption`, and says so rather than losing BLIP captions silently. Each line also has
a key and its values (`keyed_caption_notes`), by which the web UI words it in the page's language.
"""

from __future__ import annotations

from collections import Counter

from lorastudio.data.sources import SourceEntry

__all__ = ["CaptionChoices", "caption_notes", "keyed_caption_notes"]

Keyed = tuple[str, dict]  # (the English line, {"key": ..., "params": {...}})


class CaptionChoices(Counter):
    """(caption_from, unread_captions) -> images, counted as entries go by (no entry is kept)."""

    def add(self, entry: SourceEntry) -> None:
        if not entry.problem and entry.read is not None:
            self[(entry.caption_from, entry.unread_captions)] += 1


def caption_notes(
    choices: Counter, caption_extension: str | None, choose: str = "--caption-ext {ext}"
) -> list[str]:
    """One line per kind of choice a user should know about: two caption files beside an image,
    a chosen extension missing where another is there, captions from a kohya metadata json.
    `choose` words the setting for this front (`data.caption_extension={ext}` for training)."""
    return [text for text, _ in keyed_caption_notes(choices, caption_extension, choose)]


def keyed_caption_notes(
    choices: Counter, caption_extension: str | None, choose: str = "--caption-ext {ext}"
) -> list[Keyed]:
    """`caption_notes`' lines, each with its key and values."""
    notes: list[Keyed] = []
    both: Counter = Counter()
    missing: Counter = Counter()
    json_read: Counter = Counter()
    json_unread: Counter = Counter()
    for (read_from, unread), count in choices.items():
        files = tuple(source for source in unread if source.startswith("."))
        if files and read_from.startswith(".") and not caption_extension:
            both[(read_from, files)] += count
        elif files and caption_extension and read_from != caption_extension:
            missing[files] += count
        if read_from.endswith(".json"):
            json_read[read_from] += count
        for source in unread:
            if source.endswith(".json"):
                json_unread[source] += count
    for (read_from, files), count in sorted(both.items()):
        others = " and ".join(files)
        text = (
            f"{_images(count)} had both {read_from} and {others} captions: read {read_from}, not {others}"
            f" (kohya reads only its caption_extension); choose with {choose.format(ext=files[0])}. To train"
            " on both, as kohya's fine-tuning does, merge them into a meta_*.json (merge_captions_to_metadata"
            " + merge_dd_tags_to_metadata) and import that."
        )
        notes.append(_keyed(text, "both_captions", count=count, read=read_from, others=" ".join(files), ext=files[0]))
    for files, count in sorted(missing.items()):
        text = (
            f"{_images(count)} had no {caption_extension} caption; their {' and '.join(files)} files were"
            f" not read (caption extension {caption_extension})."
        )
        notes.append(_keyed(text, "chosen_caption_missing", count=count, ext=caption_extension, others=" ".join(files)))
    for name, count in sorted(json_read.items()):
        text = f"{_images(count)} captioned from {name} (kohya metadata: caption, tags)."
        notes.append(_keyed(text, "kohya_json_used", count=count, name=name))
    for name, count in sorted(json_unread.items()):
        text = (
            f"{name} (kohya's caption + tags) was not used for {_images(count)} that had another caption;"
            f" import {name} itself to train on its captions."
        )
        notes.append(_keyed(text, "kohya_json_unused", count=count, name=name))
    return notes


def _keyed(text: str, key: str, **params: object) -> Keyed:
    return text, {"key": key, "params": params}


def _images(count: int) -> str:
    return f"{count} image{'s' if count != 1 else ''}"
