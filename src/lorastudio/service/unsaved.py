"""Images a request answers and does not keep: A1111's API with `save_images: false` (its default).

A1111 answers such a request's images (and an x/y/z plot's grid) as base64 and writes nothing to its
outputs folder. Here a generate or grid job queued with `keep=False` (payload `keep: false`; only
`Studio.submit_generate` and `service.grid.submit_grid` set it, for the A1111 routes) renders into
`cache/unsaved/<job id>/` instead of `outputs/<job id>/` (its kind's folder rule, `image_job_folder`),
records no library row, publishes nothing to the artifact store and says `kept: false` in its
result. The front builds its answer from those files and calls `release_job_files`, which removes
the folder. The job record stays; `job_images` answers only the files still there (none after the
release), so `GET /api/v1/jobs/{id}` and the web UI's history read a job whose pictures are gone.
A folder whose answer was never built (the client went away) is swept (`sweep_unsaved`, at each new
such job and at start) once its job has been finished for `SWEEP_AFTER_S`.

The pictures such a request came with (init image, mask, ControlNet images: stored as uploads, a new
name each request) go with the folder: the front lists them in it (`hold_request_uploads`, a hidden
`.request-uploads.json` no download lists), and the release and the sweep remove them with it. The
recipe copies (`inputs/<hash>.png`, `service.recipe_inputs`) are inside the folder too.

A kept job (`save_images: true`) copies those pictures beside its outputs (`inputs/<hash>.png`, what its
recipes name), so once it has succeeded nothing needs the uploads: their names are listed in
`cache/request-uploads/<job id>.json` and removed by the release (after the answer) or, when the client
left, by the sweep. The job's stored request still names them, but a succeeded job never runs again
(a worker's stop requeues only running jobs). A failed or cancelled kept job keeps them while its job
record is there (a new request can be made from its request); once the record is purged
(`service.retention.purge_jobs`) they go with it (`drop_purged_job_files`), and the sweep removes what
another box's purge left, as it does a not-kept folder whose job is gone.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError
from lorastudio.service.jobs.registry import output_folder
from lorastudio.service.jobs.store import SUCCEEDED
from lorastudio.service.uploads import discard_uploads, upload_path

if TYPE_CHECKING:
    from lorastudio.service.jobs.store import Job, JobStore
    from lorastudio.service.workspace import Workspace

__all__ = [
    "NOT_KEPT_LINE",
    "KEPT_UPLOADS_DIR",
    "REQUEST_UPLOADS",
    "SWEEP_AFTER_S",
    "hold_request_uploads",
    "image_job_folder",
    "drop_purged_job_files",
    "keeps_files",
    "kept_uploads_list",
    "purged_job_files",
    "release_job_files",
    "sweep_unsaved",
    "unsaved_root",
]

UNSAVED_DIR = "unsaved"
# A finished job's folder whose answer was not built in this time (the client left) is swept.
SWEEP_AFTER_S = 600.0
# The job log's line for such a job (its result says `kept: false`).
# In a not-kept job's folder: the upload names of the pictures its request came with (a hidden name:
# no download lists it), removed with the folder.
REQUEST_UPLOADS = ".request-uploads.json"
# For each kept job: the upload names its request came with, removed once it has succeeded.
KEPT_UPLOADS_DIR = "request-uploads"
NOT_KEPT_LINE = "images not kept (A1111 API save_images: false): answered, then removed; nothing added to outputs"


def keeps_files(payload: dict[str, Any] | None) -> bool:
    """Whether a job's images stay in outputs/ and the library (every job but a `keep: false` one)."""
    return (payload or {}).get("keep", True) is not False


def unsaved_root(ws: Workspace) -> Path:
    return ws.cache / UNSAVED_DIR


def image_job_folder(ws: Workspace, job: Job) -> Path:
    """The folder rule of the generate and grid kinds: `outputs/<job id>`, or for a job whose images are
    not kept `cache/unsaved/<job id>` (never under outputs/, even while it runs)."""
    if keeps_files(job.payload):
        return output_folder(ws, job)
    return ws.safe_child(unsaved_root(ws), job.id, "job id")


def kept_uploads_list(ws: Workspace, job_id: str) -> Path:
    """Where a kept job's request uploads are listed (`cache/request-uploads/<job id>.json`)."""
    return ws.safe_child(ws.cache / KEPT_UPLOADS_DIR, f"{job_id}.json", "job id")


def hold_request_uploads(ws: Workspace, job: Job, names: Iterable[str | None]) -> bool:
    """The uploads a job's request stored (its init image, mask, ControlNet images), per-request names
    nothing else uses: a not-kept job's go with its folder (listed in it, removed by `release_job_files`
    or `sweep_unsaved` with it); a kept job's are listed to go once it has succeeded, its recipes then
    naming their own copies. True when listed (False: no names)."""
    names = [name for name in names if name]
    if not names:
        return False
    if keeps_files(job.payload):
        path = kept_uploads_list(ws, job.id)
    else:
        path = image_job_folder(ws, job) / REQUEST_UPLOADS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(names), encoding="utf-8")
    tmp.replace(path)
    return True


def _listed_uploads(ws: Workspace, listing: Path) -> list[Path]:
    """The uploads still stored that a request-uploads list names."""
    try:
        names = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found = []
    for name in names if isinstance(names, list) else []:
        try:
            path = upload_path(ws, name, pickles=True) if isinstance(name, str) else None
        except LorastudioError:  # gone already, or not an upload name
            continue
        if path is not None:
            found.append(path)
    return found


def purged_job_files(ws: Workspace, job_id: str) -> list[Path]:
    """What a job purged from the queue leaves in the cache, which nothing else names: a kept job's
    request-uploads list and the uploads it names, a not-kept job's folder and the uploads listed in it
    (what `drop_purged_job_files` removes). Never outputs/ or runs/: those stay with the library."""
    files: list[Path] = []
    listing = kept_uploads_list(ws, job_id)
    if listing.is_file():
        files += [*_listed_uploads(ws, listing), listing]
    folder = ws.safe_child(unsaved_root(ws), job_id, "job id")
    if folder.is_dir():
        files += _listed_uploads(ws, folder / REQUEST_UPLOADS)
        files += sorted(path for path in folder.rglob("*") if path.is_file())
    return files


def drop_purged_job_files(ws: Workspace, job_id: str) -> None:
    """Remove `purged_job_files(ws, job_id)`: its job record is gone, so no release or retry needs them."""
    listing = kept_uploads_list(ws, job_id)
    if listing.exists():
        _drop_kept_uploads(ws, listing)
    folder = ws.safe_child(unsaved_root(ws), job_id, "job id")
    if folder.is_dir():
        _remove(ws, folder)


def _discard_listed(ws: Workspace, listing: Path) -> None:
    """The uploads a request-uploads list names."""
    try:
        names = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        names = []
    if isinstance(names, list):
        discard_uploads(ws, [name for name in names if isinstance(name, str)])


def _remove(ws: Workspace, folder: Path) -> None:
    """A not-kept folder, and the request's uploads it lists."""
    _discard_listed(ws, folder / REQUEST_UPLOADS)
    shutil.rmtree(folder, ignore_errors=True)


def _drop_kept_uploads(ws: Workspace, listing: Path) -> None:
    """A kept job's request uploads, and their list."""
    _discard_listed(ws, listing)
    listing.unlink(missing_ok=True)


def release_job_files(ws: Workspace, job: Job) -> bool:
    """Remove a finished not-kept job's folder (and its request's uploads) once its answer is built;
    True when it was such a job.

    A kept job keeps its files; once it has succeeded its request's uploads go (its recipes name their
    copies in `inputs/`). A job still queued or running (its answer comes later) is left alone."""
    if keeps_files(job.payload):
        if job.state == SUCCEEDED:
            _drop_kept_uploads(ws, kept_uploads_list(ws, job.id))
        return False
    if not job.finished:
        return False
    _remove(ws, image_job_folder(ws, job))
    return True


def sweep_unsaved(ws: Workspace, store: JobStore, older_than_s: float = SWEEP_AFTER_S) -> list[str]:
    """Remove the not-kept folders (and their requests' uploads) nobody will answer from: their job
    finished (or is gone) more than `older_than_s` ago; and the request uploads of kept jobs that
    succeeded (their release never came: the client left) or are gone from the queue as long.
    Returns the not-kept job ids swept."""
    _sweep_kept_uploads(ws, store, older_than_s)
    root = unsaved_root(ws)
    if not root.is_dir():
        return []
    now, swept = time.time(), []
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        try:
            job = store.get(folder.name)
        except LorastudioError:  # its job is gone from the queue: only the folder's age says
            ended = folder.stat().st_mtime
        else:
            if not job.finished:
                continue
            ended = job.finished_at or folder.stat().st_mtime
        if now - ended >= older_than_s:
            _remove(ws, folder)
            swept.append(folder.name)
    return swept


def _sweep_kept_uploads(ws: Workspace, store: JobStore, older_than_s: float) -> None:
    """Kept jobs' request uploads: a succeeded job's go; a failed or cancelled one's stay while its job
    record does; those of a job gone from the queue go once their list is `older_than_s` old."""
    root = ws.cache / KEPT_UPLOADS_DIR
    if not root.is_dir():
        return
    now = time.time()
    for listing in root.glob("*.json"):
        try:
            job = store.get(listing.stem)
        except LorastudioError:  # purged from the queue: nothing names the uploads any more
            try:
                if now - listing.stat().st_mtime >= older_than_s:
                    _drop_kept_uploads(ws, listing)
            except OSError:
                pass
            continue
        if job.state == SUCCEEDED:
            _drop_kept_uploads(ws, listing)
