"""The ControlNet units of a portrait's inpaint passes, when the user has those ControlNets.

EasyPhoto guides its first pass with a canny map of the warped face and an openpose map of the
template, and its second pass with a tile ControlNet. Here each is used only when such a
ControlNet is in studio/controlnet (found by a name holding 'canny' / 'openpose' / 'tile', or
named explicitly); openpose also needs the preprocessor's body weights in
studio/models/annotators. Nothing is downloaded.
"""

from __future__ import annotations

from lorastudio.errors import NotFoundError
from lorastudio.generate.control_units import ControlUnit
from lorastudio.service.workspace import Workspace

__all__ = ["KINDS", "control_models", "control_units"]

KINDS = ("canny", "openpose", "tile")

OFF = ("none", "")


def _find_by_pattern(ws: Workspace, word: str) -> str | None:
    from lorastudio.service.controlnets import list_controlnets

    names = [row["name"] for row in list_controlnets(ws) if not row["error"] and word in row["name"].lower()]
    return names[0] if names else None


def control_models(ws: Workspace, canny: str | None, openpose: str | None, tile: str | None = None) -> dict[str, str]:
    """{'canny': name, 'openpose': name, 'tile': name}, each only when present.

    An explicit name wins ('none' turns a unit off; an unknown name is one line listing the
    ControlNets); None looks for a ControlNet whose name holds the word.
    """
    from lorastudio.generate.annotators.registry import BODY_WEIGHTS
    from lorastudio.service.controlnets import find_controlnet

    chosen = {}
    for kind, given in zip(KINDS, (canny, openpose, tile), strict=True):
        if given is not None and given.strip().lower() in OFF:
            continue
        if given is not None:
            find_controlnet(ws, given)
            chosen[kind] = given
        elif (name := _find_by_pattern(ws, kind)) is not None:
            chosen[kind] = name
    if "openpose" in chosen and not (ws.annotators / BODY_WEIGHTS).is_file():
        if openpose is not None:
            raise NotFoundError(
                f"--openpose {openpose}: the openpose preprocessor needs {ws.annotators / BODY_WEIGHTS}; "
                "put the weights there or pass --openpose none."
            )
        del chosen["openpose"]
    return chosen


def control_units(chosen: dict[str, str], weight: float) -> tuple[list[ControlUnit], list[ControlUnit]]:
    """(pass 1's units, pass 2's units) for `chosen`.

    Canny and tile read their pass's start image (a unit without an image reads the init image);
    the flow gives openpose the template's crop, so the head keeps the template's pose.
    """
    first, second = [], []
    if "canny" in chosen:
        first.append(ControlUnit(module="canny", model=chosen["canny"], weight=weight, pixel_perfect=True))
    if "openpose" in chosen:
        first.append(ControlUnit(module="openpose", model=chosen["openpose"], weight=weight, pixel_perfect=True))
    if "tile" in chosen:
        second.append(ControlUnit(module="tile_resample", model=chosen["tile"], weight=weight, pixel_perfect=True))
    return first, second
