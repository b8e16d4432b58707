"""Reading checkpoint files safely: safetensors as-is, pickles only with weights_only=True."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError, UnsafeFileError

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

__all__ = [
    "read_safetensors_keys",
    "read_safetensors_header",
    "read_safetensors_metadata",
    "read_safetensors_private",
    "read_private_bytes",
    "detach_from_files",
    "load_pickled_state_dict",
    "convert_ckpt_to_safetensors",
    "original_sha256",
    "file_sha256",
    "PICKLE_SUFFIXES",
]

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}


def read_safetensors_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes without loading the data (cheap for multi-GB files).

    From the JSON header alone: safetensors' `safe_open` + `get_slice` per name took 150 ms
    for an SDXL checkpoint's 2,500 tensors, and a load asks twice.
    """
    header = read_safetensors_header(path)  # checked as safetensors checks it
    return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}


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
        file_size = os.fstat(f.fileno()).st_size
        size = _header_size(path, f.read(8), file_size, _not_safetensors)
        raw = f.read(size)
    return _checked_header(path, raw, file_size - 8 - size)


def _header_size(path: Path, head: bytes | bytearray, file_size: int, fail) -> int:
    """The header length the file's first 8 bytes give, checked to fit the format and the file."""
    if len(head) < 8:
        raise fail(path, "too short")
    size = int.from_bytes(head[:8], "little")
    if size <= 1 or size > MAX_SAFETENSORS_HEADER or 8 + size > file_size:
        raise fail(path, "bad header size")
    return size


def _incomplete(path: Path, reason: str) -> LorastudioError:
    return LorastudioError(f"{path.name}: not a complete .safetensors file ({reason}); replace it with a good copy.")


# The format's dtypes and their sizes in bytes, and the torch dtype each is read as.
_SAFETENSORS_DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1), "C64": ("complex64", 8),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
    "U64": ("uint64", 8), "U32": ("uint32", 4), "U16": ("uint16", 2), "U8": ("uint8", 1), "BOOL": ("bool", 1),
}  # fmt: skip
_MAX_ELEMENTS = 2**62  # a shape past this is no tensor (and overflows torch's stride arithmetic)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once (the format's reader refuses repeats)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key is repeated")
    return found


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0  # JSON true/false are no counts


def _checked_header(path: Path, raw: bytes | bytearray, data_size: int, fail=_not_safetensors) -> dict[str, Any]:
    """The parsed header, checked as the format's own reader checks it: UTF-8 JSON, a mapping of
    tensors with known dtypes whose shapes match their byte ranges, lying end to end and filling
    the `data_size` bytes after the header exactly."""
    try:
        header = json.loads(bytes(raw).decode("utf-8"), object_pairs_hook=_unique_keys)
        for key in header if isinstance(header, dict) else ():
            key.encode("utf-8")  # a lone surrogate escape (\ud800) is no UTF-8 name
    except (UnicodeError, ValueError, RecursionError):  # JSON errors, huge integers, deep nesting
        raise fail(path, "header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise fail(path, "header is not a mapping")
    metadata = header.get("__metadata__", {})
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise fail(path, "__metadata__ is not a mapping of strings")
    for name, entry in header.items():
        if name != "__metadata__":
            _check_entry(path, name, entry, data_size, fail)
    _check_tensors_fill_the_file(path, header, data_size, fail)
    return header


def _check_entry(path: Path, name: str, entry: Any, data_size: int, fail) -> None:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise fail(path, f"tensor {name[:60]!r} has no data_offsets")
    if not offsets[0] <= offsets[1] <= data_size:
        raise fail(path, f"tensor {name[:60]!r} lies past the end of the file")
    dtype, shape = entry.get("dtype"), entry.get("shape")
    if not isinstance(dtype, str) or dtype not in _SAFETENSORS_DTYPES:
        raise LorastudioError(
            f"{path.name}: tensor {name[:60]!r} has dtype {str(dtype)[:20]!r}, which lorastudio cannot read; "
            "convert the file to F32, F16 or BF16."
        )
    if not (isinstance(shape, list) and all(map(_is_count, shape))):
        raise fail(path, f"tensor {name[:60]!r} has a bad shape")
    elements = 1
    for size in shape:
        elements *= size or 1  # a zero-size tensor's other sides must still be sane
        if elements > _MAX_ELEMENTS:
            raise fail(path, f"tensor {name[:60]!r} has a bad shape")
    if (0 if 0 in shape else elements) * _SAFETENSORS_DTYPES[dtype][1] != offsets[1] - offsets[0]:
        raise fail(path, f"tensor {name[:60]!r} does not match its shape and dtype")


def _check_tensors_fill_the_file(path: Path, header: dict[str, Any], data_size: int, fail) -> None:
    """Tensors lie end to end and fill the data exactly, as the format's own reader demands."""
    entries = [(name, entry) for name, entry in header.items() if name != "__metadata__"]
    end = 0
    for name, entry in sorted(entries, key=lambda item: tuple(item[1]["data_offsets"])):
        begin, stop = entry["data_offsets"]
        if begin != end:
            raise fail(path, f"tensor {name[:60]!r} overlaps another or leaves a gap")
        end = stop
    if end != data_size:
        raise fail(path, "the tensors do not fill the file")


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` strings of a .safetensors file (kohya's `ss_*`, modelspec), header only."""
    return dict(read_safetensors_header(path).get("__metadata__") or {})


PrivateBuffer = bytearray | mmap.mmap  # what `read_private_bytes` returns: writable, viewable


_HUGE_PAGES_UP_TO = 256 << 20  # LoRA-sized reads; a larger first touch may wait for compaction


def _fresh_buffer(size: int) -> PrivateBuffer:
    """`size` bytes of private memory, backed by huge pages where the kernel has them.

    Filling fresh memory costs a page fault per 4 KiB page, which is most of the time reading a
    LoRA takes (36 MiB: 24 ms into a bytearray, 6 ms into huge pages on the 2-core test machine).
    Above 256 MiB (a ControlNet) the pages stay small: huge pages there can stall on compaction
    (an SD1.5 load with huge pages took 4 s instead of 1.6 s here). Anonymous, never tied to the
    file; a bytearray where mmap is not there. Nothing may `close()` it while tensors view it.
    """
    if size >= 2 << 20 and hasattr(mmap, "MAP_ANONYMOUS"):
        try:
            buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except OSError:
            return bytearray(size)
        if size <= _HUGE_PAGES_UP_TO and hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                buffer.madvise(mmap.MADV_HUGEPAGE)
            except OSError:  # THP off in this kernel: plain pages
                pass
        return buffer
    return bytearray(size)


def read_private_bytes(path: str | Path) -> PrivateBuffer:
    """A file's bytes in one private, writable buffer: one copy, which tensors may then view."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buffer = _fresh_buffer(size)
        view, got = memoryview(buffer), 0
        while got < size and (n := f.readinto(view[got:])):
            got += n
        view.release()
    return buffer if got == size else bytearray(memoryview(buffer)[:got])  # a file that shrank meanwhile


def read_safetensors_private(path: Path, data: bytes | PrivateBuffer | None = None) -> tuple[dict, dict[str, str]]:
    """All tensors and the metadata of a .safetensors file, in private memory.

    safetensors' own loaders memory-map the file: replacing or truncating it while the
    tensors live kills the process with SIGBUS. Here the file is read once into a private
    buffer and the tensors are views of it (no tie to the file, no second copy). `data`: the
    file's bytes when the caller has read them (to hash them); a `read_private_bytes` buffer is
    viewed, other bytes are copied once.
    """
    path = Path(path)
    if data is None:
        data = read_private_bytes(path)
    elif not isinstance(data, bytearray | mmap.mmap):
        data = bytearray(data)
    size = _header_size(path, data[:8], len(data), _incomplete)
    header = _checked_header(path, data[8 : 8 + size], len(data) - 8 - size, fail=_incomplete)
    metadata = header.pop("__metadata__", None) or {}
    # Sorted by name, as safe_open lists them: the order modules are applied in stays the same
    # whichever way the file was written.
    tensors = {name: _tensor_view(header[name], data, 8 + size) for name in sorted(header)}
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _tensor_view(entry: dict[str, Any], data: PrivateBuffer, body: int):
    """One checked tensor as a view of `data` (a copy only where its offset breaks the dtype's alignment)."""
    import torch

    dtype_name, itemsize = _SAFETENSORS_DTYPES[entry["dtype"]]
    dtype, shape = getattr(torch, dtype_name), entry["shape"]
    begin, stop = entry["data_offsets"]
    if begin == stop:
        return torch.empty(shape, dtype=dtype)
    offset = body + begin
    if offset % itemsize:  # an odd offset: this tensor gets its own aligned copy
        data, offset = bytearray(memoryview(data)[offset : stop + body]), 0
    return torch.frombuffer(data, dtype=dtype, count=(stop - begin) // itemsize, offset=offset).view(shape)


def detach_from_files(*modules: torch.nn.Module) -> None:
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


class _InertCallback:
    """Stands in for pytorch_lightning's `ModelCheckpoint` in old checkpoints: nothing runs, its
    state is kept as plain attributes and dropped with everything but the weights."""


_NUMERIC_KINDS = "biufc"  # bool, signed, unsigned, float, complex: no object, string or void parts


def _numeric_dtype(spec: Any, *_flags: Any) -> Any:
    """`numpy.dtype(...)` as an old checkpoint's pickle calls it, for plain numeric types only: a
    structured or object dtype could point into memory (a forged void scalar crashed the reader)."""
    import pickle

    import numpy as np

    dtype = np.dtype(spec) if isinstance(spec, str) and len(spec) <= 8 else None
    if dtype is None or dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not a plain number type")
    return dtype


def _numeric_scalar(dtype: Any, data: Any = None) -> Any:
    """`numpy.core.multiarray.scalar(dtype, bytes)` (a pickled `global_step`), rebuilt from the type
    alone: the dtype's pickled state (sizes, fields) is not trusted."""
    import pickle

    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise pickle.UnpicklingError("numpy scalar of a type that is not a plain number")
    clean = np.dtype(dtype.type).newbyteorder(dtype.byteorder if dtype.byteorder in "<>" else "=")
    if not isinstance(data, bytes) or len(data) != clean.itemsize:
        raise pickle.UnpicklingError("numpy scalar whose bytes do not fit its type")
    return np.frombuffer(data, dtype=clean, count=1)[0]


def _harmless_globals() -> list:
    """What old SD `.ckpt` files hold besides tensors, as A1111's restricted unpickler allows it:
    a numpy `global_step` (numpy 1 and 2 module paths; numeric types only) and lightning's callback."""
    import numpy as np

    numeric = np.typecodes["AllInteger"] + np.typecodes["AllFloat"] + "?"
    dtype_classes = {type(np.dtype(code)) for code in numeric}  # a dtype's pickled state is set on its class
    return [
        (_numeric_scalar, "numpy._core.multiarray.scalar"),
        (_numeric_scalar, "numpy.core.multiarray.scalar"),
        (_numeric_dtype, "numpy.dtype"),
        *dtype_classes,
        (_InertCallback, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    ]


_SAFE_LOAD_LOCK = threading.Lock()  # torch's allow-list is process-wide: one load adds and removes it at a time


def weights_only_load(path: Path, extra_globals: list | tuple = (), loader: Any = None, **kwargs: Any) -> Any:
    """`torch.load(weights_only=True)` (or `loader`, accelerate's) with `extra_globals` allowed for
    this load only. torch keeps one allow-list per process, so every weights-only load of this
    package takes its turn: no other load (a state checked before accelerate unpickles it) ever
    sees another's allowances, and none is removed under it."""
    import contextlib

    import torch

    allowed = torch.serialization.safe_globals(list(extra_globals)) if extra_globals else contextlib.nullcontext()
    with _SAFE_LOAD_LOCK, allowed, warnings.catch_warnings():
        # the legacy (non-zip) format warns about its pickle protocol on every load
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        load = loader or torch.load
        return load(str(path), map_location="cpu", weights_only=True, **kwargs)


_TORCH_BOILERPLATE = ("Weights only load failed", "(1)", "(2)", "Check the documentation", "Please file an issue")


def unpickling_refusal(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names what the file holds (`Unsupported global:
    GLOBAL os.system …`), without its advice to load the file unsafely."""
    for line in str(exc).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not line.startswith(_TORCH_BOILERPLATE):
            return line.split(" Please use `torch.serialization")[0].rstrip(".")[:200]
    return type(exc).__name__


def load_pickled_state_dict(path: Path) -> dict:
    """A `.ckpt`/`.pt` state dict, loaded only if torch's weights-only unpickler accepts it.

    Plain pickle runs arbitrary code from the file; we never do that.
    """
    import pickle

    import torch

    try:
        data = weights_only_load(path, _harmless_globals())  # nothing that runs code
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(
            f"{path}: refused — it holds more than weights ({unpickling_refusal(exc)}); "
            "get a .safetensors version of this model instead."
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


# Metadata key of a converted .ckpt: the original file's SHA-256, which A1111 names the model by
# ("Model hash" = its first 10 hex), so images A1111 made with the .ckpt still find the model.
ORIGINAL_SHA256_KEY = "converted_from_sha256"


def convert_ckpt_to_safetensors(path: Path, out: Path) -> Path:
    """Write a weights-only-loadable pickle as .safetensors (what `models import` stores), keeping
    the pickle's own SHA-256 in the metadata (`original_sha256`)."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in load_pickled_state_dict(path).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    metadata = {"converted_from": path.name, ORIGINAL_SHA256_KEY: file_sha256(path)}
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(out)
    return out


def original_sha256(path: str | Path) -> str | None:
    """The SHA-256 of the .ckpt a .safetensors was converted from (header only), or None."""
    if Path(path).suffix.lower() != ".safetensors":
        return None
    value = read_safetensors_metadata(path).get(ORIGINAL_SHA256_KEY, "").lower()
    return value if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else None


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """The file's SHA-256 (hex), read in 1 MiB blocks: model, LoRA and training-image hashes all use it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def hash_cache_path(path: Path, cache_dir: Path, kind: str = "") -> Path:
    """Where a hash of `path` is kept: keyed by the file's path, size and mtime (and `kind`, for a
    hash other than the whole file's SHA-256), so a replaced file is hashed again."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    key = hashlib.sha256((f"{kind}|{key}" if kind else key).encode()).hexdigest()[:24]
    return cache_dir / "hashes" / f"{key}.txt"


def cached_file_hash(
    path: Path, cache_dir: Path, compute: Callable[[Path], str] = file_sha256, kind: str = ""
) -> str:
    """`compute(path)` (the whole file's SHA-256 by default), computed once per version of the file."""
    cached = hash_cache_path(path, cache_dir, kind)
    if cached.is_file():
        return cached.read_text().strip()
    value = compute(path)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(value)
    return value
