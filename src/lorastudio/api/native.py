"""Native routes, `/api/v1`: jobs (submit, list, inspect, cancel, stream events, artifacts)
and the workspace's resources (models, LoRAs, embeddings, outputs, uploads; data sets: `api.datasets`).

Request bodies are the same typed configs the CLI reads. Everything is addressed by
name: a request never carries a server path.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import Field

from lorastudio import __version__
from lorastudio.api.deps import get_studio, job_json, owner_to_check, request_user
from lorastudio.config import StrictModel
from lorastudio.generate.config import GenerateConfig
from lorastudio.service import embeddings as library_embeddings
from lorastudio.service import loras as library_loras
from lorastudio.service import models as library_models
from lorastudio.service import outputs as library_outputs
from lorastudio.service.job_kinds import CaptionJobConfig, ImportJobConfig, submit_job
from lorastudio.service.limits import MAX_PRIORITY
from lorastudio.service.portrait_make import PortraitMakeConfig
from lorastudio.service.portraits import PortraitTrainConfig
from lorastudio.service.series import SeriesJob, submit_series
from lorastudio.service.studio import InvalidRequest, Studio
from lorastudio.service.uploads import UPLOAD_SUFFIXES, image_or_upload, store_stream
from lorastudio.service.workspace import new_entry_name
from lorastudio.train.config import TrainConfig

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["native"])

# SSE: how long a stream may stay silent before a keep-alive comment, and how often it re-checks.
KEEPALIVE_S = 15.0
RECHECK_S = 2.0
# Event sequence numbers are 64-bit integers in the store.
MAX_EVENT_SEQ = 2**62
PRIORITY = Query(
    0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="Higher runs first; jobs of equal priority in order."
)


@router.get("/status")
def status(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """What this server is: version, default model, worker, queue counts."""
    counts = {state: len(studio.list_jobs(state=state, limit=10_000)) for state in ("queued", "running")}
    return {"version": __version__, **studio.describe(), "jobs": counts}


# --- jobs ---------------------------------------------------------------------------------


@router.post("/jobs/generate")
def submit_generate(
    cfg: GenerateConfig, request: Request, priority: int = PRIORITY, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Queue a generation; `init_image`/`mask` are upload names or base64 images. Returns at once."""
    studio.check_quota(request_user(request))  # before any inline image is stored
    stored: list[str | None] = []
    try:
        init_image = image_or_upload(studio.workspace, cfg.init_image, "init_image")
        stored.append(init_image if init_image != cfg.init_image else None)
        mask = image_or_upload(studio.workspace, cfg.mask, "mask", mask=True)
        stored.append(mask if mask != cfg.mask else None)
        cfg = cfg.model_copy(update={"init_image": init_image, "mask": mask})
        job = studio.submit_generate(cfg, user=request_user(request), priority=priority)
    except BaseException:
        studio.discard_uploads(stored)  # a refused request leaves none of its images behind
        raise
    return job_json(studio, job)


@router.post("/jobs/series")
def submit_series_job(
    body: SeriesJob, request: Request, priority: int = PRIORITY, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Queue a story series: one image set per prompt of `series.prompts` on the base `config`, and a
    contact sheet (`contact-sheet.png` among the job's artifacts)."""
    job = submit_series(studio, body.config, body.series, user=request_user(request), priority=priority)
    return job_json(studio, job)


@router.post("/jobs/train")
def submit_train(
    cfg: TrainConfig, request: Request, priority: int = PRIORITY, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Queue a training run (data.dir = a data-set name). A restart resumes it from its last checkpoint."""
    job = studio.submit_train(cfg, user=request_user(request), priority=priority)
    return job_json(studio, job)


@router.post("/jobs/{job_id}/resume")
def resume_train(
    job_id: str, request: Request, priority: int = PRIORITY, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Queue a cancelled or failed training job again: the new job resumes its run from the last
    checkpoint (the web UI's Resume). Only the caller's own run (403 for another user's)."""
    job = studio.resume_train(job_id, user=owner_to_check(request), priority=priority)
    return job_json(studio, job)


class CheckpointPick(StrictModel):
    step: Annotated[int, Field(ge=0)] | Annotated[str, Field(max_length=64)] = Field(
        ...,
        description="A saved checkpoint of the run: its step (20) or its folder's name (`step-20`), as"
        " `lorastudio train pick`; another name is a 404 listing the saved steps.",
    )


@router.post("/jobs/{job_id}/checkpoint")
def pick_checkpoint(
    job_id: str, body: CheckpointPick, request: Request, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Use checkpoint `step` of a training job's run as its LoRA in the library (the web UI's "Use
    this checkpoint", `lorastudio train pick`): `step` 20 or `"step-20"`. Only the caller's own run (403
    for another user's)."""
    return studio.pick_checkpoint(job_id, body.step, user=owner_to_check(request))


@router.post("/jobs/caption")
def submit_caption(
    cfg: CaptionJobConfig, request: Request, priority: int = PRIORITY, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Queue captioning or tagging of a data set."""
    job = studio.submit_caption(cfg, user=request_user(request), priority=priority)
    return job_json(studio, job)


@router.post("/jobs/import")
def submit_import(
    cfg: ImportJobConfig, request: Request, priority: int = PRIORITY, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Queue an import of uploaded files as a data set, model, LoRA or embedding."""
    job = studio.submit_import(cfg, user=request_user(request), priority=priority)
    return job_json(studio, job)


@router.post("/jobs/portrait-train")
def submit_portrait_train(
    cfg: PortraitTrainConfig, request: Request, priority: int = PRIORITY, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Queue a person's training from uploaded photos (`photos`: upload names): photo checks, the
    data set, the LoRA with the best face-identity checkpoint, the person's record."""
    job = submit_job(studio, "portrait-train", cfg, user=request_user(request), priority=priority)
    return job_json(studio, job)


@router.post("/jobs/portrait-make")
def submit_portrait_make(
    cfg: PortraitMakeConfig, request: Request, priority: int = PRIORITY, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Queue portraits: trained `persons` painted into `templates` (library names, upload names
    or base64 images; an image is added to the template library first). Results: best score first."""
    from lorastudio.service.easyphoto import check_people, template_names

    studio.check_quota(request_user(request))  # before any template image is stored
    if cfg.persons:
        check_people(studio.workspace, cfg.persons, "persons")
    if cfg.faces:
        check_people(studio.workspace, list(cfg.faces.values()), "faces")
    templates = template_names(studio.workspace, cfg.templates, "templates", cfg.backend)
    cfg = cfg.model_copy(update={"templates": templates})
    job = submit_job(studio, "portrait-make", cfg, user=request_user(request), priority=priority)
    return job_json(studio, job)


@router.get("/jobs")
def list_jobs(
    state: str | None = None,
    user: str | None = None,
    limit: int = Query(100, ge=1, le=10_000),
    studio: Studio = Depends(get_studio),
) -> dict[str, Any]:
    """Jobs, newest first."""
    return {"jobs": [job.to_dict() for job in studio.list_jobs(state=state, user=user, limit=limit)]}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    return job_json(studio, studio.get_job(job_id))


@router.delete("/jobs/{job_id}")
def cancel_job(job_id: str, request: Request, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Cancel a queued job now; a running one stops at its next step (its model stays loaded).
    Only the caller's own jobs (403 for another user's)."""
    return job_json(studio, studio.cancel_job(job_id, user=owner_to_check(request)))


def _last_event_id(value: str | None) -> int:
    """EventSource's `Last-Event-ID` (a sequence number we sent); absent or blank = from the start."""
    text = (value or "").strip()
    if not text:
        return 0
    if not text.isascii() or not text.isdigit() or int(text) > MAX_EVENT_SEQ:
        raise InvalidRequest(
            f"Last-Event-ID {text[:30]!r}: not an event id this server sent; reconnect without it."
        )
    return int(text)


def _sse(event_id: int | None, event_type: str, data: dict[str, Any]) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_type}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.get("/jobs/{job_id}/events")
async def job_events(
    job_id: str,
    request: Request,
    after: int | None = Query(
        None, ge=0, le=MAX_EVENT_SEQ, description="Only events after this sequence number."
    ),
    follow: bool = Query(True, description="Keep the stream open until the job finishes."),
    last_event_id: str | None = Header(None, description="Set by EventSource when it reconnects."),
    studio: Studio = Depends(get_studio),
) -> StreamingResponse:
    """Server-Sent Events: every stored event (`id` = its sequence number), then `end`.

    A reconnecting client resumes with `Last-Event-ID` or `?after=`.
    """
    await asyncio.to_thread(studio.get_job, job_id)  # 404 before the stream starts
    start = after if after is not None else _last_event_id(last_event_id)

    async def stream():
        seq = start
        wake = studio.subscribe()
        quiet_since = time.monotonic()
        try:
            yield "retry: 1000\n\n"
            while True:
                wake.clear()
                job = await asyncio.to_thread(studio.get_job, job_id)
                for event in await asyncio.to_thread(studio.job_events, job_id, seq):
                    seq = event.seq
                    quiet_since = time.monotonic()
                    yield _sse(event.seq, event.type, {**event.data, "ts": event.ts})
                if job.finished or not follow:
                    end = {
                        "state": job.state,
                        "progress": job.progress,
                        "error": job.error,
                        "result": job.result,
                    }
                    yield _sse(None, "end", end)
                    return
                if await request.is_disconnected():
                    return
                try:
                    await asyncio.wait_for(wake.wait(), RECHECK_S)
                except TimeoutError:
                    if time.monotonic() - quiet_since > KEEPALIVE_S:
                        quiet_since = time.monotonic()
                        yield ": keep-alive\n\n"
        finally:
            studio.unsubscribe(wake)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.get("/jobs/{job_id}/artifacts")
def list_artifacts(job_id: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Files the job wrote (images, recipes; for training the run folder's files)."""
    return {"job": job_id, "artifacts": studio.artifacts(job_id)}


@router.get("/jobs/{job_id}/artifacts/{name:path}", response_model=None)
def download_artifact(
    job_id: str, name: str, studio: Studio = Depends(get_studio)
) -> FileResponse | StreamingResponse:
    """A job file: from this box's disk, or streamed from the S3-compatible artifact store."""
    artifact = studio.artifact(job_id, name)
    if artifact.path is not None:
        return FileResponse(artifact.path, filename=artifact.name)
    headers = {
        "Content-Length": str(artifact.size_bytes),
        "Content-Disposition": f'attachment; filename="{artifact.name}"',
    }
    return StreamingResponse(artifact.chunks(), media_type=artifact.media_type, headers=headers)


# --- uploads ------------------------------------------------------------------------------


def _store_upload(
    studio: Studio, file: UploadFile, allowed: tuple[str, ...] = UPLOAD_SUFFIXES
) -> tuple[str, Path]:
    """The uploaded file stored whole under a fresh upload name, its type checked (service.uploads)."""
    return store_stream(studio.workspace, file.file, file.filename or "", allowed)


@router.post("/uploads")
def upload(
    request: Request, file: UploadFile = File(...), studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Store a file (image, zip, .safetensors; a .pt/.bin for an embedding import only) for a later
    job; answers its upload name.

    A user at their job quota gets 429 here too: uploads only feed jobs.
    """
    studio.check_quota(request_user(request))
    name, path = _store_upload(studio, file)
    return {"upload": name, "filename": file.filename, "size_bytes": path.stat().st_size}


# --- portraits: people and templates ------------------------------------------------------


@router.get("/portraits")
def list_portraits(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Trained people (POST /jobs/portrait-train): name, trigger, LoRA (None until trained), photos kept."""
    from lorastudio.service.portraits import list_people

    return {"people": list_people(studio.workspace)}


@router.get("/templates")
def list_templates(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """The template library (studio/templates): name, file, number of faces."""
    from lorastudio.service.easyphoto import library_templates

    return {"templates": library_templates(studio.workspace)}


class TemplateImage(StrictModel):
    """A template photo sent inline."""

    image: str = Field(..., description="Base64 image (PNG/JPEG/WebP), or a data:image/...;base64 URL.")
    name: str | None = Field(None, max_length=200, description="Library name; default: upload-<content hash>.")
    backend: str | None = Field(None, max_length=200, description="Face backend; default: dlib.")


@router.post("/templates/base64")
def add_template_base64(body: TemplateImage, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Add a template from a base64 image; one with no face is refused (422 naming `image`)."""
    from lorastudio.service.easyphoto import add_template_image

    return add_template_image(studio.workspace, body.image, "image", body.name, body.backend)


@router.post("/templates")
def add_template_file(
    file: UploadFile = File(...), name: str | None = Form(None), studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Add a template photo (multipart `file`, optional `name`; default: the file's name)."""
    from lorastudio.service.easyphoto import add_template_image

    _, path = _store_upload(studio, file, (".png", ".jpg", ".jpeg", ".webp"))
    try:
        stem = name or Path(file.filename or "").stem or None
        return add_template_image(studio.workspace, path, "file", stem)
    finally:
        path.unlink(missing_ok=True)


@router.delete("/templates/{name}")
def delete_template(name: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Remove a template and its cached faces from the library."""
    from lorastudio.service.easyphoto import delete_library_template

    return delete_library_template(studio.workspace, name)


# --- models -------------------------------------------------------------------------------


@router.get("/models")
def list_models(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    rows = [{k: v for k, v in row.items() if k != "path"} for row in library_models.titled_models(studio.workspace)]
    return {"models": rows, "default": studio.model}


@router.get("/models/{name}")
def model_info(name: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    data = library_models.model_info(studio.workspace, name, studio.names)
    data["path"] = Path(data["path"]).name
    return data


@router.post("/models")
def upload_model(
    file: UploadFile = File(...), name: str | None = Form(None), studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Add a .safetensors checkpoint to the library (pickled .ckpt files are refused over the API)."""
    _, path = _store_upload(studio, file, (".safetensors",))
    try:
        data = library_models.import_model(
            studio.workspace, path, new_entry_name(name, Path(file.filename or "").stem, "model", "model")
        )
    finally:
        path.unlink(missing_ok=True)
    data["path"] = Path(data["path"]).name
    return data


class Rename(StrictModel):
    """A new name for a library entry."""

    name: str = Field(..., min_length=1, max_length=200, description="The new name (letters, digits, '.', '-', '_').")


@router.patch("/models/{name}")
def rename_model(name: str, body: Rename, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Rename a model (requests and recipes that name the old name stop finding it)."""
    return library_models.rename_model(studio.workspace, name, body.name)


@router.delete("/models/{name}")
def delete_model(name: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Remove a model file or folder and its library row (a link goes, never what it points at)."""
    return library_models.delete_model(studio.workspace, name)


# --- LoRAs and embeddings -----------------------------------------------------------------


@router.get("/loras")
def list_loras(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Files in loras/ with their metadata and what training recorded (trigger, base model, run)."""
    return {"loras": library_loras.list_lora_files(studio.workspace)}


@router.get("/loras/{name}")
def lora_info(name: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    return library_loras.lora_file_info(studio.workspace, name)


@router.post("/loras")
def upload_lora(
    file: UploadFile = File(...), name: str | None = Form(None), studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Add a LoRA (.safetensors of any supported layout); it is stored as a kohya file."""
    _, path = _store_upload(studio, file, (".safetensors",))
    try:
        data = library_loras.import_lora(
            studio.workspace, path, new_entry_name(name, Path(file.filename or "").stem, "LoRA", "lora")
        )
    finally:
        path.unlink(missing_ok=True)
    data["path"] = Path(data["path"]).name
    return data


@router.patch("/loras/{name}")
def rename_lora(name: str, body: Rename, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Rename a LoRA; its run, trigger and samples follow it."""
    return library_loras.rename_lora(studio.workspace, name, body.name)


@router.delete("/loras/{name}")
def delete_lora(name: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Remove a LoRA file and its library row (run, trigger, samples)."""
    return library_loras.delete_lora(studio.workspace, name)


@router.get("/embeddings")
def list_embeddings(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Files in embeddings/ (the prompt word is the name), with metadata, vectors and width."""
    return {"embeddings": library_embeddings.list_embeddings(studio.workspace)}


@router.post("/embeddings")
def upload_embedding(
    file: UploadFile = File(...), name: str | None = Form(None), studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Add a textual-inversion embedding (.safetensors, .pt/.bin read weights-only, an A1111 .png,
    .webp, .jxl or .avif; the others are stored as .safetensors); its name, the prompt word, defaults
    to a picture's stored name, else the file's stem."""
    _, path = _store_upload(studio, file, library_embeddings.EMBEDDING_IMPORT_SUFFIXES)
    try:
        return library_embeddings.import_embedding(studio.workspace, path, name or None, shown_as=file.filename)
    finally:
        path.unlink(missing_ok=True)


@router.patch("/embeddings/{name}")
def rename_embedding(name: str, body: Rename, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Rename an embedding: the word prompts use for it changes."""
    return library_embeddings.rename_embedding(studio.workspace, name, body.name)


@router.delete("/embeddings/{name}")
def delete_embedding(name: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    return library_embeddings.delete_embedding(studio.workspace, name)


# --- ControlNet, preprocessors, upscalers ------------------------------------------------------


@router.get("/controlnets")
def list_controlnets(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """ControlNets in controlnet/ with their A1111 titles `name [hash8]` (what a unit's `model` takes)."""
    from lorastudio.service.controlnets import list_controlnets as rows

    return {"controlnets": rows(studio.workspace)}


@router.get("/preprocessors")
def list_preprocessors(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Preprocessors a unit's `module` takes, their parameters, and whether their weights are here."""
    from lorastudio.service.annotate import list_modules

    return {"preprocessors": list_modules(studio.workspace)}


@router.get("/upscalers")
def list_upscalers(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Upscalers the hires fix and Extras take: latent modes, filters, model files in models/upscalers."""
    from lorastudio.service.upscalers import list_upscalers as rows

    return {"upscalers": rows(studio.workspace)}


# --- outputs ------------------------------------------------------------------------------


@router.get("/outputs")
def list_outputs(
    limit: int = Query(100, ge=1, le=10_000), studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Generated images, newest first; `id` is `folder/file` under outputs/."""
    return {"outputs": library_outputs.list_outputs(studio.workspace, limit)}


@router.get("/outputs/{folder}/{file}")
def download_output(folder: str, file: str, studio: Studio = Depends(get_studio)) -> FileResponse:
    path = library_outputs.output_path(studio.workspace, folder, file)
    return FileResponse(path, filename=path.name)


@router.get("/outputs/{folder}/{file}/info")
def output_info(folder: str, file: str, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """The image's infotext, parsed, and its YAML recipe when there is one."""
    return library_outputs.output_info(studio.workspace, folder, file)
