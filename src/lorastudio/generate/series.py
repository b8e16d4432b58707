"""Prompt-list series (the users' story-telling walk-through) and contact sheets.

A prompt file is one prompt per line (`#` comments, blank lines skipped) or YAML: a list
of strings or of mappings with `prompt` plus any per-image overrides of the request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from PIL import Image, ImageDraw

from lorastudio.errors import LorastudioError
from lorastudio.generate.fonts import fit_text, load_font

__all__ = ["read_prompt_file", "series_requests", "contact_sheet", "SEED_POLICIES"]

SEED_POLICIES = ("fixed", "increment", "random")


def read_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise LorastudioError(
            f"{path}: prompt file not found; give a .txt (one prompt per line) or .yaml list."
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in {".yaml", ".yml"}:
        data = yaml.safe_load(text) or []
        if isinstance(data, dict) and "prompts" in data:
            data = data["prompts"]
        if not isinstance(data, list):
            raise LorastudioError(f"{path}: YAML must be a list of prompts or of mappings with 'prompt'.")
        items = []
        for i, entry in enumerate(data):
            if isinstance(entry, str):
                items.append({"prompt": entry})
            elif isinstance(entry, dict) and "prompt" in entry:
                items.append(dict(entry))
            else:
                raise LorastudioError(f"{path}: entry {i + 1} needs a 'prompt' key.")
        return items
    return [
        {"prompt": line.strip()}
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def series_requests(
    base: dict[str, Any], items: list[dict[str, Any]], seed: int, policy: str
) -> list[dict[str, Any]]:
    """One request per prompt; seeds follow the policy unless an entry sets its own."""
    if policy not in SEED_POLICIES:
        raise LorastudioError(f"unknown seed policy {policy!r}; choose one of: {', '.join(SEED_POLICIES)}.")
    requests = []
    for i, item in enumerate(items):
        request = dict(base)
        request.update(item)
        if "seed" not in item:
            request["seed"] = -1 if policy == "random" else (seed if policy == "fixed" else seed + i)
        requests.append(request)
    return requests


def contact_sheet(
    images: list[Path], labels: list[str], out: Path, columns: int = 4, cell: int = 256
) -> Path:
    """A grid of the images with a caption under each, saved as PNG."""
    if not images:
        raise LorastudioError("no images to put on a contact sheet.")
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    label_h = 28
    sheet = Image.new("RGB", (columns * cell, rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    font = load_font(14)  # covers CJK captions and trigger words when such a font is installed
    for i, (path, label) in enumerate(zip(images, labels, strict=True)):
        with Image.open(path) as img:
            thumb = img.convert("RGB")
            thumb.thumbnail((cell, cell))
        x, y = (i % columns) * cell, (i // columns) * (cell + label_h)
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        draw.text((x + 4, y + cell + 6), fit_text(font, label, cell - 8), fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
