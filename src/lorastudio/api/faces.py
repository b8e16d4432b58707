"""Native face routes, `/api/v1/faces`: detect faces in an image, compare two identities.

Images come as base64 (PNG/JPEG/WebP, optionally a data: URL) like every other route; the
backend is 'dlib' or a folder name in studio/models/faces. Thin: service.faces does the work.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from lorastudio.api.deps import get_studio
from lorastudio.service.studio import Studio

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/faces", tags=["faces"])

BACKEND_FIELD = Field(None, max_length=200, description="'dlib' (default) or a folder name in studio/models/faces.")


class DetectFacesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(..., description="Base64 image, or a data:image/...;base64 URL.")
    backend: str | None = BACKEND_FIELD


class CompareFacesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_a: str = Field(..., description="Base64 image with the first face (its largest face is used).")
    image_b: str = Field(..., description="Base64 image with the second face.")
    backend: str | None = BACKEND_FIELD


@router.get("/backends")
def backends_route(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """The face backends with their weights' licence and threshold (an `error` line when one cannot open)."""
    from lorastudio.service.faces import list_backends

    return {"backends": list_backends(studio.workspace)}


@router.post("/detect")
def detect_route(req: DetectFacesRequest, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Faces left to right: box [x0, y0, x1, y1], points (image-left eye first), score, size, roll."""
    from lorastudio.service.faces import detect_report
    from lorastudio.service.uploads import decode_image

    image, _ = decode_image(req.image, "image")
    return detect_report(studio.workspace, image, req.backend)


@router.post("/compare")
def compare_route(req: CompareFacesRequest, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Distance between the largest faces of the two images and the backend's same-person verdict."""
    from lorastudio.service.faces import compare_faces
    from lorastudio.service.uploads import decode_image

    first, _ = decode_image(req.image_a, "image_a")
    second, _ = decode_image(req.image_b, "image_b")
    return compare_faces(studio.workspace, first, second, req.backend, labels=("image_a", "image_b"))
