"""Prompt styles as A1111 keeps them: `studio/styles.csv`, one style per row.

A1111 users copy their `styles.csv` (columns `name,prompt,negative_prompt`) into the workspace;
a request naming styles (`styles` in the A1111 API, `--style` on the CLI) gets each one's prompt
merged into its own, as A1111 merges them: a style text holding `{prompt}` has the prompt put
there, any other is appended after a comma. The merged prompts are what the image records (its
infotext and recipe), so the image regenerates without the styles file.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorastudio.config import read_text_file
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.workspace import Workspace

__all__ = ["PromptStyle", "apply_styles", "hires_styled", "list_styles", "styled_entries", "styles_file"]


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


def apply_styles(ws: Workspace, prompt: str, negative_prompt: str, names: list[str]) -> tuple[str, str]:
    """The prompt and negative prompt with each named style merged in, in the order given."""
    if not names:
        return prompt, negative_prompt
    known = {style.name: style for style in list_styles(ws)}
    for name in names:
        style = known.get(name)
        if style is None:
            listed = ", ".join(known) or "none: put A1111's styles.csv into the workspace"
            raise NotFoundError(f"style {name!r} is not in {styles_file(ws).name} (styles: {listed}).")
        prompt, negative_prompt = _merge(style.prompt, prompt), _merge(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt


def hires_styled(ws: Workspace, fields: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A request's hires prompts with the styles merged in as A1111 merges them: a hires prompt given
    gets the styles, an empty one stays empty (it is the prompt, which has them already)."""
    hires = {key: str(fields.get(key) or "") for key in ("hires_prompt", "hires_negative_prompt")}
    if not names or not any(hires.values()):
        return {}
    prompt, negative = apply_styles(ws, hires["hires_prompt"], hires["hires_negative_prompt"], names)
    return {
        key: styled if hires[key] else ""
        for key, styled in (("hires_prompt", prompt), ("hires_negative_prompt", negative))
    }


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
