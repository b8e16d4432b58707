"""A1111 request bodies and their mapping onto `GenerateConfig`, through the one field table.

Imported by the routes (`api/a1111.py`) and the selectable scripts (`api/a1111_scripts.py`);
it imports neither, so the two no longer import each other. Which A1111 name means which
field, and what the A1111 API assumes for a missing one, is `generate/a1111_fields.py`
(reached through `service/a1111.py`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from lorastudio import __version__
from lorastudio.api.a1111_options import NO_VAE, options_of
from lorastudio.errors import LorastudioError
from lorastudio.service.a1111 import (
    A1111_FIELDS,
    CHOICE_OPTIONS,
    FLAG_OPTIONS,
    NUMBER_OPTIONS,
    SCHEDULE_TYPES,
    a1111_request_names,
    api_default,
    parse_sampler,
    schedule_label,
)
from lorastudio.service.limits import MAX_SEED
from lorastudio.service.png_info import infotext_parameters, variation_seeds
from lorastudio.service.studio import InvalidRequest, Studio
from lorastudio.service.styles import hires_styled

if TYPE_CHECKING:
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.jobs.store import Job

__all__ = [
    "DEFAULT_SAMPLER",
    "MAX_SEED",
    "Img2ImgRequest",
    "Txt2ImgRequest",
    "a1111_info",
    "scheduler_name",
    "to_generate_config",
]

# A1111's defaults where the client sends nothing.
DEFAULT_SAMPLER = "Euler"  # the `sampler_index` default of A1111's API models


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
    eta: float | None = Field(None, ge=0, le=1, description="DDIM eta (null = 0).")
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
    hr_sampler_name: str | None = None  # None or "Use same sampler": the first pass's
    hr_scheduler: str | None = None  # None or "Use same scheduler": the first pass's
    hr_prompt: str = ""  # "": the prompt
    hr_negative_prompt: str = ""
    denoising_strength: float | None = Field(None, ge=0, le=1)
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    send_images: bool = True
    save_images: bool = False
    script_name: str | None = None  # "x/y/z plot" (api/a1111_scripts.py)
    script_args: list[Any] | dict[str, Any] = Field(default_factory=list)
    # {"ControlNet": {"args": [unit, ...]}} (api/a1111_controlnet.py); other always-on scripts are not run
    alwayson_scripts: dict[str, Any] | None = None


class Img2ImgRequest(Txt2ImgRequest):
    """txt2img fields plus the init image, mask and inpainting options."""

    init_images: list[str] | None = None
    mask: str | None = None
    resize_mode: int = Field(0, ge=0, le=3)
    denoising_strength: float | None = Field(api_default("strength"), ge=0, le=1)
    mask_blur: int | None = Field(api_default("mask_blur"), ge=0, le=64)
    # A1111's API assumes 0 "fill" (its web form: 1 "original")
    inpainting_fill: int | None = Field(api_default("inpainting_fill"), ge=0, le=3)
    inpaint_full_res: bool | int = api_default("inpaint_only_masked")
    inpaint_full_res_padding: int = Field(api_default("inpaint_padding"), ge=0, le=512)
    inpainting_mask_invert: int = 0
    include_init_images: bool = False


# --- request mapping ----------------------------------------------------------------------


def _schedule_of(scheduler: str | None) -> str | None:
    """A1111 scheduler names ("karras", "sgm_uniform") -> our schedule types; "automatic" = none given."""
    if not scheduler or scheduler.strip().lower() == "automatic":
        return None
    try:
        return schedule_label(scheduler)
    except LorastudioError:
        names = ", ".join(scheduler_name(s) for s in SCHEDULE_TYPES)
        raise LorastudioError(f"scheduler {scheduler!r}: not supported; use one of: {names}.") from None


def scheduler_name(label: str) -> str:
    """A schedule type as A1111's API names it: "SGM Uniform" -> "sgm_uniform"."""
    return label.lower().replace(" ", "_")


def _carries(row, req: Txt2ImgRequest, mask: str | None) -> bool:
    """Whether this request mode reads the row's A1111 field (img2img strength, inpaint, hires)."""
    img2img = isinstance(req, Img2ImgRequest)
    return {
        "all": True,
        "img2img": img2img,
        "inpaint": img2img and bool(mask),
        "hires": not img2img and req.enable_hr,
    }[row.mode]


def _table_fields(req: Txt2ImgRequest, mask: str | None) -> dict[str, Any]:
    """Every plain field of the table: the request's value, converted, or the A1111 default."""
    fields: dict[str, Any] = {}
    for row in A1111_FIELDS:
        if row.field is None or row.request_name is None or row.special or not _carries(row, req, mask):
            continue
        value = getattr(req, row.request_name, None)
        if value is None:
            if row.api_default is None:
                continue
            value = row.api_default
        fields[row.field] = row.from_request(value) if row.from_request else value
    return fields


def to_generate_config(
    req: Txt2ImgRequest,
    studio: Studio,
    init_image: str | None = None,
    mask: str | None = None,
    user: str = "",
    controlnet: list | None = None,
) -> GenerateConfig:
    """An A1111 request -> a GenerateConfig whose images are upload names (this user's options).

    `controlnet`: the request's ControlUnits, their images already stored (api/a1111_controlnet.py).
    """
    from pydantic import ValidationError

    from lorastudio.generate.config import GenerateConfig

    user_options = options_of(studio)
    overrides = user_options.check(req.override_settings or {}, "override_settings")
    options = user_options.options(user)
    clip_skip = overrides.get("CLIP_stop_at_last_layers", options.get("CLIP_stop_at_last_layers", 1))
    vae = overrides.get("sd_vae", options.get("sd_vae"))
    choice = parse_sampler(
        req.sampler_name or req.sampler_index or DEFAULT_SAMPLER, _schedule_of(req.scheduler)
    )
    fields = _table_fields(req, mask)
    if req.styles:  # merged into the prompts the image records (A1111 puts them in its infotext too)
        from lorastudio.service.styles import apply_styles

        fields["prompt"], fields["negative_prompt"] = apply_styles(
            studio.workspace, fields.get("prompt") or "", fields.get("negative_prompt") or "", req.styles
        )
        fields.update(hires_styled(studio.workspace, fields, req.styles))
    fields.update(
        model=overrides.get("sd_model_checkpoint") or user_options.model_for(user),
        sampler=choice.sampler,
        schedule=choice.schedule,
        clip_skip=max(1, int(clip_skip or 1)),
        vae=None if str(vae or "").strip().lower() in NO_VAE else str(vae),
    )
    for option, field in FLAG_OPTIONS.items():
        fields[field] = overrides.get(option, options.get(option, GenerateConfig.model_fields[field].default)) is True
    for option, (field, _, default) in CHOICE_OPTIONS.items():
        fields[field] = overrides.get(option, options.get(option, default))
    for option, field in NUMBER_OPTIONS.items():  # A1111 settings that are request fields here
        value = overrides.get(option, options.get(option))
        if value is not None:
            fields[field] = value
    if controlnet:
        fields["controlnet"] = list(controlnet)
    if isinstance(req, Img2ImgRequest):
        fields["init_image"] = init_image
        if mask:
            fields["mask"] = mask
    elif req.enable_hr:
        if req.hr_resize_x or req.hr_resize_y:  # A1111: a size to resize to replaces the factor
            fields["hires_resize_x"], fields["hires_resize_y"] = req.hr_resize_x or 0, req.hr_resize_y or 0
        else:
            fields["hires_scale"] = min(max(req.hr_scale, 1.0), 4.0)
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
    return InvalidRequest(f"{a1111_request_names().get(field, field) or 'request'}: {error['msg']}.")


# --- the answer's "info" ------------------------------------------------------------------


def a1111_info(
    req: Txt2ImgRequest, cfg: GenerateConfig, job: Job, infotexts: list[str], seeds: list[int], studio: Studio
) -> dict[str, Any]:
    """A1111's `info` JSON of a generation answer."""
    result = job.result or {}
    n = len(seeds)
    first_seed = seeds[0] if seeds else cfg.seed
    subseeds = variation_seeds(infotexts) if cfg.subseed_strength > 0 else seeds
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
        "restore_faces": False,  # asked for or not, nothing here restores faces (`notes` says so)
        "face_restoration_model": None,
        "sd_model_name": result.get("model", cfg.model),
        "sd_model_hash": result.get("model_hash"),
        "sd_vae_name": Path(cfg.vae).stem if cfg.vae else None,
        "sd_vae_hash": None,
        "seed_resize_from_w": cfg.seed_resize_from_w or -1,
        "seed_resize_from_h": cfg.seed_resize_from_h or -1,
        "denoising_strength": cfg.strength
        if cfg.init_image
        else (cfg.hires_strength if cfg.hires_on else 0),
        "extra_generation_params": _extra_generation_params(cfg, infotexts),
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": req.styles or [],
        "job_timestamp": dt.datetime.fromtimestamp(job.created_at).strftime("%Y%m%d%H%M%S"),
        "clip_skip": cfg.clip_skip,
        "is_using_inpainting_conditioning": bool(result.get("inpainting_model")),  # a 9-channel model
        "version": f"lorastudio {__version__}",
        "notes": list(result.get("notes") or []),  # what the request asked for and did not get
    }


# infotext keys A1111 keeps in `extra_generation_params` (those the image states)
_EXTRA_KEYS = ("Hires sampler", "Hires schedule type", "Hires prompt", "Hires negative prompt", "Noise multiplier",
               "Extra noise")  # fmt: skip


def _extra_generation_params(cfg, infotexts: list[str]) -> dict[str, Any]:
    """The schedule type, the hires pass's own settings and the noise knobs the image states, and each
    ControlNet unit's `ControlNet N` line as the extension adds it."""
    extra: dict[str, Any] = {}
    if cfg.schedule not in (None, "Automatic"):
        extra["Schedule type"] = cfg.schedule
    if infotexts:
        params = infotext_parameters(infotexts[0], fill_defaults=False)
        extra.update({key: params[key] for key in _EXTRA_KEYS if key in params})
        if cfg.controlnet:
            extra.update({key: value for key, value in params.items() if key.startswith("ControlNet ")})
    return extra


def b64_file(path: Path) -> str:
    """A file's bytes as A1111 sends images: base64 text."""
    return base64.b64encode(path.read_bytes()).decode("ascii")


async def answer_when_done(studio: Any, job: Any, what: str, answer: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Wait for an A1111 request's job, then build its answer from the finished job. Its not-kept files
    (or a kept job's uploads) go once answered, whatever happened (service.unsaved)."""
    try:
        job = await studio.wait_job_async(job.id)
        if job.state == "failed":
            raise LorastudioError(f"{what} failed: {job.error}")
        return await asyncio.to_thread(answer, job)
    finally:
        await asyncio.to_thread(studio.release_job_files, job.id)
