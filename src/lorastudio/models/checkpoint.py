"""Reading checkpoint files safely: safetensors as-is, pickles only with weights_only=True."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError, UnsafeFileError

__all__ = [
    "read_safetensors_keys",
    "read_safetensors_header",
    "read_safetensors_metadata",
    "read_safetensors_private",
    "read_private_bytes",
    "detach_from_files",
    "load_pickled_state_dict",
    "convert_ckpt_to_safetensors",
    "file_sha256",
    "PICKLE_SUFFIXES",
]

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}


def read_safetensors_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes without loading the data (cheap for multi-GB files).

    From the JSON header alone: safetensors' `safe_open` + `get_slice` per name took 150 ms
    for an SDXL checkpoint's 2,500 tensors, and a load asks twice.
    """
    header = read_safetensors_header(path)
    keys = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise _not_safetensors(Path(path), f"tensor {name[:60]!r} has a bad shape")
        keys[name] = tuple(shape)
    return keys


# A safetensors header larger than this is not one (the format's own readers cap it at 100 MB).
MAX_SAFETENSORS_HEADER = 100 * 1024**2


def _not_safetensors(path: Path, reason: str) -> LorastudioError:
    return LorastudioError(
        f"{path.name}: not a readable .safetensors file ({reason}); re-download or re-export it."
    )


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file (tensor names, dtypes, shapes, `__metadata__`).

    Reads only the header (no torch, no tensors, nothing memory-mapped), and checks that the
    tensors it announces fit in the file, so a truncated download is caught here too.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise _not_safetensors(path, "too short")
        size = int.from_bytes(head, "little")
        if size <= 1 or size > MAX_SAFETENSORS_HEADER:
            raise _not_safetensors(path, "bad header size")
        raw = f.read(size)
    return _checked_header(path, raw, path.stat().st_size - 8 - size)


def _incomplete(path: Path, reason: str) -> LorastudioError:
    return LorastudioError(f"{path.name}: not a complete .safetensors file ({reason}); replace it with a good copy.")


def _checked_header(path: Path, raw: bytes | bytearray, data_size: int, fail=_not_safetensors) -> dict[str, Any]:
    """The parsed header, its tensors checked to lie inside the `data_size` bytes after it."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise fail(path, "header is not JSON") from None
    if not isinstance(header, dict):
        raise fail(path, "header is not a mapping")
    metadata = header.get("__metadata__", {})
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise fail(path, "__metadata__ is not a mapping of strings")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise fail(path, f"tensor {name[:60]!r} has no data_offsets")
        if not 0 <= offsets[0] <= offsets[1] <= data_size:
            raise fail(path, f"tensor {name[:60]!r} lies past the end of the file")
    return header


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` strings of a .safetensors file (kohya's `ss_*`, modelspec), header only."""
    return dict(read_safetensors_header(path).get("__metadata__") or {})


# safetensors dtype names -> torch dtype names (those torch has; others are refused).
_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip


def read_private_bytes(path: str | Path) -> bytearray:
    """A file's bytes in one private, writable buffer: one copy, which tensors may then view."""
    import os

    with open(path, "rb") as f:
        buffer = bytearray(os.fstat(f.fileno()).st_size)
        view, got = memoryview(buffer), 0
        while got < len(buffer) and (n := f.readinto(view[got:])):
            got += n
        view.release()
    return buffer if got == len(buffer) else buffer[:got]  # a file that shrank meanwhile


def read_safetensors_private(path: Path, data: bytes | bytearray | None = None) -> tuple[dict, dict[str, str]]:
    """All tensors and the metadata of a .safetensors file, in private memory.

    safetensors' own loaders memory-map the file: replacing or truncating it while the
    tensors live kills the process with SIGBUS. Here the file is read once into a private
    buffer and the tensors are views of it (no tie to the file, no second copy). `data`: the
    file's bytes when the caller has read them (to hash them); a `bytearray` is viewed, other
    bytes are copied once.
    """
    path = Path(path)
    if data is None:
        data = read_private_bytes(path)
    elif not isinstance(data, bytearray):
        data = bytearray(data)
    if len(data) < 8:
        raise _incomplete(path, "too short")
    size = int.from_bytes(data[:8], "little")
    if size <= 1 or size > MAX_SAFETENSORS_HEADER or 8 + size > len(data):
        raise _incomplete(path, "bad header size")
    header = _checked_header(path, data[8 : 8 + size], len(data) - 8 - size, fail=_incomplete)
    metadata = header.pop("__metadata__", None) or {}
    _check_tensors_fill_the_file(path, header, len(data) - 8 - size)
    # Sorted by name, as safe_open lists them: the order modules are applied in stays the same
    # whichever way the file was written.
    tensors = {name: _tensor_view(path, name, header[name], data, 8 + size) for name in sorted(header)}
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _check_tensors_fill_the_file(path: Path, header: dict[str, Any], data_size: int) -> None:
    """Tensors lie end to end and fill the data exactly, as the format's own reader demands."""
    end = 0
    for name, entry in sorted(header.items(), key=lambda item: tuple(item[1]["data_offsets"])):
        begin, stop = entry["data_offsets"]
        if begin != end:
            raise _incomplete(path, f"tensor {name[:60]!r} overlaps another or leaves a gap")
        end = stop
    if end != data_size:
        raise _incomplete(path, "the tensors do not fill the file")


def _tensor_view(path: Path, name: str, entry: dict[str, Any], data: bytearray, body: int):
    """One tensor as a view of `data` (a copy only where its offset breaks the dtype's alignment)."""
    import math

    import torch

    dtype_name = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
    dtype = getattr(torch, dtype_name, None) if dtype_name else None
    shape = entry.get("shape")
    if dtype is None:
        raise _incomplete(path, f"tensor {name[:60]!r} has an unknown dtype {str(entry.get('dtype'))[:20]!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise _incomplete(path, f"tensor {name[:60]!r} has a bad shape")
    begin, stop = entry["data_offsets"]
    count, itemsize = math.prod(shape), torch.empty((), dtype=dtype).element_size()
    if count * itemsize != stop - begin:
        raise _incomplete(path, f"tensor {name[:60]!r} does not match its shape and dtype")
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    offset = body + begin
    if offset % itemsize:  # an odd offset: this tensor gets its own aligned copy
        data, offset = bytearray(data[offset : offset + stop - begin]), 0
    return torch.frombuffer(data, dtype=dtype, count=count, offset=offset).view(shape)


def detach_from_files(*modules) -> None:
    """Give every CPU parameter and buffer of `modules` its own memory.

    diffusers and transformers load weights memory-mapped from the file (safetensors): a
    file replaced or truncated under a running server would then end it with SIGBUS on the
    next read. GPU tensors are copies already.
    """
    import torch

    with torch.no_grad():
        for module in modules:
            if module is None:
                continue
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.device.type == "cpu":
                    tensor.data = tensor.data.clone()


def load_pickled_state_dict(path: Path) -> dict:
    """A `.ckpt`/`.pt` state dict, loaded only if torch's weights-only unpickler accepts it.

    Plain pickle runs arbitrary code from the file; we never do that.
    """
    import pickle

    import torch

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0][:160]
        raise UnsafeFileError(
            f"{path}: refused — it needs unsafe unpickling ({reason}); get a .safetensors version of this model instead."
        ) from None
    except Exception as exc:
        raise LorastudioError(
            f"{path}: cannot be read as a checkpoint ({type(exc).__name__}); the file may be corrupt."
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise LorastudioError(f"{path}: holds no state dict; is it a Stable Diffusion checkpoint?")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def convert_ckpt_to_safetensors(path: Path, out: Path) -> Path:
    """Write a weights-only-loadable pickle as .safetensors (what `models import` stores)."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in load_pickled_state_dict(path).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"converted_from": path.name})
    tmp.replace(out)
    return out


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The file's SHA-256 (hex), read in 1 MiB blocks: model, LoRA and training-image hashes all use it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
