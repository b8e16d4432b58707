"""The ControlNets in `studio/controlnet`: listed and named as the A1111 ControlNet extension does.

A1111 clients name a ControlNet by its title, `name [hash8]` (the hash is the extension's: the
first 8 hex of the SHA-256 of the 64 KiB at offset 1 MiB, cheap on multi-GB files), or by its
plain name; both resolve to the same file. A diffusers ControlNet folder (with `config.json`)
is listed by its folder name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import InvalidRequest, LorastudioError, NotFoundError
from lorastudio.generate.control_units import (
    CONTROL_MODES,
    HR_OPTIONS,
    MAX_CONTROL_UNITS,
    RESIZE_MODES,
    ControlUnit,
)
from lorastudio.service.names import STRICT, NamePolicy, resolve, unknown_name
from lorastudio.service.workspace import CONTROLNET_SUFFIXES, Workspace, list_weight_files

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from lorastudio.generate.annotators.base import Annotator, Slider

__all__ = [
    "CONTROL_MODES",
    "HR_OPTIONS",
    "LIST_CONTROLNETS",
    "MAX_CONTROL_UNITS",
    "NO_MODEL",
    "RESIZE_MODES",
    "ControlUnit",
    "check_model",
    "check_module",
    "check_thresholds",
    "check_unit_names",
    "control_unit",
    "controlnet_title",
    "detect",
    "find_controlnet",
    "list_annotators",
    "list_controlnets",
    "resolution_slider",
]

LIST_CONTROLNETS = "GET /controlnet/model_list (or `lorastudio control list`)"
_TITLE = re.compile(r"^(?P<name>.+?) \[(?P<hash>[0-9a-fA-F]{8,10})\]$")


def _is_controlnet_folder(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and (path / "config.json").is_file()


def _controlnet_paths(ws: Workspace) -> list[Path]:
    folder = ws.controlnet
    files = list_weight_files(folder, "controlnet")
    dirs = [p for p in sorted(folder.iterdir()) if _is_controlnet_folder(p)] if folder.is_dir() else []
    return sorted(files + dirs, key=lambda p: p.name.lower())


def _short_hash(path: Path) -> str:
    from lorastudio.adapters.hashing import legacy_hash

    if path.is_dir():  # a folder: the hash of its weights file, as the extension hashes what it loads
        weights = sorted(p for p in path.iterdir() if p.suffix.lower() in CONTROLNET_SUFFIXES)
        return legacy_hash(weights[0]) if weights else "00000000"
    return legacy_hash(path)


def controlnet_title(path: Path) -> str:
    """`name [hash8]`, what the A1111 extension shows and what its clients send back."""
    name = path.name if path.is_dir() else path.stem
    return f"{name} [{_short_hash(path)}]"


def list_controlnets(ws: Workspace) -> list[dict[str, Any]]:
    """One row per ControlNet: name, title, file; an unreadable entry is listed with its error."""
    rows = []
    for path in _controlnet_paths(ws):
        name = path.name if path.is_dir() else path.stem
        try:
            title, error = controlnet_title(path), None
        except OSError as exc:
            title, error = name, f"{path.name}: cannot be read ({exc})."
        rows.append({"name": name, "title": title, "file": path.name, "folder": path.is_dir(), "error": error})
    return rows


def find_controlnet(ws: Workspace, name: str, policy: NamePolicy = STRICT) -> Path:
    """The ControlNet a unit names: plain name, A1111 title `name [hash8]`, or (leniently) a path.

    A title whose hash does not match the file is still found by its name, as in A1111 (the
    extension looks the name up first); the recipe records the hash of what was used.
    """
    match = _TITLE.match(name.strip()) if isinstance(name, str) else None
    plain = match.group("name") if match else name
    found = resolve(
        plain, ws.controlnet, "ControlNet", LIST_CONTROLNETS, policy=NamePolicy(policy.strict),
        suffixes=CONTROLNET_SUFFIXES,
    )
    path = found.path
    if path is None or (path.is_dir() and not _is_controlnet_folder(path)):
        raise unknown_name("ControlNet", name, ws.controlnet, LIST_CONTROLNETS)
    return path


# --- checking a unit's names (what a request may send) ----------------------------------------

# What A1111 clients send for "no ControlNet chosen" (the extension's dropdown shows "None").
NO_MODEL = ("", "none")


def resolution_slider() -> Slider:
    """The preprocessor resolution slider every resizing preprocessor shows (the registry's)."""
    from lorastudio.generate.annotators.registry import RESOLUTION_SLIDER

    return RESOLUTION_SLIDER


def list_annotators() -> list:
    """The preprocessor rows (generate.annotators.registry), in the extension's module_list order."""
    from lorastudio.generate.annotators.registry import list_annotators as registry_rows

    return list(registry_rows())


def check_module(name: str | None, what: str = "module") -> Annotator:
    """The preprocessor row `name` names (its aliases too, any case), or a 422 listing the valid names."""
    from lorastudio.generate.annotators.registry import find_annotator

    try:
        return find_annotator(str(name or "none").strip())
    except LorastudioError as exc:
        raise InvalidRequest.wrap(f"{what}: {str(exc).rstrip('.')} (GET /controlnet/module_list).", exc) from None


def check_thresholds(
    row: Annotator, threshold_a: float | None, threshold_b: float | None, what: str = "unit"
) -> tuple[float | None, float | None]:
    """(threshold_a, threshold_b) for the preprocessor `row`: None = its default.

    A value for a parameter the preprocessor does not have means nothing and is dropped (the
    A1111 clients send 64 for every module); a value outside the parameter's range is a 422.
    """
    values = []
    for key, value in (("threshold_a", threshold_a), ("threshold_b", threshold_b)):
        slider = getattr(row, key)
        if value is None or slider is None:
            values.append(None)
            continue
        if not slider.min <= value <= slider.max:
            raise InvalidRequest(
                f"{what}.{key}: {value} is outside {slider.name!r} of {row.name!r} "
                f"({slider.min}..{slider.max}); send -1 for its default {slider.value}."
            )
        values.append(float(value))
    return values[0], values[1]


def _model_choices(ws: Workspace) -> str:
    titles = [row["title"] for row in list_controlnets(ws) if row["error"] is None]
    if not titles:
        return f"{ws.controlnet.name}/ holds no ControlNet yet; copy a .safetensors/.pth file (or a diffusers folder) there"
    return "use one of: " + ", ".join(titles) + " (GET /controlnet/model_list)"


def check_model(ws: Workspace, name: str | None, what: str = "model") -> Path:
    """The ControlNet file a unit names (title or plain name), or a 422 listing the valid titles."""
    wanted = str(name or "").strip()
    if wanted.lower() in NO_MODEL:
        raise InvalidRequest(f"{what}: no ControlNet model chosen; {_model_choices(ws)}.")
    try:
        return find_controlnet(ws, wanted)
    except NotFoundError:
        raise InvalidRequest(
            f"{what}: ControlNet {wanted[:200]!r} not found in {ws.controlnet.name}/; {_model_choices(ws)}.",
            key="controlnet_not_found",
            params={"name": wanted[:200]},
        ) from None


def check_unit_names(ws: Workspace, unit: ControlUnit, what: str = "unit") -> ControlUnit:
    """The unit with its preprocessor's own name and checked thresholds, once its module and model
    name real ones; else a 422 naming the unit and listing the valid names."""
    row = check_module(unit.module, f"{what}.module")
    check_model(ws, unit.model, f"{what}.model")
    threshold_a, threshold_b = check_thresholds(row, unit.threshold_a, unit.threshold_b, what)
    return unit.model_copy(update={"module": row.name, "threshold_a": threshold_a, "threshold_b": threshold_b})


def control_unit(fields: dict[str, Any], what: str = "unit") -> ControlUnit:
    """A ControlUnit from request fields, or a 422 naming the unit and the field that broke a limit."""
    from pydantic import ValidationError

    try:
        return ControlUnit.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error.get("loc", ()))
        message = str(error["msg"]).removeprefix("Value error, ")
        raise InvalidRequest(f"{what}{'.' + where if where else ''}: {message}.") from None


def detect(
    ws: Workspace,
    module: str,
    image: PILImage.Image,
    resolution: int = 512,
    threshold_a: float | None = None,
    threshold_b: float | None = None,
    poses: list[dict] | None = None,
) -> PILImage.Image:
    """A preprocessor's map of `image` (service.annotate), its name and thresholds checked first (422s).

    `poses`: a list the pose preprocessors append their keypoints to (OpenPose JSON).
    """
    from lorastudio.service.annotate import detect_map

    row = check_module(module, "controlnet_module")
    threshold_a, threshold_b = check_thresholds(row, threshold_a, threshold_b, "controlnet")
    return detect_map(ws, row.name, image, resolution, threshold_a, threshold_b, poses=poses)
