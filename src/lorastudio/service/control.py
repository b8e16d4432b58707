"""ControlNet units of a request: checked, turned into a `ControlStack`, and written to the infotext.

A unit names a ControlNet in studio/controlnet (name, A1111 title or, for the CLI, a path), an
image (default: the init image, as the A1111 extension does in img2img) and a preprocessor. Every
name and image is checked before the base model is loaded; the ControlNet file is sniffed and
refused with one line when it is no ControlNet or one for another family.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate.control_units import ControlUnit
from lorastudio.generate.images import open_image_file
from lorastudio.service.names import STRICT, NamePolicy
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.generate.control import ControlStack
    from lorastudio.generate.plan import SamplingPlan
    from lorastudio.models.loading import LoadedModel
    from lorastudio.service.model_cache import ModelCache

__all__ = [
    "INFOTEXT_FIELDS",
    "CheckedUnit",
    "check_module",
    "check_units",
    "control_infotext",
    "control_stack",
    "parse_control_option",
    "units_from_infotext",
]

# The extension's infotext fields, in its order: (ControlUnit field, infotext name).
INFOTEXT_FIELDS = (
    ("module", "Module"),
    ("model", "Model"),
    ("weight", "Weight"),
    ("resize_mode", "Resize Mode"),
    ("processor_res", "Processor Res"),
    ("threshold_a", "Threshold A"),
    ("threshold_b", "Threshold B"),
    ("guidance_start", "Guidance Start"),
    ("guidance_end", "Guidance End"),
    ("pixel_perfect", "Pixel Perfect"),
    ("control_mode", "Control Mode"),
)


def _label(index: int) -> str:
    return f"ControlNet unit {index}"


def parse_control_option(text: str) -> dict[str, Any]:
    """`model=NAME,module=canny,image=PATH,weight=0.8` -> ControlUnit fields (the CLI's `--control`)."""
    fields = set(ControlUnit.model_fields)
    unit: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise LorastudioError(
                f"--control {text!r}: {part!r} is not KEY=VALUE of a unit field; keys: {', '.join(sorted(fields))}."
            )
        unit[key] = value.strip()
    if "model" not in unit:
        raise LorastudioError(f"--control {text!r}: needs model=NAME (see `lorastudio control list`).")
    return unit


# -- images -------------------------------------------------------------------------------------


def _unit_images(cfg: GenerateConfig, index: int, unit: ControlUnit) -> tuple[Image.Image, Image.Image | None]:
    """The unit's image (its own, else the init image) and mask, checked."""
    label = _label(index)
    source = unit.image or cfg.init_image
    if not source:
        raise LorastudioError(
            f"{label}: has no image; give the unit an image (only img2img falls back on the init image)."
        )
    image = open_image_file(source, "image", where=label)
    mask = open_image_file(unit.mask, "mask", grey=True, where=label) if unit.mask else None
    if mask is not None and mask.size != image.size:
        raise LorastudioError(
            f"{label}: mask is {mask.size[0]}x{mask.size[1]}, its image {image.size[0]}x{image.size[1]}; "
            "make the mask the image's size."
        )
    return image, mask


def _controlnet_path(ws: Workspace, unit: ControlUnit, index: int, names: NamePolicy) -> Path:
    from lorastudio.service.controlnets import find_controlnet

    if not names.strict and Path(unit.model).exists():  # the CLI may name a file anywhere
        return Path(unit.model)
    try:
        return find_controlnet(ws, unit.model, names)
    except LorastudioError as exc:
        raise type(exc).wrap(f"{_label(index)}: {exc}", exc) from None


def check_module(unit: ControlUnit, index: int) -> None:
    """The unit's preprocessor exists (the one check the API's units and the CLI's share)."""
    from lorastudio.service.controlnets import check_module as known_module

    known_module(unit.module, f"{_label(index)}: module")


@dataclass(frozen=True)
class CheckedUnit:
    """A unit whose ControlNet file, image, mask and preprocessor passed `check_units`."""

    path: Path
    image: Image.Image
    mask: Image.Image | None


def check_units(ws: Workspace, cfg: GenerateConfig, names: NamePolicy = STRICT) -> list[CheckedUnit]:
    """Every unit's ControlNet, image, mask and preprocessor, checked before any model loads; what was
    opened is handed on to `control_stack`, so nothing is found or decoded twice."""
    from lorastudio.models.controlnet import controlnet_facts

    checked = []
    for index, unit in enumerate(cfg.controlnet):
        path = _controlnet_path(ws, unit, index, names)
        controlnet_facts(path)  # no ControlNet, or an unusable one: refused now, naming the file
        image, mask = _unit_images(cfg, index, unit)
        check_module(unit, index)
        if _is_inpaint_module(unit.module) and not (unit.mask or cfg.mask):
            raise LorastudioError(
                f"{_label(index)}: an inpaint preprocessor needs a mask; give the unit a mask or inpaint with --mask."
            )
        checked.append(CheckedUnit(path, image, mask))
    return checked


# -- preparing the stack ------------------------------------------------------------------------


# A1111's img2img resize modes as the extension fits a unit that takes the init image (mode 3,
# latent upscale, stretches the picture)
_IMG2IMG_RESIZE = {0: "Just Resize", 1: "Crop and Resize", 2: "Resize and Fill", 3: "Just Resize"}


def _fit_mode(cfg: GenerateConfig, unit: ControlUnit) -> str:
    """How the unit's image meets the output: its own mode, or, for a unit that falls back on the
    img2img picture, the img2img resize mode (the extension's `choose_input_image`), so the map lines
    up with the picture it was made from."""
    if unit.image or not cfg.init_image:
        return unit.resize_mode
    return _IMG2IMG_RESIZE.get(cfg.resize_mode, unit.resize_mode)


def _processor_resolution(unit: ControlUnit, image: Image.Image, width: int, height: int, fit: str) -> int:
    from lorastudio.generate.control import pixel_perfect_resolution

    if unit.pixel_perfect:
        return pixel_perfect_resolution(image.size, width, height, fit)
    return unit.processor_res


def _control_map(ws: Workspace, unit: ControlUnit, image: Image.Image, resolution: int, device, seed: int):
    if unit.module == "none":
        return image
    from lorastudio.generate.annotators.registry import annotator_context, run_annotator

    ctx = annotator_context(
        unit.module, resolution, unit.threshold_a, unit.threshold_b, ws.annotators, str(device), seed
    )
    return run_annotator(unit.module, image, ctx).convert("RGB")


def control_stack(
    ws: Workspace,
    cfg: GenerateConfig,
    model: LoadedModel,
    plan: SamplingPlan,
    checked: list[CheckedUnit],
    cache: ModelCache | None = None,
    seed: int | None = None,
) -> tuple[ControlStack | None, list[dict[str, Any]]]:
    """The request's units ready to sample with, and one row per unit for the infotext and recipe
    (title, path, processor resolution). (None, []) without units. `checked`: `check_units`' answer.
    `seed`: what a random preprocessor (content shuffle) draws with; default the request's first image's."""
    from lorastudio.generate.control import ControlStack, PreparedUnit
    from lorastudio.service.controlnets import controlnet_title

    if not cfg.controlnet:
        return None, []
    prepared, rows = [], []
    for index, (unit, found) in enumerate(zip(cfg.controlnet, checked, strict=True)):
        path, image, mask = found.path, found.image, found.mask
        controlnet = _load(cache, path, model)
        hole = None
        if _is_inpaint_module(unit.module):  # the mask is the hole to fill, not where the unit acts
            hole, mask = _inpaint_hole(cfg, plan, image, mask, index), None
        image, mask, hole = _crop_to_masked_area(cfg, plan, image, mask, hole)
        fit = _fit_mode(cfg, unit)
        resolution = _processor_resolution(unit, image, plan.width, plan.height, fit)
        if hole is not None:
            control_map = image  # the hint is the picture itself, its hole at -1 (ControlStack)
        else:
            seed = seed if seed is not None else (plan.seeds or [0])[0]
            control_map = _control_map(ws, unit, image, resolution, model.device, seed)
        if mask is not None and control_map.size != mask.size:
            mask = mask.resize(control_map.size)
        prepared.append(
            PreparedUnit(
                _label(index), controlnet, control_map, unit.weight, unit.guidance_start, unit.guidance_end,
                unit.control_mode, fit, unit.hr_option, unit.module, mask, hole,
            )
        )
        rows.append({"unit": index, "title": controlnet_title(path), "path": str(path), "processor_res": resolution})
    return ControlStack(prepared, model.device, model.dtype), rows


def _crop_to_masked_area(cfg: GenerateConfig, plan, image: Image.Image, *masks: Image.Image | None):
    """"Only masked" inpainting samples the mask's region only: a unit image of the init image's size
    (and its masks) is cropped to the same region first, as the extension does (so the map lines up)."""
    from lorastudio.generate.images import mask_crop_region, prepare_mask

    if not (cfg.inpaint_only_masked and plan.mask is not None and plan.init_image is not None):
        return (image, *masks)
    if image.size != plan.init_image.size:
        return (image, *masks)
    blurred = prepare_mask(plan.mask, image.size, cfg.mask_blur)  # the region the loop crops (its blurred mask)
    box = mask_crop_region(blurred, cfg.inpaint_padding, plan.width / plan.height)
    if box is None:
        return (image, *masks)
    return (image.crop(box), *(m.crop(box) if m is not None else None for m in masks))


INPAINT_MODULES = ("inpaint_global_harmonious", "inpaint_only")


def _is_inpaint_module(module: str) -> bool:
    from lorastudio.generate.annotators.registry import find_annotator

    return module != "none" and find_annotator(module).name in INPAINT_MODULES


def _inpaint_hole(cfg: GenerateConfig, plan, image: Image.Image, mask: Image.Image | None, index: int):
    """The hole an inpaint ControlNet fills: the unit's mask, else the request's inpaint mask (as the
    extension takes A1111's); without either there is nothing to fill."""
    hole = mask if mask is not None else plan.mask
    if hole is None:
        raise LorastudioError(
            f"{_label(index)}: an inpaint preprocessor needs a mask; give the unit a mask or inpaint with --mask."
        )
    return hole.convert("L").resize(image.size) if hole.size != image.size else hole.convert("L")


def _load(cache, path: Path, model):
    if cache is not None:
        return cache.get_controlnet(path, model)
    from lorastudio.models.controlnet import load_controlnet

    return load_controlnet(path, model.family.name, model.dtype, model.device, model.unet.config)


# -- infotext -----------------------------------------------------------------------------------


def _infotext_value(field: str, unit: ControlUnit, row: dict[str, Any]) -> str:
    if field == "model":
        return row["title"]
    if field == "processor_res":
        return str(row["processor_res"])
    value = getattr(unit, field)
    if field.startswith("threshold_"):
        value = value if value is not None else _default_threshold(unit.module, field)
        return str(float(value)) if value is not None else "-1"  # -1: the extension's "no such slider"
    return str(value)


def _default_threshold(module: str, field: str) -> float | None:
    """The preprocessor's default for a threshold the unit leaves out (what the extension writes)."""
    try:
        from lorastudio.generate.annotators.registry import find_annotator

        slider = getattr(find_annotator(module), field)
    except (ImportError, LorastudioError):
        return None
    return slider.value if slider is not None else None


def control_infotext(cfg: GenerateConfig, rows: list[dict[str, Any]]) -> dict[str, str]:
    """`ControlNet N: "Module: canny, Model: name [hash8], Weight: 1.0, ..."`, as the extension writes."""
    return {
        f"ControlNet {row['unit']}": ", ".join(
            f"{name}: {_infotext_value(field, cfg.controlnet[row['unit']], row)}" for field, name in INFOTEXT_FIELDS
        )
        for row in rows
    }


def units_from_infotext(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Units from an image's `ControlNet N` keys (their images are not in the infotext, as in A1111);
    each carries its N as `slot` (the form's unit), which the caller takes out before validation."""
    names = {name: field for field, name in INFOTEXT_FIELDS}
    units = []
    for index in range(10):
        text = params.get(f"ControlNet {index}")
        if not text:
            continue
        unit: dict[str, Any] = {}
        for item in str(text).split(", "):
            key, _, value = item.partition(": ")
            field = names.get(key.strip())
            if field is None:
                continue
            unit[field] = None if field.startswith("threshold_") and value.strip() in ("-1", "-1.0") else value.strip()
        if unit.get("model"):
            units.append({**unit, "slot": index})
    return units
