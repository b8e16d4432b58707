"""The generation request: one typed model used by the CLI, the API, recipes and the UI.

The sampling settings (steps, CFG scale, sampler, seed) are also part of training configs
(samples during training, DreamBooth class images, the scoring sheet); they are declared
once here as `Annotated` types carrying the description and the bounds every user shares.
A model adds tighter bounds of its own where it has them (`Field(20, le=500)`).
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from lorastudio.config import StrictModel
from lorastudio.errors import LorastudioError
from lorastudio.generate.control_units import MAX_CONTROL_UNITS, ControlUnit
from lorastudio.generate.samplers import SCHEDULE_TYPES, find_schedule
from lorastudio.generate.upscalers.names import FIXED_UPSCALERS, fixed_upscaler

__all__ = ["HIRES_UPSCALERS", "MAX_CONTROL_UNITS", "RNG_SOURCES", "RngSource", "ControlUnit", "GenerateConfig", "SamplingSteps", "CfgScale", "SamplerName", "SamplingSeed", "hires_final_size", "hires_target", "request_size", "size_from_picture", "snap_size"]

MIN_SIZE, MAX_SIZE = 64, 4096  # pixels per side of a generated image


def snap_size(value: float) -> int:
    """A size A1111 would work at: a multiple of 8 (rounded down), 64 to 4096. For a size a client
    sends in A1111's dialect and for a picture's own size taken as the request's."""
    return max(MIN_SIZE, min(MAX_SIZE, int(value) // 8 * 8))


def request_size(cfg: GenerateConfig, native: int, picture: tuple[int, int] | None) -> tuple[int, int]:
    """The size a request samples at (`picture`: its init picture's size as shown).

    An init picture sampled whole (`follows_picture`) fills what the request leaves blank: both
    sides, its own size, as A1111's "auto detect size" and ComfyUI's VAE Encode do, so a photo is
    not squashed into the model's square (scaled down as a whole where a side is over 4096 px);
    one side, the other from the picture's aspect ratio. Snapped to 8. Otherwise what the request
    says, and the model's native size for a blank side ("only masked" inpainting cuts out its
    region and samples it at the model's size, its point).
    """
    if picture is None or not cfg.follows_picture:
        return cfg.width or native, cfg.height or native
    width, height = picture
    if cfg.width is not None:
        return cfg.width, snap_size(cfg.width * height / width)
    if cfg.height is not None:
        return snap_size(cfg.height * width / height), cfg.height
    return size_from_picture(picture)


def size_from_picture(picture: tuple[int, int]) -> tuple[int, int]:
    """The size a picture alone asks for: its own, snapped to 8, scaled as a whole above 4096.

    Also how a recipe's size is recognised as the picture's own (an inpainted photo regenerated
    from its infotext comes back at the photo's size, as the first time).
    """
    width, height = picture
    scale = min(1.0, MAX_SIZE / max(picture))
    return snap_size(width * scale), snap_size(height * scale)


def hires_target(cfg: GenerateConfig, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where a first pass of `width` x `height` is upscaled to, and how many latent columns and
    rows are then cut off (centred) to make the second pass's size, as A1111 computes them.

    By the factor: both sides times it. Resize to one side: the other from the aspect ratio. Resize
    to both: upscaled to cover them, then cropped to them (A1111's `truncate_x/y`). Multiples of 8.
    """
    x, y = cfg.hires_resize_x, cfg.hires_resize_y
    if not x and not y:
        return (int(width * cfg.hires_scale) // 8 * 8, int(height * cfg.hires_scale) // 8 * 8), (0, 0)
    if not y or (x and width / height < x / y):
        upscaled = (x, x * height // width)
    else:
        upscaled = (y * width // height, y)
    upscaled = (upscaled[0] // 8 * 8, upscaled[1] // 8 * 8)
    crop = (max(0, (upscaled[0] - x) // 8), max(0, (upscaled[1] - y) // 8)) if x and y else (0, 0)
    final = (upscaled[0] - 8 * crop[0], upscaled[1] - 8 * crop[1])
    if min(final) < MIN_SIZE:
        raise LorastudioError(
            f"hires fix: resizing {width}x{height} to {x}x{y} makes a {final[0]}x{final[1]} image; "
            f"give a resize of at least {MIN_SIZE} px a side."
        )
    return upscaled, crop


def hires_final_size(cfg: GenerateConfig, width: int, height: int) -> tuple[int, int]:
    """The size a hires pass samples at and the image comes out at."""
    (up_w, up_h), (crop_x, crop_y) = hires_target(cfg, width, height)
    return up_w - 8 * crop_x, up_h - 8 * crop_y


SamplingSteps = Annotated[
    int, Field(ge=1, description="Sampling steps (denoising iterations); A1111 'Steps'.")
]
CfgScale = Annotated[
    float,
    Field(description="Classifier-free guidance scale: how strongly the prompt steers the image; A1111 'CFG scale'."),
]
# Upscalers of the hires fix's first pass that need no file (written as A1111 spells them in
# infotexts); any other name is a model upscaler in studio/models/upscalers, checked by the service.
HIRES_UPSCALERS: tuple[str, ...] = FIXED_UPSCALERS

SamplerName = Annotated[
    str, Field(description="A1111 sampler name, e.g. 'Euler a' or 'DPM++ 2M Karras'.")
]
# A1111's "Random number generator source" (`randn_source`, infotext `RNG`); `generate.noise` draws them.
RngSource = Literal["CPU", "GPU", "NV"]
RNG_SOURCES: tuple[str, ...] = get_args(RngSource)
# A1111's UniPC options `uni_pc_variant` and `uni_pc_skip_type` (`generate.unipc`).
UniPCVariant = Literal["bh1", "bh2", "vary_coeff"]
UNIPC_VARIANTS: tuple[str, ...] = get_args(UniPCVariant)  # generate.unipc spells them in its errors too
UniPCSkipType = Literal["time_uniform", "time_quadratic", "logSNR"]
UNIPC_SKIP_TYPES: tuple[str, ...] = get_args(UniPCSkipType)
SamplingSeed = Annotated[
    int, Field(description="Seed of the first image; image i of a batch uses seed + i (-1 = random).")
]


class GenerateConfig(StrictModel):
    model: str = Field(
        "tiny-sd15", description="Library name, path to a .safetensors/diffusers folder, or hub id."
    )
    prompt: str = Field(
        "", description="Prompt in A1111 syntax: (word:1.2), [from:to:0.5], <lora:name:0.8>, BREAK."
    )
    negative_prompt: str = Field("", description="Negative prompt (same syntax).")
    steps: SamplingSteps = Field(20, le=500)
    cfg_scale: CfgScale = Field(7.0, ge=0, le=50)
    sampler: SamplerName = "Euler a"
    schedule: str | None = Field(
        None, description="Schedule type (Automatic, Karras, Exponential, SGM Uniform)."
    )
    eta: float = Field(
        0.0, ge=0, le=1, description="DDIM eta: fresh noise mixed in at each step (0 = deterministic); other samplers ignore it."
    )
    pad_conds: bool = Field(
        False,
        description="When the prompt and the negative prompt have different numbers of 75-token chunks, pad the"
        " shorter with empty chunks so both run in one UNet call (A1111's 'Pad prompt/negative prompt', infotext"
        " 'Pad conds': faster, other pictures); off, they run as two calls, as A1111 does by default.",
    )
    pad_conds_v0: bool = Field(
        False,
        description="A1111's pre-1.6 padding (infotext 'Pad conds v0', which A1111 sets on DDIM/PLMS images older"
        " webuis made): a shorter negative prompt repeats its last token vector to the prompt's length, a longer"
        " one is cut to it; one UNet call. Wins over pad_conds.",
    )
    old_prompt_editing: bool = Field(
        False,
        description="A1111's pre-1.6 prompt-editing timelines (infotext 'Old prompt editing timelines'): in"
        " [from:to:when] a value below 1 is a fraction of the steps and 1 or more a step number, written"
        " 1.0 or 1; the hires pass reads the first pass's timeline.",
    )
    seed: SamplingSeed = Field(-1, ge=-1)
    subseed: int = Field(
        -1, ge=-1, description="Variation seed (-1 = random); image i uses subseed + i, all share the seed."
    )
    subseed_strength: float = Field(
        0.0, ge=0, le=1, description="How far the noise moves from the seed to the variation seed (0 = off)."
    )
    seed_resize_from_w: int = Field(
        0, ge=0, le=4096, description="Draw the noise as for this width, centred (0 = off; needs both)."
    )
    seed_resize_from_h: int = Field(
        0, ge=0, le=4096, description="Draw the noise as for this height, centred (0 = off; needs both)."
    )
    rng: RngSource = Field(
        "CPU",
        description="Random number source of the noise (A1111's 'Random number generator source', infotext 'RNG'):"
        " CPU draws on torch's CPU generator, the same on every machine; NV draws NVIDIA's Philox numbers on the"
        " CPU, the noise a CUDA GPU makes; GPU draws on the CUDA device, and where there is none the NV numbers,"
        " which are what an NVIDIA GPU draws. An A1111 image without 'RNG' was made with GPU.",
    )
    ensd: int = Field(
        0,
        ge=0,
        le=2**32,
        description="Eta noise seed delta (A1111's 'eta_noise_seed_delta', infotext 'ENSD', 31337 for NAI-style"
        " images): the per-step noise of Euler a, DPM2 a, DPM++ 2S a, LCM and DDIM with eta comes from"
        " generators seeded with seed + ENSD instead of continuing the seed's (0 = off).",
    )
    old_step_noise: bool = Field(
        False,
        description="lorastudio's per-step noise before images wrote 'RNG' (infotext 'Old step noise'): a CPU"
        " generator seeded with seed + 1; set by the recipes of such images so they come back the same.",
    )
    unipc_order: int = Field(
        3,
        ge=1,
        le=50,
        description="UniPC's solver order (A1111's 'uni_pc_order', infotext 'UniPC order'); a pass of fewer steps"
        " runs at its step count's order.",
    )
    unipc_variant: UniPCVariant = Field(
        "bh1", description="UniPC's variant (A1111's 'uni_pc_variant', infotext 'UniPC variant'): bh1, bh2 or vary_coeff."
    )
    unipc_skip_type: UniPCSkipType = Field(
        "time_uniform",
        description="How UniPC spaces its steps (A1111's 'uni_pc_skip_type', infotext 'UniPC skip type'):"
        " time_uniform, time_quadratic or logSNR.",
    )
    unipc_lower_order_final: bool = Field(
        True,
        description="UniPC lowers its order on the last steps (A1111's 'uni_pc_lower_order_final', infotext"
        " 'UniPC lower order final').",
    )
    old_unipc: bool = Field(
        False,
        description="lorastudio's UniPC before it sampled as A1111 (infotext 'Old UniPC'): diffusers'"
        " UniPCMultistepScheduler with its defaults; set by the recipes of such images so they come back the same.",
    )
    width: int | None = Field(
        None,
        description="Width in pixels (multiple of 8); default: from the init image (its size, or its aspect "
        "ratio with the height), else the model's native size.",
    )
    height: int | None = Field(
        None,
        description="Height in pixels (multiple of 8); default: from the init image (its size, or its aspect "
        "ratio with the width), else the model's native size.",
    )
    batch_size: int = Field(1, ge=1, le=64, description="Images per batch.")
    count: int = Field(1, ge=1, le=1000, description="Number of batches (A1111 n_iter).")
    clip_skip: int = Field(1, ge=1, le=12, description="Stop at the N-th last text-encoder layer.")
    init_image: str | None = Field(None, description="img2img/inpaint source image path.")
    strength: float = Field(0.75, ge=0, le=1, description="img2img denoising strength.")
    resize_mode: int = Field(
        0,
        ge=0,
        le=3,
        description="Init image of another aspect: 0 just resize, 1 crop and resize, 2 resize and fill, "
        "3 just resize (latent upscale).",
    )
    mask: str | None = Field(None, description="Inpainting mask image (white = repaint).")
    mask_blur: int = Field(4, ge=0, le=64, description="Mask blur radius in pixels.")
    mask_invert: bool = Field(
        False, description="Repaint what the mask leaves black, keep the white (A1111's 'Inpaint not masked')."
    )
    inpainting_fill: int = Field(
        1,
        ge=0,
        le=3,
        description="Masked content: 0 fill (blurred colours), 1 original, 2 latent noise, 3 latent nothing.",
    )
    inpaint_only_masked: bool = Field(False, description="Inpaint only the masked region at full resolution.")
    inpaint_padding: int = Field(32, ge=0, le=512, description="Padding around the masked region, in pixels.")
    hires_scale: float = Field(1.0, ge=1.0, le=4.0, description="Hires fix upscale factor (1 = off).")
    hires_resize_x: int = Field(
        0, ge=0, le=MAX_SIZE,
        description="Hires fix: resize width to (0 = by the factor, or from the height and the aspect ratio); "
        "with both sides given the upscaled image is cropped to them, as A1111's 'Resize width to'.",
    )  # fmt: skip
    hires_resize_y: int = Field(0, ge=0, le=MAX_SIZE, description="Hires fix: resize height to (see hires_resize_x).")
    hires_steps: int = Field(0, ge=0, le=500, description="Hires second-pass steps (0 = same as steps).")
    hires_strength: float = Field(0.5, ge=0, le=1, description="Hires second-pass denoising strength.")
    hires_upscaler: str = Field(
        "Latent",
        description="A1111 upscaler name: a latent mode ('Latent', 'Latent (bicubic antialiased)', ...), "
        "'None', 'Lanczos', 'Nearest', or a model in studio/models/upscalers ('R-ESRGAN 4x+', '4x-UltraSharp').",
    )
    hires_sampler: str | None = Field(
        None,
        description="Hires pass sampler (A1111 'Hires sampler', e.g. 'DPM++ 2M'); none or 'Use same sampler' = the "
        "first pass's.",
    )
    hires_schedule: str | None = Field(
        None,
        description="Hires pass schedule type (A1111 'Hires schedule type'); none or 'Use same scheduler' = the "
        "first pass's.",
    )
    hires_prompt: str = Field(
        "", description="Hires pass prompt (A1111 'Hires prompt'; empty = the prompt); its <lora:...> tags must be the prompt's."
    )
    hires_negative_prompt: str = Field(
        "", description="Hires pass negative prompt (A1111 'Hires negative prompt'; empty = the negative prompt)."
    )
    initial_noise_multiplier: float = Field(
        1.0,
        ge=0,
        le=1.5,
        description="img2img: the seed's noise times this before it is added to the picture (A1111's setting"
        " 'Noise multiplier for img2img', infotext 'Noise multiplier'; 1 = as drawn).",
    )
    extra_noise: float = Field(
        0.0,
        ge=0,
        le=1,
        description="img2img and the hires fix: the seed's noise added once more, this many times, to the noised"
        " picture (A1111's setting 'Extra noise multiplier for img2img and hires fix', infotext 'Extra noise';"
        " 0 = off; keep it below the denoising strength).",
    )
    controlnet: list[ControlUnit] = Field(
        default_factory=list,
        max_length=MAX_CONTROL_UNITS,
        description=f"ControlNet units (up to {MAX_CONTROL_UNITS}), each a preprocessor + ControlNet + image.",
    )
    vae: str | None = Field(None, description="A separate VAE file or folder overriding the model's VAE.")
    device: str | None = Field(None, description="cuda, cuda:N or cpu (default: CUDA if present).")

    @property
    def hires_on(self) -> bool:
        """txt2img with a hires pass: a factor above 1 or a size to resize to (img2img has none)."""
        return (self.hires_scale > 1.0 or self.hires_resize_x > 0 or self.hires_resize_y > 0) and not self.init_image

    @property
    def follows_picture(self) -> bool:
        """A side left blank and an init picture sampled whole: the size comes from it (`request_size`)."""
        return (
            (self.width is None or self.height is None)
            and self.init_image is not None
            and not (self.mask is not None and self.inpaint_only_masked)
        )

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and (value < MIN_SIZE or value > MAX_SIZE or value % 8):
            raise ValueError(f"{value} must be a multiple of 8 between {MIN_SIZE} and {MAX_SIZE}")
        return value

    @field_validator("hires_resize_x", "hires_resize_y")
    @classmethod
    def _resize_or_off(cls, value: int) -> int:
        if 0 < value < MIN_SIZE:
            raise ValueError(f"{value}: use 0 (off) or at least {MIN_SIZE}")
        return value

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, value: str | None) -> str | None:
        # "sgm_uniform", "karras": A1111's API spellings are fine too
        if value is not None and find_schedule(value) is None:
            raise ValueError(f"not supported; use one of: {', '.join(SCHEDULE_TYPES)}")
        return value  # kept as written: recipes record the request as the user gave it

    @field_validator("rng", mode="before")
    @classmethod
    def _rng_any_case(cls, value: object) -> object:
        # "nv", "gpu": A1111's clients and X/Y/Z values are not always upper case
        return value.strip().upper() if isinstance(value, str) else value
    @field_validator("hires_sampler")
    @classmethod
    def _same_sampler_is_none(cls, value: str | None) -> str | None:
        # A1111's "Use same sampler" (its form's first choice, its infotext's default) is the first pass's
        text = (value or "").strip()
        return None if text.lower() in ("", "use same sampler") else text

    @field_validator("hires_schedule")
    @classmethod
    def _hires_schedule(cls, value: str | None) -> str | None:
        text = (value or "").strip()
        if text.lower() in ("", "use same scheduler"):
            return None
        if find_schedule(text) is None:
            raise ValueError(f"not supported; use 'Use same scheduler' or one of: {', '.join(SCHEDULE_TYPES)}")
        return text

    @field_validator("hires_upscaler")
    @classmethod
    def _known_upscaler(cls, value: str) -> str:
        # a model upscaler's name is checked against the workspace by the service
        name = fixed_upscaler(value) or value.strip()
        if not name:
            raise ValueError("choose an upscaler: " + ", ".join(HIRES_UPSCALERS) + " or a model upscaler's name")
        return name

    @model_validator(mode="after")
    def _mask_needs_image(self) -> GenerateConfig:
        if self.mask and not self.init_image:
            raise ValueError("a mask needs an init image (--init-image)")
        return self

    @property
    def total_images(self) -> int:
        return self.batch_size * self.count
