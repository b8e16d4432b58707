"""A1111's textual-inversion embeddings saved as pictures, read as JSON (never unpickled).

A1111 writes an embedding's dict (`string_to_param`, `name`, `step`, `sd_checkpoint`...) as JSON,
each tensor as `{"TORCHTENSOR": nested lists}`, into a PNG in one of two ways:

- base64 in a text chunk called `sd-ti-embedding`;
- in the pixels: the zlib-compressed JSON's bytes split into nibbles, low nibbles in a block of
  columns left of the picture and high nibbles in one right of it, each block's nibbles XORed
  with a fixed pseudo-random stream (an LCG seeded 0), one black column between each block and
  the picture. The high nibble of each data pixel is decoration.

A1111 loads `.webp`, `.jxl` and `.avif` pictures from its embeddings folder the same way. It only
ever writes PNGs: those formats hold no text chunk (Pillow keeps none of a PNG's text when one is
converted), so a picture in them carries the embedding in its pixels, and only a lossless copy keeps
them. A format this Pillow cannot open is refused in one line saying what to install.

Anything else (a plain picture, A1111's `NAME.preview.png` previews) holds no embedding. A picture's
embedding answers to the `name` stored in it, as A1111 names it (`stored_name`).
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "PNG_CHUNK",
    "EMBEDDING_IMAGE_SUFFIXES",
    "is_preview_picture",
    "holds_embedding",
    "stored_name",
    "unreadable_format",
    "read_png_embedding",
    "lcg_nibbles",
]

PNG_CHUNK = "sd-ti-embedding"
# The pictures A1111 reads embeddings from (`textual_inversion.load_from_file`).
EMBEDDING_IMAGE_SUFFIXES = (".png", ".webp", ".jxl", ".avif")
# What to install for a picture format Pillow may lack (JPEG XL needs a plugin; AVIF is built into
# Pillow 11.2 and later); the plugin is imported when the format is not registered yet.
_FORMAT_PLUGINS = {
    ".webp": ("WebP", None, "a Pillow built with WebP (the wheels from PyPI are)"),
    ".jxl": ("JPEG XL", "pillow_jxl", "pillow-jxl-plugin"),
    ".avif": ("AVIF", "pillow_avif", "Pillow 11.2 or later (or pillow-avif-plugin)"),
}
# The JSON of an embedding is kilobytes to a few megabytes; a larger stream is refused, not inflated.
MAX_JSON_BYTES = 64 * 1024 * 1024
# Pictures are searched for hidden data up to this size (A1111's are about 512x600; a photo of 4000x4000
# in embeddings/ would cost ~400 MB to decode and XOR only to find nothing).
MAX_SEARCHED_PIXELS = 4 * 1024 * 1024

# A1111's stream: seed = (a * seed + c) mod 2**32, each value taken mod 255.
_LCG_A, _LCG_C, _LCG_M = 1664525, 1013904223, 2**32


class _NoEmbedding(Exception):
    """The picture holds no embedding (said once, with the file's name, by the caller)."""


def is_preview_picture(path: Path) -> bool:
    """`NAME.preview.png` (or .webp, .jxl, .avif): the picture A1111 shows for embedding NAME, never
    an embedding itself."""
    path = Path(path)
    return path.suffix.lower() in EMBEDDING_IMAGE_SUFFIXES and Path(path.stem).suffix.lower() == ".preview"


@functools.cache
def _import_plugin(module: str) -> bool:
    """Import a Pillow plugin (it registers its format on import), once: a listing asks per file."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def unreadable_format(path: Path) -> str | None:
    """Why this Pillow cannot open a picture of `path`'s type (one line naming the file and what to
    do), or None when it can. Checked before a file is opened: Pillow would only say "cannot identify"."""
    from PIL import Image

    suffix = Path(path).suffix.lower()
    Image.init()
    if suffix in Image.registered_extensions() or suffix not in _FORMAT_PLUGINS:
        return None
    label, module, install = _FORMAT_PLUGINS[suffix]
    if module is not None and _import_plugin(module) and suffix in Image.registered_extensions():
        return None
    return (
        f"{Path(path).name}: this Pillow cannot open {label} ({suffix}) pictures; install {install}, "
        "or convert the picture to a lossless PNG and use that."
    )


def lcg_nibbles(count: int) -> np.ndarray:
    """The first `count` values of A1111's XOR stream (LCG values mod 255), low nibbles only.

    Built by doubling: the values at i + n are the values at i with the LCG's n-step jump applied,
    so a large block costs a few vector operations instead of a Python loop per byte.
    """
    import numpy as np

    values = np.empty(max(count, 1), dtype=np.uint64)
    values[0] = _LCG_C  # the first seed after 0
    jump_a, jump_c, filled = _LCG_A, _LCG_C, 1  # the 1-step jump: x -> a*x + c
    while filled < count:
        take = min(filled, count - filled)
        # seeds < 2**32 and jump_a < 2**32: product plus jump_c stays below 2**64
        values[filled : filled + take] = (values[:take] * np.uint64(jump_a) + np.uint64(jump_c)) % np.uint64(_LCG_M)
        jump_a, jump_c = jump_a * jump_a % _LCG_M, (jump_a * jump_c + jump_c) % _LCG_M
        filled += take
    return ((values[:count] % np.uint64(255)).astype(np.uint8)) & np.uint8(0x0F)


def _tensor_from_json(value: dict) -> Any:
    import torch

    if set(value) == {"TORCHTENSOR"}:
        return torch.tensor(value["TORCHTENSOR"], dtype=torch.float32)
    return value


def _json_dict(raw: bytes, path: Path, where: str) -> dict:
    import json

    try:
        data = json.loads(raw, object_hook=_tensor_from_json)
    except (ValueError, TypeError, RecursionError) as exc:
        raise LorastudioError(f"{path.name}: the embedding in its {where} is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise LorastudioError(f"{path.name}: the data in its {where} is not an embedding.")
    return data


def _from_text_chunk(text: str | bytes, path: Path) -> dict:
    import base64
    import binascii

    try:
        raw = base64.b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise LorastudioError(f"{path.name}: its {PNG_CHUNK} chunk is not base64 ({exc}).") from None
    return _json_dict(raw, path, f"{PNG_CHUNK} chunk")


def _crop_black_border(pixels):
    """The pixels inside the black border a saved picture may carry (rows and columns without one
    pixel whose three channels are all lit), as A1111's reader crops before it looks for data."""
    import numpy as np

    lit = (pixels > 0).all(axis=2)
    rows, cols = np.flatnonzero(lit.any(axis=1)), np.flatnonzero(lit.any(axis=0))
    if rows.size == 0:
        raise _NoEmbedding
    return pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _hidden_bytes(image) -> bytes:
    """The compressed bytes hidden in a picture's pixels; `_NoEmbedding` when its layout has none."""
    import numpy as np

    nibbles = _crop_black_border(np.asarray(image.convert("RGB"), dtype=np.uint8)) & 0x0F
    blank = np.flatnonzero(nibbles.sum(axis=(0, 2)) == 0)  # the separator columns carry no data
    if blank.size < 2:
        raise _NoEmbedding
    low, high = nibbles[:, : blank[0]], nibbles[:, blank[-1] + 1 :]
    if low.size == 0 or low.shape != high.shape:
        raise _NoEmbedding
    mask = lcg_nibbles(low.size)
    return ((high.ravel() ^ mask) << 4 | (low.ravel() ^ mask)).astype(np.uint8).tobytes()


def _inflate(data: bytes, path: Path) -> bytes:
    """The zlib stream at the start of `data` (padding follows it), within `MAX_JSON_BYTES`."""
    import zlib

    stream = zlib.decompressobj()
    try:
        raw = stream.decompress(data, MAX_JSON_BYTES + 1)
    except zlib.error:
        raise _NoEmbedding from None
    if len(raw) > MAX_JSON_BYTES:
        raise LorastudioError(f"{path.name}: the data hidden in it is over {MAX_JSON_BYTES >> 20} MB; not an embedding.")
    if not stream.eof:
        raise _NoEmbedding
    return raw


def _chunk_or_pixels(path: Path) -> tuple[str, Any]:
    """("chunk", the `sd-ti-embedding` text) or ("pixels", the bytes hidden in the picture);
    `_NoEmbedding` for a picture too large to search or without the layout."""
    from PIL import Image, UnidentifiedImageError

    cannot_open = unreadable_format(path)
    if cannot_open:
        raise LorastudioError(cannot_open)
    try:
        with Image.open(path) as image:
            text = image.info.get(PNG_CHUNK)  # A1111 writes it before the pixels (PNGs only)
            if text is None and image.width * image.height > MAX_SEARCHED_PIXELS:
                raise _NoEmbedding
            if text is None:
                image.load()
                text = getattr(image, "text", {}).get(PNG_CHUNK)  # a chunk after the pixels
            return ("chunk", text) if text is not None else ("pixels", _hidden_bytes(image))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise LorastudioError(f"{path.name}: not a readable picture ({exc}); download the embedding again.") from None


def read_png_embedding(path: str | Path) -> dict:
    """The embedding dict in an A1111 picture (.png, .webp, .jxl, .avif): its `sd-ti-embedding`
    chunk, else the data in its pixels.

    A picture with neither is refused in one line naming the file.
    """
    path = Path(path)
    try:
        where, payload = _chunk_or_pixels(path)
        if where == "pixels":
            payload = _inflate(payload, path)
    except _NoEmbedding:
        lossy = "" if path.suffix.lower() == ".png" else " (a lossy copy loses the data in the pixels)"
        raise LorastudioError(
            f"{path.name}: a picture without embedding data (no {PNG_CHUNK} text chunk, none in its "
            f"pixels{lossy}); use the .pt, .safetensors or the PNG that A1111 saved for the embedding."
        ) from None
    return _from_text_chunk(payload, path) if where == "chunk" else _json_dict(payload, path, "pixels")


# Per file: its state (size, mtime, inode), whether it holds an embedding, the name stored in it.
_HOLDS_CACHE: dict[str, tuple[tuple[int, int, int], bool, str | None]] = {}
_HOLDS_CACHE_SIZE = 4096


def holds_embedding(path: str | Path) -> bool:
    """Whether a picture carries A1111 embedding data (what A1111 loads from its embeddings folder):
    a `sd-ti-embedding` chunk, or data in its pixels that inflates. Previews and plain pictures:
    False. Kept per file state (size, mtime, inode), so listing a folder twice decodes nothing twice.
    """
    return _sniffed(Path(path))[0]


def stored_name(path: str | Path) -> str | None:
    """The `name` an embedding picture holds, the word A1111 loads it as (`data.get('name', stem)`);
    None for a picture without one (a blank or non-text name counts as none) or without an embedding."""
    return _sniffed(Path(path))[1]


def _sniffed(path: Path) -> tuple[bool, str | None]:
    if is_preview_picture(path):
        return False, None
    try:
        stat = os.stat(path)
    except OSError:
        return False, None
    key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    known = _HOLDS_CACHE.get(str(path))
    if known is not None and known[0] == key:
        return known[1], known[2]
    answer = _sniff(path)
    if len(_HOLDS_CACHE) >= _HOLDS_CACHE_SIZE:
        _HOLDS_CACHE.clear()
    _HOLDS_CACHE[str(path)] = (key, *answer)
    return answer


def _sniff(path: Path) -> tuple[bool, str | None]:
    import base64
    import binascii

    try:
        where, payload = _chunk_or_pixels(path)
        raw = _inflate(payload, path) if where == "pixels" else base64.b64decode(payload)
    except (_NoEmbedding, LorastudioError):
        return False, None
    except (binascii.Error, ValueError):
        return True, None  # a chunk that is no base64: refused with its reason when it is used
    return True, _name_in(raw)


def _name_in(raw: bytes) -> str | None:
    """The `name` in an embedding's JSON (its tensors left as lists: nothing else is needed here)."""
    import json

    try:
        data = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return None  # refused with its reason when the embedding is used
    name = data.get("name") if isinstance(data, dict) else None
    return (name.strip() or None) if isinstance(name, str) else None
