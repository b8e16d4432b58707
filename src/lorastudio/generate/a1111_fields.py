"""One table for every generation field in A1111's dialects: infotext key, API request name.

`A1111_FIELDS` is the only place that maps `GenerateConfig` fields to AUTOMATIC1111's names,
both ways: the infotext writer (`infotext_params`), the recipe reader
(`config_fields_from_infotext`), the `/sdapi/v1` request mapping and its error names all loop
over it. A new generation option is one row here (plus its field in `GenerateConfig`).
The defaults A1111 assumes for keys an infotext leaves out are tables here too
(`DEFAULTS_BEFORE_OLD_HIRES`, `DEFAULTS_AFTER_OLD_HIRES`, `VERSION_FLAGS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.generate import unipc_fields as unipc
from lorastudio.generate.config import snap_size
from lorastudio.generate.noise_fields import noise_source, read_old_step_noise, step_noise_drawn
from lorastudio.generate.samplers import schedule_label, takes_eta
from lorastudio.generate.upscalers.names import fixed_upscaler

__all__ = [
    "A1111_FIELDS",
    "A1111Field",
    "DEFAULTS_AFTER_OLD_HIRES",
    "DEFAULTS_BEFORE_OLD_HIRES",
    "InfotextDefault",
    "InfotextFacts",
    "VERSION_FLAGS",
    "VersionFlag",
    "a1111_request_names",
    "clip_skip_shown",
    "config_fields_from_infotext",
    "hires_upscaler_name",
    "infotext_params",
    "noise_source",
]


@dataclass(frozen=True)
class InfotextFacts:
    """What an image's infotext states beyond the request: resolved seed, size, model, hashes."""

    sampler: str
    schedule: str
    width: int
    height: int
    seed: int
    subseed: int | None = None
    model_hash: str | None = None
    model_name: str | None = None
    vae_hash: str | None = None
    vae_name: str | None = None
    lora_hashes: list[tuple[str, str]] = dc_field(default_factory=list)
    ti_hashes: list[tuple[str, str]] = dc_field(default_factory=list)
    padded_conds: bool = False  # `pad_conds` padded a prompt and its negative to one length
    padded_conds_v0: bool = False  # `pad_conds_v0` cut or extended the negative prompt to the prompt's length
    old_timelines: bool = False  # `old_prompt_editing` gave a prompt another schedule than 1.6+ would
    hires_sampler: str = ""  # the hires pass's sampler and schedule type as sampled ("": no hires pass)
    hires_schedule: str = ""


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


def _number(params: dict[str, Any], key: str, cast: Callable[[Any], Any]) -> Any:
    value = params[key]
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise LorastudioError(f"infotext {key!r}: {value!r} is not a number; fix or remove it.") from None


def _reads(key: str, field: str, cast: Callable[[Any], Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def read(params: dict[str, Any]) -> dict[str, Any]:
        if params.get(key) in (None, ""):
            return {}
        return {field: _number(params, key, cast)}

    return read


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


def _read_size(params: dict[str, Any]) -> dict[str, Any]:
    return {**_reads("Size-1", "width", int)(params), **_reads("Size-2", "height", int)(params)}


def _read_seed_resize(params: dict[str, Any]) -> dict[str, Any]:
    return {
        **_reads("Seed resize from-1", "seed_resize_from_w", int)(params),
        **_reads("Seed resize from-2", "seed_resize_from_h", int)(params),
    }


def _hires_resized(cfg: Any) -> bool:
    return bool(cfg.hires_resize_x or cfg.hires_resize_y)


def _read_hires_resize(params: dict[str, Any]) -> dict[str, Any]:
    return {
        **_reads("Hires resize-1", "hires_resize_x", int)(params),
        **_reads("Hires resize-2", "hires_resize_y", int)(params),
    }


def _write_denoising(cfg: Any, facts: InfotextFacts) -> Any:
    if cfg.init_image:
        return cfg.strength
    return cfg.hires_strength if cfg.hires_on else None


def _read_denoising(params: dict[str, Any]) -> dict[str, Any]:
    """One key, two fields: the hires pass's strength when the image had one, else img2img's."""
    if params.get("Denoising strength") in (None, ""):
        return {}
    resized = any(str(params.get(f"Hires resize-{side}", 0) or 0) not in ("0", "") for side in (1, 2))
    field = "hires_strength" if "Hires upscale" in params or resized else "strength"
    return {field: _number(params, "Denoising strength", float)}


def _read_inpaint_area(params: dict[str, Any]) -> dict[str, Any]:
    area = str(params.get("Inpaint area", "") or "").strip().lower()
    return {"inpaint_only_masked": area == "only masked"} if area else {}


def _read_masked_content(params: dict[str, Any]) -> dict[str, Any]:
    from lorastudio.generate.images import INPAINTING_FILLS

    content = str(params.get("Masked content", "") or "").strip().lower()
    return {"inpainting_fill": INPAINTING_FILLS.index(content)} if content in INPAINTING_FILLS else {}


def _write_masked_content(cfg: Any, facts: InfotextFacts) -> Any:
    from lorastudio.generate.images import INPAINTING_FILLS

    # A1111 leaves out the default, "original"
    return INPAINTING_FILLS[cfg.inpainting_fill] if cfg.mask and cfg.inpainting_fill != 1 else None


def _only_masked(cfg: Any) -> bool:
    return bool(cfg.mask and cfg.inpaint_only_masked)


def _read_text(
    key: str, field: str, cast: Callable[[str], Any] = str
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A text value read as it is written (or through `cast`, e.g. to a canonical label)."""

    def read(params: dict[str, Any]) -> dict[str, Any]:
        return {field: cast(str(params[key]))} if params.get(key) else {}

    return read


def _read_flag(key: str, field: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A True/False key (A1111 writes only True)."""

    def read(params: dict[str, Any]) -> dict[str, Any]:
        value = str(params.get(key, "") or "").strip().lower()
        return {field: value in ("true", "1", "yes")} if value else {}

    return read


def _hashes(pairs: list[tuple[str, str]]) -> str | None:
    return ", ".join(f"{n}: {h}" for n, h in pairs) if pairs else None


def _write_hires_sampler(cfg: Any, facts: InfotextFacts) -> str | None:
    """A1111 writes the hires sampler only where it differs from the first pass's."""
    return facts.hires_sampler if cfg.hires_on and facts.hires_sampler not in ("", facts.sampler) else None


def _write_hires_schedule(cfg: Any, facts: InfotextFacts) -> str | None:
    """The hires schedule type where it differs from the first pass's (A1111 leaves out an "Automatic" there,
    which its paste reads back as the first pass's; written here, so the image comes back the same)."""
    return facts.hires_schedule if cfg.hires_on and facts.hires_schedule not in ("", facts.schedule) else None


def _write_hires_prompt(field: str, first: str) -> Callable[[Any, InfotextFacts], Any]:
    """A1111 writes a hires prompt only where it is not the prompt itself."""

    def write(cfg: Any, facts: InfotextFacts) -> str | None:
        text = getattr(cfg, field)
        return text if cfg.hires_on and text and text != getattr(cfg, first) else None

    return write


def _read_unless(key: str, field: str, same: str, cast: Callable[[str], Any] = str):
    """A text value, where it is not A1111's word for the first pass's (`Use same sampler`)."""

    def read(params: dict[str, Any]) -> dict[str, Any]:
        value = str(params.get(key) or "").strip()
        return {field: cast(value)} if value and value.lower() != same.lower() else {}

    return read


def _write_noise_multiplier(cfg: Any, facts: InfotextFacts) -> float | None:
    return cfg.initial_noise_multiplier if cfg.init_image and cfg.initial_noise_multiplier != 1.0 else None


def _write_extra_noise(cfg: Any, facts: InfotextFacts) -> float | None:
    return cfg.extra_noise if cfg.extra_noise > 0 and (cfg.init_image or cfg.hires_on) else None


def _version(cfg: Any, facts: InfotextFacts) -> str:
    from lorastudio import __version__

    return f"lorastudio {__version__}"


def _seed_of_request(value: int) -> int:
    return value if value >= 0 else -1


_F = A1111Field
# In infotext order: keys A1111 fixes come first (format_infotext sorts them), the others follow
# in this order. Per-dialect defaults are pinned here (API vs GenerateConfig): hires denoising
# 0.7 vs 0.5, inpaint padding 0 vs 32, only-masked True vs False.
A1111_FIELDS: tuple[A1111Field, ...] = (
    _F("prompt", None, "prompt"),
    _F("negative_prompt", None, "negative_prompt"),
    _F("steps", "Steps", "steps", lambda c, f: c.steps, _reads("Steps", "steps", int)),
    _F("sampler", "Sampler", "sampler_name", lambda c, f: f.sampler, _read_text("Sampler", "sampler"), special=True),
    # ^ the raw name: "DPM++ 2M Karras" keeps its suffix, which wins over `Schedule type` (as A1111)
    _F(
        "schedule",
        "Schedule type",
        "scheduler",
        lambda c, f: None if f.schedule == "Automatic" else f.schedule,
        _read_text("Schedule type", "schedule", schedule_label),
        special=True,
    ),
    _F("cfg_scale", "CFG scale", "cfg_scale", lambda c, f: c.cfg_scale, _reads("CFG scale", "cfg_scale", float)),
    _F("seed", "Seed", "seed", lambda c, f: f.seed, _reads("Seed", "seed", int), _seed_of_request),
    _F("width", "Size", "width", lambda c, f: f"{f.width}x{f.height}", _read_size, snap_size),  # A1111 takes any size, works in 8s
    _F("height", None, "height", from_request=snap_size),
    _F(None, "Model hash", None, lambda c, f: f.model_hash),
    _F("model", "Model", "sd_model_checkpoint", lambda c, f: f.model_name, _read_text("Model", "model"), special=True),
    _F(None, "VAE hash", None, lambda c, f: f.vae_hash),
    _F("vae", "VAE", "sd_vae", lambda c, f: f.vae_name, _read_text("VAE", "vae"), special=True),
    _F(
        "subseed",
        "Variation seed",
        "subseed",
        lambda c, f: f.subseed if c.subseed_strength > 0 else None,
        _reads("Variation seed", "subseed", int),
        _seed_of_request,
    ),
    _F(
        "subseed_strength",
        "Variation seed strength",
        "subseed_strength",
        lambda c, f: c.subseed_strength if c.subseed_strength > 0 else None,
        _reads("Variation seed strength", "subseed_strength", float),
    ),
    _F(
        "seed_resize_from_w",
        "Seed resize from",
        "seed_resize_from_w",
        lambda c, f: f"{c.seed_resize_from_w}x{c.seed_resize_from_h}"
        if c.seed_resize_from_w > 0 and c.seed_resize_from_h > 0
        else None,
        _read_seed_resize,
        lambda v: max(0, v),
    ),
    _F("seed_resize_from_h", None, "seed_resize_from_h", from_request=lambda v: max(0, v)),
    _F(
        "strength",
        "Denoising strength",
        "denoising_strength",
        _write_denoising,
        _read_denoising,
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
        _reads("Clip skip", "clip_skip", int),
        special=True,
    ),
    # A1111's option `randn_source` (a request's override_settings), not a request field. A1111 leaves
    # out its default GPU; written here always, as images lorastudio made before it had GPU noise lack it.
    _F("rng", "RNG", None, lambda c, f: c.rng, lambda params: {"rng": noise_source(params)}),
    # A1111's option `eta_noise_seed_delta`, written where it seeded per-step noise (A1111: ENSD samplers, eta not 0);
    # lorastudio's `Old step noise` likewise (`generate.noise_fields`: images from before `RNG` read it back on).
    _F("ensd", "ENSD", None, lambda c, f: c.ensd if c.ensd and step_noise_drawn(c) else None, _reads("ENSD", "ensd", int)),
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
        _reads("Mask blur", "mask_blur", int),
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
        lambda c, f: "Only masked" if _only_masked(c) else None,
        _read_inpaint_area,
        bool,
        mode="inpaint",
        api_default=True,
    ),
    _F(
        "inpaint_padding",
        "Masked area padding",
        "inpaint_full_res_padding",
        lambda c, f: c.inpaint_padding if _only_masked(c) else None,
        _reads("Masked area padding", "inpaint_padding", int),
        mode="inpaint",
        api_default=0,
    ),
    _F(
        "inpainting_fill",
        "Masked content",
        "inpainting_fill",
        _write_masked_content,
        _read_masked_content,
        mode="inpaint",
        api_default=0,  # A1111's processing default, "fill" (the web form and the CLI: "original")
    ),
    _F(
        "hires_scale",
        "Hires upscale",
        "hr_scale",
        lambda c, f: c.hires_scale if c.hires_on and not _hires_resized(c) else None,
        _reads("Hires upscale", "hires_scale", float),
        special=True,
    ),
    # A size to resize to replaces the factor (A1111 writes one key or the other, as given: "100x0").
    _F(
        "hires_resize_x",
        "Hires resize",
        "hr_resize_x",
        lambda c, f: f"{c.hires_resize_x}x{c.hires_resize_y}" if c.hires_on and _hires_resized(c) else None,
        _read_hires_resize,
        special=True,
    ),
    _F("hires_resize_y", None, "hr_resize_y", special=True),
    _F(
        "hires_steps",
        "Hires steps",
        "hr_second_pass_steps",
        lambda c, f: (c.hires_steps or None) if c.hires_on else None,
        _reads("Hires steps", "hires_steps", int),
        mode="hires",
    ),
    _F(
        "hires_upscaler",
        "Hires upscaler",
        "hr_upscaler",
        lambda c, f: c.hires_upscaler if c.hires_on else None,
        _read_text("Hires upscaler", "hires_upscaler", hires_upscaler_name),
        hires_upscaler_name,
        mode="hires",
        api_default="Latent",
    ),
    # The hires pass's own sampler, schedule type and prompts (A1111 1.10's txt2img fields).
    _F("hires_sampler", "Hires sampler", "hr_sampler_name", _write_hires_sampler,
       _read_unless("Hires sampler", "hires_sampler", "Use same sampler"), mode="hires"),
    _F("hires_schedule", "Hires schedule type", "hr_scheduler", _write_hires_schedule,
       _read_unless("Hires schedule type", "hires_schedule", "Use same scheduler", schedule_label), mode="hires"),
    _F("hires_prompt", "Hires prompt", "hr_prompt", _write_hires_prompt("hires_prompt", "prompt"),
       _read_text("Hires prompt", "hires_prompt"), mode="hires"),
    _F("hires_negative_prompt", "Hires negative prompt", "hr_negative_prompt",
       _write_hires_prompt("hires_negative_prompt", "negative_prompt"),
       _read_text("Hires negative prompt", "hires_negative_prompt"), mode="hires"),
    # A1111 settings (`initial_noise_multiplier`, `img2img_extra_noise` in override_settings), not request fields.
    _F("initial_noise_multiplier", "Noise multiplier", None, _write_noise_multiplier,
       _reads("Noise multiplier", "initial_noise_multiplier", float)),
    _F("extra_noise", "Extra noise", None, _write_extra_noise, _reads("Extra noise", "extra_noise", float)),
    _F(
        "eta",
        "Eta DDIM",
        "eta",
        # A1111 writes it for its timestep samplers only; ours apply it in DDIM alone (webuiapi
        # sends eta=1.0 with every request: an Euler a image must not claim "Eta DDIM: 1.0").
        lambda c, f: c.eta if c.eta and takes_eta(c.sampler) else None,
        _reads("Eta DDIM", "eta", float),
        api_default=0.0,
    ),
    _F(None, "Lora hashes", None, lambda c, f: _hashes(f.lora_hashes)),
    _F(None, "TI hashes", None, lambda c, f: _hashes(f.ti_hashes)),
    # An A1111 option (`pad_cond_uncond`, in a request's override_settings), not a request field.
    # Written, as A1111 writes it, only when padding happened (prompts of one length need none).
    _F("pad_conds", "Pad conds", None, lambda c, f: True if f.padded_conds else None, _read_flag("Pad conds", "pad_conds")),
    # The two options older webuis' images turn on (`VERSION_FLAGS`): `pad_cond_uncond_v0`, `use_old_scheduling`.
    _F(
        "pad_conds_v0",
        "Pad conds v0",
        None,
        lambda c, f: True if f.padded_conds_v0 else None,
        _read_flag("Pad conds v0", "pad_conds_v0"),
    ),
    _F(
        "old_prompt_editing",
        "Old prompt editing timelines",
        None,
        lambda c, f: True if f.old_timelines else None,  # as A1111: where the old rule changed a schedule
        _read_flag("Old prompt editing timelines", "old_prompt_editing"),
    ),
    _F(None, "Version", None, _version),
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


# ---------------------------------------------------------------------------------------
# What A1111 assumes for keys an infotext does not state
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InfotextDefault:
    """A key A1111 fills in when an infotext leaves it out (webui 1.10's "PNG Info").

    A tuple value stands for a size's `-1`/`-2` pair, filled as a whole when `-1` is missing.
    `only_if(params)` limits the row to infotexts it holds for.
    """

    key: str
    value: Any
    only_if: Callable[[dict[str, Any]], bool] | None = None


def _fp8_weight_on(params: dict[str, Any]) -> bool:
    return params["FP8 weight"] != "Disable"


def _prompts_use_emphasis(params: dict[str, Any]) -> bool:
    """A weight other than 1 in either prompt (or a prompt the parser rejects) means emphasis."""
    from lorastudio.generate.prompt_parser import parse_prompt_attention

    try:
        pieces = parse_prompt_attention(params["Prompt"]) + parse_prompt_attention(params["Negative prompt"])
    except LorastudioError:
        return True
    return any(weight != 1.0 and text != "BREAK" for text, weight in pieces)


_D = InfotextDefault
# Two tables because the pre-1.0 hires conversion runs between them: it overwrites
# "Hires resize" from the first and may add "Size", and parsed keys keep A1111's order.
DEFAULTS_BEFORE_OLD_HIRES: tuple[InfotextDefault, ...] = (
    _D("Clip skip", "1"),
    _D("Hires resize", (0, 0)),
    _D("Hires sampler", "Use same sampler"),
    _D("Hires schedule type", "Use same scheduler"),
    _D("Hires checkpoint", "Use same checkpoint"),
    _D("Hires prompt", ""),
    _D("Hires negative prompt", ""),
    _D("Mask mode", "Inpaint masked"),
    _D("Masked content", "original"),
    _D("Inpaint area", "Whole picture"),
    _D("Masked area padding", 32),
)
DEFAULTS_AFTER_OLD_HIRES: tuple[InfotextDefault, ...] = (
    _D("RNG", "GPU"),
    _D("Schedule type", "Automatic"),
    _D("Schedule max sigma", 0),
    _D("Schedule min sigma", 0),
    _D("Schedule rho", 0),
    _D("VAE Encoder", "Full"),
    _D("VAE Decoder", "Full"),
    _D("FP8 weight", "Disable"),
    _D("Cache FP16 weight for LoRA", False, _fp8_weight_on),
    _D("Emphasis", "Original", _prompts_use_emphasis),
    _D("Refiner switch by sampling steps", False),
)


@dataclass(frozen=True)
class VersionFlag:
    """A flag A1111 sets (True) on images made before `before` when `only_if(params)` holds.

    These flags switch on the old behaviour that made such an image, so it can be remade.
    """

    key: str
    before: str
    only_if: Callable[[dict[str, Any]], bool] | None = None


VERSION_FLAGS: tuple[VersionFlag, ...] = (
    VersionFlag("Old prompt editing timelines", "1.6.0", lambda params: "[" in params.get("Prompt", "")),
    VersionFlag("Pad conds v0", "1.6.0", lambda params: params.get("Sampler", "") in ("DDIM", "PLMS")),
    VersionFlag("Downcast alphas_cumprod", "1.7.0-225"),  # a build 225 commits after 1.7.0
    VersionFlag("Refiner switch by sampling steps", "1.8.0", lambda params: bool(params.get("Refiner"))),
)
