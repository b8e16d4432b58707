"""Text-encoder outputs cached on disk, keyed by model + clip skip + caption.

When the text encoder is frozen (no trigger embedding, no text-encoder LoRA) and captions
are fixed (no tag shuffling), every caption always encodes to the same tensors; encoding
them once and reusing them across steps and runs saves a text-encoder pass per sample.
The cache lives in `cache/text/<key>/` beside the latent cache and can be deleted.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import torch

__all__ = ["TextEncoderCache", "text_cache_key"]


def text_cache_key(model_sha256: str, family: str, clip_skip: int, dtype: torch.dtype) -> str:
    """Changes whenever the encoded tensors could: other weights, layer choice or precision."""
    text = f"{model_sha256}:{family}:clip_skip={clip_skip}:{dtype}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TextEncoderCache:
    """One `.safetensors` file per caption: `embeds` [77, dim] and, for SDXL, `pooled` [dim]."""

    def __init__(self, root: Path, key: str):
        self.folder = root / key
        self.hits = 0
        self.writes = 0

    def _path(self, caption: str) -> Path:
        return self.folder / f"{hashlib.sha256(caption.encode('utf-8')).hexdigest()[:32]}.safetensors"

    def load(self, caption: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        from safetensors.torch import load_file

        path = self._path(caption)
        if not path.is_file():
            return None
        tensors = load_file(str(path))
        self.hits += 1
        return tensors["embeds"], tensors.get("pooled")

    def save(self, caption: str, embeds: torch.Tensor, pooled: torch.Tensor | None) -> None:
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {"embeds": embeds.detach().cpu().contiguous()}
        if pooled is not None:
            tensors["pooled"] = pooled.detach().cpu().contiguous()
        path = self._path(caption)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # one per writer
        save_file(tensors, str(tmp))
        tmp.replace(path)  # appears whole or not at all, also with several processes
        self.writes += 1
