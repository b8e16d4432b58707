"""Readers for everything a user may point `dataset import` (or training) at.

Each reader yields `SourceEntry`s: an original name, a way to read the bytes, the caption
found beside it (or in a metadata file) and the kohya repeat count. Entries that cannot be
images carry `problem` instead, so the importer can list them in the report and go on (with a
`problem_key` and its `problem_params`, by which the web UI words the reason in the page's language).

Accepted sources (`iter_source` picks by what the path is):
- a folder (recursive): images + same-stem `.txt`/`.caption` (the `.txt` when both are there,
  as the report says, unless a `caption_extension` is chosen: then only that one, as kohya reads
  it); a `metadata.csv`/`.jsonl` in it adds captions, and then a kohya metadata json
  (`meta*.json`, the last step of kohya's pipeline found) for images still without one (a
  same-stem caption file wins; rows naming no image, or no file at all, are reported); kohya
  `NN_name` sub-folders give NN repeats;
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
from dataclasses import dataclass, field
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
    "caption_extension_of",
    "kohya_metadata_problem",
]

# Read in this order when no caption_extension is chosen: WD14 tags (.txt) before BLIP's .caption.
CAPTION_SIDECARS = (".txt", ".caption")
# Extensions a caption file cannot have (they are images, metadata or other training files).
_NOT_CAPTION_EXTENSIONS = {".json", ".jsonl", ".csv", ".zip", ".npz", ".toml", ".yaml", ".yml", ".lst"}
_CAPTION_EXTENSION = re.compile(r"^\.\w[\w.-]*$")
# kohya's fine-tuning steps, last first: prepare_buckets_latents, clean_captions_and_tags,
# merge_dd_tags_to_metadata, merge_captions_to_metadata. A folder's latest one is read.
_KOHYA_STEPS = ("meta_lat", "meta_clean", "meta_cap_dd", "meta_cap")
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
    problem_key: str = ""  # the problem's stable key ("not_image_file"...) and its values, for the web UI
    problem_params: dict[str, str] = field(default_factory=dict)
    folder_caption: str = ""  # a kohya `NN_name` folder's name: kohya's caption where none is given
    caption_from: str = ""  # ".txt", ".caption", "metadata.csv", "meta_lat.json"...: where `caption` was read
    unread_captions: tuple[str, ...] = field(default_factory=tuple)  # other captions found, not read


def caption_extension_of(value: str | None) -> str | None:
    """A chosen caption extension ('.caption', 'caption') -> '.caption'; None or '' -> None (both read).

    kohya reads only its `caption_extension` beside each image; so does lorastudio once one is chosen.
    """
    text = (value or "").strip()
    if not text:
        return None
    ext = text if text.startswith(".") else f".{text}"
    if not _CAPTION_EXTENSION.match(ext) or ext.lower() in IMAGE_EXTENSIONS | _NOT_CAPTION_EXTENSIONS:
        raise LorastudioError(
            f"caption extension {value!r}: give the caption files' extension, e.g. .txt or .caption."
        )
    return ext


def _sidecar_caption(
    stem: str, present: list[str], chosen: str | None, read: Callable[[str], bytes]
) -> tuple[str | None, str, tuple[str, ...]]:
    """(caption, its extension, the caption files left unread) among the sidecars `present` beside
    an image: only the `chosen` one, else the first that is not empty (`.txt` before `.caption`)."""
    order = [ext for ext in ([chosen] if chosen else present) if ext in present]
    for ext in order:
        caption = _clean_caption(decode_text(read(stem + ext)))
        if caption:
            return caption, ext, tuple(other for other in present if other != ext)
    return None, "", tuple(ext for ext in present if ext not in order)


def _sidecar_extensions(chosen: str | None) -> tuple[str, ...]:
    return CAPTION_SIDECARS if chosen in (None, *CAPTION_SIDECARS) else (*CAPTION_SIDECARS, chosen)


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
            yield SourceEntry(
                file_name, f"{source}: {file_name}", problem=f"listed in {base} but no such image",
                problem_key="listed_no_image", problem_params={"list": base},
            )  # fmt: skip
    for number in nameless:
        yield SourceEntry(
            f"{meta_name} row {number}", f"{source}: row {number}", problem="row has no file_name",
            problem_key="row_no_file_name",
        )  # fmt: skip


def _tree_entries(
    names: list[str],
    read: Callable[[str], bytes],
    where: Callable[[str], str],
    caption_extension: str | None = None,
) -> Iterator[SourceEntry]:
    """Shared by folders and zips: `names` are POSIX paths relative to the root."""
    name_set = set(names)
    metadata: dict[str, tuple[str, str]] = {}  # image name (relative to the root) -> (caption, metadata file)
    for meta_name in sorted(n for n in names if PurePosixPath(n).name in ("metadata.csv", "metadata.jsonl")):
        folder = PurePosixPath(meta_name).parent
        captions, nameless = _parse_metadata(meta_name, read(meta_name))
        listed = {(folder / file_name).as_posix(): caption for file_name, caption in captions.items()}
        base = PurePosixPath(meta_name).name
        metadata.update({key: (caption, base) for key, caption in listed.items() if caption})
        yield from _metadata_problems(meta_name, where(meta_name), list(listed), nameless, name_set)
    quiet = set(_QUIET_EXTENSIONS)
    if caption_extension:  # a kohya caption_extension such as ".cap" is no junk to report
        quiet.add(PurePosixPath(f"x{caption_extension}").suffix.lower())
    images: list[str] = []
    visible = [n for n in sorted(names) if not _hidden(n)]
    for name in visible:
        path = PurePosixPath(name)
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            images.append(name)
        elif suffix not in quiet:
            problem = f"not an image file ({suffix or 'no extension'}); skipped"
            key, params = ("not_image_file", {"ext": suffix}) if suffix else ("no_extension", {})
            yield SourceEntry(name, where(name), problem=problem, problem_key=key, problem_params=params)
    kohya = _folder_kohya_metadata(visible, read, where, images)
    yield from kohya.problems
    for name in images:
        path = PurePosixPath(name)
        stem = str(path.with_suffix(""))
        present = [ext for ext in _sidecar_extensions(caption_extension) if stem + ext in name_set]
        caption, caption_from, unread = _sidecar_caption(stem, present, caption_extension, read)
        for text, source in (metadata.get(name, (None, "")), (kohya.captions.get(name), kohya.name)):
            if text and not caption:
                caption, caption_from = text, source
            elif text and source == kohya.name and caption_from != source:
                unread = (*unread, source)  # kohya's joined caption + tags, not used: said in the report
        # kohya: the nearest `NN_name` folder above the image sets its repeats, and its name is the
        # caption kohya trains an image without one on (DreamBooth's "5_sks dog").
        repeats, folder_caption = next(
            (found for part in reversed(path.parts[:-1]) if (found := kohya_repeats(part))), (1, "")
        )
        yield SourceEntry(
            name, where(name), read=lambda n=name: read(n), caption=caption, repeats=repeats,
            folder_caption=folder_caption.strip(), caption_from=caption_from, unread_captions=unread,
        )  # fmt: skip


def _hidden(name: str) -> bool:
    """Dot folders and files and macOS zip debris are never training data."""
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


def _kohya_step(meta_name: str) -> int:
    stem = PurePosixPath(meta_name).stem.lower()
    return next((rank for rank, step in enumerate(_KOHYA_STEPS) if stem.startswith(step)), len(_KOHYA_STEPS))


@dataclass
class _KohyaMetadata:
    """The kohya metadata json a folder holds, matched to its images."""

    name: str = ""  # the json's file name, "" when the folder has none
    captions: dict[str, str] = field(default_factory=dict)  # image name -> caption + tags
    problems: list[SourceEntry] = field(default_factory=list)  # jsons not read, keys naming no image


def _folder_kohya_metadata(
    names: list[str], read: Callable[[str], bytes], where: Callable[[str], str], images: list[str]
) -> _KohyaMetadata:
    """The kohya metadata json of a folder (merge_captions_to_metadata... output, `meta*.json`);
    with several, the last step of kohya's pipeline (`meta_lat` before `meta_clean`...)."""
    out = _KohyaMetadata()
    found: list[tuple[str, dict[str, str | None]]] = []
    candidates = sorted(n for n in names if is_kohya_metadata_name(n))
    for meta_name in candidates:
        try:
            records = _kohya_records(json.loads(decode_text(read(meta_name))))
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON ({exc.msg}); its captions not read"
            out.problems.append(SourceEntry(meta_name, where(meta_name), problem=problem, problem_key="json_invalid",
                                            problem_params={"error": exc.msg}))  # fmt: skip
            continue
        if records is not None:
            found.append((meta_name, records))
    if not found:
        return out
    found.sort(key=lambda pair: (_kohya_step(pair[0]), pair[0]))
    meta_name, records = found[0]
    out.name = PurePosixPath(meta_name).name
    for other, _ in found[1:]:
        out.problems.append(
            SourceEntry(other, where(other), problem=f"kohya metadata not read: {out.name} is a later step",
                        problem_key="kohya_later_step", problem_params={"name": out.name})  # fmt: skip
        )
    out.captions, matched = _match_kohya_keys(records, images)
    unmatched = [key for key in records if key not in matched]
    out.problems += _metadata_problems(meta_name, where(meta_name), unmatched, [], set())
    return out


def _match_kohya_keys(records: dict[str, str | None], images: list[str]) -> tuple[dict[str, str], set[str]]:
    """({image name: caption}, keys used). kohya's image_key is the file's stem, or with --full_path
    its path (maybe another machine's): an image matches a key ending in its own path, else its stem."""
    by_tail: dict[str, str] = {}
    for key in records:
        path = PurePosixPath(key.replace("\\", "/"))
        parts = (path.with_suffix("") if path.suffix.lower() in IMAGE_EXTENSIONS else path).parts
        for start in range(len(parts)):
            by_tail.setdefault("/".join(parts[start:]), key)
    captions, matched = {}, set()
    for name in images:
        bare = PurePosixPath(name).with_suffix("")
        key = by_tail.get(bare.as_posix()) or by_tail.get(bare.name)
        if key is not None:
            matched.add(key)
            if records[key]:
                captions[name] = records[key]
    return captions, matched


def read_folder(root: Path, caption_extension: str | None = None) -> Iterator[SourceEntry]:
    root = Path(root)
    files = [p for p in root.rglob("*") if p.is_file()]
    names = [p.relative_to(root).as_posix() for p in files]
    yield from _tree_entries(
        names, lambda n: (root / n).read_bytes(), lambda n: str(root / n), caption_extension
    )


def read_zip(path: Path, caption_extension: str | None = None) -> Iterator[SourceEntry]:
    """Entries of a zip; the archive is opened now, so a bad zip fails before any import."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise LorastudioError(f"{path}: not a readable zip ({exc}); re-create the archive.") from None
    return _zip_entries(path, archive, caption_extension)


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


def _zip_entries(
    path: Path, archive: zipfile.ZipFile, caption_extension: str | None
) -> Iterator[SourceEntry]:
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
        for entry in _tree_entries(list(infos), read, lambda n: f"{path}:{n}", caption_extension):
            if entry.read is not None:
                try:
                    data = entry.read()
                    entry.read = lambda data=data: data
                except (LorastudioError, zipfile.BadZipFile, OSError, EOFError) as exc:
                    entry.read, entry.problem = None, f"cannot unpack ({exc})"
                    entry.problem_key, entry.problem_params = "cannot_unpack", {"error": str(exc)}
            yield entry


def _resolve_listed(base: Path, raw: str) -> Path:
    path = Path(raw.strip().replace("\\", "/")).expanduser()
    return path if path.is_absolute() else base / path


def _file_entry(
    path: Path,
    name: str,
    caption: str | None,
    repeats: int = 1,
    caption_extension: str | None = None,
    caption_from: str = "",
) -> SourceEntry:
    """A listed image; without a caption from its list, the caption file beside it."""
    if not path.is_file():
        return SourceEntry(name, str(path), problem="listed but not found", problem_key="listed_not_found")
    unread: tuple[str, ...] = ()
    if caption is None:
        stem = str(path.with_suffix(""))
        present = [ext for ext in _sidecar_extensions(caption_extension) if Path(stem + ext).is_file()]
        caption, caption_from, unread = _sidecar_caption(
            stem, present, caption_extension, lambda name: Path(name).read_bytes()
        )
    return SourceEntry(
        name, str(path), read=_read_bytes(path), caption=caption, repeats=repeats,
        caption_from=caption_from if caption else "", unread_captions=unread,
    )  # fmt: skip


def _metadata_records(path: Path, caption_extension: str | None) -> Iterator[SourceEntry]:
    for number, row in enumerate(_metadata_rows(path.name, path.read_bytes()), 1):
        file_name = _row_file_name(row)
        if not file_name:
            yield SourceEntry(f"{path.name} row {number}", f"{path}: row {number}", problem="row has no file_name",
                              problem_key="row_no_file_name")  # fmt: skip
            continue
        image = _resolve_listed(path.parent, file_name)
        yield _file_entry(image, file_name, _caption_from_record(row), 1, caption_extension, path.name)


def read_metadata_csv(path: Path, caption_extension: str | None = None) -> Iterator[SourceEntry]:
    yield from _metadata_records(Path(path), caption_extension)


def read_metadata_jsonl(path: Path, caption_extension: str | None = None) -> Iterator[SourceEntry]:
    yield from _metadata_records(Path(path), caption_extension)


def _find_kohya_image(base: Path, key: str) -> Path | None:
    """The image a kohya image_key names: its path (--full_path), else its file name beside the json
    (a path from the machine that made the json)."""
    listed = _resolve_listed(base, key)
    for candidate in dict.fromkeys((listed, base / PurePosixPath(key.replace("\\", "/")).name)):
        if candidate.is_file() and is_image_name(candidate.name):
            return candidate
        for ext in sorted(IMAGE_EXTENSIONS):
            with_ext = candidate.with_name(candidate.name + ext)
            if with_ext.is_file():
                return with_ext
    return None


def _kohya_caption(record: dict) -> str | None:
    """kohya's fine-tuning caption: `caption, tags` (either alone when the other is missing)."""
    caption = _clean_caption(record.get("caption"))
    tags = _clean_caption(record.get("tags"))
    if tags:
        return f"{caption}, {tags}" if caption else tags
    return caption


def _kohya_records(data: object) -> dict[str, str | None] | None:
    """{image_key: caption} of kohya metadata (`{image_key: {caption, tags, train_resolution}}`);
    None for JSON of another shape."""
    if not isinstance(data, dict) or not all(isinstance(record, dict) for record in data.values()):
        return None
    if data and not any({"caption", "tags", "train_resolution"} & set(record) for record in data.values()):
        return None
    return {str(key): _kohya_caption(record) for key, record in data.items()}


def is_kohya_metadata_name(name: str) -> bool:
    """A folder's kohya metadata json is a `.json` whose name holds `meta` (meta_cap, meta_lat...)."""
    return name.lower().endswith(".json") and "meta" in PurePosixPath(name).name.lower()


def kohya_metadata_problem(name: str, data: bytes) -> str | None:
    """Why `data`, a file called `name`, is no kohya metadata json a folder import reads; None when it is."""
    if not is_kohya_metadata_name(name):
        return "a .json is read as kohya metadata only under a name holding 'meta' (meta_cap.json, meta_lat.json)"
    try:
        records = _kohya_records(json.loads(decode_text(data)))
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg})"
    except RecursionError:
        return "not valid JSON (nested too deep)"
    if records is None:
        return "not kohya metadata {image_key: {caption, tags}}"
    return None


def read_kohya_json(path: Path, caption_extension: str | None = None) -> Iterator[SourceEntry]:
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
        caption = _kohya_caption(record if isinstance(record, dict) else {})
        image = _find_kohya_image(path.parent, key)
        if image is None:
            yield SourceEntry(key, str(path), problem="image_key names no image file next to the json",
                              problem_key="kohya_key_no_image")  # fmt: skip
            continue
        yield _file_entry(image, image.name, caption, 1, caption_extension, path.name)


def read_list(path: Path, caption_extension: str | None = None) -> Iterator[SourceEntry]:
    path = Path(path)
    for line in decode_text(path.read_bytes()).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            image = _resolve_listed(path.parent, line)
            yield _file_entry(image, image.name, None, 1, caption_extension)


def iter_source(source: str | Path, caption_extension: str | None = None) -> Iterator[SourceEntry]:
    """Pick the reader for `source` (see the module docstring). `caption_extension`: read only
    that caption file beside each image (kohya's caption_extension); None: `.txt`, else `.caption`."""
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFoundError(f"{path}: no such file or folder; check the path.")
    readers: dict[str, Callable[..., Iterator[SourceEntry]]] = {
        ".zip": read_zip, ".csv": read_metadata_csv, ".jsonl": read_metadata_jsonl, ".json": read_kohya_json,
        ".txt": read_list, ".lst": read_list,
    }  # fmt: skip
    if path.is_dir():
        return read_folder(path, caption_extension)
    if path.suffix.lower() in readers:
        return readers[path.suffix.lower()](path, caption_extension)
    if is_image_name(path.name):
        return iter([_file_entry(path, path.name, None, 1, caption_extension)])
    raise LorastudioError(
        f"{path}: not a folder, zip, metadata.csv/.jsonl, kohya .json, list .txt or image; point at one of those."
    )


def iter_sources(
    sources: Iterable[str | Path], caption_extension: str | None = None
) -> Iterator[SourceEntry]:
    """All entries of several sources; every source is checked before the first entry."""
    return itertools.chain.from_iterable([iter_source(source, caption_extension) for source in sources])
