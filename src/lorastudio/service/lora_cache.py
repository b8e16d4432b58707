"""Parsed LoRA files, kept by content hash so a request reads a known file as a stat and a lookup.

A file is known by its stamp (path, size, mtime, inode): a replaced file has another stamp
and is read again. Entries are keyed by a hash of the content, so two names of one file
share one parsed copy, and the least recently used go first once `max_bytes` of files are
held. The same parsed object comes back for the same content, which is what lets a model
that still holds a LoRA stack see that the next request asks for the same one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lorastudio.adapters.lora_file import LoraFile

__all__ = ["DEFAULT_MAX_BYTES", "LoraFileCache", "ParsedLora", "parsed_lora_files"]

DEFAULT_MAX_BYTES = 2 * 2**30
_READERS = 2  # files read at once by `load_many`


@dataclass(frozen=True)
class ParsedLora:
    lora: LoraFile
    short_hash: str  # A1111's 12-hex `Lora hashes:` value
    key: str  # the content's hash (header and tensor bytes): the cache key
    size: int


def _stamp(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)


class LoraFileCache:
    """LoRA files parsed once; `load(path)` gives the same `ParsedLora` while the file is unchanged."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.reads = 0  # files parsed (misses), for tests and benchmarks
        self._entries: OrderedDict[str, ParsedLora] = OrderedDict()  # content key -> parsed
        self._stamps: dict[tuple, str] = {}  # stamp -> content key
        self._lock = threading.Lock()

    def load(self, path: str | Path) -> ParsedLora:
        """The parsed LoRA at `path` (a peft folder or a partnered HCP file is read every time)."""
        return self.load_many([path])[0]

    def load_many(self, paths: list[str | Path]) -> list[ParsedLora]:
        """The parsed LoRAs at `paths`, in order; the files not known yet are read two at a time
        (reading, parsing and hashing release the GIL). The first bad file's error is raised."""
        paths = [Path(p) for p in paths]
        known = [self._known(path) for path in paths]
        missing = list(dict.fromkeys(path for path, parsed in zip(paths, known, strict=True) if parsed is None))
        if len(missing) > 1:
            with ThreadPoolExecutor(_READERS, thread_name_prefix="lorastudio-lora") as pool:
                read = dict(zip(missing, pool.map(self._read, missing), strict=True))
        else:
            read = {path: self._read(path) for path in missing}
        return [parsed or read[path] for path, parsed in zip(paths, known, strict=True)]

    def _known(self, path: Path) -> ParsedLora | None:
        stamp = _stamp(path) if path.is_file() else None
        with self._lock:
            digest = self._stamps.get(stamp) if stamp else None
            if digest in self._entries:
                self._entries.move_to_end(digest)
                return self._entries[digest]
        return None

    def _read(self, path: Path) -> ParsedLora:
        """Read, parse and hash one file from a single read of its bytes, and keep it.

        The tensors are views of the one buffer read (no second copy); the hashes are taken
        in a thread beside the parse (hashlib releases the GIL)."""
        from lorastudio.adapters.detect import load_lora_file
        from lorastudio.adapters.hashing import lora_hashes_of_bytes, lora_short_hash
        from lorastudio.models.checkpoint import read_private_bytes

        if path.is_dir():
            return ParsedLora(load_lora_file(path), lora_short_hash(path), "", 0)
        if not path.is_file() or path.suffix.lower() != ".safetensors":
            load_lora_file(path)  # raises the one-line error (missing file, pickle format)
        stamp = _stamp(path)
        data = read_private_bytes(path)
        with ThreadPoolExecutor(1, thread_name_prefix="lorastudio-hash") as hasher:
            hashes = hasher.submit(lora_hashes_of_bytes, data)
            lora = load_lora_file(path, data)  # raises the one-line error for a bad file
            short, key = hashes.result()
            parsed = ParsedLora(lora, short, key, len(data))
        with self._lock:
            self.reads += 1  # two readers at once (`load_many`)
        if lora.source_format == "hcp" or _stamp(path) != stamp:
            return parsed  # HCP reads a partner file; a file changing under us is not kept
        with self._lock:
            parsed = self._entries.setdefault(parsed.key, parsed)
            self._entries.move_to_end(parsed.key)
            self._stamps = {s: d for s, d in self._stamps.items() if s[0] != stamp[0]}
            self._stamps[stamp] = parsed.key
            self._evict()
        return parsed

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._stamps.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self) -> None:
        held = sum(entry.size for entry in self._entries.values())
        while held > self.max_bytes and len(self._entries) > 1:
            _, dropped = self._entries.popitem(last=False)
            held -= dropped.size
            self._stamps = {s: d for s, d in self._stamps.items() if d != dropped.key}


_DEFAULT = LoraFileCache()


def parsed_lora_files() -> LoraFileCache:
    """The process's parsed-LoRA cache (shared by every request and model)."""
    return _DEFAULT
