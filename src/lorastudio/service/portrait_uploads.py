"""A browser's photos to a `portrait-train` job: the web UI's path to the same job the API queues.

The API client uploads each photo (POST /api/v1/uploads) and names the uploads; a form has the
files themselves, so they are stored as uploads here first, under their original names for the
photo report, and a refused request leaves none behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.service.portraits import PortraitTrainConfig

__all__ = ["PHOTO_UPLOAD_SUFFIXES", "submit_portrait_photos"]

PHOTO_UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def submit_portrait_photos(
    studio: Any, cfg: PortraitTrainConfig, files: Sequence[str | Path], *, user: str = ""
) -> Any:
    """Store `files` as uploads and queue the person's training (`portrait-train`); answers the job."""
    from lorastudio.service.job_kinds import submit_job
    from lorastudio.service.uploads import discard_uploads, store_stream

    if not files:
        raise LorastudioError("portrait: no photos; choose 5 to 20 photos of the person.")
    stored: list[str] = []
    try:
        for file in files:
            with open(file, "rb") as stream:
                stored.append(store_stream(studio.workspace, stream, Path(file).name, PHOTO_UPLOAD_SUFFIXES)[0])
        cfg = cfg.model_copy(update={"photos": stored, "file_names": [Path(f).name for f in files]})
        return submit_job(studio, "portrait-train", PortraitTrainConfig.model_validate(cfg.model_dump()), user=user)
    except BaseException:
        discard_uploads(studio.workspace, stored)  # a refused request leaves no uploads behind
        raise
