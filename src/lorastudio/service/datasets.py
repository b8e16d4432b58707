"""Data-set service: what the CLI, API and UI call. Each function takes a workspace and a
data-set name, does one job and returns a JSON-ready dict.

Heavy libraries (transformers, onnxruntime) are imported inside the functions that need
them. See `lorastudio.data` for the formats and the work itself.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.data.captions import CaptionEdit, apply_template, fixed_caption, matches, split_tags
from lorastudio.data.config import CaptionerConfig, CleanConfig, TaggerConfig
from lorastudio.data.manifest import DatasetFolder
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.names import LIST_DATASETS, is_plain_name, unknown_name
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from lorastudio.data.dataset import Dataset

__all__ = [
    "KOLORS_CLEAN_PRESET",
    "clean_config",
    "dataset_folder",
    "list_datasets",
    "import_dataset",
    "import_uploaded_files",
    "clean_dataset",
    "resize_dataset",
    "caption_dataset",
    "tag_dataset",
    "template_captions",
    "fixed_captions",
    "caption_edit",
    "edit_captions",
    "split_tags",
    "search_captions",
    "dataset_captions",
    "write_captions",
    "dataset_info",
    "dataset_report",
    "export_dataset",
    "delete_dataset",
    "open_training_dataset",
]

Progress = Callable[[int, int], None]


def dataset_folder(ws: Workspace, name: str, must_exist: bool = True) -> DatasetFolder:
    if must_exist:  # a request's name: missing and not allowed answer alike (service.names)
        if not is_plain_name(name) or not (ws.datasets / name / "manifest.json").is_file():
            raise unknown_name("data set", name, ws.datasets, LIST_DATASETS)
        return DatasetFolder.load(ws.datasets / name)
    return DatasetFolder.create(ws.safe_child(ws.datasets, name, "data set name"))


def list_datasets(ws: Workspace) -> dict:
    rows = []
    for root in sorted(ws.datasets.iterdir()):
        if (root / "manifest.json").is_file():
            folder = DatasetFolder.load(root)
            captioned = sum(1 for item in folder.items if folder.read_caption(item))
            rows.append({"name": folder.name, "images": len(folder.items), "captioned": captioned})
    return {"datasets": rows}


def import_dataset(
    ws: Workspace,
    name: str,
    sources: Sequence[str | Path],
    background: str = "white",
    max_pixels: int | None = None,
    progress: Callable[[int, str], None] | None = None,
    caption_extension: str | None = None,
) -> dict:
    """Copy images from every source into datasets/NAME; returns counts, problems and notes.

    `caption_extension` (".caption", kohya's caption_extension): read only that caption file
    beside each image; None reads `.txt`, else `.caption`, and the notes count images with both.
    """
    from lorastudio.data.images import MAX_PIXELS, parse_color
    from lorastudio.data.importer import import_entries
    from lorastudio.data.sources import caption_extension_of, iter_sources

    if not sources:
        raise LorastudioError("dataset import: give at least one source folder, zip or file.")
    for source in sources:  # fail before creating anything when a path is wrong
        if not Path(source).expanduser().exists():
            raise NotFoundError(f"{source}: no such file or folder; check the path.")
    color = parse_color(background)
    caption_extension = caption_extension_of(caption_extension)
    entries = iter_sources(sources, caption_extension)
    new_set = not (ws.datasets / name).exists()
    folder = dataset_folder(ws, name, must_exist=False)
    report = import_entries(
        folder,
        entries,
        sources=[str(s) for s in sources],
        background=color,
        max_pixels=max_pixels or MAX_PIXELS,
        progress=progress,
        caption_extension=caption_extension,
    )
    if new_set and not folder.items:  # nothing read: no empty data set is left behind, and it is an error
        shutil.rmtree(folder.root, ignore_errors=True)
        first = report.failed[0] if report.failed else report.skipped[0] if report.skipped else None
        why = f"{first['source']}: {first['reason']}" if first else "no image files found"
        problems = len(report.failed) + len(report.skipped)
        message = f"dataset import {name!r}: no image could be imported ({problems} refused; {why})."
        params = {"name": name, "problems": problems, "file": first["source"] if first else "", "why": why}
        if first and first.get("key") == "image_unreadable":  # the web UI says so in its own words
            raise LorastudioError(message, key="dataset_no_readable_image", params=params)
        raise LorastudioError(message, key="dataset_nothing_imported", params=params)
    return {
        "name": folder.name,
        "path": str(folder.root),
        "total_images": len(folder.items),
        **report.summary(),
        "failed_files": report.failed,
        "skipped_files": report.skipped,
        "imported_files": [row["file"] for row in report.imported],
        "caption_extension": caption_extension,
        "notes": report.notes,
        "note_keys": report.note_keys,  # each note's key and values, in order: the web UI words them
    }


def import_uploaded_files(
    ws: Workspace,
    name: str,
    files: Sequence[str | Path],
    background: str = "white",
    progress: Callable[[int, str], None] | None = None,
    names: Sequence[str] | None = None,
    caption_extension: str | None = None,
) -> dict:
    """Import files a browser uploaded one by one (images, captions, zips) as one data set.

    `names` are the files' original names when they were stored under other ones (uploads).

    An upload arrives as separate files, so a caption (`.txt`, `.caption`) or a kohya `meta_*.json`
    is only found beside its image once both sit in one folder again: the files are gathered under
    their own names in a staging folder of the workspace cache (zips stay sources of their own), then
    imported as that folder (`data.sources`' folder rules).
    """
    import tempfile

    if not files:
        raise LorastudioError(
            "dataset import: choose at least one image, caption (.txt, .caption), kohya meta_*.json"
            " or zip to upload.",
            key="dataset_no_files",
        )
    ws.cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="dataset-upload-", dir=ws.cache))
    try:
        sources: list[Path] = []
        for index, file in enumerate(files):
            path = Path(file)
            original = Path(names[index]).name if names else path.name
            if path.suffix.lower() == ".zip":
                sources.append(path)
                continue
            target = _free_staging_path(staging, original)
            shutil.copyfile(path, target)
        if any(staging.iterdir()):
            sources.insert(0, staging)
        return import_dataset(
            ws, name, sources, background=background, progress=progress, caption_extension=caption_extension
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _free_staging_path(staging: Path, file_name: str) -> Path:
    """`staging/file_name`, or in a numbered sub-folder when two uploads share a name."""
    target = staging / Path(file_name).name
    number = 1
    while target.exists():
        number += 1
        target = staging / f"upload-{number}" / Path(file_name).name
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


# The data-juicer filters of the Kolors walk-through (`dataset clean --kolors`).
KOLORS_CLEAN_PRESET = {"min_width": 1024, "min_height": 1024, "min_ratio": 0.5, "max_ratio": 2.0}
# What else given stands for a preset key: --min-side sets both minimum sides, --max-aspect both ratios.
_PRESET_ALSO_SET_BY = {"min_width": "min_side", "min_height": "min_side", "min_ratio": "max_aspect", "max_ratio": "max_aspect"}


def clean_config(given: Mapping[str, Any], kolors: bool = False) -> CleanConfig:
    """`dataset clean`'s filters from the options a user gave (None: not given; 0: off).

    With `kolors` the walk-through's preset fills each filter the user left out — a filter given as 0
    stays off — and duplicates are kept unless `dedupe` is given (data-juicer's recipe has no dedupe).
    """
    from lorastudio.config import load_config

    options = {key: value for key, value in given.items() if value is not None}
    if kolors:
        for key, value in KOLORS_CLEAN_PRESET.items():
            if key not in options and _PRESET_ALSO_SET_BY[key] not in options:
                options[key] = value
        options.setdefault("dedupe", "off")
    for key in ("min_ratio", "max_ratio", "max_aspect", "min_sharpness"):  # 0 = off: None in the config
        if options.get(key) == 0:
            options[key] = None
    return load_config(CleanConfig, overrides=options)


def clean_dataset(ws: Workspace, name: str, config: CleanConfig, dry_run: bool = False) -> dict:
    """Apply the filters (or, with dry_run, only say what they would drop)."""
    from lorastudio.data.clean import apply_clean, plan_clean

    folder = dataset_folder(ws, name)
    plan = plan_clean(folder, config)
    if not dry_run:
        apply_clean(folder, plan)
    return {"name": name, "dry_run": dry_run, **plan.to_json()}


def resize_dataset(
    ws: Workspace,
    name: str,
    resolution: int,
    mode: str = "buckets",
    dry_run: bool = False,
    focus: Callable | None = None,
) -> dict:
    """Crop/resize stored images to a square or their training bucket (in place).

    `focus(image) -> (x, y) in 0-1 | None` moves the crop, e.g. onto a detected face.
    """
    from lorastudio.data.clean import resize_images

    if mode not in {"square", "buckets"}:
        raise LorastudioError(f"resize mode {mode!r} is not known; use 'square' or 'buckets'.")
    folder = dataset_folder(ws, name)
    changes = resize_images(folder, resolution, mode, focus=focus, dry_run=dry_run)  # type: ignore[arg-type]
    return {"name": name, "dry_run": dry_run, "resized": len(changes), "changes": changes}


def caption_dataset(
    ws: Workspace, name: str, config: CaptionerConfig, mode: str = "missing", progress: Progress | None = None
) -> dict:
    """Caption images with an image-to-text model (see `data.captioner`)."""
    from lorastudio.data.captioner import Captioner
    from lorastudio.data.labeling import label_dataset

    folder = dataset_folder(ws, name)
    captioner = Captioner(config)
    result = label_dataset(
        folder, captioner.caption, "caption", config.model_dump(), mode, config.batch_size, progress
    )
    return {"name": name, "model": config.model, "mode": mode, **result.to_json()}


def tag_dataset(
    ws: Workspace, name: str, config: TaggerConfig, mode: str = "missing", progress: Progress | None = None
) -> dict:
    """Tag images with a WD14 ONNX tagger (see `data.tagger`)."""
    from lorastudio.data.labeling import label_dataset
    from lorastudio.data.tagger import WD14Tagger

    folder = dataset_folder(ws, name)
    tagger = WD14Tagger.load(config)
    result = label_dataset(folder, tagger.tag, "tag", config.model_dump(), mode, config.batch_size, progress)
    return {"name": name, "model": config.model, "mode": mode, **result.to_json()}


def template_captions(
    ws: Workspace, name: str, template: str, trigger: str = "", only_missing: bool = False, mode: str | None = None
) -> dict:
    """Set captions from a template: fixed text, or '{trigger}, {caption}' style.

    `mode` as for model captions: overwrite, missing (only empty captions; also `only_missing`),
    prepend / append (the template's text joins the caption, tags not repeated). An unknown mode
    is refused before any caption changes.
    """
    from lorastudio.data.labeling import MODES, combine

    mode = mode or ("missing" if only_missing else "overwrite")
    if mode not in MODES:
        raise LorastudioError(f"--mode {mode!r}: use one of {', '.join(MODES)}.")
    if "{trigger}" in template and not (trigger or "").strip():
        raise LorastudioError(f"caption template {template!r} uses {{trigger}}: give the word with --trigger WORD.")
    folder = dataset_folder(ws, name)
    changed = 0
    for item in folder.items:
        old = folder.read_caption(item)
        if mode == "missing" and old:
            continue
        # an image without a caption file trains on its kohya folder's name: that is its caption here too
        current = old or item.folder_caption
        new = combine(apply_template(template, current, trigger=trigger, name=item.stem), current, mode)
        if new != (old or ""):
            folder.write_caption(item, new)
            changed += 1
    return {"name": name, "changed": changed, "images": len(folder.items)}


def fixed_captions(ws: Workspace, name: str, text: str, mode: str = "overwrite") -> dict:
    """Give every image the same caption text, e.g. "二次元" (see `data.captions.fixed_caption`)."""
    folder = dataset_folder(ws, name)
    changed = 0
    for item in folder.items:
        old = folder.read_caption(item)
        new = fixed_caption(text, old, mode)
        if new != (old or ""):
            folder.write_caption(item, new)
            changed += 1
    return {"name": name, "mode": mode, "changed": changed, "images": len(folder.items)}


def caption_edit(
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    replace: Sequence[str] = (),
    trigger_first: str | None = None,
    dedupe: bool = False,
    sort: bool = False,
    keep_tokens: int = 0,
    lower: bool = False,
) -> CaptionEdit:
    """One bulk edit from the fronts' options; `replace` items are `OLD=NEW` (NEW empty removes)."""
    pairs = {}
    for item in replace:
        if "=" not in item:
            raise LorastudioError(f"--replace {item!r} must look like OLD=NEW.")
        old, new = item.split("=", 1)
        pairs[old.strip()] = new.strip()
    return CaptionEdit(
        replace=pairs,
        remove=list(remove),
        add=list(add),
        lower=lower,
        dedupe=dedupe,
        sort=sort,
        keep_tokens=keep_tokens,
        trigger_first=trigger_first or None,
    )


def edit_captions(ws: Workspace, name: str, edit: CaptionEdit, dry_run: bool = False) -> dict:
    """Apply one bulk edit to every caption; returns how many changed (and examples)."""
    if edit.is_empty():
        raise LorastudioError(
            "dataset edit: nothing to do; give --add, --remove, --replace, --trigger-first, etc."
        )
    folder = dataset_folder(ws, name)
    changes = []
    for item in folder.items:
        old = folder.read_caption(item) or ""
        new = edit.apply(old)
        if new != old:
            changes.append({"file": item.file, "before": old, "after": new})
            if not dry_run:
                folder.write_caption(item, new)
    return {"name": name, "dry_run": dry_run, "changed": len(changes), "examples": changes[:20]}


def search_captions(ws: Workspace, name: str, query: str, regex: bool = False, tag: bool = False) -> dict:
    folder = dataset_folder(ws, name)
    hits = []
    for item in folder.items:
        caption = folder.read_caption(item)
        if matches(caption, query, regex=regex, tag=tag):
            hits.append({"file": item.file, "original": item.original, "caption": caption or ""})
    return {"name": name, "query": query, "count": len(hits), "matches": hits}


def dataset_captions(ws: Workspace, name: str) -> dict:
    """Every image of the data set with its stored path and caption, for a caption editor."""
    folder = dataset_folder(ws, name)
    items = [
        {
            "file": item.file,
            "original": item.original,
            "path": str(folder.image_path(item)),
            "caption": folder.read_caption(item) or "",
        }
        for item in folder.items
    ]
    return {"name": name, "count": len(items), "items": items}


def write_captions(ws: Workspace, name: str, captions: Mapping[str, str]) -> dict:
    """Set the captions of the images named in `captions` (file -> text); returns how many changed.

    Every file name is checked before anything is written, so a wrong name changes nothing.
    """
    folder = dataset_folder(ws, name)
    by_file = {item.file: item for item in folder.items}
    unknown = sorted(set(captions) - set(by_file))
    if unknown:
        raise LorastudioError(
            f"dataset {name}: no image {unknown[0]!r}; reload the caption list and edit again."
        )
    changed = 0
    for file, caption in captions.items():
        item = by_file[file]
        if " ".join(str(caption).split()) != (folder.read_caption(item) or ""):
            folder.write_caption(item, " ".join(str(caption).split()))
            changed += 1
    return {"name": name, "changed": changed, "images": len(folder.items)}


def dataset_info(ws: Workspace, name: str, resolution: int = 1024) -> dict:
    from lorastudio.data.report import summarize

    return summarize(dataset_folder(ws, name), resolution)


def dataset_report(ws: Workspace, name: str, resolution: int = 1024, output: Path | None = None) -> dict:
    from lorastudio.data.report import write_html_report

    path = write_html_report(dataset_folder(ws, name), resolution, output)
    return {"name": name, "report": str(path)}


def export_dataset(
    ws: Workspace,
    name: str,
    dest: str | Path,
    fmt: str = "folder",
    repeats: int | None = None,
    caption_extension: str = ".txt",
) -> dict:
    from lorastudio.data.export import export_dataset as export

    folder = dataset_folder(ws, name)
    return export(folder, Path(dest), fmt, repeats, caption_extension)  # type: ignore[arg-type]


def delete_dataset(ws: Workspace, name: str) -> dict:
    folder = dataset_folder(ws, name)
    shutil.rmtree(folder.root)
    return {"name": name, "deleted": True}


def open_training_dataset(ws: Workspace, name_or_path: str | Path, default_caption: str = "") -> Dataset:
    """For the trainer: a workspace data-set name, or any folder/metadata file path."""
    from lorastudio.data.dataset import Dataset

    text = str(name_or_path)
    candidate = ws.datasets / text
    if "/" not in text and "\\" not in text and (candidate / "manifest.json").is_file():
        return Dataset.open(candidate, default_caption)
    return Dataset.open(Path(text), default_caption)
