"""A ControlNet unit as a request carries it: one typed model for the CLI, the API, recipes and the UI.

The names and meanings follow the A1111 ControlNet extension (its API's unit fields and the
values its UI shows), so a unit written by an A1111 client means the same here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lorastudio.config import StrictModel

__all__ = [
    "CONTROL_MODES",
    "HR_OPTIONS",
    "MAX_CONTROL_UNITS",
    "RESIZE_MODES",
    "ControlMode",
    "ControlResizeMode",
    "ControlUnit",
    "HiresOption",
]

MAX_CONTROL_UNITS = 3

ControlResizeMode = Literal["Just Resize", "Crop and Resize", "Resize and Fill"]
ControlMode = Literal["Balanced", "My prompt is more important", "ControlNet is more important"]
HiresOption = Literal["Both", "Low res only", "High res only"]

RESIZE_MODES: tuple[str, ...] = ("Just Resize", "Crop and Resize", "Resize and Fill")
CONTROL_MODES: tuple[str, ...] = ("Balanced", "My prompt is more important", "ControlNet is more important")
HR_OPTIONS: tuple[str, ...] = ("Both", "Low res only", "High res only")


class ControlUnit(StrictModel):
    """One ControlNet unit: a preprocessor (`module`) turns `image` into a map that `model` follows."""

    module: str = Field(
        "none", description="Preprocessor (annotator) run on the image first, e.g. 'canny'; 'none' = the image is the map."
    )
    model: str = Field(
        ..., description="ControlNet in studio/controlnet: name, A1111 title 'name [hash8]', or a path."
    )
    image: str | None = Field(
        None, description="Control image path; default: the init image (img2img/inpaint)."
    )
    mask: str | None = Field(
        None,
        description="Optional mask (same size as the image): white = where the unit acts; for the inpaint "
        "preprocessors, the hole to fill (default: the request's inpaint mask).",
    )
    weight: float = Field(1.0, ge=0, le=2, description="Control weight (ControlNet conditioning scale).")
    guidance_start: float = Field(0.0, ge=0, le=1, description="Fraction of the steps where the unit starts.")
    guidance_end: float = Field(1.0, ge=0, le=1, description="Fraction of the steps where the unit stops.")
    resize_mode: ControlResizeMode = Field(
        "Crop and Resize", description="How a control image of another aspect meets the output size."
    )
    control_mode: ControlMode = Field("Balanced", description="Balance between the prompt and the control.")
    pixel_perfect: bool = Field(
        False, description="Run the preprocessor at the resolution the output needs (ignores processor_res)."
    )
    processor_res: int = Field(512, ge=64, le=4096, description="Preprocessor resolution (short side).")
    threshold_a: float | None = Field(None, description="Preprocessor's first parameter (e.g. canny low threshold).")
    threshold_b: float | None = Field(None, description="Preprocessor's second parameter (e.g. canny high threshold).")
    hr_option: HiresOption = Field("Both", description="Which hires-fix passes the unit acts in.")

    @model_validator(mode="after")
    def _start_before_end(self) -> ControlUnit:
        if self.guidance_start > self.guidance_end:
            raise ValueError(
                f"guidance_start {self.guidance_start} is after guidance_end {self.guidance_end}; "
                "start must be <= end"
            )
        return self
