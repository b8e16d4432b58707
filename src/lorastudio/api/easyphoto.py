"""EasyPhoto's routes (the sd-webui-EasyPhoto extension's `scripts/api.py`), for the scripts its
users wrote against an A1111 server: `POST /easyphoto/easyphoto_train_forward` trains a person
from base64 photos, `POST /easyphoto/easyphoto_infer_forward` paints trained persons into
template photos and answers the results as base64.

This module is the dialect: it maps EasyPhoto's fields onto `PortraitTrainConfig` and
`PortraitMakeConfig` (the fields that have no meaning here are accepted and ignored; docs/API.md
lists them) and their answers back. Like EasyPhoto, each request waits for its job (without
holding a thread). Unlike EasyPhoto, which answers 200 with an error message, a bad request is
a 422 naming the field: a photo set without enough usable faces (each left-out photo with its
reason), an unknown `user_ids` entry (with the known people), a template with no face.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from lorastudio.api.deps import get_studio, request_user
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.jobs import Job
from lorastudio.service.studio import InvalidRequest, Studio

__all__ = ["router"]

router = APIRouter(prefix="/easyphoto", tags=["easyphoto"])

TRAIN_DONE = "The training has been completed."  # EasyPhoto's own message
INFER_DONE = "Success"
MAX_STEPS = 100_000
MAX_SEED = 2**32 - 1


class EasyPhotoTrainRequest(BaseModel):
    """EasyPhoto's training request; fields it sends that mean nothing here are ignored."""

    model_config = ConfigDict(extra="ignore")

    user_id: str = Field(..., min_length=1, max_length=200, description="The person's name (data set, LoRA, registry).")
    sd_model_checkpoint: str | None = Field(
        None, max_length=400, description="Base model: a library name or A1111 title; default: the server's model."
    )
    resolution: int = Field(512, ge=64, le=2048, description="Training resolution.")
    val_and_checkpointing_steps: int = Field(100, ge=1, le=MAX_STEPS, description="Checkpoint and identity score every N steps.")
    max_train_steps: int = Field(800, ge=1, le=MAX_STEPS, description="At most this many steps.")
    steps_per_photos: int = Field(200, ge=1, le=MAX_STEPS, description="Steps = min(photos x this, max_train_steps).")
    rank: int = Field(128, ge=1, le=1024, description="LoRA rank (alpha = rank / 2).")
    skin_retouching_bool: bool = Field(False, description="Retouch the skin of each training crop (EasyPhoto's API: off).")
    instance_images: list[str] = Field(..., min_length=1, max_length=100, description="The person's photos, base64.")


class EasyPhotoInferRequest(BaseModel):
    """EasyPhoto's inference request; fields it sends that mean nothing here are ignored."""

    model_config = ConfigDict(extra="ignore")

    user_ids: str | list[str] = Field(..., description="Trained person(s), mapped to the template's faces left to right.")
    sd_model_checkpoint: str | None = Field(None, max_length=400, description="Base model; default: the person's.")
    selected_template_images: list[str] = Field(
        default_factory=list, max_length=50, description="Templates: base64 images or template library names."
    )
    init_image: str | None = Field(None, description="One more template, base64 (EasyPhoto's upload tab).")
    uploaded_template_images: list[str] = Field(default_factory=list, max_length=50, description="More templates, base64.")
    additional_prompt: str = Field("", max_length=2000, description="Added to the prompt of every face.")
    first_diffusion_steps: int = Field(50, ge=1, le=500, description="Sampling steps of each pass.")
    first_denoising_strength: float = Field(0.45, ge=0, le=1, description="Denoising strength of pass 1.")
    second_diffusion_steps: int = Field(20, ge=1, le=500, description="Ignored: both passes use first_diffusion_steps.")
    second_denoising_strength: float = Field(0.35, ge=0, le=1, description="Denoising strength of pass 2 (0 = skip it).")
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="Seed (-1 = random).")
    display_score: bool = Field(False, description="Also answer each result's identity score in face_id_outputs.")
    skin_retouching_bool: bool = Field(False, description="Retouch the skin of each painted face (EasyPhoto's API: off).")


# --- mapping ------------------------------------------------------------------------------


def _model_name(studio: Studio, title: str | None) -> str | None:
    """EasyPhoto's `sd_model_checkpoint` ("name.safetensors [hash]") as a library model name."""
    from lorastudio.api.a1111_options import model_name_from_title

    if not title:
        return None
    try:
        return model_name_from_title(studio, title)
    except NotFoundError as exc:
        raise InvalidRequest.wrap(f"sd_model_checkpoint: {exc}", exc) from None


def _train_config(req: EasyPhotoTrainRequest, studio: Studio, photos: list[str], file_names: list[str]):
    """EasyPhoto's steps rule: min(photos x steps_per_photos, max_train_steps)."""
    from lorastudio.service.portraits import PortraitTrainConfig

    try:
        return PortraitTrainConfig(
            name=req.user_id,
            photos=photos,
            file_names=file_names,
            base=_model_name(studio, req.sd_model_checkpoint) or "",
            steps=min(len(photos) * req.steps_per_photos, req.max_train_steps),
            resolution=req.resolution,
            save_every_steps=req.val_and_checkpointing_steps,
            rank=req.rank,
            skin_retouch=req.skin_retouching_bool,
        )
    except LorastudioError as exc:
        raise InvalidRequest.wrap(f"user_id: {exc}", exc) from None


def _user_ids(req: EasyPhotoInferRequest) -> list[str]:
    return [req.user_ids] if isinstance(req.user_ids, str) else list(req.user_ids)


def _template_refs(req: EasyPhotoInferRequest) -> tuple[list[str], list[str]]:
    """(references, the request field each came from), in EasyPhoto's order."""
    refs, fields = [], []
    for index, ref in enumerate(req.selected_template_images):
        refs.append(ref)
        fields.append(f"selected_template_images[{index}]")
    if req.init_image:
        refs.append(req.init_image)
        fields.append("init_image")
    for index, ref in enumerate(req.uploaded_template_images):
        refs.append(ref)
        fields.append(f"uploaded_template_images[{index}]")
    return refs, fields


def _make_config(req: EasyPhotoInferRequest, studio: Studio, templates: list[str]):
    from lorastudio.service.portrait_make import PortraitMakeConfig

    default = PortraitMakeConfig.model_fields["prompt"].default
    prompt = f"{default}, {req.additional_prompt}" if req.additional_prompt.strip() else default
    return PortraitMakeConfig(
        persons=_user_ids(req),
        templates=templates,
        model=_model_name(studio, req.sd_model_checkpoint),
        prompt=prompt,
        steps=req.first_diffusion_steps,
        first_strength=req.first_denoising_strength,
        second_strength=req.second_denoising_strength,
        seed=req.seed,
        skin_retouch=req.skin_retouching_bool,
    )


# --- routes ---------------------------------------------------------------------------------


@router.post("/easyphoto_train_forward")
async def easyphoto_train_forward(
    req: EasyPhotoTrainRequest, request: Request, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Train `user_id` from `instance_images` (base64) and wait for it: `{"message": ...}`, plus
    the photos kept and left out (with reasons), the LoRA and the job id."""
    from lorastudio.service.easyphoto import photo_refusal, store_photos
    from lorastudio.service.job_kinds import submit_job

    user = request_user(request)

    def submit() -> Job:
        studio.check_quota(user)  # before any photo is stored
        photos, names = store_photos(studio.workspace, req.instance_images, "instance_images")
        try:
            return submit_job(studio, "portrait-train", _train_config(req, studio, photos, names), user=user)
        except BaseException:
            studio.discard_uploads(photos)
            raise

    job = await asyncio.to_thread(submit)
    job = await studio.wait_job_async(job.id)
    if job.state == "failed":
        refusal = await asyncio.to_thread(photo_refusal, studio, job, "instance_images")
        if refusal:
            await asyncio.to_thread(studio.discard_uploads, list(job.payload["config"]["photos"]))
            raise InvalidRequest(refusal)
        raise LorastudioError(f"training failed: {job.error}")
    result = job.result or {}
    if job.state != "succeeded":
        return {"message": f"Training {job.state}.", "job": job.id}
    return {
        "message": TRAIN_DONE,
        "job": job.id,
        "user_id": req.user_id,
        "lora": Path(result.get("library_lora") or "").name or None,
        "kept": result.get("kept", []),
        "left_out": result.get("left_out", {}),
    }


@router.post("/easyphoto_infer_forward")
async def easyphoto_infer_forward(
    req: EasyPhotoInferRequest, request: Request, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """Paint `user_ids` into the templates and wait: `{"message", "outputs": [base64 PNG],
    "face_id_outputs"}`; outputs best identity score first."""
    from lorastudio.service.easyphoto import check_people, template_names
    from lorastudio.service.job_kinds import submit_job

    user = request_user(request)

    def submit() -> Job:
        studio.check_quota(user)
        check_people(studio.workspace, _user_ids(req), "user_ids")
        refs, fields = _template_refs(req)
        if not refs:
            raise InvalidRequest("selected_template_images: empty; send at least one template (base64 or a library name).")
        templates = template_names(studio.workspace, refs, "templates", fields=fields)
        return submit_job(studio, "portrait-make", _make_config(req, studio, templates), user=user)

    job = await asyncio.to_thread(submit)
    job = await studio.wait_job_async(job.id)
    if job.state == "failed":
        raise LorastudioError(f"portrait making failed: {job.error}")

    def answer() -> dict[str, Any]:
        from lorastudio.api.a1111_requests import b64_file

        result = job.result or {}
        paths = studio.job_images(job)
        scores = list(result.get("scores") or [])
        outputs = [b64_file(p) for p in paths]
        face_id = [[image, f"{score:.2f}"] for image, score in zip(outputs, scores, strict=False) if score is not None]
        message = INFER_DONE if job.state == "succeeded" else f"Interrupted ({job.state})."
        return {
            "message": message,
            "outputs": outputs,
            "face_id_outputs": face_id if req.display_score else [],
            "scores": scores,
            "job": job.id,
        }

    return await asyncio.to_thread(answer)
