"""What an image says about how it was made: the one infotext reader behind every front.

`lorastudio pnginfo`, `/sdapi/v1/png-info` and the UI all answer from `png_info`, so one
file reads the same everywhere (EXIF UserComment first, then the PNG `parameters` chunk,
then a GIF comment, as A1111 reads them; broken EXIF is skipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = ["image_seeds", "infotext_parameters", "png_info", "variation_seeds"]


def png_info(source: str | Path | bytes | PILImage.Image) -> dict[str, Any]:
    """A1111's PNG Info: {"info": raw infotext, "items": other text chunks, "parameters": parsed keys}.

    `source` is a path, the file's bytes or an image already decoded (the API decodes with its
    size limits first). A path or bytes that are not an image raise LorastudioError.
    """
    from lorastudio.generate.infotext import infotext_and_items, parse_infotext

    text, items = infotext_and_items(source)
    return {"info": text or "", "items": items, "parameters": parse_infotext(text) if text else {}}


def infotext_parameters(text: str, fill_defaults: bool = True) -> dict[str, Any]:
    """An infotext's prompt, negative prompt and keys; `fill_defaults=False`: only what it states."""
    from lorastudio.generate.infotext import parse_infotext

    return parse_infotext(text, fill_defaults=fill_defaults)


def image_seeds(paths: list[Path]) -> tuple[list[str], list[int]]:
    """Each image's infotext ("" if none) and the seed it states (-1 if none)."""
    from lorastudio.generate.infotext import parse_infotext, read_infotext

    texts = [read_infotext(path) or "" for path in paths]
    return texts, [_whole_number(parse_infotext(text).get("Seed"), -1) for text in texts]


def _whole_number(value: object, missing: int | None) -> int | None:
    """A seed as an infotext states it; one that is not a whole number counts as not stated."""
    try:
        return int(str(value).strip()) if value is not None else missing
    except ValueError:
        return missing


def variation_seeds(infotexts: list[str]) -> list[int]:
    """The `Variation seed` each infotext states (the subseeds a job resolved); texts without one are skipped."""
    from lorastudio.generate.infotext import parse_infotext

    values = [parse_infotext(text, fill_defaults=False).get("Variation seed") for text in infotexts]
    return [seed for seed in (_whole_number(value, None) for value in values) if seed is not None]
