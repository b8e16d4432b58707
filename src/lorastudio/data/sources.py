"""Readers for everything a user may point `dataset import` (or training) at.

Each reader yields `SourceEntry`s: an original name, a way to read the bytes, the caption
found beside it (or in a metadata file) and the kohya repeat count. Entries that cannot be
images carry `problem` instead, so the importer can list them in the report and go on.

Accepted sources (`iter_source` picks by what the path is):
- a folder (recursive): images + same-stem `.txt`/`.caption`; a `metadata.csv`/`.jsonl`
  in it adds captions (a same-stem caption file wins; rows naming no image, or no file at all,
  are reported); kohya `NN_name` sub-folders give NN repeats;
- a `.zip` with the same layout inside;
- `metadata.csv` (columns `file_name` + `text`/`caption`/`tags`; UTF-8 with or without the BOM
  pandas' `utf-8-sig` writes, or GB18030) or `metadata.jsonl` (one object per line, same keys),
  paths relative to the file (HF imagefolder, DiffSynth; data-juicer's `"image": [path]` too);
- a kohya `meta_*.json`: `{image_key: {"caption": ..., "tags": ...}}`;
- a `.txt`/`.lst` list of image paths, one per line (relative to the list's folder);
- a single image file.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lorastudio.data.images import IMAGE_EXTENSIONS, is_image_name
from lorastudio.data.manifest import decode_text
from lorastudio.errors import LorastudioError, NotFoundError

__all__ = [
    "SourceEntry",
    "iter_source",
    "read_folder",
    "read_zip",
    "read_metadata_csv",
    "read_metadata_jsonl",
    "read_kohya_json",
    "read_list",
    "kohya_repeats",
    "CAPTION_SIDECARS",
]

CAPTION_SIDECARS = (".txt", ".caption")
# Files that live beside images in training folders and are not worth a report line.
_QUIET_EXTENSIONS = {".txt", ".caption", ".csv", ".jsonl", ".json", ".npz", ".toml", ".yaml", ".yml", ".md"}
_KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")
_CAPTION_KEYS = ("text", "caption", "tags", "prompt")
# A zip member bigger than this is refused unread (zip bombs); real photos are far smaller.
MAX_MEMBER_BYTES = 512 * 1024 * 1024


@dataclass
class SourceEntry:
    name: str  # original relative name, e.g. "10_alice/角色_01.png"
    source: str  # where it came from, for the report: a path or "archive.zip:member"
    read: Callable[[], bytes] | None = None
    caption: str | None = None
    repeats: int = 1
    problem: str | None = None
    folder_caption: str = ""  # a kohya `NN_name` folder's name: kohya's caption where none is given


def kohya_repeats(folder_name: str) -> tuple[int, str] | None:
    """'10_alice' -> (10, 'alice'); None for folders without the kohya prefix."""
    match = _KOHYA_FOLDER.match(folder_name)
    if not match:
        return None
    return int(match.group(1)), match.group(2)


def _clean_caption(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text or None


def _caption_from_record(record: dict) -> str | None:
    for key in _CAPTION_KEYS:
        if record.get(key):
            return _clean_caption(record[key])
    return None


def _read_bytes(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


def _metadata_rows(name: str, data: bytes) -> list[dict]:
    """metadata.csv / .jsonl bytes -> list of row dicts."""
    text = decode_text(data)
    if name.lower().endswith(".csv"):
        return list(csv.DictReader(io.StringIO(text)))
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise LorastudioError(
                f"{name}: line {number} is not JSON ({exc.msg}); fix or remove the line."
            ) from None
    return rows


def _row_file_name(row: dict) -> str | None:
    file_name = row.get("file_name") or row.get("image") or row.get("file")
    if isinstance(file_name, list):  # data-juicer: {"text": ..., "image": ["path"]}
        file_name = file_name[0] if file_name else None
    return PurePosixPath(str(file_name).replace("\\", "/")).as_posix() if file_name else None


def _parse_metadata(name: str, data: bytes) -> tuple[dict[str, str | None], list[int]]:
    """metadata.csv/.jsonl bytes -> ({file_name: caption or None}, numbers of rows without a file_name).

    Row numbers count data rows from 1 (the header of a csv is not one).
    """
    captions: dict[str, str | None] = {}
    nameless = []
    for number, row in enumerate(_metadata_rows(name, data), 1):
        file_name = _row_file_name(row)
        if file_name:
            captions[file_name] = _caption_from_record(row)
        elif any(str(value or "").strip() for value in row.values()):  # a blank line is no row
            nameless.append(number)
    return captions, nameless


def _metadata_problems(
    meta_name: str, source: str, listed: list[str], nameless: list[int], present: set[str]
) -> Iterator[SourceEntry]:
    """Report lines for metadata rows that name no image here, so a broken metadata.csv is not silent."""
    base = PurePosixPath(meta_name).name
    for file_name in listed:
        if file_name not in present:
            yield SourceEntry(file_name, f"{source}: {file_name}", problem=f"listed in {base} but no such image")
    for number in nameless:
        yield SourceEntry(f"{meta_name} row {number}", f"{source}: row {number}", problem="row has no file_name")


def _tree_entries(
    names: list[str], read: Callable[[str], bytes], where: Callable[[str], str]
) -> Iterator[SourceEntry]:
    """Shared by folders and zips: `names` are POSIX paths relative to the root."""
    name_set = set(names)
    metadata: dict[str, str | None] = {}  # image name (relative to the root) -> caption
    for meta_name in sorted(n for n in names if PurePosixPath(n).name in ("metadata.csv", "metadata.jsonl")):
        folder = PurePosixPath(meta_name).parent
        captions, nameless = _parse_metadata(meta_name, read(meta_name))
        listed = {(folder / file_name).as_posix(): caption for file_name, caption in captions.items()}
        metadata.update({key: caption for key, caption in listed.items() if caption})
        yield from _metadata_problems(meta_name, where(meta_name), list(listed), nameless, name_set)
    for name in sorted(names):
        path = PurePosixPath(name)
        if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
            continue
        suffix = path.suffix.lower()
        if suffix not in IMAGE_EXTENSIONS:
            if suffix not in _QUIET_EXTENSIONS:
                yield SourceEntry(
                    name, where(name), problem=f"not an image file ({suffix or 'no extension'}); skipped"
                )
            continue
        caption = None
        for sidecar in CAPTION_SIDECARS:
            sidecar_name = str(path.with_suffix(sidecar))
            if sidecar_name in name_set:
                caption = _clean_caption(decode_text(read(sidecar_name)))
                break
        caption = caption or metadata.get(name)
        # kohya: the nearest `NN_name` folder above the image sets its repeats, and its name is the
        # caption kohya trains an image without one on (DreamBooth's "5_sks dog").
        repeats, folder_caption = next(
            (kohya for part in reversed(path.parts[:-1]) if (kohya := kohya_repeats(part))), (1, "")
        )
        yield SourceEntry(
            name, where(name), read=lambda n=name: read(n), caption=caption, repeats=repeats,
            folder_caption=folder_caption.strip(),
        )  # fmt: skip


def read_folder(root: Path) -> Iterator[SourceEntry]:
    root = Path(root)
    files = [p for p in root.rglob("*") if p.is_file()]
    names = [p.relative_to(root).as_posix() for p in files]
    yield from _tree_entries(names, lambda n: (root / n).read_bytes(), lambda n: str(root / n))


def read_zip(path: Path) -> Iterator[SourceEntry]:
    """Entries of a zip; the archive is opened now, so a bad zip fails before any import."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise LorastudioError(f"{path}: not a readable zip ({exc}); re-create the archive.") from None
    return _zip_entries(path, archive)


def _member_name(info: zipfile.ZipInfo) -> str:
    """Zips made on Chinese Windows store GBK names without the UTF-8 flag; zipfile then
    decodes them as cp437 (mojibake). Recover the real name when the bytes say so."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        raw = info.filename.encode("cp437")
    except UnicodeEncodeError:
        return info.filename
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return info.filename


def _zip_entries(path: Path, archive: zipfile.ZipFile) -> Iterator[SourceEntry]:
    with archive:
        infos = {_member_name(info): info for info in archive.infolist() if not info.is_dir()}

        def read(name: str) -> bytes:
            info = infos[name]
            if info.file_size > MAX_MEMBER_BYTES:
                raise LorastudioError(
                    f"{path}:{name}: {info.file_size:,} bytes unpacked is too big; remove it."
                )
            return archive.read(info)

        # Read eagerly inside the `with`: entries outlive this generator's archive handle otherwise.
        for entry in _tree_entries(list(infos), read, lambda n: f"{path}:{n}"):
            if entry.read is not None:
                try:
                    data = entry.read()
                    entry.read = lambda data=data: data
                except (LorastudioError, zipfile.BadZipFile, OSError, EOFError) as exc:
                    entry.read, entry.problem = None, f"cannot unpack ({exc})"
            yield entry


def _resolve_listed(base: Path, raw: str) -> Path:
    path = Path(raw.strip().replace("\\", "/")).expanduser()
    return path if path.is_absolute() else base / path


def _file_entry(path: Path, name: str, caption: str | None, repeats: int = 1) -> SourceEntry:
    if not path.is_file():
        return SourceEntry(name, str(path), problem="listed but not found")
    if caption is None:
        for sidecar in CAPTION_SIDECARS:
            if path.with_suffix(sidecar).is_file():
                caption = _clean_caption(decode_text(path.with_suffix(sidecar).read_bytes()))
                break
    return SourceEntry(name, str(path), read=_read_bytes(path), caption=caption, repeats=repeats)


def _metadata_records(path: Path) -> Iterator[SourceEntry]:
    for number, row in enumerate(_metadata_rows(path.name, path.read_bytes()), 1):
        file_name = _row_file_name(row)
        if not file_name:
            yield SourceEntry(f"{path.name} row {number}", f"{path}: row {number}", problem="row has no file_name")
            continue
        yield _file_entry(_resolve_listed(path.parent, file_name), file_name, _caption_from_record(row))


def read_metadata_csv(path: Path) -> Iterator[SourceEntry]:
    yield from _metadata_records(Path(path))


def read_metadata_jsonl(path: Path) -> Iterator[SourceEntry]:
    yield from _metadata_records(Path(path))


def _find_kohya_image(base: Path, key: str) -> Path | None:
    candidate = _resolve_listed(base, key)
    if candidate.is_file() and is_image_name(candidate.name):
        return candidate
    for ext in sorted(IMAGE_EXTENSIONS):
        with_ext = candidate.with_name(candidate.name + ext)
        if with_ext.is_file():
            return with_ext
    return None


def read_kohya_json(path: Path) -> Iterator[SourceEntry]:
    """kohya meta_cap/meta_clean/meta_lat.json; caption and tags are joined as kohya does."""
    path = Path(path)
    try:
        data = json.loads(decode_text(path.read_bytes()))
    except json.JSONDecodeError as exc:
        raise LorastudioError(f"{path}: not valid JSON ({exc.msg}); fix the file.") from None
    if not isinstance(data, dict):
        raise LorastudioError(
            f"{path}: expected kohya metadata {{image_key: {{caption, tags}}}}; got a list."
        )
    for key, record in data.items():
        record = record if isinstance(record, dict) else {}
        caption = _clean_caption(record.get("caption"))
        tags = _clean_caption(record.get("tags"))
        if tags:
            caption = f"{caption}, {tags}" if caption else tags
        image = _find_kohya_image(path.parent, key)
        if image is None:
            yield SourceEntry(key, str(path), problem="image_key names no image file next to the json")
            continue
        yield _file_entry(image, image.name, caption)


def read_list(path: Path) -> Iterator[SourceEntry]:
    path = Path(path)
    for line in decode_text(path.read_bytes()).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            image = _resolve_listed(path.parent, line)
            yield _file_entry(image, image.name, None)


def iter_source(source: str | Path) -> Iterator[SourceEntry]:
    """Pick the reader for `source` (see the module docstring)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or folder; check the path.")
    if path.is_dir():
        return read_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return read_zip(path)
    if suffix == ".csv":
        return read_metadata_csv(path)
    if suffix == ".jsonl":
        return read_metadata_jsonl(path)
    if suffix == ".json":
        return read_kohya_json(path)
    if suffix in {".txt", ".lst"}:
        return read_list(path)
    if is_image_name(path.name):
        return iter([_file_entry(path, path.name, None)])
    raise LorastudioError(
        f"{path}: not a folder, zip, metadata.csv/.jsonl, kohya .json, list .txt or image; point at one of those."
    )


def iter_sources(sources: Iterable[str | Path]) -> Iterator[SourceEntry]:
    """All entries of several sources; every source is checked before the first entry."""
    return itertools.chain.from_iterable([iter_source(source) for source in sources])
