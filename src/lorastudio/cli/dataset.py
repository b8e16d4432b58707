"""`lorastudio dataset` verbs: import, clean, caption, tag, edit, search, info, report, export, list."""

from __future__ import annotations

from pathlib import Path

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace

dataset_app = typer.Typer(
    help="Import, clean, caption, tag, inspect and export training data sets.", no_args_is_help=True
)
app.add_typer(dataset_app, name="dataset")

JSON = typer.Option(False, "--json", help="Print one JSON object instead of text.")


class _Progress:
    """A tqdm bar on stderr, created on the first update (so nothing prints for no work)."""

    def __init__(self, label: str, total: int | None = None):
        self.label, self.total, self.bar = label, total, None

    def __call__(self, done: int, total_or_name: int | str) -> None:
        from tqdm import tqdm

        total = total_or_name if isinstance(total_or_name, int) else self.total
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.label, unit="img", leave=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _emit(result: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        print_json(result)
    else:
        for line in lines:
            typer.echo(line)


FACE_CROP = typer.Option(False, "--face-crop", help="Crop each image to a square around its largest face (once per image).")
FACE_SCALE = typer.Option(3.0, "--face-scale", help="With --face-crop: the crop's side in face-box sizes (EasyPhoto: ~3).")
FACE_BACKEND = typer.Option(None, "--face-backend", help="With --face-crop: 'dlib' (default) or a folder in studio/models/faces.")


@dataset_app.command("import")
def import_cmd(
    sources: list[str] = typer.Argument(
        ..., help="Folders, zips, metadata.csv/.jsonl, kohya .json, list .txt or images."
    ),
    name: str = typer.Option(..., "--name", "-n", help="Data set name (created or added to)."),
    background: str = typer.Option(
        "white", help="Colour transparent pixels are put on ('white', '#rrggbb')."
    ),
    max_pixels: int = typer.Option(0, help="Refuse images with more pixels (0 = default 120 MP)."),
    caption_ext: str = typer.Option(
        "",
        "--caption-ext",
        help="Read only this caption file beside each image, as kohya's caption_extension: .caption (BLIP,"
        " make_captions) or .txt (WD14 tags). Default: .txt, else .caption; the report counts images with"
        " both.",
    ),
    face_crop: bool = FACE_CROP,
    face_scale: float = FACE_SCALE,
    face_backend: str | None = FACE_BACKEND,
    as_json: bool = JSON,
) -> None:
    """Copy images (and their captions) into studio/datasets/NAME; sources are never changed."""
    from lorastudio.service.datasets import import_dataset

    if face_crop:  # a missing face backend fails before anything is copied
        from lorastudio.service.faces import open_backend

        open_backend(workspace(), face_backend)
    bar = _Progress("import")
    try:
        result = import_dataset(
            workspace(), name, sources, background, max_pixels or None, bar, caption_extension=caption_ext
        )
    finally:
        bar.close()
    lines = [
        f"{result['name']}: imported {result['imported']}, skipped {result['skipped']}, failed {result['failed']}"
        f" ({result['total_images']} images in the set)"
    ]
    lines += [f"  failed  {row['source']}: {row['reason']}" for row in result["failed_files"]]
    lines += [f"  skipped {row['source']}: {row['reason']}" for row in result["skipped_files"]]
    lines += [f"  note    {note}" for note in result["notes"]]
    if face_crop:
        result["face_crop"] = _face_crop(result["name"], face_scale, face_backend, result["imported_files"], False, lines)
    _emit(result, as_json, lines)


def _face_crop(name: str, scale: float, backend: str | None, files: list[str] | None, dry_run: bool, lines: list[str]) -> dict:
    from lorastudio.service.faces import face_crop_dataset

    result = face_crop_dataset(workspace(), name, scale, backend, files=files, dry_run=dry_run)
    lines.append(f"{name}: {'would crop' if dry_run else 'cropped'} {result['cropped']} images around their face")
    lines += [f"  no face   {file}: left as it is" for file in result["no_face"]]
    return result


@dataset_app.command("clean")
def clean_cmd(
    name: str,
    min_width: int | None = typer.Option(None, help="Drop images narrower than this (px; 0 = off)."),
    min_height: int | None = typer.Option(None, help="Drop images shorter than this (px; 0 = off)."),
    min_ratio: float | None = typer.Option(None, help="Drop images with width/height below this (0 = off)."),
    max_ratio: float | None = typer.Option(None, help="Drop images with width/height above this (0 = off)."),
    min_side: int | None = typer.Option(None, help="Drop images with a side shorter than this (px); 1024 for Kolors."),
    max_aspect: float | None = typer.Option(
        None, help="Drop images whose long side exceeds the short one this many times (2 = ratio 0.5-2.0; 0 = off)."
    ),
    dedupe: str | None = typer.Option(
        None, help="off | exact | near (perceptual hash); default near, off with --kolors (data-juicer's filters)."
    ),
    phash_threshold: int | None = typer.Option(None, help="Max differing bits of 64 for near duplicates (default 6)."),
    min_sharpness: float | None = typer.Option(None, help="Drop blurrier images (Laplacian variance; 0 = off)."),
    kolors: bool = typer.Option(
        False,
        "--kolors",
        help="data-juicer preset of the Kolors walk-through: min 1024x1024, ratio 0.5-2.0, no dedupe (options given win, 0 = off).",
    ),
    resize: int = typer.Option(0, help="After filtering, crop/resize to this resolution (0 = keep size)."),
    resize_mode: str = typer.Option(
        "buckets", help="square (centre crop) | buckets (nearest training bucket)."
    ),
    face_crop: bool = FACE_CROP,
    face_scale: float = FACE_SCALE,
    face_backend: str | None = FACE_BACKEND,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be dropped or resized."),
    as_json: bool = JSON,
) -> None:
    """Drop small, badly shaped, duplicate or blurry images (moved to removed/, never deleted)."""
    from lorastudio.service.datasets import clean_config, clean_dataset, resize_dataset

    given = {
        "min_width": min_width, "min_height": min_height, "min_ratio": min_ratio, "max_ratio": max_ratio,
        "min_side": min_side, "max_aspect": max_aspect, "dedupe": dedupe, "phash_threshold": phash_threshold,
        "min_sharpness": min_sharpness,
    }  # fmt: skip
    config = clean_config(given, kolors)
    ws = workspace()
    result = clean_dataset(ws, name, config, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    lines = [f"{name}: {verb} {len(result['dropped'])}, keeping {result['kept']}"]
    lines += [f"  {row['file']}: {row['reason']}" for row in result["dropped"]]
    if face_crop:
        result["face_crop"] = _face_crop(name, face_scale, face_backend, None, dry_run, lines)
    if resize:
        result["resize"] = resize_dataset(ws, name, resize, resize_mode, dry_run=dry_run)
        lines.append(
            f"{name}: {'would resize' if dry_run else 'resized'} {result['resize']['resized']} images"
        )
    _emit(result, as_json, lines)


@dataset_app.command("caption")
def caption_cmd(
    name: str,
    model: str = typer.Option(
        "",
        help="A transformers image-to-text model folder or cached hub id (BLIP, BLIP-2, GIT, Florence-2);"
        " kohya's BLIP .pth file is not one.",
    ),
    template: str = typer.Option(
        "", help="Instead of a model: fixed text or e.g. 'a photo of {trigger}, {caption}'."
    ),
    fixed: str = typer.Option(
        "", "--fixed", help="Instead of a model: this exact text as every caption, e.g. '二次元' (Kolors walk-through)."
    ),
    trigger: str = typer.Option("", help="Value of {trigger} in the template."),
    mode: str = typer.Option(
        None, help="missing | overwrite | prepend | append (default: missing; overwrite with --fixed)."
    ),
    prompt: str = typer.Option("", help="Conditional prompt for the model, e.g. 'a photo of'."),
    max_new_tokens: int = typer.Option(40, help="Longest caption the model may write, in tokens."),
    num_beams: int = typer.Option(1, help="Beam search width (1 = greedy; 3-5 gives longer, steadier captions)."),
    batch_size: int = typer.Option(4, help="Pictures captioned at once (lower it if memory runs out)."),
    device: str = typer.Option("auto", help="auto (GPU if present), cpu, cuda or cuda:N."),
    download: bool = typer.Option(False, "--download", help="Allow fetching a hub id that is not cached."),
    as_json: bool = JSON,
) -> None:
    """Write captions with a model, or from a template / fixed caption."""
    from lorastudio.errors import LorastudioError
    from lorastudio.service.datasets import caption_dataset, fixed_captions, template_captions

    if [bool(model), bool(template), bool(fixed)].count(True) != 1:
        raise LorastudioError("dataset caption: give exactly one of --model, --template or --fixed.")
    ws = workspace()
    if fixed:
        result = fixed_captions(ws, name, fixed, mode or "overwrite")
        _emit(result, as_json, [f"{name}: {result['changed']} of {result['images']} captions set to {fixed!r}"])
        return
    mode = mode or "missing"
    if template:
        result = template_captions(ws, name, template, trigger, mode=mode)
        _emit(
            result,
            as_json,
            [f"{name}: {result['changed']} of {result['images']} captions set from the template"],
        )
        return
    from lorastudio.config import load_config
    from lorastudio.data.config import CaptionerConfig

    config = load_config(
        CaptionerConfig,
        overrides={
            "model": model,
            "prompt": prompt or None,
            "max_new_tokens": max_new_tokens,
            "num_beams": num_beams,
            "batch_size": batch_size,
            "device": device,
            "allow_download": download,
        },
    )
    bar = _Progress("caption")
    try:
        result = caption_dataset(ws, name, config, mode, progress=bar)
    finally:
        bar.close()
    _print_label_result(name, result, as_json)


def _print_label_result(name: str, result: dict, as_json: bool) -> None:
    lines = [
        f"{name}: wrote {result['written']} captions, skipped {result['skipped']}, failed {len(result['failed'])}"
    ]
    lines += [f"  {row['file']}: {row['reason']}" for row in result["failed"]]
    _emit(result, as_json, lines)


@dataset_app.command("tag")
def tag_cmd(
    name: str,
    model: str = typer.Option(
        ..., help="WD14 tagger folder (model.onnx + selected_tags.csv) or cached hub id."
    ),
    general_threshold: float = typer.Option(0.35, help="Keep general tags scored at least this (WD14's 0.35)."),
    character_threshold: float = typer.Option(0.85, help="Keep character tags scored at least this (WD14's 0.85)."),
    undesired: str = typer.Option("", help="Comma-separated tags never to write."),
    keep_underscores: bool = typer.Option(
        False, "--keep-underscores", help="Write long_hair, not long hair."
    ),
    confidence_order: bool = typer.Option(
        False, "--confidence-order", help="Do not put character tags first."
    ),
    rating: bool = typer.Option(False, "--rating", help="Add the top rating tag."),
    mode: str = typer.Option("missing", help="missing | overwrite | prepend | append."),
    batch_size: int = typer.Option(8, help="Pictures tagged at once (lower it if memory runs out)."),
    download: bool = typer.Option(False, "--download", help="Allow fetching a hub id that is not cached."),
    as_json: bool = JSON,
) -> None:
    """Write booru tags with a WD14 ONNX tagger."""
    from lorastudio.config import load_config
    from lorastudio.data.config import TaggerConfig
    from lorastudio.service.datasets import split_tags, tag_dataset

    config = load_config(
        TaggerConfig,
        overrides={
            "model": model,
            "general_threshold": general_threshold,
            "character_threshold": character_threshold,
            "undesired_tags": split_tags(undesired),
            "replace_underscores": not keep_underscores,
            "character_first": not confidence_order,
            "include_rating": rating,
            "batch_size": batch_size,
            "allow_download": download,
        },
    )
    bar = _Progress("tag")
    try:
        result = tag_dataset(workspace(), name, config, mode, progress=bar)
    finally:
        bar.close()
    _print_label_result(name, result, as_json)


@dataset_app.command("edit")
def edit_cmd(
    name: str,
    add: list[str] = typer.Option([], "--add", help="Tag to append where missing (repeatable)."),
    remove: list[str] = typer.Option([], "--remove", help="Tag to remove (repeatable)."),
    replace: list[str] = typer.Option(
        [], "--replace", help="OLD=NEW tag replacement (repeatable; NEW empty removes)."
    ),
    trigger_first: str = typer.Option("", help="Move (or insert) this tag at the front."),
    dedupe: bool = typer.Option(False, "--dedupe", help="Drop repeated tags (the first one stays)."),
    sort: bool = typer.Option(False, "--sort", help="Sort tags alphabetically after --keep-tokens."),
    keep_tokens: int = typer.Option(0, help="Leave the first N tags where they are (kohya's keep_tokens)."),
    lower: bool = typer.Option(False, "--lower", help="Lower-case every tag."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would change (a few examples)."),
    as_json: bool = JSON,
) -> None:
    """Bulk-edit the tags of every caption."""
    from lorastudio.service.datasets import caption_edit, edit_captions

    edit = caption_edit(
        add=add,
        remove=remove,
        replace=replace,
        trigger_first=trigger_first,
        dedupe=dedupe,
        sort=sort,
        keep_tokens=keep_tokens,
        lower=lower,
    )
    result = edit_captions(workspace(), name, edit, dry_run=dry_run)
    lines = [f"{name}: {'would change' if dry_run else 'changed'} {result['changed']} captions"]
    lines += [f"  {row['file']}: {row['before']!r} -> {row['after']!r}" for row in result["examples"]]
    _emit(result, as_json, lines)


@dataset_app.command("search")
def search_cmd(
    name: str,
    query: str,
    regex: bool = typer.Option(False, "--regex", help="QUERY is a regular expression."),
    tag: bool = typer.Option(False, "--tag", help="Match a whole tag exactly."),
    as_json: bool = JSON,
) -> None:
    """List images whose caption matches QUERY (case-insensitive)."""
    from lorastudio.service.datasets import search_captions

    result = search_captions(workspace(), name, query, regex=regex, tag=tag)
    lines = [f"{row['file']}: {row['caption']}" for row in result["matches"]] + [f"{result['count']} matches"]
    _emit(result, as_json, lines)


@dataset_app.command("info")
def info_cmd(
    name: str,
    resolution: int = typer.Option(1024, help="Training resolution for the bucket table."),
    as_json: bool = JSON,
) -> None:
    """Counts, size/aspect histograms, buckets, top tags and problems."""
    from lorastudio.service.datasets import dataset_info

    info = dataset_info(workspace(), name, resolution)
    lines = [
        f"{info['name']}: {info['images']} images, {info['captioned']} captioned, {info['samples_per_epoch']} samples/epoch",
        "short side: " + ", ".join(f"{k}: {v}" for k, v in info["short_side_histogram"].items()),
        "aspect:     " + ", ".join(f"{k}: {v}" for k, v in info["aspect_histogram"].items()),
        f"buckets @{resolution}: " + ", ".join(f"{k}: {v}" for k, v in info["buckets"].items()),
        "top tags:   " + ", ".join(f"{k} ({v})" for k, v in list(info["tag_frequency"].items())[:20]),
    ]
    if info["uncaptioned"]:
        lines.append(f"no caption: {len(info['uncaptioned'])} (" + ", ".join(info["uncaptioned"][:10]) + ")")
    for caption, count in info.get("folder_captions", {}).items():
        lines.append(f"  {count} of them train on their kohya folder's name: {caption!r}")
    if info["import_failed"]:
        lines.append(f"import failures: {len(info['import_failed'])}")
        lines += [f"  {row['source']}: {row['reason']}" for row in info["import_failed"][:20]]
    _emit(info, as_json, lines)


@dataset_app.command("report")
def report_cmd(
    name: str,
    resolution: int = typer.Option(1024, help="Training resolution for the bucket table."),
    output: Path = typer.Option(None, help="Where to write the HTML (default: the data-set folder)."),
    as_json: bool = JSON,
) -> None:
    """Write an HTML report with thumbnails, histograms and the tag table."""
    from lorastudio.service.datasets import dataset_report

    result = dataset_report(workspace(), name, resolution, output)
    _emit(result, as_json, [result["report"]])


@dataset_app.command("export")
def export_cmd(
    name: str,
    dest: Path,
    format: str = typer.Option(
        "folder",
        "--format",
        "-f",
        help="folder | csv | metadata-csv (with BOM) | diffsynth (DEST/train/metadata.csv) | jsonl | kohya.",
    ),
    repeats: int = typer.Option(0, help="folder format: put images in NN_name (kohya repeats)."),
    caption_ext: str = typer.Option(".txt", help="folder format: .txt or .caption."),
    as_json: bool = JSON,
) -> None:
    """Write the set as images + .txt, metadata.csv, metadata.jsonl or kohya meta_cap.json."""
    from lorastudio.service.datasets import export_dataset

    result = export_dataset(workspace(), name, dest, format, repeats or None, caption_ext)
    _emit(
        result, as_json, [f"{name}: exported {result['images']} images to {result['images_dir']} ({format})"]
    )


@dataset_app.command("list")
def list_cmd(as_json: bool = JSON) -> None:
    """List imported data sets."""
    from lorastudio.service.datasets import list_datasets

    result = list_datasets(workspace())
    lines = [
        f"{row['name']}: {row['images']} images, {row['captioned']} captioned" for row in result["datasets"]
    ]
    _emit(
        result,
        as_json,
        lines or ["no data sets; import one with `lorastudio dataset import SRC --name NAME`"],
    )
