"""Caption text: templates, bulk tag edits and search.

A caption is one line. Booru-style captions are comma-separated tags
(`alice, 1girl, long hair`); prose captions are one "tag". Every edit works on the tag list,
so both kinds behave predictably. Edits are pure functions of a caption string; the
service applies them to every caption file and writes atomically.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from lorastudio.errors import LorastudioError

__all__ = [
    "CaptionEdit",
    "FIXED_MODES",
    "apply_template",
    "fixed_caption",
    "join_tags",
    "matches",
    "split_tags",
    "tag_frequency",
]

_TEMPLATE_FIELDS = {"trigger", "caption", "tags", "name"}
_FIELD = re.compile(r"{(\w*)}")


def split_tags(caption: str | None) -> list[str]:
    """'a, b ,, c' -> ['a', 'b', 'c']."""
    if not caption:
        return []
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def join_tags(tags: Iterable[str]) -> str:
    return ", ".join(tags)


def apply_template(template: str, caption: str | None = None, trigger: str = "", name: str = "") -> str:
    """'a photo of {trigger}, {caption}' -> filled in; empty parts leave no stray commas.

    Fields: {trigger}, {caption} (the existing caption), {tags} (same), {name} (image stem).
    A template without fields is a fixed caption for every image (EasyPhoto's way).
    """
    unknown = set(_FIELD.findall(template)) - _TEMPLATE_FIELDS
    if unknown:
        raise LorastudioError(
            f"caption template {template!r}: unknown field(s) {', '.join(sorted(unknown))}; use {{trigger}}, {{caption}}, {{name}}."
        )
    values = {"trigger": trigger, "caption": caption or "", "tags": caption or "", "name": name}
    text = _FIELD.sub(lambda m: values[m.group(1)], template)
    # Drop empty slots ("x, , y") that missing parts leave behind, and repeated tags, so
    # re-applying a template (e.g. after an interrupted run) does not add the trigger twice.
    return join_tags(_unique(split_tags(" ".join(text.split()))))


FIXED_MODES = ("overwrite", "missing", "prepend", "append")


def fixed_caption(text: str, caption: str | None, mode: str = "overwrite") -> str:
    """One caption text for every image (the Kolors walk-through's "二次元"), taken as written.

    overwrite: the caption becomes `text`; missing: only an empty caption does; prepend/append:
    `text` joins the caption as a first/last tag unless it is one already.
    """
    if mode not in FIXED_MODES:
        raise LorastudioError(f"--mode {mode!r}: use one of {', '.join(FIXED_MODES)} with --fixed.")
    text, old = " ".join(text.split()), " ".join((caption or "").split())
    if not text:
        raise LorastudioError("--fixed: the caption text is empty; give the words every image gets.")
    if mode == "overwrite" or not old:
        return text
    if mode == "missing" or text.lower() in {tag.lower() for tag in split_tags(old)}:
        return old
    return join_tags([text, old] if mode == "prepend" else [old, text])


def _unique(tags: list[str]) -> list[str]:
    """First occurrence of each tag, compared case-insensitively."""
    seen: set[str] = set()
    return [tag for tag in tags if not (tag.lower() in seen or seen.add(tag.lower()))]


@dataclass
class CaptionEdit:
    """A bulk edit, applied in the order the fields are listed here."""

    replace: dict[str, str] = field(default_factory=dict)  # whole-tag replacement
    remove: list[str] = field(default_factory=list)
    add: list[str] = field(default_factory=list)  # appended when missing
    lower: bool = False
    dedupe: bool = False
    sort: bool = False  # alphabetical, after the first `keep_tokens` tags
    keep_tokens: int = 0
    trigger_first: str | None = None  # move (or insert) this tag to the front

    def is_empty(self) -> bool:
        return not (
            self.replace
            or self.remove
            or self.add
            or self.lower
            or self.dedupe
            or self.sort
            or self.trigger_first
        )

    def apply(self, caption: str | None) -> str:
        """Tags are compared case-insensitively everywhere (`Smile` is `smile`, as search finds it),
        and an option's value may hold several comma-separated tags (`--add "a, b"`)."""
        tags = split_tags(caption)
        if self.replace:
            replacing = {old.strip().lower(): new for old, new in self.replace.items()}
            tags = [replacing.get(tag.lower(), tag) for tag in tags]
            tags = [new for tag in tags for new in (split_tags(tag) or [])]
        if self.remove:
            removed = {tag.lower() for item in self.remove for tag in split_tags(item)}
            tags = [tag for tag in tags if tag.lower() not in removed]
        for tag in (tag for item in self.add for tag in split_tags(item)):
            if tag.lower() not in {t.lower() for t in tags}:
                tags.append(tag)
        if self.lower:
            tags = [tag.lower() for tag in tags]
        if self.dedupe:
            tags = _unique(tags)
        if self.sort:
            head, tail = tags[: self.keep_tokens], tags[self.keep_tokens :]
            tags = head + sorted(tail, key=str.lower)
        if self.trigger_first:
            first = self.trigger_first.strip()
            tags = [first] + [tag for tag in tags if tag.lower() != first.lower()]
        return join_tags(tags)


def matches(caption: str | None, query: str, regex: bool = False, tag: bool = False) -> bool:
    """Does a caption match? Plain: case-insensitive substring; tag: an exact tag; regex: re.search."""
    text = caption or ""
    if regex:
        try:
            return re.search(query, text, flags=re.IGNORECASE) is not None
        except re.error as exc:
            raise LorastudioError(
                f"search pattern {query!r} is not a valid regex ({exc}); escape special characters."
            ) from None
    if tag:
        return query.strip().lower() in {t.lower() for t in split_tags(text)}
    return query.lower() in text.lower()


def tag_frequency(captions: Iterable[str | None]) -> Counter[str]:
    """How many captions contain each tag (each tag counted once per caption)."""
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update({tag for tag in split_tags(caption)})
    return counts
