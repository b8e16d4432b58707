"""What is in a data set: numbers for `dataset info` and a self-contained HTML report.

`summarize` reads only the manifest and caption files (fast). `write_html_report` adds
thumbnails (embedded JPEG data URIs, so the file can be mailed or opened anywhere) and
writes `report.html` in the data-set folder.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from pathlib import Path

from lorastudio.data.buckets import assign_bucket, plan_buckets
from lorastudio.data.captions import tag_frequency
from lorastudio.data.images import ImageLoadError, open_image
from lorastudio.data.importer import read_import_report
from lorastudio.data.manifest import DatasetFolder, atomic_write_text

__all__ = ["summarize", "render_html", "write_html_report"]

_SIZE_BINS = (256, 512, 768, 1024, 1536, 2048)
_RATIO_BINS = (
    (0.0, 0.5, "< 1:2"),
    (0.5, 0.75, "1:2 - 3:4"),
    (0.75, 0.95, "3:4 - 1:1"),
    (0.95, 1.06, "1:1"),
    (1.06, 1.34, "1:1 - 4:3"),
    (1.34, 2.0, "4:3 - 2:1"),
    (2.0, float("inf"), "> 2:1"),
)
MAX_THUMBNAILS = 400


def _size_label(short_side: int) -> str:
    for bound in _SIZE_BINS:
        if short_side < bound:
            return f"< {bound}"
    return f">= {_SIZE_BINS[-1]}"


def _ratio_label(ratio: float) -> str:
    return next(label for low, high, label in _RATIO_BINS if low <= ratio < high)


def summarize(folder: DatasetFolder, resolution: int = 1024, top_tags: int = 50) -> dict:
    """Counts, histograms, buckets, tag frequency, uncaptioned images, import problems."""
    items = folder.items
    captions = {item.file: folder.read_caption(item) for item in items}
    buckets = plan_buckets(resolution)
    bucket_counts = Counter(
        f"{bw}x{bh}" for bw, bh in (assign_bucket(i.width, i.height, buckets) for i in items)
    )
    short_sides = Counter(_size_label(min(i.width, i.height)) for i in items)
    ratios = Counter(_ratio_label(i.width / i.height) for i in items)
    runs = read_import_report(folder)
    return {
        "name": folder.name,
        "path": str(folder.root),
        "images": len(items),
        "samples_per_epoch": sum(i.repeats for i in items),
        "captioned": sum(1 for c in captions.values() if c),
        "uncaptioned": [file for file, caption in captions.items() if not caption],
        # kohya's caption for those of them from an `NN_name` folder (training reads it, as kohya)
        "folder_captions": dict(Counter(i.folder_caption for i in items if i.folder_caption and not captions[i.file])),
        "short_side_histogram": {
            label: short_sides[label] for label in _ordered_size_labels() if short_sides[label]
        },
        "aspect_histogram": {label: ratios[label] for _, _, label in _RATIO_BINS if ratios[label]},
        "resolution": resolution,
        "buckets": dict(sorted(bucket_counts.items(), key=lambda kv: -kv[1])),
        "tag_frequency": dict(tag_frequency(captions.values()).most_common(top_tags)),
        "import_runs": len(runs),
        "import_failed": _still_failing(runs),
        "import_skipped": [row for run in runs for row in run.get("skipped", [])],
    }


def _still_failing(runs: list[dict]) -> list[dict]:
    """Each source that failed, once, with its latest reason; not one a later import brought in
    (re-importing a folder reports its broken file every time)."""
    failing: dict[str, dict] = {}
    for run in runs:
        for row in run.get("failed", []):
            failing.pop(row.get("source"), None)
            failing[row.get("source")] = row
        for row in run.get("imported", []):
            failing.pop(row.get("source"), None)
    return list(failing.values())


def _ordered_size_labels() -> list[str]:
    return [f"< {b}" for b in _SIZE_BINS] + [f">= {_SIZE_BINS[-1]}"]


def _thumbnail_uri(path: Path, side: int = 128) -> str | None:
    try:
        image = open_image(path)
    except ImageLoadError:
        return None
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _bars(title: str, counts: dict[str, int]) -> str:
    peak = max(counts.values(), default=1)
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td><div class=bar style='width:{200 * v // peak}px'></div></td><td>{v}</td></tr>"
        for k, v in counts.items()
    )
    return f"<h2>{html.escape(title)}</h2><table>{rows or '<tr><td>none</td></tr>'}</table>"


def _rows(title: str, rows: list[dict]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(str(r.get('source', r.get('file', ''))))}</td><td>{html.escape(str(r.get('reason', '')))}</td></tr>"
        for r in rows
    )
    return f"<h2>{html.escape(title)} ({len(rows)})</h2><table>{body or '<tr><td>none</td></tr>'}</table>"


def render_html(folder: DatasetFolder, summary: dict, thumbnails: bool = True) -> str:
    cards = []
    for item in folder.items[:MAX_THUMBNAILS] if thumbnails else []:
        uri = _thumbnail_uri(folder.image_path(item))
        caption = folder.read_caption(item) or "(no caption)"
        img = f"<img src='{uri}' alt=''>" if uri else "<div class=missing>unreadable</div>"
        cards.append(
            f"<figure>{img}<figcaption><b>{html.escape(item.file)}</b> {item.width}x{item.height}<br>"
            f"{html.escape(item.original)}<br><i>{html.escape(caption)}</i></figcaption></figure>"
        )
    more = len(folder.items) - len(cards)
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td{padding:2px 8px}"
        ".bar{background:#4a7;height:12px}figure{display:inline-block;width:160px;vertical-align:top;margin:6px}"
        "figure img{max-width:128px;max-height:128px}figcaption{font-size:11px;word-wrap:break-word}"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(folder.name)}</title>"
        f"<style>{style}</style></head><body>",
        f"<h1>Data set {html.escape(folder.name)}</h1>",
        f"<p>{summary['images']} images, {summary['captioned']} captioned, "
        f"{summary['samples_per_epoch']} samples per epoch with repeats.</p>",
        _bars("Short side (px)", summary["short_side_histogram"]),
        _bars("Aspect ratio (w:h)", summary["aspect_histogram"]),
        _bars(f"Training buckets at {summary['resolution']} px", summary["buckets"]),
        _bars("Tag frequency", summary["tag_frequency"]),
        _rows("Images without captions", [{"file": f} for f in summary["uncaptioned"]]),
        _rows("Import failures", summary["import_failed"]),
        _rows("Import skips", summary["import_skipped"]),
        "<h2>Images</h2>",
        "".join(cards),
        f"<p>{more} more not shown.</p>" if thumbnails and more > 0 else "",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_html_report(folder: DatasetFolder, resolution: int = 1024, output: Path | None = None) -> Path:
    path = output or folder.root / "report.html"
    atomic_write_text(path, render_html(folder, summarize(folder, resolution)))
    return path
