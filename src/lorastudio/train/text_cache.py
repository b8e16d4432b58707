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
from typing import TYPE_CHECKING

import torch

from lorastudio.train.async_steps import to_device
from lorastudio.train.text import CHUNK_TOKENS, encode_text

if TYPE_CHECKING:
    from lorastudio.models.loading import LoadedModel

__all__ = ["TextEncoderCache", "CaptionEncoder", "text_cache_key"]

_MEMORY_LIMIT = 4096  # captions kept in host memory before the in-memory cache starts over


def text_cache_key(
    model_sha256: str, family: str, clip_skip: int, dtype: torch.dtype, max_tokens: int = CHUNK_TOKENS
) -> str:
    """Changes whenever the encoded tensors could: other weights, layer choice, precision or caption
    length (`data.max_token_length`; the default 75 keeps the key caches had before it existed)."""
    text = f"{model_sha256}:{family}:clip_skip={clip_skip}:{dtype}"
    if max_tokens != CHUNK_TOKENS:
        text += f":max_tokens={max_tokens}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TextEncoderCache:
    """One `.safetensors` file per caption: `embeds` [77 (or 2 + max tokens), dim] and, for SDXL, `pooled` [dim]."""

    def __init__(self, root: Path, key: str):
        self.folder = root / key
        self.hits = 0
        self.writes = 0

    def _path(self, caption: str) -> Path:
        return self.folder / f"{hashlib.sha256(caption.encode('utf-8')).hexdigest()[:32]}.safetensors"

    def missing(self, captions: list[str]) -> int:
        """How many of `captions` have no file yet (would be encoded)."""
        return sum(not self._path(caption).is_file() for caption in captions)

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


class CaptionEncoder:
    """Captions -> (embeddings, pooled) for the loss.

    While the text side trains, every call encodes. While it is frozen, each caption is
    encoded once and kept in host memory (thousands of SDXL captions would fill a GPU),
    read from and written to the disk cache `disk` when one is set.
    """

    def __init__(self, model: LoadedModel, clip_skip: int, trains_text: bool, max_tokens: int = CHUNK_TOKENS):
        self.model = model
        self.clip_skip = clip_skip
        self.max_tokens = max_tokens
        self.trains_text = trains_text
        self.disk: TextEncoderCache | None = None
        self.memory: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def fill(self, captions: list[str]) -> None:
        """Fill the in-memory cache from the disk cache, encoding (and storing) the rest."""
        disk = self.disk
        todo = []
        for caption in captions:
            found = disk.load(caption) if disk is not None else None
            if found is None:
                todo.append(caption)
                continue
            self.memory[caption] = found
        for start in range(0, len(todo), 16):
            chunk = todo[start : start + 16]
            with torch.no_grad():
                embeds, pooled = encode_text(self.model, chunk, self.clip_skip, self.max_tokens)
            for i, caption in enumerate(chunk):
                pooled_i = pooled[i].cpu() if pooled is not None else None
                self.memory[caption] = (embeds[i].cpu(), pooled_i)
                if disk is not None:
                    disk.save(caption, embeds[i], pooled_i)

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.trains_text:
            return encode_text(self.model, captions, self.clip_skip, self.max_tokens)
        missing = [c for c in dict.fromkeys(captions) if c not in self.memory]
        if missing:
            if len(self.memory) + len(missing) > _MEMORY_LIMIT:
                self.memory.clear()
            self.fill(missing)
        device = self.model.device
        embeds = to_device(torch.stack([self.memory[c][0] for c in captions]), device)
        pooled = [self.memory[c][1] for c in captions]
        return embeds, to_device(torch.stack(pooled), device) if pooled[0] is not None else None
