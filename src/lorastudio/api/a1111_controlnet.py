"""The A1111 ControlNet extension's dialect: `alwayson_scripts.controlnet.args` -> ControlUnits.

A1111 clients (webuiapi, bots, EasyPhoto) send ControlNet units as the arguments of the
extension's always-on script: `{"alwayson_scripts": {"ControlNet": {"args": [unit, ...]}}}`,
each unit a dict with the extension's field names, its legacy aliases and its old spellings
of the choices. This module maps that dialect onto `ControlUnit` (service.controlnets) and
stores the units' images as uploads, as the routes do with `init_images`. Nothing is dropped
silently: a unit that cannot be honoured is a 422 naming it (`alwayson_scripts.controlnet.args[i]`).

Where the extension is lenient in ways that would change an image behind the client's back
(an out-of-range resolution reset to the default, a missing model skipped), the request is
refused instead; see docs/API.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lorastudio.errors import InvalidRequest, LorastudioError
from lorastudio.service.controlnets import (
    CONTROL_MODES,
    HR_OPTIONS,
    MAX_CONTROL_UNITS,
    RESIZE_MODES,
    ControlUnit,
    check_unit_names,
    control_unit,
)
from lorastudio.service.uploads import decode_image, discard_uploads, store_picture
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "CONTROLNET_M2M",
    "CONTROLNET_SCRIPT",
    "A1111Unit",
    "controlnet_args",
    "decoded",
    "parse_unit",
    "parse_units",
    "store_units",
]

CONTROLNET_SCRIPT = "controlnet"  # the always-on script's name (A1111 lists script names in lower case)
CONTROLNET_M2M = "controlnet m2m"  # the extension's selectable script; webuiapi looks for it to know ControlNet is there
WHERE = "alwayson_scripts.controlnet.args"

# Old field names the extension still reads, and what they mean now.
LEGACY_KEYS = {"input_image": "image", "guidance": "guidance_end", "lowvram": "low_vram", "mask_image": "mask"}
# The resize modes' names before ControlNet 1.1, as old clients (and webuiapi's defaults) send them.
RESIZE_ALIASES = {
    "inner fit (scale to fit)": "Crop and Resize",
    "scale to fit (inner fit)": "Crop and Resize",
    "outer fit (shrink to fit)": "Resize and Fill",
    "envelope (outer fit)": "Resize and Fill",
}
# Resize modes by index; 3 is A1111's "Just Resize (latent upscale)", a plain resize for a control image.
RESIZE_BY_INDEX = {0: "Just Resize", 1: "Crop and Resize", 2: "Resize and Fill", 3: "Just Resize"}
# Extension features lorastudio does not have, with the value that means "not used".
UNSUPPORTED = {
    "advanced_weighting": None,
    "ipadapter_input": None,
    "input_mode": "simple",
    "union_control_type": "Unknown",
    "batch_images": None,
}
# ControlUnit fields whose A1111 value passes through unchanged (pydantic checks the limits).
PLAIN_FIELDS = ("weight", "guidance_start", "guidance_end", "pixel_perfect")


@dataclass
class A1111Unit:
    """One enabled unit as the client sent it: ControlUnit fields, and its images still base64."""

    index: int
    fields: dict[str, Any]
    image: str | None = None
    mask: str | None = None
    save_detected_map: bool = True
    what: str = field(init=False)

    def __post_init__(self) -> None:
        self.what = f"{WHERE}[{self.index}]"


# --- reading the request (no workspace needed) ------------------------------------------------


def controlnet_args(alwayson_scripts: Any) -> list[Any]:
    """The ControlNet script's `args` (the script's key in any case; none sent = no units)."""
    if not alwayson_scripts:
        return []
    if not isinstance(alwayson_scripts, dict):
        raise InvalidRequest("alwayson_scripts: send an object {script name: {\"args\": [...]}}.")
    found = [value for key, value in alwayson_scripts.items() if str(key).strip().lower() == CONTROLNET_SCRIPT]
    if len(found) > 1:
        raise InvalidRequest("alwayson_scripts: ControlNet is given twice (keys differ only in case); send it once.")
    if not found or found[0] is None:
        return []
    script = found[0]
    args = script.get("args", []) if isinstance(script, dict) else script
    if args is None:
        return []
    if not isinstance(args, list):
        raise InvalidRequest(f"{WHERE}: send a list of ControlNet units (objects).")
    return args


def parse_units(alwayson_scripts: Any) -> list[A1111Unit]:
    """The enabled units of a request, checked for shape; more than MAX_CONTROL_UNITS is a 422."""
    units = []
    for index, raw in enumerate(controlnet_args(alwayson_scripts)):
        if raw is None:  # a placeholder for an unused unit slot
            continue
        unit = parse_unit(index, raw)
        if unit is not None:
            units.append(unit)
    if len(units) > MAX_CONTROL_UNITS:
        listed = ", ".join(f"args[{u.index}]" for u in units)
        raise InvalidRequest(
            f"{WHERE}: {len(units)} enabled ControlNet units ({listed}); at most {MAX_CONTROL_UNITS} "
            "run at once: disable the others (enabled: false)."
        )
    return units


def parse_unit(index: int, raw: Any) -> A1111Unit | None:
    """One unit dict -> A1111Unit, or None when it is disabled (`enabled: false`)."""
    what = f"{WHERE}[{index}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{what}: a ControlNet unit is an object with module, model, image, ...")
    values = _with_current_names(raw, what)
    if not _flag(values.get("enabled", True), f"{what}.enabled"):  # older extensions: enabled unless told
        return None
    _refuse_unsupported(values, what)
    fields: dict[str, Any] = {key: values[key] for key in PLAIN_FIELDS if values.get(key) is not None}
    fields["module"] = str(values.get("module") or "none")
    fields["model"] = str(values.get("model") or "None")
    if values.get("resize_mode") is not None:
        fields["resize_mode"] = resize_mode(values["resize_mode"], f"{what}.resize_mode")
    control = values.get("control_mode")
    if control is None and _flag(values.get("guessmode", values.get("guess_mode", False)), f"{what}.guessmode"):
        control = "ControlNet is more important"  # guess mode became this control mode in ControlNet 1.1
    if control is not None:
        fields["control_mode"] = control_mode(control, f"{what}.control_mode")
    if values.get("hr_option") is not None:
        fields["hr_option"] = _choice(values["hr_option"], HR_OPTIONS, f"{what}.hr_option")
    if not _is_default(values.get("processor_res")):
        fields["processor_res"] = values["processor_res"]
    for key in ("threshold_a", "threshold_b"):
        if not _is_default(values.get(key)):
            fields[key] = values[key]
    image, mask = _images(values, what)
    save_map = _flag(values.get("save_detected_map", True), f"{what}.save_detected_map")
    return A1111Unit(index, fields, image=image, mask=mask, save_detected_map=save_map)


def resize_mode(value: Any, what: str = "resize_mode") -> str:
    """A resize mode by name, by its pre-1.1 name, or by index (0 Just Resize, 1 Crop and Resize, 2 Resize and Fill)."""
    if _as_index(value) in RESIZE_BY_INDEX:
        return RESIZE_BY_INDEX[_as_index(value)]
    if isinstance(value, str) and value.strip().lower() in RESIZE_ALIASES:
        return RESIZE_ALIASES[value.strip().lower()]
    return _choice(value, RESIZE_MODES, what, indexed=True)


def control_mode(value: Any, what: str = "control_mode") -> str:
    """A control mode by name or by index (0 Balanced, 1 My prompt is more important, 2 ControlNet is more important)."""
    index = _as_index(value)
    if index is not None and 0 <= index < len(CONTROL_MODES):
        return CONTROL_MODES[index]
    return _choice(value, CONTROL_MODES, what, indexed=True)


def _as_index(value: Any) -> int | None:
    """An int, or a string of ASCII digits, as an index; anything else (true/false too) None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    return None


def _choice(value: Any, choices: tuple[str, ...], what: str, indexed: bool = False) -> str:
    if isinstance(value, str):
        for choice in choices:
            if value.strip().lower() == choice.lower():
                return choice
    listed = ", ".join(f"{i} {c!r}" if indexed else repr(c) for i, c in enumerate(choices))
    raise InvalidRequest(f"{what}: {str(value)[:80]!r} is not one of {listed}.")


def _with_current_names(raw: dict[str, Any], what: str) -> dict[str, Any]:
    """The unit's keys under their current names; an old and a new name for one field is a 422."""
    values = dict(raw)
    for old, new in LEGACY_KEYS.items():
        if old not in values:
            continue
        value = values.pop(old)
        if values.get(new) is not None and value is not None:
            raise InvalidRequest(f"{what}: both {old!r} and {new!r} are given; send only {new!r}.")
        if value is not None:
            values[new] = value
    if values.get("effective_region_mask") is not None:  # "where the unit acts": what `mask` means here
        if values.get("mask") is not None:
            raise InvalidRequest(f"{what}: both 'mask' and 'effective_region_mask' are given; send one.")
        values["mask"] = values["effective_region_mask"]
    return values


def _refuse_unsupported(values: dict[str, Any], what: str) -> None:
    for key, neutral in UNSUPPORTED.items():
        value = values.get(key)
        if value in (None, neutral, [], "") or (isinstance(value, str) and value.lower() == str(neutral).lower()):
            continue
        raise InvalidRequest(f"{what}.{key}: not supported by lorastudio; leave it out (one image per unit).")


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise InvalidRequest(f"{what}: {str(value)[:40]!r} is not true or false.")


def _is_default(value: Any) -> bool:
    """The extension's "use the preprocessor's default": -1 (or nothing)."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and value == -1)


def _images(values: dict[str, Any], what: str) -> tuple[str | None, str | None]:
    """(image, mask) as base64 text from the forms the extension reads: a string, {"image", "mask"},
    [image, mask], or a one-item list of {"image", "mask"}."""
    image, mask = values.get("image"), values.get("mask")
    if isinstance(image, list | tuple):
        if len(image) == 1 and isinstance(image[0], dict):
            image = image[0]
        elif len(image) == 2 and all(x is None or isinstance(x, str) for x in image):
            image = {"image": image[0], "mask": image[1]}
        elif not image:
            image = None
        else:
            raise InvalidRequest(f"{what}.image: one image per unit (a base64 string or {{\"image\", \"mask\"}}).")
    if isinstance(image, dict):
        inner_mask = image.get("mask")
        if inner_mask and mask:
            raise InvalidRequest(f"{what}: a mask is given in both image.mask and mask; send one.")
        mask = mask or inner_mask
        image = image.get("image")
    for key, value in (("image", image), ("mask", mask)):
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"{what}.{key}: send a base64 PNG or JPEG (with or without a data: prefix).")
    image = image or None
    mask = mask or None
    if mask and not image:
        raise InvalidRequest(f"{what}.mask: a mask needs the unit's image (same size); send image too.")
    return image, mask


# --- checking against the workspace and storing the images ------------------------------------


def store_units(ws: Workspace, units: list[A1111Unit], *, img2img: bool) -> tuple[list[ControlUnit], list[str]]:
    """ControlUnits whose images are uploads, and the uploads stored (to discard if the request fails).

    Every unit is checked (fields, module, model; a txt2img unit needs an image) before any
    image is stored; a refused image leaves no upload behind.
    """
    checked = []
    for unit in units:
        cu = check_unit_names(ws, control_unit(unit.fields, unit.what), unit.what)
        if unit.image is None and not img2img:
            raise InvalidRequest(
                f"{unit.what}.image: a txt2img ControlNet unit needs an image (base64); "
                "only img2img units default to the init image."
            )
        checked.append((unit, cu))
    stored: list[str] = []
    try:
        result = []
        for unit, cu in checked:
            names = _store_images(ws, unit)
            stored += [n for n in names if n]
            result.append(cu.model_copy(update={"image": names[0], "mask": names[1]}))
        return result, stored
    except BaseException:
        discard_uploads(ws, stored)
        raise


def decoded(data: str, what: str) -> PILImage.Image:
    """A base64 image (service.uploads.decode_image); one that does not decode is a 422 naming `what`."""
    try:
        return decode_image(data, what)[0]
    except InvalidRequest:
        raise
    except LorastudioError as exc:
        raise InvalidRequest.wrap(str(exc), exc) from None


def _store_images(ws: Workspace, unit: A1111Unit) -> tuple[str | None, str | None]:
    if unit.image is None:
        return None, None
    image = decoded(unit.image, f"{unit.what}.image")
    mask = None
    if unit.mask is not None:
        mask = decoded(unit.mask, f"{unit.what}.mask")
        if mask.size != image.size:
            raise InvalidRequest(
                f"{unit.what}.mask: {mask.size[0]}x{mask.size[1]} differs from the image's "
                f"{image.size[0]}x{image.size[1]}; send a mask of the image's size."
            )
    image_name = store_picture(ws, image)  # transparency on white, as the extension's HWC3 reads it
    try:
        return image_name, store_picture(ws, mask, mask=True) if mask is not None else None
    except BaseException:
        discard_uploads(ws, [image_name])
        raise

