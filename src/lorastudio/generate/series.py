"""Prompt-list series (the users' story-telling walk-through) and contact sheets.

A prompt file is one prompt per line (`#` comments, blank lines skipped) or YAML: a list
of strings or of mappings with `prompt` plus any per-image overrides of the request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from PIL import Image, ImageDraw
from pydantic import Field

from lorastudio.config import StrictModel, read_text_file
from lorastudio.errors import LorastudioError
from lorastudio.generate.fonts import line_height, load_font, wrap_lines

__all__ = [
    "SeriesRequest",
    "parse_prompt_list",
    "looks_like_yaml_list",
    "read_prompt_file",
    "series_requests",
    "contact_sheet",
    "SEED_POLICIES",
]

SEED_POLICIES = ("fixed", "increment", "random")
CAPTION_LINES = 5  # a contact sheet's caption: the walk-through's prompts fit in five at 256 px
CAPTION_STRIP = 28  # the strip under a picture for a one-line caption (as sheets always had); + a line each


class SeriesRequest(StrictModel):
    """The story part of a series request; the generation part is a GenerateConfig (the base)."""

    prompts: str = Field(
        description="The prompt list: one prompt per line ('#' starts a comment), or a YAML list of prompts "
        "or of mappings with 'prompt' and any generation field (seed, steps, ...) for that picture.",
        max_length=200_000,
    )
    seed_policy: Literal["fixed", "increment", "random"] = Field(
        "fixed",
        description="Seeds across the prompts: 'fixed' one seed for all (the same character and framing), "
        "'increment' seed + i, 'random' a new seed each; an entry's own seed wins.",
    )
    styles: list[str] = Field(
        default_factory=list,
        description="A1111 prompt styles (studio/styles.csv) merged into every prompt and its negative prompt.",
    )


def read_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    """The prompts of a .txt (one per line) or .yaml file."""
    path = Path(path)
    if not path.is_file():
        raise LorastudioError(
            f"{path}: prompt file not found; give a .txt (one prompt per line) or .yaml list."
        )
    text = read_text_file(path, "prompt file")
    return parse_prompt_list(text, path.suffix.lower() in {".yaml", ".yml"}, str(path))


def looks_like_yaml_list(text: str) -> bool:
    """A pasted prompt list in YAML starts with `- ` or `prompts:`; anything else is one prompt per line."""
    first = next((line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")), "")
    return first.startswith("- ") or first == "-" or first.startswith("prompts:")


def parse_prompt_list(text: str, yaml_format: bool, source: str = "prompt list") -> list[dict[str, Any]]:
    """Prompt entries (`{"prompt": ..., **fields}`) from the text of a prompt list."""
    if yaml_format:
        try:
            data = yaml.safe_load(text) or []
        except yaml.YAMLError as exc:
            raise LorastudioError(f"{source}: not valid YAML ({exc.__class__.__name__}); check the indentation.") from None
        if isinstance(data, dict) and "prompts" in data:
            data = data["prompts"]
        if not isinstance(data, list):
            raise LorastudioError(f"{source}: YAML must be a list of prompts or of mappings with 'prompt'.")
        items = []
        for i, entry in enumerate(data):
            if isinstance(entry, str):
                items.append({"prompt": entry})
            elif isinstance(entry, dict) and "prompt" in entry:
                _check_entry_keys(entry, f"{source}: entry {i + 1}")
                items.append(dict(entry))
            else:
                raise LorastudioError(f"{source}: entry {i + 1} needs a 'prompt' key.")
        return items
    return [
        {"prompt": line.strip()}
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _check_entry_keys(entry: dict[str, Any], where: str) -> None:
    """Every key of a YAML entry is a generation setting (a typo would be dropped or refused later, unnamed)."""
    import difflib

    from lorastudio.generate.config import GenerateConfig

    for key in entry:
        if key not in GenerateConfig.model_fields:
            hint = difflib.get_close_matches(str(key), list(GenerateConfig.model_fields), n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise LorastudioError(f"{where}: unknown key {key!r}{did_you_mean}; use generation settings such as steps, seed.")


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
    """A grid of the images with a caption under each, saved as PNG.

    A caption is wrapped at the cell's width over up to `CAPTION_LINES` lines (words, or characters
    for Chinese, which has no spaces), the strip as tall as the longest caption needs; an ellipsis
    ends it only when the lines run out (a Kolors prompt is often 70 characters of Chinese)."""
    if not images:
        raise LorastudioError("no images to put on a contact sheet.")
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    font = load_font(14)  # covers CJK captions and trigger words when such a font is installed
    captions = [wrap_lines(font, label, cell - 8, CAPTION_LINES) for label in labels]
    step = line_height(font)
    label_h = CAPTION_STRIP + (max(1, *(len(lines) for lines in captions)) - 1) * step
    sheet = Image.new("RGB", (columns * cell, rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (path, lines) in enumerate(zip(images, captions, strict=True)):
        with Image.open(path) as img:
            thumb = img.convert("RGB")
            thumb.thumbnail((cell, cell))
        x, y = (i % columns) * cell, (i // columns) * (cell + label_h)
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        for n, line in enumerate(lines):
            draw.text((x + 4, y + cell + 6 + n * step), line, fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
