"""What a front asks of a comparison grid (A1111's X/Y/Z plot): three axes and the grid's options.

The generation part of a grid request is a `GenerateConfig`; this is the rest, one pydantic model
shared by the CLI options, the web form, the A1111 script arguments and the job queue's payload.
Kept apart from `service.grid` so that the planning (`service.grid_plan`) and the running can both
read it without importing each other.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lorastudio.config import StrictModel

__all__ = ["AxisRequest", "GridRequest"]


class AxisRequest(StrictModel):
    axis: str = Field("nothing", description="Axis name: lora_weight, checkpoint, seed, cfg, steps, ...")
    values: str | list[Any] = Field("", description="A1111 value list: '0.4,0.7,1.0', '1-5', '0.4-1.0 [4]'.")


class GridRequest(StrictModel):
    """The grid part of a request; the generation part is a GenerateConfig."""

    x: AxisRequest = Field(default_factory=AxisRequest, description="The axis across: one column per value.")
    y: AxisRequest = Field(default_factory=AxisRequest, description="The axis down: one row per value.")
    z: AxisRequest = Field(
        default_factory=AxisRequest, description="The third axis: one X/Y grid per value, side by side under its label."
    )
    lora: str | None = Field(None, description="LoRA name the weight/checkpoint axes act on.")
    run: str | None = Field(None, description="Training run whose checkpoints the checkpoint axis walks.")
    draw_legend: bool = Field(True, description="Label the rows, columns and Z grids with their axis values (A1111 draw legend).")
    fixed_seeds: bool = Field(True, description="Resolve seed -1 once for the whole grid (A1111's default).")
    margin: int = Field(0, ge=0, le=500, description="Pixels between cells.")
    include_sub_images: bool = Field(
        False, description="Show and answer every cell after the grid (A1111 Include Sub Images); cells are saved anyway."
    )
    include_sub_grids: bool = Field(
        False,
        description="Save, show and answer each Z value's X/Y grid too (A1111 Include Sub Grids); a lone Z"
        " value's is shown and answered, not saved, as A1111.",
    )
    vary_seeds_x: bool = Field(False, description="A new seed per column: the cell's seed + its column (A1111).")
    vary_seeds_y: bool = Field(False, description="A new seed per row, after the columns' (A1111 Vary seeds for Y).")
    vary_seeds_z: bool = Field(False, description="A new seed per Z grid, after the rows' (A1111 Vary seeds for Z).")
