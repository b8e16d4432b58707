"""Prompt styles as A1111 keeps them: `studio/styles.csv`, one style per row.

A1111 users copy their `styles.csv` (columns `name,prompt,negative_prompt`) into the workspace;
a request naming styles (`styles` in the A1111 API, `--style` on the CLI) gets each one's prompt
merged into its own, as A1111 merges them: a style text holding `{prompt}` has the prompt put
there, any other is appended after a comma. The merged prompts are what the image records (its
infotext and recipe), so the image regenerates without the styles file; a style given again with a
recipe whose prompts already hold it is recognised and not added twice (`extract_styles`, the rule
A1111's paste uses to take a style's text out of a pasted prompt).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorastudio.config import read_text_file
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.workspace import Workspace

__all__ = ["PromptStyle", "apply_styles", "extract_styles", "hires_styled", "list_styles", "styled_entries", "styles_file"]


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str
    negative_prompt: str


def styles_file(ws: Workspace) -> Path:
    return ws.root / "styles.csv"


def list_styles(ws: Workspace) -> list[PromptStyle]:
    """The styles in `studio/styles.csv` in file order ([] without the file)."""
    path = styles_file(ws)
    if not path.is_file():
        return []
    # A1111 and Excel write a BOM now and then; Excel on a Chinese Windows saves CSV as GBK.
    text = read_text_file(path, what="styles file")
    rows = csv.DictReader(io.StringIO(text))
    if rows.fieldnames is None or "name" not in rows.fieldnames:
        raise LorastudioError(f"{path}: needs a header row 'name,prompt,negative_prompt', as A1111's styles.csv.")
    return [
        PromptStyle(row["name"].strip(), (row.get("prompt") or "").strip(), (row.get("negative_prompt") or "").strip())
        for row in rows
        if (row.get("name") or "").strip()
    ]


def _merge(style_text: str, prompt: str) -> str:
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def _named_styles(ws: Workspace, names: list[str]) -> list[PromptStyle]:
    known = {style.name: style for style in list_styles(ws)}
    for name in names:
        if name not in known:
            listed = ", ".join(known) or "none: put A1111's styles.csv into the workspace"
            raise NotFoundError(f"style {name!r} is not in {styles_file(ws).name} (styles: {listed}).")
    return [known[name] for name in names]


def apply_styles(
    ws: Workspace, prompt: str, negative_prompt: str, names: list[str], merged: bool = False
) -> tuple[str, str]:
    """The prompt and negative prompt with each named style merged in, in the order given.

    `merged`: the prompts are a recipe's, which already hold the styles the image was made with; a
    named style they hold is taken out first (`extract_styles`), so it is merged in once, not twice.
    """
    if not names:
        return prompt, negative_prompt
    styles = _named_styles(ws, names)
    if merged:
        prompt, negative_prompt, _ = extract_styles(styles, prompt, negative_prompt)
    for style in styles:
        prompt, negative_prompt = _merge(style.prompt, prompt), _merge(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt


def hires_styled(ws: Workspace, fields: dict[str, Any], names: list[str], merged: bool = False) -> dict[str, Any]:
    """A request's hires prompts with the styles merged in as A1111 merges them: a hires prompt given
    gets the styles, an empty one stays empty (it is the prompt, which has them already). `merged`:
    a recipe's, holding their styles already (`apply_styles`)."""
    hires = {key: str(fields.get(key) or "") for key in ("hires_prompt", "hires_negative_prompt")}
    if not names or not any(hires.values()):
        return {}
    prompt, negative = apply_styles(ws, hires["hires_prompt"], hires["hires_negative_prompt"], names, merged)
    return {
        key: styled if hires[key] else ""
        for key, styled in (("hires_prompt", prompt), ("hires_negative_prompt", negative))
    }


_SPACES = re.compile(" {2,}")


def _without_style_text(style_text: str, prompt: str) -> str | None:
    """`prompt` with `style_text` taken out where it holds it as a merge left it (around `{prompt}`, or
    appended after a comma; runs of spaces read as one), else None."""
    text, style_text = _SPACES.sub(" ", prompt.strip()), _SPACES.sub(" ", style_text.strip())
    if "{prompt}" in style_text:
        before, after = style_text.split("{prompt}", 1)
        after = after.replace("{prompt}", "")
        if text.startswith(before) and text.endswith(after) and len(text) >= len(before) + len(after):
            return text[len(before) : len(text) - len(after)]
        return None
    if not text.endswith(style_text):
        return None
    rest = text[: len(text) - len(style_text)]
    return rest[:-2] if rest.endswith(", ") else rest


def extract_styles(
    styles: list[PromptStyle], prompt: str, negative_prompt: str
) -> tuple[str, str, list[PromptStyle]]:
    """(the prompts with the `styles` they hold taken out, those styles in the order they were merged).

    A1111's rule: a style is held when both its prompt and its negative prompt text are found (a
    style with neither text never is); the last merged comes off first, and the search repeats until
    no style is found.
    """
    found: list[PromptStyle] = []
    left = [style for style in styles if style.prompt or style.negative_prompt]
    while True:
        for style in left:
            positive = _without_style_text(style.prompt, prompt)
            negative = _without_style_text(style.negative_prompt, negative_prompt) if positive is not None else None
            if negative is not None:
                prompt, negative_prompt = positive, negative
                found.append(style)
                left.remove(style)
                break
        else:
            return prompt, negative_prompt, list(reversed(found))


def styled_entries(
    ws: Workspace, entries: list[dict[str, Any]], names: list[str], negative_prompt: str = ""
) -> list[dict[str, Any]]:
    """A story's prompt entries with the styles merged into each prompt and negative prompt (an entry
    without its own negative prompt has the base request's, `negative_prompt`, merged)."""
    if not names:
        return entries
    styled = []
    for entry in entries:
        prompt, negative = apply_styles(
            ws, str(entry.get("prompt") or ""), str(entry.get("negative_prompt", negative_prompt) or ""), names
        )
        styled.append({**entry, "prompt": prompt, "negative_prompt": negative})
    return styled
