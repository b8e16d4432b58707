"""The hashes A1111, kohya and civitai print and match models by.

- `sshs_model_hash`: SHA-256 of a safetensors file's tensor bytes (the file minus its
  header), so editing metadata does not change it. Its first 12 hex are the LoRA's short
  hash in A1111 infotext (`Lora hashes: "name: 3f2a9c81b0de"`).
- `sshs_legacy_hash`: first 8 hex of the SHA-256 of the 64 KiB at offset 1 MiB.
- A1111 model hash: first 10 hex of the whole file's SHA-256 (`Model hash:`).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from lorastudio.models.checkpoint import file_sha256  # one file hash for models, LoRAs and images

if TYPE_CHECKING:
    import torch

__all__ = [
    "file_sha256",
    "model_short_hash",
    "safetensors_model_hash",
    "legacy_hash",
    "lora_short_hash",
    "lora_hashes_of_bytes",
    "state_dict_hashes",
    "add_hashes_to_metadata",
]

_CHUNK = 1 << 20


def _sha256_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(block)
    return digest.hexdigest()


def model_short_hash(path: str | Path) -> str:
    """A1111's `Model hash`: first 10 hex of the file's SHA-256."""
    return file_sha256(path)[:10]


def _tensor_bytes_hash(stream: BinaryIO) -> str:
    header_len = struct.unpack("<Q", stream.read(8))[0]
    stream.seek(8 + header_len)
    return _sha256_stream(stream)


def _legacy(stream: BinaryIO) -> str:
    stream.seek(0x100000)
    return hashlib.sha256(stream.read(0x10000)).hexdigest()[:8]


def safetensors_model_hash(path: str | Path) -> str:
    """`sshs_model_hash` of a safetensors file: SHA-256 of everything after the header."""
    with open(path, "rb") as stream:
        return _tensor_bytes_hash(stream)


def legacy_hash(path: str | Path) -> str:
    with open(path, "rb") as stream:
        return _legacy(stream)


def lora_hashes_of_bytes(data: bytes | bytearray) -> tuple[str, str]:
    """(A1111's 12-hex LoRA hash, a content key) of a .safetensors file already in memory.

    One SHA-256 pass over the tensor bytes serves both: it is `sshs_model_hash` (used unless
    the file stores one), and with the header it identifies the whole file's content.
    """
    view = memoryview(data)
    header_end = 8 + struct.unpack("<Q", view[:8])[0]
    tensors = hashlib.sha256(view[header_end:]).digest()
    key = hashlib.sha256(view[:header_end]).digest()
    stored = (json.loads(bytes(view[8:header_end])).get("__metadata__") or {}).get("sshs_model_hash")
    return (stored or tensors.hex())[:12], hashlib.sha256(key + tensors).hexdigest()


def lora_short_hash(path: str | Path) -> str:
    """The 12-hex LoRA hash A1111 writes in `Lora hashes:` (short `sshs_model_hash`)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        stored = (handle.metadata() or {}).get("sshs_model_hash")
    return (stored or safetensors_model_hash(path))[:12]


def state_dict_hashes(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) of the file these tensors will make, as kohya computes them.

    Like kohya, the legacy hash is taken over a file holding only the `ss_*` metadata.
    """
    from safetensors.torch import save

    ss_only = {k: v for k, v in (metadata or {}).items() if k.startswith("ss_")}
    blob = io.BytesIO(save(state_dict, metadata=ss_only or None))
    model_hash = _tensor_bytes_hash(blob)
    return model_hash, _legacy(blob)


def add_hashes_to_metadata(state_dict: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, str]:
    """`sshs_*` hashes (and `modelspec.hash_sha256` when the file carries a model spec)."""
    model_hash, legacy = state_dict_hashes(state_dict, metadata)
    out = {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy}
    if "modelspec.sai_model_spec" in metadata:
        out["modelspec.hash_sha256"] = "0x" + model_hash
    return out
