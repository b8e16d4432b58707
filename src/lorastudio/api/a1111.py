"""The AUTOMATIC1111-compatible subset, `/sdapi/v1`, so existing clients (webuiapi, bots,
plugins) work unchanged. See docs/API.md for what each route supports.

Generation routes are synchronous for the client but go through the job queue: the
request becomes a `generate` job and the route waits for it without holding a thread,
so one generation runs at a time per device and `/progress` keeps answering.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from lorastudio.api.a1111_controlnet import parse_units, store_units
from lorastudio.api.a1111_options import model_title, options_of
from lorastudio.api.a1111_requests import (  # noqa: F401  (Txt2ImgRequest etc. keep their old import path)
    Img2ImgRequest,
    Txt2ImgRequest,
    a1111_info,
    answer_when_done,
    b64_file,
    scheduler_name,
    to_generate_config,
)
from lorastudio.api.deps import get_studio, owner_to_check, request_user
from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.service.a1111 import (
    CHOICE_OPTIONS,
    FLAG_OPTIONS,
    NUMBER_OPTIONS,
    SCHEDULE_TYPES,
    sampler_names,
)
from lorastudio.service.extras import extras_png
from lorastudio.service.generation import RESTORE_FACES_NOTE
from lorastudio.service.models import list_vaes, titled_models
from lorastudio.service.png_info import image_seeds
from lorastudio.service.studio import Studio
from lorastudio.service.uploads import decode_image, store_image
from lorastudio.service.upscalers import REAL_ESRGAN_TITLES, list_upscalers

__all__ = ["router", "Txt2ImgRequest", "Img2ImgRequest", "to_generate_config"]

router = APIRouter(prefix="/sdapi/v1", tags=["a1111"])


class OptionsRequest(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    sd_model_checkpoint: str | None = None


class PngInfoRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    image: str


class ExtrasRequest(BaseModel):
    """A1111's Extras upscaling fields (face restoration fields are accepted and ignored)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    resize_mode: int = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2.0, gt=0, le=8)
    upscaling_resize_w: int = Field(512, ge=1, le=16384)
    upscaling_resize_h: int = Field(512, ge=1, le=16384)
    upscaling_crop: bool = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: float = Field(0.0, ge=0, le=1)


class ExtraSingleImageRequest(ExtrasRequest):
    image: str


class ExtraBatchImage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    data: str
    name: str = ""


class ExtraBatchImagesRequest(ExtrasRequest):
    imageList: list[ExtraBatchImage] = Field(default_factory=list, max_length=64)  # noqa: N815 (A1111's name)


async def _generate(req: Txt2ImgRequest, studio: Studio, user: str = "") -> dict[str, Any]:
    """Submit, wait without a thread, and answer the A1111 response."""
    if (req.script_name or "").strip():
        from lorastudio.api.a1111_scripts import run_script

        return await run_script(req, studio, user)

    units = parse_units(req.alwayson_scripts)  # the units' shape, before anything is stored

    def submit():
        init = mask = None
        unit_uploads: list[str] = []
        studio.check_quota(user)  # before any image is stored; over quota: 429 (api.app)
        try:
            img2img = isinstance(req, Img2ImgRequest)
            if img2img:
                if not req.init_images:
                    raise LorastudioError("img2img: init_images is empty; send one base64 image.")
                if len(req.init_images) > 1:  # A1111 gives each its batch slot; never drop the others silently
                    raise LorastudioError(
                        f"img2img: {len(req.init_images)} init_images; lorastudio samples one init image"
                        " per request: send one request per image."
                    )
                init = store_image(studio.workspace, req.init_images[0], "init_images[0]")
                if req.mask:  # inpainting_mask_invert is the config's mask_invert (the infotext's Mask mode)
                    mask = store_image(studio.workspace, req.mask, "mask", mask=True)
            controlnet, unit_uploads = store_units(studio.workspace, units, img2img=img2img)
            cfg = to_generate_config(req, studio, init, mask, user=user, controlnet=controlnet)
            # as A1111: a LoRA this studio lacks is left out ("Lora not found"), the image still made
            notes = [RESTORE_FACES_NOTE] if req.restore_faces else []  # taken, not done: said so
            job = studio.submit_generate(
                cfg, user=user, missing_loras="skip", notes=notes, keep=req.save_images  # A1111: false keeps nothing
            )
        except BaseException:
            studio.discard_uploads([init, mask, *unit_uploads])  # a refused request leaves no files
            raise
        studio.hold_request_uploads(job, [init, mask, *unit_uploads])  # they go once answered
        return cfg, job

    cfg, job = await asyncio.to_thread(submit)
    return await answer_when_done(studio, job, "generation", lambda done: _answer(req, studio, cfg, done, units))


def _answer(req: Txt2ImgRequest, studio: Studio, cfg: GenerateConfig, job, units: list) -> dict[str, Any]:
    """A1111's answer of a finished generate job: the images (base64), the request and `info`."""
    paths = studio.job_images(job)
    infotexts, seeds = _read_infotexts(job, paths)
    images = [b64_file(p) for p in paths] if req.send_images else []
    if req.send_images:  # the units' maps after the images, as the ControlNet extension answers
        maps = studio.job_control_maps(job)
        images += [b64_file(p) for unit, p in zip(units, maps, strict=False) if unit.save_detected_map]
    if isinstance(req, Img2ImgRequest) and req.include_init_images and req.init_images:
        images += [_strip_data_url(i) for i in req.init_images]
    parameters = req.model_dump()
    if isinstance(req, Img2ImgRequest) and not req.include_init_images:
        parameters.update(init_images=None, mask=None)
    info = a1111_info(req, cfg, job, infotexts, seeds, studio)
    return {"images": images, "parameters": parameters, "info": json.dumps(info, ensure_ascii=False)}


def _read_infotexts(job, paths: list[Path]) -> tuple[list[str], list[int]]:
    result = job.result or {}
    if result.get("infotexts") and len(result["infotexts"]) == len(paths):
        return list(result["infotexts"]), [int(s) for s in result.get("seeds", [])]
    return image_seeds(paths)


def _strip_data_url(data: str) -> str:
    return data.split(",", 1)[1] if data.startswith("data:") else data


@router.post("/txt2img")
async def txt2img(
    req: Txt2ImgRequest, request: Request, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    return await _generate(req, studio, request_user(request))


@router.post("/img2img")
async def img2img(
    req: Img2ImgRequest, request: Request, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    return await _generate(req, studio, request_user(request))


# --- models and options -------------------------------------------------------------------


@router.get("/sd-models")
def sd_models(studio: Studio = Depends(get_studio)) -> list[dict[str, Any]]:
    return [
        {
            "title": row["title"],
            "model_name": row["name"],
            "hash": row.get("hash"),
            "sha256": row.get("sha256"),
            "filename": row["filename"],
            "config": None,
        }
        for row in titled_models(studio.workspace)
    ]


@router.post("/refresh-checkpoints")
def refresh_checkpoints(studio: Studio = Depends(get_studio)) -> None:
    titled_models(studio.workspace)  # re-reads the models folder and records new files in the library
    return None


@router.get("/options")
def get_options(request: Request, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """This user's options: A1111's defaults overlaid with what they set (each user has their own)."""
    options = options_of(studio)
    model = options.model_for(request_user(request))
    sha = next((row.get("sha256") for row in titled_models(studio.workspace) if row["name"] == model), None)
    return {
        "sd_model_checkpoint": model_title(studio, model),
        "sd_checkpoint_hash": sha,
        "CLIP_stop_at_last_layers": 1,
        **{option: GenerateConfig.model_fields[field].default for option, field in FLAG_OPTIONS.items()},
        **{option: default for option, (_, _, default) in CHOICE_OPTIONS.items()},
        **{option: GenerateConfig.model_fields[field].default for option, field in NUMBER_OPTIONS.items()},
        "sd_vae": "Automatic",
        "samples_format": "png",
        "outdir_samples": "",
        "show_progress_every_n_steps": 0,
        **options.options(request_user(request)),
    }


@router.post("/options")
def set_options(req: OptionsRequest, request: Request, studio: Studio = Depends(get_studio)) -> None:
    """Options of this user only, validated before they are kept: `sd_model_checkpoint` (their
    default model), `sd_vae`, `CLIP_stop_at_last_layers`; others are kept and echoed, size-capped."""
    options_of(studio).update(req.model_dump(exclude_none=True), user=request_user(request))
    return None


@router.get("/cmd-flags")
def cmd_flags(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    return {"api": True, "nowebui": True, "device": studio.settings.device}


# --- progress and control -----------------------------------------------------------------


@router.get("/progress")
def progress(
    request: Request, skip_current_image: bool = False, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    """The caller's running job's progress (with auth off, the running job); idle is exactly progress 0.0 and job_count 0."""
    state = studio.progress_state(owner_to_check(request))  # auth off: whatever runs, as in A1111
    started = state["started_at"]
    # A1111 counts steps per batch (job_no = the batch running); ours count the whole request's
    per_batch = max(1, state["steps"] // max(1, state["batches"]))
    batch = min(state["step"] // per_batch, state["batches"] - 1) if state["steps"] else 0
    return {
        "progress": state["progress"] if state["job"] else 0.0,
        "eta_relative": float(state["eta"] or 0.0),
        "state": {
            "skipped": state["skipped"],
            "interrupted": state["interrupted"],
            "job": state["job"] or "",
            "job_count": state["job_count"],
            "job_timestamp": dt.datetime.fromtimestamp(started).strftime("%Y%m%d%H%M%S") if started else "0",
            "job_no": batch,
            "sampling_step": state["step"] - batch * per_batch if state["steps"] else 0,
            "sampling_steps": per_batch if state["steps"] else 0,
        },
        "current_image": None if skip_current_image else state.get("preview"),
        "textinfo": f"{state['kind']} job {state['job']}" if state["job"] else None,
    }


@router.post("/interrupt")
def interrupt(request: Request, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Stop the caller's running generation; its request answers with the images made so far."""
    studio.interrupt(owner_to_check(request))
    return {}


@router.post("/skip")
def skip(request: Request, studio: Studio = Depends(get_studio)) -> None:
    """Drop the caller's running generation's current batch (n_iter) at its next step; go on with the next."""
    studio.skip(owner_to_check(request))
    return None


# --- lists --------------------------------------------------------------------------------


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    return [{"name": name, "aliases": aliases, "options": {}} for name, aliases in sampler_names()]


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    return [
        {
            "name": scheduler_name(label),
            "label": label,
            "aliases": None,
            "default_rho": -1,
            "need_inner_model": False,
        }
        for label in SCHEDULE_TYPES
    ]


@router.get("/upscalers")
def upscalers(studio: Studio = Depends(get_studio)) -> list[dict[str, Any]]:
    """The filters and the model upscalers in studio/models/upscalers, in A1111's rows."""
    keys = ("name", "model_name", "model_path", "model_url", "scale")
    return [{key: row[key] for key in keys} for row in list_upscalers(studio.workspace) if row["kind"] != "latent"]


@router.get("/latent-upscale-modes")
def latent_upscale_modes(studio: Studio = Depends(get_studio)) -> list[dict[str, Any]]:
    return [{"name": row["name"]} for row in list_upscalers(studio.workspace) if row["kind"] == "latent"]


@router.get("/loras")
def loras(studio: Studio = Depends(get_studio)) -> list[dict[str, Any]]:
    from lorastudio.service.loras import lora_file_rows

    return [
        {
            "name": row["name"],
            "alias": row["metadata"].get("ss_output_name") or row["name"],
            "path": f"loras/{row['file']}",
            "metadata": row["metadata"],
        }
        for row in lora_file_rows(studio.workspace)
    ]


@router.post("/refresh-loras")
def refresh_loras() -> None:
    return None  # LoRAs are read from the folder on every request


@router.get("/embeddings")
def embeddings(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """A1111's shape: readable files under `loaded`, unreadable ones under `skipped`; the step and
    checkpoint an A1111 file recorded (kept as metadata when it was imported). One entry per word,
    as A1111 keeps: a file whose word another file answers to is left out."""
    from lorastudio.service.embeddings import list_embeddings

    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for row in list_embeddings(studio.workspace):
        if row.get("shadowed_by"):
            continue
        unread = row["error"] is not None
        facts = row["metadata"]
        step = str(facts.get("step", ""))
        entry = {
            "step": int(step) if step.isdigit() else None,
            "sd_checkpoint": facts.get("sd_checkpoint"),
            "sd_checkpoint_name": facts.get("sd_checkpoint_name"),
            "shape": None if unread else row["shape"],
            "vectors": 0 if unread else row["vectors"],
        }
        (skipped if unread else loaded)[row["name"]] = entry
    return {"loaded": loaded, "skipped": skipped}


@router.get("/sd-vae")
def sd_vae(studio: Studio = Depends(get_studio)) -> list[dict[str, Any]]:
    """Separate VAEs in models/ (`sd_vae` / `vae` take the name); A1111's shape."""
    return [{"model_name": row["name"], "filename": row["file"]} for row in list_vaes(studio.workspace)]


@router.get("/hypernetworks")
def hypernetworks() -> list[dict[str, Any]]:
    return []


@router.get("/face-restorers")
def face_restorers() -> list[dict[str, Any]]:
    return []


@router.get("/realesrgan-models")
def realesrgan_models(studio: Studio = Depends(get_studio)) -> list[dict[str, Any]]:
    """The Real-ESRGAN releases in studio/models/upscalers, by their A1111 titles."""
    return [
        {"name": row["name"], "path": row["model_path"], "scale": row["scale"]}
        for row in list_upscalers(studio.workspace)
        if row["kind"] == "model" and row["name"] in REAL_ESRGAN_TITLES.values()
    ]


@router.get("/prompt-styles")
def prompt_styles(studio: Studio = Depends(get_studio)) -> list[dict[str, Any]]:
    """The styles of studio/styles.csv (A1111's file, copied in), as A1111 lists them."""
    from lorastudio.service.styles import list_styles

    return [
        {"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
        for s in list_styles(studio.workspace)
    ]


@router.get("/scripts")
def scripts() -> dict[str, list[str]]:
    """The x/y/z plot and ControlNet (`controlnet`, and `controlnet m2m`, which webuiapi looks for
    before it sends units); not adetailer & co., whose arguments clients would then send in vain."""
    from lorastudio.api.a1111_scripts import LISTED_SCRIPTS

    return {mode: list(names) for mode, names in LISTED_SCRIPTS.items()}


@router.get("/script-info")
def script_info() -> list[dict[str, Any]]:
    from lorastudio.api.a1111_scripts import script_info

    return script_info()


@router.get("/memory")
def memory() -> dict[str, Any]:
    """RAM from the OS; CUDA memory only when torch is already loaded (this route never loads it)."""
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
    total = os.sysconf("SC_PHYS_PAGES") * page if page else 0
    free = os.sysconf("SC_AVPHYS_PAGES") * page if page else 0
    result: dict[str, Any] = {"ram": {"free": free, "used": total - free, "total": total}}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        free_b, total_b = torch.cuda.mem_get_info()
        result["cuda"] = {"system": {"free": free_b, "used": total_b - free_b, "total": total_b}}
    else:
        result["cuda"] = {"error": "no CUDA device in use"}
    return result


# --- images -------------------------------------------------------------------------------


@router.post("/png-info")
def png_info(req: PngInfoRequest) -> dict[str, Any]:
    """The generation parameters stored in an image (EXIF, PNG chunk or GIF comment), raw and parsed."""
    from lorastudio.service.png_info import png_info as read_png_info

    image, _ = decode_image(req.image, "image", as_shown=False)  # size limits before anything is read
    return read_png_info(image)


def _extras(image, req: ExtrasRequest, studio: Studio) -> tuple[str, str]:
    """One picture through A1111's Extras upscaling: (base64 PNG, html_info) (service.extras)."""
    import html

    png, keys = extras_png(
        image,
        studio.settings,
        studio.workspace,
        scale=req.upscaling_resize,
        size=(req.upscaling_resize_w, req.upscaling_resize_h) if req.resize_mode == 1 else None,
        crop=req.upscaling_crop,
        upscaler=req.upscaler_1,
        upscaler_2=req.upscaler_2,
        upscaler_2_visibility=req.extras_upscaler_2_visibility,
    )
    return base64.b64encode(png).decode("ascii"), f"<p>{html.escape(keys)}</p>"


@router.post("/extra-single-image")
def extra_single_image(req: ExtraSingleImageRequest, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Upscale one image with a filter or a model upscaler (service.extras)."""
    image, _ = decode_image(req.image, "image")
    encoded, html_info = _extras(image, req, studio)
    return {"html_info": html_info, "image": encoded}


@router.post("/extra-batch-images")
def extra_batch_images(req: ExtraBatchImagesRequest, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Upscale every image of `imageList` the same way (A1111's answer: `images`, base64 PNGs)."""
    images = [decode_image(item.data, f"imageList[{i}].data")[0] for i, item in enumerate(req.imageList)]
    answers = [_extras(image, req, studio) for image in images]
    return {"html_info": answers[-1][1] if answers else "", "images": [encoded for encoded, _ in answers]}
