"""The portrait-train job: a person's photos checked, then their LoRA trained (EasyPhoto's flow).

Its own module so that `service.job_kinds` stays one table of kinds; registered there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.service.job_steps import json_ready, names_policy_of, publish_artifacts, run_folder
from lorastudio.service.portraits import PortraitTrainConfig
from lorastudio.service.uploads import upload_path

if TYPE_CHECKING:
    from lorastudio.service.jobs.context import JobContext

__all__ = ["portrait_train_handler"]


def portrait_train_handler(ctx: JobContext) -> dict[str, Any]:
    """payload: `config` (a PortraitTrainConfig: uploaded photos) and `run` (reserved under runs/).

    Photo checks, then training; the person's LoRA and registry entry are the result. The
    uploads are removed once it succeeded (a refused set stays, to be sent again with more photos).
    """
    from lorastudio.service.portraits import train_person

    cfg = PortraitTrainConfig.model_validate(ctx.payload.get("config") or {})
    uploads = photos = [upload_path(ctx.workspace, name) for name in cfg.photos]
    run_dir = run_folder(ctx.workspace, ctx.job)
    if cfg.file_names:  # the uploads under the user's own names, so the photo report names their files
        staging = ctx.workspace.cache / "portrait-photos" / ctx.job.id
        photos = _staged(photos, cfg.file_names, staging)

    def on_event(event: dict) -> None:
        kind = event.get("event")
        if kind == "photo":
            ctx.progress(0.0, event["done"], event["total"], f"checking {event['file']}")
        elif kind == "step":
            ctx.progress(event["step"] / max(event["total"], 1), event["step"], event["total"])
        elif kind:
            ctx.emit(str(kind), json_ready({k: v for k, v in event.items() if k != "event"}))
        ctx.check_cancelled()

    try:
        result = train_person(
            ctx.workspace, cfg, photos, callback=on_event, device=ctx.device, progress=False,
            names=names_policy_of(ctx), run=run_dir.name,
        )  # fmt: skip
    finally:
        if cfg.file_names:
            shutil.rmtree(ctx.workspace.cache / "portrait-photos" / ctx.job.id, ignore_errors=True)
    for upload in uploads:  # the kept photos are in the data set now (as an import removes its uploads)
        upload.unlink(missing_ok=True)
    publish_artifacts(ctx, run_dir)
    return json_ready(result)


def _staged(photos: list[Path], names: list[str], staging: Path) -> list[Path]:
    """Each upload linked (or copied) into `staging` under its original name; a repeated name gets a number."""
    staging.mkdir(parents=True, exist_ok=True)
    staged = []
    for index, (source, name) in enumerate(zip(photos, names, strict=True)):
        target = staging / name
        if target.exists():
            target = staging / f"{Path(name).stem}-{index}{Path(name).suffix}"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        staged.append(target)
    return staged
