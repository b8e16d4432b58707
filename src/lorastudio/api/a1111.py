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
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from lorastudio import __version__
from lorastudio.api.deps import get_studio
from lorastudio.errors import LorastudioError
from lorastudio.generate.samplers import SAMPLERS, SCHEDULE_TYPES, parse_sampler
from lorastudio.service.studio import InvalidRequest, Studio
from lorastudio.service.uploads import decode_image

__all__ = ["router", "Txt2ImgRequest", "Img2ImgRequest", "to_generate_config"]

router = APIRouter(prefix="/sdapi/v1", tags=["a1111"])

# A1111's defaults where the client sends nothing.
DEFAULT_SAMPLER = "Euler a"
# A1111 seeds: -1 (random) or 0..2**32-1, the range its random seeds are drawn from.
MAX_SEED = 2**32 - 1
# GenerateConfig fields -> the A1111 request field a client sent, for error messages.
_A1111_NAMES = {
    "strength": "denoising_strength",
    "hires_strength": "denoising_strength",
    "hires_scale": "hr_scale",
    "hires_steps": "hr_second_pass_steps",
    "count": "n_iter",
    "clip_skip": "CLIP_stop_at_last_layers",
    "sampler": "sampler_name",
    "schedule": "scheduler",
    "inpaint_padding": "inpaint_full_res_padding",
    "vae": "sd_vae",
    "model": "sd_model_checkpoint",
}
_NO_VAE = {"", "automatic", "none"}


class Txt2ImgRequest(BaseModel):
    """A1111's txt2img fields that lorastudio reads; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=(), allow_inf_nan=False)

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1 = random; else 0..2**32-1 as in A1111.")
    subseed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed_strength: float = Field(0.0, ge=0, le=1)
    seed_resize_from_h: int = Field(-1, ge=-1, le=4096)
    seed_resize_from_w: int = Field(-1, ge=-1, le=4096)
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=1000)
    steps: int = Field(50, ge=1, le=500)
    cfg_scale: float = Field(7.0, ge=0, le=50)
    width: int = Field(512, ge=8, le=8192)
    height: int = Field(512, ge=8, le=8192)
    restore_faces: bool | None = None
    tiling: bool | None = None
    enable_hr: bool = False
    hr_scale: float = Field(2.0, ge=0, le=4)
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = Field(0, ge=0, le=500)
    hr_resize_x: int = Field(0, ge=0, le=16384)
    hr_resize_y: int = Field(0, ge=0, le=16384)
    denoising_strength: float | None = Field(None, ge=0, le=1)
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    send_images: bool = True
    save_images: bool = False
    script_name: str | None = None  # "x/y/z plot" (api/a1111_scripts.py)
    script_args: list[Any] | dict[str, Any] = Field(default_factory=list)


class Img2ImgRequest(Txt2ImgRequest):
    """txt2img fields plus the init image, mask and inpainting options."""

    init_images: list[str] | None = None
    mask: str | None = None
    resize_mode: int = Field(0, ge=0, le=3)
    denoising_strength: float | None = Field(0.75, ge=0, le=1)
    mask_blur: int | None = Field(4, ge=0, le=64)
    # None: "original", what lorastudio did before it was read
    inpainting_fill: int | None = Field(None, ge=0, le=3)
    inpaint_full_res: bool | int = True
    inpaint_full_res_padding: int = Field(0, ge=0, le=512)
    inpainting_mask_invert: int = 0
    include_init_images: bool = False


class OptionsRequest(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    sd_model_checkpoint: str | None = None


class PngInfoRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    image: str


class ExtraSingleImageRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    image: str
    resize_mode: int = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2.0, gt=0, le=8)
    upscaling_resize_w: int = Field(512, ge=1, le=16384)
    upscaling_resize_h: int = Field(512, ge=1, le=16384)
    upscaler_1: str | None = "None"


# --- request mapping ----------------------------------------------------------------------


def _schedule_of(scheduler: str | None) -> str | None:
    """A1111 scheduler names ("karras", "sgm_uniform") -> our schedule types; "automatic" = none given."""
    if not scheduler:
        return None
    wanted = scheduler.strip().lower().replace("_", " ").replace("-", " ")
    if wanted == "automatic":
        return None
    for name in SCHEDULE_TYPES:
        if name.lower() == wanted:
            return name
    raise LorastudioError(
        f"scheduler {scheduler!r}: not supported; use one of: {', '.join(_scheduler_name(s) for s in SCHEDULE_TYPES)}."
    )


def _scheduler_name(label: str) -> str:
    return label.lower().replace(" ", "_")


def _size(value: int, what: str) -> int:
    """A1111 accepts any size and works in multiples of 8; so do we (at least 64)."""
    return max(64, min(4096, int(value) // 8 * 8))


def to_generate_config(
    req: Txt2ImgRequest,
    studio: Studio,
    init_image: str | None = None,
    mask: str | None = None,
    user: str = "",
):
    """An A1111 request -> a GenerateConfig whose images are upload names (this user's options)."""
    from pydantic import ValidationError

    overrides = studio.check_options(req.override_settings or {}, "override_settings")
    options = studio.options(user)
    checkpoint = overrides.get("sd_model_checkpoint")
    model = checkpoint or studio.model_for(user)
    clip_skip = overrides.get("CLIP_stop_at_last_layers", options.get("CLIP_stop_at_last_layers", 1))
    vae = overrides.get("sd_vae", options.get("sd_vae"))
    vae = None if str(vae or "").strip().lower() in _NO_VAE else str(vae)
    choice = parse_sampler(
        req.sampler_name or req.sampler_index or DEFAULT_SAMPLER, _schedule_of(req.scheduler)
    )
    width, height = _size(req.width, "width"), _size(req.height, "height")
    fields: dict[str, Any] = {
        "model": model,
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "steps": req.steps,
        "cfg_scale": req.cfg_scale,
        "sampler": choice.sampler,
        "schedule": choice.schedule,
        "seed": req.seed if req.seed >= 0 else -1,
        "subseed": req.subseed if req.subseed >= 0 else -1,
        "subseed_strength": req.subseed_strength,
        "seed_resize_from_w": max(0, req.seed_resize_from_w),
        "seed_resize_from_h": max(0, req.seed_resize_from_h),
        "width": width,
        "height": height,
        "batch_size": req.batch_size,
        "count": req.n_iter,
        "clip_skip": max(1, int(clip_skip or 1)),
        "vae": vae,
    }
    if isinstance(req, Img2ImgRequest):
        fields.update(
            init_image=init_image,
            strength=req.denoising_strength if req.denoising_strength is not None else 0.75,
            resize_mode=req.resize_mode,
        )
        if mask:
            fields.update(
                mask=mask,
                mask_blur=req.mask_blur if req.mask_blur is not None else 4,
                inpaint_only_masked=bool(req.inpaint_full_res),
                inpaint_padding=req.inpaint_full_res_padding,
            )
            if req.inpainting_fill is not None:
                fields["inpainting_fill"] = req.inpainting_fill
    elif req.enable_hr:
        scale = req.hr_scale
        if req.hr_resize_x or req.hr_resize_y:
            scale = max(req.hr_resize_x / width, req.hr_resize_y / height)
        upscaler = (req.hr_upscaler or "Latent").lower()
        fields.update(
            hires_scale=min(max(scale, 1.0), 4.0),
            hires_steps=req.hr_second_pass_steps,
            hires_strength=req.denoising_strength if req.denoising_strength is not None else 0.7,
            hires_upscaler="Latent" if upscaler.startswith("latent") else "Lanczos",
        )
    try:
        return _validated_config(fields)
    except ValidationError as exc:
        raise _in_a1111_names(exc) from None


def _validated_config(fields: dict[str, Any]):
    from lorastudio.generate.config import GenerateConfig

    return GenerateConfig.model_validate(fields)


def _in_a1111_names(exc) -> LorastudioError:
    """A GenerateConfig limit a mapped A1111 request broke, as one line naming the A1111 field."""
    error = exc.errors(include_url=False)[0]
    field = str(error["loc"][0]) if error.get("loc") else ""
    return InvalidRequest(f"{_A1111_NAMES.get(field, field) or 'request'}: {error['msg']}.")


def _png_upload(studio: Studio, data: str, what: str, mask: bool = False, invert: bool = False) -> str:
    from PIL import ImageOps

    image, _ = decode_image(data, what)
    if mask:
        if image.mode in ("RGBA", "LA") and image.getextrema()[-1][0] < 255:
            image = image.getchannel("A")  # A1111 clients may paint the mask as alpha
        image = image.convert("L")
        if invert:
            image = ImageOps.invert(image)
    else:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return studio.save_upload(buffer.getvalue(), ".png")


def _b64_file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _info(
    req: Txt2ImgRequest, cfg, job, infotexts: list[str], seeds: list[int], studio: Studio
) -> dict[str, Any]:
    result = job.result or {}
    n = len(seeds)
    first_seed = seeds[0] if seeds else cfg.seed
    subseeds = _variation_seeds(infotexts) if cfg.subseed_strength > 0 else seeds
    return {
        "prompt": req.prompt,
        "all_prompts": [req.prompt] * n,
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * n,
        "seed": first_seed,
        "all_seeds": seeds,
        "subseed": subseeds[0] if subseeds else first_seed,
        "all_subseeds": subseeds,
        "subseed_strength": cfg.subseed_strength or 0,
        "width": cfg.width,
        "height": cfg.height,
        "sampler_name": cfg.sampler,
        "cfg_scale": cfg.cfg_scale,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": result.get("model", cfg.model),
        "sd_model_hash": result.get("model_hash"),
        "sd_vae_name": Path(cfg.vae).stem if cfg.vae else None,
        "sd_vae_hash": None,
        "seed_resize_from_w": cfg.seed_resize_from_w or -1,
        "seed_resize_from_h": cfg.seed_resize_from_h or -1,
        "denoising_strength": cfg.strength
        if cfg.init_image
        else (cfg.hires_strength if cfg.hires_scale > 1 else 0),
        "extra_generation_params": {"Schedule type": cfg.schedule}
        if cfg.schedule not in (None, "Automatic")
        else {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": req.styles or [],
        "job_timestamp": dt.datetime.fromtimestamp(job.created_at).strftime("%Y%m%d%H%M%S"),
        "clip_skip": cfg.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": f"lorastudio {__version__}",
    }


def _variation_seeds(infotexts: list[str]) -> list[int]:
    """Each image's "Variation seed" from its infotext (the subseeds the job resolved)."""
    from lorastudio.generate.infotext import parse_infotext

    values = [parse_infotext(text, fill_defaults=False).get("Variation seed") for text in infotexts]
    return [int(v) for v in values if v is not None]


async def _generate(req: Txt2ImgRequest, studio: Studio, user: str = "") -> dict[str, Any]:
    """Submit, wait without a thread, and answer the A1111 response."""
    if (req.script_name or "").strip():
        from lorastudio.api.a1111_scripts import run_script

        return await run_script(req, studio, user)

    def submit():
        init = mask = None
        studio.check_quota(user)  # before any image is stored; over quota: 429 (api.app)
        try:
            if isinstance(req, Img2ImgRequest):
                if not req.init_images:
                    raise LorastudioError("img2img: init_images is empty; send one base64 image.")
                init = _png_upload(studio, req.init_images[0], "init_images[0]")
                if req.mask:
                    mask = _png_upload(
                        studio, req.mask, "mask", mask=True, invert=bool(req.inpainting_mask_invert)
                    )
            cfg = to_generate_config(req, studio, init, mask, user=user)
            return cfg, studio.submit_generate(cfg, user=user)
        except BaseException:
            studio.discard_uploads([init, mask])  # a refused request leaves no files
            raise

    cfg, job = await asyncio.to_thread(submit)
    job = await studio.wait_job_async(job.id)
    if job.state == "failed":
        raise LorastudioError(f"generation failed: {job.error}")

    def answer() -> dict[str, Any]:
        paths = studio.job_images(job)
        infotexts, seeds = _read_infotexts(job, paths)
        images = [_b64_file(p) for p in paths] if req.send_images else []
        if isinstance(req, Img2ImgRequest) and req.include_init_images and req.init_images:
            images += [_strip_data_url(i) for i in req.init_images]
        parameters = req.model_dump()
        if isinstance(req, Img2ImgRequest) and not req.include_init_images:
            parameters.update(init_images=None, mask=None)
        info = _info(req, cfg, job, infotexts, seeds, studio)
        return {"images": images, "parameters": parameters, "info": json.dumps(info, ensure_ascii=False)}

    return await asyncio.to_thread(answer)


def _read_infotexts(job, paths: list[Path]) -> tuple[list[str], list[int]]:
    result = job.result or {}
    if result.get("infotexts") and len(result["infotexts"]) == len(paths):
        return list(result["infotexts"]), [int(s) for s in result.get("seeds", [])]
    from lorastudio.generate.infotext import parse_infotext, read_infotext

    texts = [read_infotext(p) or "" for p in paths]
    seeds = [int(parse_infotext(t).get("Seed", -1)) for t in texts]
    return texts, seeds


def _strip_data_url(data: str) -> str:
    return data.split(",", 1)[1] if data.startswith("data:") else data


def _user(request: Request) -> str:
    return str(getattr(request.state, "user", "") or "")


@router.post("/txt2img")
async def txt2img(
    req: Txt2ImgRequest, request: Request, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    return await _generate(req, studio, _user(request))


@router.post("/img2img")
async def img2img(
    req: Img2ImgRequest, request: Request, studio: Studio = Depends(get_studio)
) -> dict[str, Any]:
    return await _generate(req, studio, _user(request))


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
        for row in studio.models()
    ]


@router.post("/refresh-checkpoints")
def refresh_checkpoints(studio: Studio = Depends(get_studio)) -> None:
    studio.models()  # re-reads the models folder and records new files in the library
    return None


@router.get("/options")
def get_options(request: Request, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """This user's options: A1111's defaults overlaid with what they set (each user has their own)."""
    model = studio.model_for(_user(request))
    sha = next((row.get("sha256") for row in studio.models() if row["name"] == model), None)
    return {
        "sd_model_checkpoint": studio.model_title(model),
        "sd_checkpoint_hash": sha,
        "CLIP_stop_at_last_layers": 1,
        "sd_vae": "Automatic",
        "samples_format": "png",
        "outdir_samples": "",
        "show_progress_every_n_steps": 0,
        **studio.options(_user(request)),
    }


@router.post("/options")
def set_options(req: OptionsRequest, request: Request, studio: Studio = Depends(get_studio)) -> None:
    """Options of this user only, validated before they are kept: `sd_model_checkpoint` (their
    default model), `sd_vae`, `CLIP_stop_at_last_layers`; others are kept and echoed, size-capped."""
    studio.update_options(req.model_dump(exclude_none=True), user=_user(request))
    return None


@router.get("/cmd-flags")
def cmd_flags(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    return {"api": True, "nowebui": True, "device": studio.settings.device}


# --- progress and control -----------------------------------------------------------------


@router.get("/progress")
def progress(skip_current_image: bool = False, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """The running job's progress; idle is exactly progress 0.0 and job_count 0."""
    state = studio.progress_state()
    started = state["started_at"]
    return {
        "progress": state["progress"] if state["job"] else 0.0,
        "eta_relative": float(state["eta"] or 0.0),
        "state": {
            "skipped": False,
            "interrupted": False,
            "job": state["job"] or "",
            "job_count": state["job_count"],
            "job_timestamp": dt.datetime.fromtimestamp(started).strftime("%Y%m%d%H%M%S") if started else "0",
            "job_no": 0,
            "sampling_step": state["step"],
            "sampling_steps": state["steps"],
        },
        "current_image": None if skip_current_image else state.get("preview"),
        "textinfo": f"{state['kind']} job {state['job']}" if state["job"] else None,
    }


@router.post("/interrupt")
def interrupt(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Stop the running generation; its request answers with the images made so far."""
    studio.interrupt()
    return {}


@router.post("/skip")
def skip(studio: Studio = Depends(get_studio)) -> None:
    """Drop the running generation's current batch (n_iter) at its next step and go on with the next."""
    studio.skip()
    return None


# --- lists --------------------------------------------------------------------------------


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    return [{"name": name, "aliases": list(spec.aliases), "options": {}} for name, spec in SAMPLERS.items()]


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    return [
        {
            "name": _scheduler_name(label),
            "label": label,
            "aliases": None,
            "default_rho": -1,
            "need_inner_model": False,
        }
        for label in SCHEDULE_TYPES
    ]


@router.get("/upscalers")
def upscalers() -> list[dict[str, Any]]:
    return [
        {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": scale}
        for name, scale in (("None", 1), ("Lanczos", 4), ("Nearest", 4))
    ]


@router.get("/latent-upscale-modes")
def latent_upscale_modes() -> list[dict[str, Any]]:
    return [{"name": "Latent"}]


@router.get("/loras")
def loras(studio: Studio = Depends(get_studio)) -> list[dict[str, Any]]:
    from lorastudio.service.loras import list_lora_files

    return [
        {
            "name": row["name"],
            "alias": row["metadata"].get("ss_output_name") or row["name"],
            "path": f"loras/{row['file']}",
            "metadata": row["metadata"],
        }
        for row in list_lora_files(studio.workspace)
    ]


@router.post("/refresh-loras")
def refresh_loras() -> None:
    return None  # LoRAs are read from the folder on every request


@router.get("/embeddings")
def embeddings(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """A1111's shape: readable files under `loaded`, unreadable ones under `skipped`."""
    from lorastudio.service.embeddings import list_embeddings

    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for row in list_embeddings(studio.workspace):
        unread = row["error"] is not None
        entry = {
            "step": None,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
            "shape": None if unread else row["shape"],
            "vectors": 0 if unread else row["vectors"],
        }
        (skipped if unread else loaded)[row["name"]] = entry
    return {"loaded": loaded, "skipped": skipped}


@router.get("/sd-vae")
def sd_vae() -> list[dict[str, Any]]:
    return []


@router.get("/hypernetworks")
def hypernetworks() -> list[dict[str, Any]]:
    return []


@router.get("/face-restorers")
def face_restorers() -> list[dict[str, Any]]:
    return []


@router.get("/realesrgan-models")
def realesrgan_models() -> list[dict[str, Any]]:
    return []


@router.get("/prompt-styles")
def prompt_styles() -> list[dict[str, Any]]:
    return []


@router.get("/scripts")
def scripts() -> dict[str, list[str]]:
    """The x/y/z plot only: listing controlnet/adetailer would make clients send their arguments."""
    from lorastudio.api.a1111_scripts import SCRIPTS

    return {mode: list(names) for mode, names in SCRIPTS.items()}


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
    """The generation parameters stored in an image (PNG chunk or EXIF), raw and parsed."""
    from lorastudio.generate.infotext import parse_infotext

    image, _ = decode_image(req.image, "image")
    text = image.info.get("parameters")
    if not text:
        exif = image.getexif().get_ifd(0x8769).get(0x9286)
        if exif:
            from lorastudio.generate.infotext import decode_user_comment

            text = decode_user_comment(bytes(exif)) if not isinstance(exif, str) else exif
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="ignore")
    items = {k: v for k, v in image.info.items() if isinstance(v, str) and k != "parameters"}
    return {"info": text or "", "items": items, "parameters": parse_infotext(text) if text else {}}


@router.post("/extra-single-image")
def extra_single_image(req: ExtraSingleImageRequest, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Resize an image with Lanczos or Nearest (the upscalers lorastudio has)."""
    from PIL import Image

    image, _ = decode_image(req.image, "image")
    if req.resize_mode == 1:
        size = (req.upscaling_resize_w, req.upscaling_resize_h)
    else:
        size = (round(image.width * req.upscaling_resize), round(image.height * req.upscaling_resize))
    if min(size) < 1:
        raise InvalidRequest(f"upscaling_resize: target size {size[0]}x{size[1]} is out of range.")
    studio.check_output_pixels(size[0], size[1], f"upscaled size {size[0]}x{size[1]}")
    upscaler = (req.upscaler_1 or "None").lower()
    if upscaler not in ("none", "lanczos", "nearest"):
        raise LorastudioError(f"upscaler {req.upscaler_1!r}: not available; use Lanczos or Nearest.")
    method = Image.Resampling.NEAREST if upscaler == "nearest" else Image.Resampling.LANCZOS
    out = image.convert("RGB").resize(size, method)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    return {"html_info": "", "image": base64.b64encode(buffer.getvalue()).decode("ascii")}
