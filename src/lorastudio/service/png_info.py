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

__all__ = ["png_info"]


def png_info(source: str | Path | bytes | PILImage.Image) -> dict[str, Any]:
    """A1111's PNG Info: {"info": raw infotext, "items": other text chunks, "parameters": parsed keys}.

    `source` is a path, the file's bytes or an image already decoded (the API decodes with its
    size limits first). A path or bytes that are not an image raise LorastudioError.
    """
    from lorastudio.generate.infotext import infotext_and_items, parse_infotext

    text, items = infotext_and_items(source)
    return {"info": text or "", "items": items, "parameters": parse_infotext(text) if text else {}}
