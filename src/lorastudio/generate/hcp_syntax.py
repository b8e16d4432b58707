"""HCP-Diffusion's prompt weights beside A1111's: `{text}` (x1.1) and `{text:1.2}` are A1111's `(text)`
and `(text:1.2)`; parentheses and square brackets are plain text to HCP.

A1111 reads braces as plain text (their tokens go to the text encoder and the weight does nothing), and
so does lorastudio, so an A1111 image comes back the same. A prompt holding HCP's `{text:number}` gets one
note saying so (`hcp_weight_note`), never a silent change. An HCP-Diffusion inference config is HCP's by
construction: its prompts are written in A1111's syntax (`a1111_from_hcp`) when it is read as a recipe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["a1111_from_hcp", "hcp_weight_note", "hcp_weights"]

_NUMBER = re.compile(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)\s*")
_A1111_SPECIAL = "()[]"  # weights, prompt editing and alternation in A1111; plain text in HCP


def _brace_pairs(text: str) -> list[tuple[int, int]]:
    """(opening, closing) index of each balanced `{…}` in `text`, by closing position (a config's
    `${…}` interpolation left as it is)."""
    pairs, opened = [], []
    for index, char in enumerate(text):
        if char == "{":
            opened.append(index)
        elif char == "}" and opened:
            start = opened.pop()
            if text[start - 1 : start] != "$":
                pairs.append((start, index))
    return pairs


def hcp_weights(text: str) -> list[str]:
    """Each `{words:number}` group of `text` (HCP's weighted words), in the order they open."""
    found = []
    for start, end in _brace_pairs(text):
        words, colon, weight = text[start + 1 : end].rpartition(":")
        if colon and words.strip() and _NUMBER.fullmatch(weight):
            found.append((start, text[start : end + 1]))
    return [group for _, group in sorted(found)]


def a1111_from_hcp(text: str) -> str:
    """HCP's prompt in A1111's syntax: its balanced braces as parentheses (`{a}` x1.1 and `{a:1.2}` are
    A1111's `(a)` and `(a:1.2)`), its own parentheses and square brackets escaped (plain text to HCP)."""
    opening = {start: end for start, end in _brace_pairs(text)}
    closing = set(opening.values())
    out = []
    for index, char in enumerate(text):
        if index in opening:
            out.append("(")
        elif index in closing:
            out.append(")")
        elif char in _A1111_SPECIAL:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def hcp_weight_note(texts: Iterable[str | None]) -> str | None:
    """One line when any of the prompts holds HCP's `{text:number}`, which A1111 (and lorastudio) reads
    as text, with the A1111 spelling to write instead; None when none does."""
    groups = list(dict.fromkeys(group for text in texts if text for group in hcp_weights(text)))
    if not groups:
        return None
    verb = "is" if len(groups) == 1 else "are"
    written = ", ".join(a1111_from_hcp(group) for group in groups)
    return f"{', '.join(groups)} {verb} HCP-Diffusion's weight syntax; A1111 reads braces as text: write {written}"
