"""One table for every generation field in A1111's dialects: infotext key, API request name.

`A1111_FIELDS` is the only place that maps `GenerateConfig` fields to AUTOMATIC1111's names,
both ways: the infotext writer (`infotext_params`), the recipe reader
(`config_fields_from_infotext`), the `/sdapi/v1` request mapping and its error names all loop
over it. A new generation option is one row here (plus its field in `GenerateConfig`).
The rows' readers are `generate.infotext_readers`, their writers (and `InfotextFacts`, what an
image states beyond its request) `generate.infotext_writers`; the defaults A1111 assumes for keys
an infotext leaves out are tables in `generate.infotext_defaults`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lorastudio.generate import unipc_fields as unipc
from lorastudio.generate.config import snap_size
from lorastudio.generate.infotext_readers import (
    read_denoising,
    read_flag,
    read_hires_resize,
    read_inpaint_area,
    read_masked_content,
    read_number,
    read_seed_resize,
    read_size,
    read_text,
    read_unless,
)
from lorastudio.generate.infotext_writers import (
    InfotextFacts,
    hires_resized,
    only_masked,
    write_denoising,
    write_extra_noise,
    write_hashes,
    write_hires_prompt,
    write_hires_sampler,
    write_hires_schedule,
    write_masked_content,
    write_noise_multiplier,
    write_version,
)
from lorastudio.generate.noise_fields import noise_source, read_old_step_noise, step_noise_drawn
from lorastudio.generate.samplers import schedule_label, takes_eta
from lorastudio.generate.upscalers.names import fixed_upscaler

__all__ = [
    "A1111_FIELDS",
    "A1111Field",
    "InfotextFacts",
    "a1111_request_names",
    "clip_skip_shown",
    "config_fields_from_infotext",
    "hires_upscaler_name",
    "infotext_params",
    "noise_source",
]


@dataclass(frozen=True)
class A1111Field:
    """One generation field in A1111's dialects: the infotext key and the API request name.

    `write(cfg, facts)` gives the infotext value (None: the key is left out); `read(params)`
    gives config fields from parsed infotext keys; `from_request` converts the request value.
    `mode` says when the A1111 request carries it (all, img2img, inpaint, hires) and
    `api_default` is what the A1111 API assumes when a client sends nothing (or null), where it
    differs from GenerateConfig's default.
    """

    field: str | None
    infotext_key: str | None = None
    request_name: str | None = None
    write: Callable[[Any, InfotextFacts], Any] | None = None
    read: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    from_request: Callable[[Any], Any] | None = None
    mode: str = "all"
    api_default: Any = None  # None: the API leaves the field to GenerateConfig
    special: bool = False  # the API front maps it itself (studio options, uploads, sampler, hires size)


def hires_upscaler_name(text: str | None) -> str:
    """A1111's hires upscaler name as lorastudio spells it: a latent mode or filter in its canonical
    spelling, any other name (a model upscaler, `R-ESRGAN 4x+`) as written; empty -> `Latent`."""
    text = str(text or "").strip()
    return fixed_upscaler(text) or text or "Latent"


def clip_skip_shown(value: object) -> bool:
    """A1111 writes `Clip skip` only above 1."""
    try:
        return float(value) > 1  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True


def _seed_of_request(value: int) -> int:
    return value if value >= 0 else -1


_F = A1111Field
# In infotext order: keys A1111 fixes come first (format_infotext sorts them), the others follow
# in this order. Per-dialect defaults are pinned here (API vs GenerateConfig): hires denoising
# 0.7 vs 0.5, inpaint padding 0 vs 32, only-masked True vs False.
A1111_FIELDS: tuple[A1111Field, ...] = (
    _F("prompt", None, "prompt"),
    _F("negative_prompt", None, "negative_prompt"),
    _F("steps", "Steps", "steps", lambda c, f: c.steps, read_number("Steps", "steps", int)),
    _F("sampler", "Sampler", "sampler_name", lambda c, f: f.sampler, read_text("Sampler", "sampler"), special=True),
    # ^ the raw name: "DPM++ 2M Karras" keeps its suffix, which wins over `Schedule type` (as A1111)
    _F(
        "schedule",
        "Schedule type",
        "scheduler",
        lambda c, f: None if f.schedule == "Automatic" else f.schedule,
        read_text("Schedule type", "schedule", schedule_label),
        special=True,
    ),
    _F("cfg_scale", "CFG scale", "cfg_scale", lambda c, f: c.cfg_scale, read_number("CFG scale", "cfg_scale", float)),
    _F("seed", "Seed", "seed", lambda c, f: f.seed, read_number("Seed", "seed", int), _seed_of_request),
    _F("width", "Size", "width", lambda c, f: f"{f.width}x{f.height}", read_size, snap_size),  # A1111 takes any size, works in 8s
    _F("height", None, "height", from_request=snap_size),
    _F(None, "Model hash", None, lambda c, f: f.model_hash),
    _F("model", "Model", "sd_model_checkpoint", lambda c, f: f.model_name, read_text("Model", "model"), special=True),
    _F(None, "VAE hash", None, lambda c, f: f.vae_hash),
    _F("vae", "VAE", "sd_vae", lambda c, f: f.vae_name, read_text("VAE", "vae"), special=True),
    _F(
        "subseed",
        "Variation seed",
        "subseed",
        lambda c, f: f.subseed if c.subseed_strength > 0 else None,
        read_number("Variation seed", "subseed", int),
        _seed_of_request,
    ),
    _F(
        "subseed_strength",
        "Variation seed strength",
        "subseed_strength",
        lambda c, f: c.subseed_strength if c.subseed_strength > 0 else None,
        read_number("Variation seed strength", "subseed_strength", float),
    ),
    _F(
        "seed_resize_from_w",
        "Seed resize from",
        "seed_resize_from_w",
        lambda c, f: f"{c.seed_resize_from_w}x{c.seed_resize_from_h}"
        if c.seed_resize_from_w > 0 and c.seed_resize_from_h > 0
        else None,
        read_seed_resize,
        lambda v: max(0, v),
    ),
    _F("seed_resize_from_h", None, "seed_resize_from_h", from_request=lambda v: max(0, v)),
    _F(
        "strength",
        "Denoising strength",
        "denoising_strength",
        write_denoising,
        read_denoising,
        mode="img2img",
        api_default=0.75,
    ),
    # A1111's txt2img processing default (its web form shows 0.7; the API takes the class's 0.75).
    _F("hires_strength", None, "denoising_strength", mode="hires", api_default=0.75),
    _F(
        "clip_skip",
        "Clip skip",
        "CLIP_stop_at_last_layers",
        lambda c, f: c.clip_skip if clip_skip_shown(c.clip_skip) else None,
        read_number("Clip skip", "clip_skip", int),
        special=True,
    ),
    # A1111's option `randn_source` (a request's override_settings), not a request field. A1111 leaves
    # out its default GPU; written here always, as images lorastudio made before it had GPU noise lack it.
    _F("rng", "RNG", None, lambda c, f: c.rng, lambda params: {"rng": noise_source(params)}),
    # A1111's option `eta_noise_seed_delta`, written where it seeded per-step noise (A1111: ENSD samplers, eta not 0);
    # lorastudio's `Old step noise` likewise (`generate.noise_fields`: images from before `RNG` read it back on).
    _F("ensd", "ENSD", None, lambda c, f: c.ensd if c.ensd and step_noise_drawn(c) else None, read_number("ENSD", "ensd", int)),
    _F("old_step_noise", "Old step noise", None, lambda c, f: True if c.old_step_noise and step_noise_drawn(c) else None,
       read_old_step_noise),
    # A1111's UniPC options, written where its UniPC sampled and they differ from its defaults; `Old UniPC` where
    # lorastudio's old UniPC did (`generate.unipc_fields`)
    *(_F(f, key, None, unipc.unipc_writer(f), unipc.unipc_reader(f)) for f, (key, _) in unipc.UNIPC_KEYS.items()),
    _F("old_unipc", "Old UniPC", None, unipc.write_old_unipc, unipc.read_old_unipc),
    _F("batch_size", None, "batch_size"),
    _F("count", None, "n_iter"),
    _F("init_image", None, "init_images", special=True),
    _F("resize_mode", None, "resize_mode", mode="img2img"),
    _F("mask", None, "mask", special=True),
    _F(
        "mask_blur",
        "Mask blur",
        "mask_blur",
        lambda c, f: c.mask_blur if c.mask else None,
        read_number("Mask blur", "mask_blur", int),
        mode="inpaint",
        api_default=4,
    ),
    _F(
        "mask_invert",
        "Mask mode",
        "inpainting_mask_invert",
        lambda c, f: "Inpaint not masked" if c.mask and c.mask_invert else None,
        lambda params: {"mask_invert": True}
        if str(params.get("Mask mode", "") or "").strip().lower() == "inpaint not masked"
        else {},
        bool,
        mode="inpaint",
    ),
    _F(
        "inpaint_only_masked",
        "Inpaint area",
        "inpaint_full_res",
        lambda c, f: "Only masked" if only_masked(c) else None,
        read_inpaint_area,
        bool,
        mode="inpaint",
        api_default=True,
    ),
    _F(
        "inpaint_padding",
        "Masked area padding",
        "inpaint_full_res_padding",
        lambda c, f: c.inpaint_padding if only_masked(c) else None,
        read_number("Masked area padding", "inpaint_padding", int),
        mode="inpaint",
        api_default=0,
    ),
    _F(
        "inpainting_fill",
        "Masked content",
        "inpainting_fill",
        write_masked_content,
        read_masked_content,
        mode="inpaint",
        api_default=0,  # A1111's processing default, "fill" (the web form and the CLI: "original")
    ),
    _F(
        "hires_scale",
        "Hires upscale",
        "hr_scale",
        lambda c, f: c.hires_scale if c.hires_on and not hires_resized(c) else None,
        read_number("Hires upscale", "hires_scale", float),
        special=True,
    ),
    # A size to resize to replaces the factor (A1111 writes one key or the other, as given: "100x0").
    _F(
        "hires_resize_x",
        "Hires resize",
        "hr_resize_x",
        lambda c, f: f"{c.hires_resize_x}x{c.hires_resize_y}" if c.hires_on and hires_resized(c) else None,
        read_hires_resize,
        special=True,
    ),
    _F("hires_resize_y", None, "hr_resize_y", special=True),
    _F(
        "hires_steps",
        "Hires steps",
        "hr_second_pass_steps",
        lambda c, f: (c.hires_steps or None) if c.hires_on else None,
        read_number("Hires steps", "hires_steps", int),
        mode="hires",
    ),
    _F(
        "hires_upscaler",
        "Hires upscaler",
        "hr_upscaler",
        lambda c, f: c.hires_upscaler if c.hires_on else None,
        read_text("Hires upscaler", "hires_upscaler", hires_upscaler_name),
        hires_upscaler_name,
        mode="hires",
        api_default="Latent",
    ),
    # The hires pass's own sampler, schedule type and prompts (A1111 1.10's txt2img fields).
    _F("hires_sampler", "Hires sampler", "hr_sampler_name", write_hires_sampler,
       read_unless("Hires sampler", "hires_sampler", "Use same sampler"), mode="hires"),
    _F("hires_schedule", "Hires schedule type", "hr_scheduler", write_hires_schedule,
       read_unless("Hires schedule type", "hires_schedule", "Use same scheduler", schedule_label), mode="hires"),
    _F("hires_prompt", "Hires prompt", "hr_prompt", write_hires_prompt("hires_prompt", "prompt"),
       read_text("Hires prompt", "hires_prompt"), mode="hires"),
    _F("hires_negative_prompt", "Hires negative prompt", "hr_negative_prompt",
       write_hires_prompt("hires_negative_prompt", "negative_prompt"),
       read_text("Hires negative prompt", "hires_negative_prompt"), mode="hires"),
    # A1111 settings (`initial_noise_multiplier`, `img2img_extra_noise` in override_settings), not request fields.
    _F("initial_noise_multiplier", "Noise multiplier", None, write_noise_multiplier,
       read_number("Noise multiplier", "initial_noise_multiplier", float)),
    _F("extra_noise", "Extra noise", None, write_extra_noise, read_number("Extra noise", "extra_noise", float)),
    _F(
        "eta",
        "Eta DDIM",
        "eta",
        # A1111 writes it for its timestep samplers only; ours apply it in DDIM alone (webuiapi
        # sends eta=1.0 with every request: an Euler a image must not claim "Eta DDIM: 1.0").
        lambda c, f: c.eta if c.eta and takes_eta(c.sampler) else None,
        read_number("Eta DDIM", "eta", float),
        api_default=0.0,
    ),
    _F(None, "Lora hashes", None, lambda c, f: write_hashes(f.lora_hashes)),
    _F(None, "TI hashes", None, lambda c, f: write_hashes(f.ti_hashes)),
    # An A1111 option (`pad_cond_uncond`, in a request's override_settings), not a request field.
    # Written, as A1111 writes it, only when padding happened (prompts of one length need none).
    _F("pad_conds", "Pad conds", None, lambda c, f: True if f.padded_conds else None, read_flag("Pad conds", "pad_conds")),
    # The two options older webuis' images turn on (`VERSION_FLAGS`): `pad_cond_uncond_v0`, `use_old_scheduling`.
    _F(
        "pad_conds_v0",
        "Pad conds v0",
        None,
        lambda c, f: True if f.padded_conds_v0 else None,
        read_flag("Pad conds v0", "pad_conds_v0"),
    ),
    _F(
        "old_prompt_editing",
        "Old prompt editing timelines",
        None,
        lambda c, f: True if f.old_timelines else None,  # as A1111: where the old rule changed a schedule
        read_flag("Old prompt editing timelines", "old_prompt_editing"),
    ),
    _F(None, "Version", None, write_version),
    _F("device", None, None),
)


def infotext_params(cfg: Any, facts: InfotextFacts) -> dict[str, Any]:
    """The infotext keys of one image, in A1111's order (None values are left out by `format_infotext`)."""
    return {row.infotext_key: row.write(cfg, facts) for row in A1111_FIELDS if row.infotext_key and row.write}


def config_fields_from_infotext(params: dict[str, Any]) -> dict[str, Any]:
    """GenerateConfig fields from `parse_infotext(text, fill_defaults=False)`.

    Read without A1111's filled-in defaults, so that a key the image does not state (an old
    `Sampler: DPM++ 2M Karras` without `Schedule type`) leaves the config's own default.
    The model and VAE names are returned as written; the service looks them up.
    """
    fields: dict[str, Any] = {
        "prompt": params.get("Prompt", ""),
        "negative_prompt": params.get("Negative prompt", ""),
    }
    for row in A1111_FIELDS:
        if row.read is not None:
            fields.update(row.read(params))
    return fields


def a1111_request_names() -> dict[str, str]:
    """GenerateConfig field -> the A1111 request field a client sent (to name it in errors)."""
    return {row.field: row.request_name for row in A1111_FIELDS if row.field and row.request_name}
