"""Embedding files as A1111 and civitai hand them out, written here from the formats' description
(not with the code under test): a pickled `.pt`, and the two ways A1111 puts one into a PNG."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo


def a1111_pt(path: Path, vectors: torch.Tensor, name: str | None = None, step: int = 500) -> Path:
    """An A1111 textual-inversion .pt: `string_to_token` / `string_to_param` and its facts."""
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vectors},
            "name": name or path.stem,
            "step": step,
            "sd_checkpoint": "abcdef12",
            "sd_checkpoint_name": "v1-5-pruned",
        },
        path,
    )
    return path


def _as_json(data: dict) -> str:
    def tensors(value):
        if isinstance(value, torch.Tensor):
            return {"TORCHTENSOR": value.tolist()}
        raise TypeError(type(value))

    return json.dumps(data, default=tensors)


def embedding_dict(vectors: torch.Tensor, name: str, step: int = 500) -> dict:
    return {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": name, "step": step}


def chunk_png(path: Path, data: dict, chunk: str = "sd-ti-embedding") -> Path:
    """A picture with the embedding as base64 JSON in a text chunk (A1111's usual PNG embedding)."""
    info = PngInfo()
    info.add_text(chunk, base64.b64encode(_as_json(data).encode()).decode())
    Image.new("RGB", (16, 16), (90, 120, 200)).save(path, pnginfo=info)
    return path


def a1111_stream(count: int) -> list[int]:
    """A1111's XOR stream: LCG (a=1664525, c=1013904223, m=2**32) from seed 0, each value mod 255."""
    seed, out = 0, []
    for _ in range(count):
        seed = (1664525 * seed + 1013904223) % 2**32
        out.append(seed % 255)
    return out


def pixel_png(path: Path, data: dict, size: tuple[int, int] = (40, 32), seed: int = 0) -> Path:
    """A picture with the embedding hidden in its pixels, as A1111's "save images with embedding":
    zlib JSON, low nibbles left of the picture, high nibbles right of it, each XORed with the
    stream, a black column on each side of the picture, the high nibble of data pixels decoration."""
    Image.fromarray(pixel_canvas(data, size, seed), "RGB").save(path)
    return path


def pixel_webp(path: Path, data: dict, lossless: bool = True) -> Path:
    """A1111's picture with the embedding in its pixels saved as WebP (A1111 itself writes only PNGs; a
    WebP copy has no text chunk, and only a lossless one keeps the pixels' data)."""
    options = {"lossless": True} if lossless else {"quality": 90}
    Image.fromarray(pixel_canvas(data), "RGB").save(path, "WEBP", **options)
    return path


def pixel_canvas(data: dict, size: tuple[int, int] = (40, 32), seed: int = 0) -> np.ndarray:
    """The RGB pixels of `pixel_png`."""
    rng = np.random.default_rng(seed)
    raw = np.frombuffer(zlib.compress(_as_json(data).encode(), 9), np.uint8)
    height = size[1]
    cells = -(-raw.size // (height * 3)) * height * 3  # whole columns of `height` RGB pixels
    mask = np.array(a1111_stream(cells), np.uint8) & 0x0F

    def block(nibbles: np.ndarray) -> np.ndarray:
        padded = np.resize(nibbles, cells)  # A1111 pads by repeating the data
        decoration = rng.integers(1, 16, cells, dtype=np.uint8) << 4
        return ((padded ^ mask) | decoration).reshape(height, -1, 3)

    low, high = block(raw & 0x0F), block(raw >> 4)
    picture = rng.integers(17, 255, (height, size[0], 3), dtype=np.uint8)
    width = low.shape[1] + 1 + size[0] + 1 + high.shape[1]
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:, : low.shape[1]] = low
    canvas[:, low.shape[1] + 1 : low.shape[1] + 1 + size[0]] = picture
    canvas[:, -high.shape[1] :] = high
    return canvas


def plain_png(path: Path, colour: tuple[int, int, int] = (200, 80, 40)) -> Path:
    Image.new("RGB", (24, 24), colour).save(path)
    return path
