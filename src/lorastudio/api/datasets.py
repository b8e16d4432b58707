"""Native data-set routes, `/api/v1/datasets`: list, inspect, upload (a zip, or loose files as a
folder holds them), delete.

An upload takes what the web UI's Data sets tab takes, by the same rules
(`service.job_kinds.submit_dataset_upload`): images, a zip, the caption beside each image (`.txt`,
kohya's BLIP `.caption`) and kohya's `meta_*.json`, paired by the files' own names. A file that is
refused (its type, its content) is reported with its reason and the others are imported.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from lorastudio.api.deps import get_studio, job_json, request_user
from lorastudio.service import datasets as library_datasets
from lorastudio.service.job_kinds import submit_dataset_upload
from lorastudio.service.studio import InvalidRequest, Studio

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["native"])


@router.get("/datasets")
def list_datasets(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    return library_datasets.list_datasets(studio.workspace)


@router.get("/datasets/{name}")
def dataset_info(name: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    return library_datasets.dataset_info(studio.workspace, name)


@router.post("/datasets")
def upload_dataset(
    request: Request,
    name: str = Form(...),
    file: UploadFile | None = File(None, description="One file: a zip of the folder, or one image."),
    files: list[UploadFile] | None = File(
        None, description="Several files (repeat the field): images, .txt/.caption captions, kohya meta_*.json, zips."
    ),
    caption_extension: str | None = Form(
        None, description="Read only this caption file beside each image ('.caption': kohya's BLIP captions)."
    ),
    background: str = Form("white", description="Colour that replaces transparency."),
    studio: Studio = Depends(get_studio),
) -> dict[str, Any]:
    """Upload a data set's files and queue their import as data set `name`; answers the import job
    and the files refused here (`refused_files`: source and reason; the job reports them too)."""
    user = request_user(request)
    studio.check_quota(user)  # before any file is stored
    sent = [f for f in ([file] if file is not None else []) + list(files or []) if f is not None]
    if not sent:
        raise InvalidRequest(
            "datasets: no file sent; send the images, their .txt/.caption captions, a kohya meta_*.json or a zip"
            " as multipart `files` (curl: -F files=@a.png -F files=@a.txt)."
        )
    job = submit_dataset_upload(
        studio, name, [(f.filename or "", f.file) for f in sent], background or "white", user=user,
        caption_extension=caption_extension or None,
    )  # fmt: skip
    return {**job_json(studio, job), "refused_files": list(job.payload["config"].get("refused_files") or [])}


@router.delete("/datasets/{name}")
def delete_dataset(name: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    return library_datasets.delete_dataset(studio.workspace, name)
