"""The A1111 ControlNet extension's own routes, `/controlnet/...`, in the extension's shapes.

Clients (webuiapi's `controlnet_*` methods, EasyPhoto, bots) ask these before they send units:
which ControlNets are installed (their `name [hash8]` titles), which preprocessors exist and
their sliders, and a preprocessor's map of an image (`/controlnet/detect`). Behind the same
security layer as every other route (api.app).
"""

from __future__ import annotations

import base64
import io
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from lorastudio.api.a1111_controlnet import decoded
from lorastudio.api.deps import get_studio
from lorastudio.errors import InvalidRequest
from lorastudio.service.controlnets import (
    MAX_CONTROL_UNITS,
    check_module,
    detect,
    list_annotators,
    list_controlnets,
    resolution_slider,
)
from lorastudio.service.studio import Studio

__all__ = ["API_VERSION", "router"]

router = APIRouter(prefix="/controlnet", tags=["controlnet"])

# The extension's API version (`external_code.get_api_version`) whose shapes these routes answer.
API_VERSION = 3
# Images one /controlnet/detect call may carry (each is decoded and run on the server).
MAX_DETECT_IMAGES = 8
DEFAULT_RESOLUTION = 512


class DetectRequest(BaseModel):
    """The extension's body; webuiapi sends `controlnet_images`, the extension reads `controlnet_input_images`."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list, max_length=MAX_DETECT_IMAGES)
    controlnet_images: list[str] = Field(default_factory=list, max_length=MAX_DETECT_IMAGES)
    controlnet_processor_res: int = Field(-1, ge=-1, le=4096, description="-1 = 512.")
    controlnet_threshold_a: float = Field(-1, ge=-1e6, le=1e6, description="-1 = the preprocessor's default.")
    controlnet_threshold_b: float = Field(-1, ge=-1e6, le=1e6, description="-1 = the preprocessor's default.")
    controlnet_masks: list[str] = Field(default_factory=list, max_length=MAX_DETECT_IMAGES)
    low_vram: bool = False


@router.get("/version")
def version() -> dict[str, Any]:
    return {"version": API_VERSION}


@router.get("/model_list")
def model_list(update: bool = True, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """The ControlNets in studio/controlnet by title, `name [hash8]` (read from the folder on every call)."""
    return {"model_list": _titles(studio)}


@router.get("/module_list")
def module_list(alias_names: bool = Query(False)) -> dict[str, Any]:
    """The preprocessors and their sliders. lorastudio has no separate display names: `alias_names`
    answers the same names."""
    rows = list_annotators()
    return {
        "module_list": [row.name for row in rows],
        "module_detail": {row.name: {"model_free": False, "sliders": _sliders(row)} for row in rows},
    }


@router.get("/settings")
def settings() -> dict[str, Any]:
    return {"control_net_unit_count": MAX_CONTROL_UNITS}


@router.get("/control_types")
def control_types(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """One control type, "All" (lorastudio does not tag its preprocessors by type)."""
    return {
        "control_types": {
            "All": {
                "module_list": [row.name for row in list_annotators()],
                "model_list": ["None", *_titles(studio)],
                "default_option": "none",
                "default_model": "None",
            }
        }
    }


@router.post("/detect")
def detect_route(req: DetectRequest, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """The preprocessor's map of each image, base64 PNG without a data: prefix, as the extension answers
    (with `poses`, the keypoints as OpenPose JSON, for the pose preprocessors)."""
    check_module(req.controlnet_module, "controlnet_module")  # a 422 listing the names, before any decoding
    images = _input_images(req)
    resolution = _resolution(req.controlnet_processor_res)
    threshold_a = None if req.controlnet_threshold_a == -1 else req.controlnet_threshold_a
    threshold_b = None if req.controlnet_threshold_b == -1 else req.controlnet_threshold_b
    inputs = [decoded(data, f"controlnet_input_images[{i}]") for i, data in enumerate(images)]
    poses: list[dict] = []
    maps = [
        detect(studio.workspace, req.controlnet_module, image, resolution, threshold_a, threshold_b, poses=poses)
        for image in inputs
    ]
    answer: dict[str, Any] = {"info": "Success", "images": [_png_base64(image) for image in maps]}
    if poses:  # the pose preprocessors' keypoints, one OpenPose JSON per image
        answer["poses"] = poses
    return answer


def _titles(studio: Studio) -> list[str]:
    return [row["title"] for row in list_controlnets(studio.workspace) if row["error"] is None]


def _sliders(row) -> list[dict[str, Any]]:
    """The sliders the preprocessor has (resolution first), as the extension lists its visible ones."""
    sliders = [resolution_slider() if row.uses_resolution else None, row.threshold_a, row.threshold_b]
    return [
        {"name": s.name, "value": s.value, "min": s.min, "max": s.max, "step": s.step} for s in sliders if s is not None
    ]


def _input_images(req: DetectRequest) -> list[str]:
    if req.controlnet_input_images and req.controlnet_images:
        raise InvalidRequest(
            "controlnet_input_images and controlnet_images are both given; send the images under one of them."
        )
    images = req.controlnet_input_images or req.controlnet_images
    if not images:
        raise InvalidRequest("controlnet_input_images: no image given; send at least one base64 image.")
    if req.controlnet_masks:
        raise InvalidRequest("controlnet_masks: not supported by lorastudio's /controlnet/detect; leave them out.")
    return images


def _resolution(value: int) -> int:
    if value == -1:
        return DEFAULT_RESOLUTION
    if value < 64:
        raise InvalidRequest(f"controlnet_processor_res: {value} is below 64; send 64..4096, or -1 for 512.")
    return value


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
