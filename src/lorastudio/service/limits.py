"""The work one request may ask for: each limit is a `lorastudio serve` option, 0 = no limit.

Checked before a job is queued, so a client cannot turn one request into unbounded work;
a refusal is a 422 that names the option the operator would raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from lorastudio.errors import InvalidRequest, LimitExceeded

if TYPE_CHECKING:
    from lorastudio.generate.config import GenerateConfig

__all__ = [
    "MAX_PRIORITY",
    "MAX_SEED",
    "RequestLimits",
    "check_generate_limits",
    "check_grid_cells",
    "check_output_pixels",
    "check_priority",
]

# Priorities clients may give (the queue stores them as 64-bit integers).
MAX_PRIORITY = 1_000_000
# Seeds a request may give: -1 (random) or A1111's range, 0..2**32-1 (image i uses seed + i).
MAX_SEED = 2**32 - 1
# Where a request names no size: the largest native size of the models we run (SDXL).
NATIVE_SIZE = 1024


class RequestLimits(Protocol):
    """The limits `StudioSettings` carries (read at each check: an operator may change them)."""

    max_prompt_chars: int
    max_image_pixels: int
    max_output_pixels: int
    max_images_per_request: int
    max_grid_cells: int
    max_steps: int


def _limit(value: int, limit: int, what: str, option: str, unit: str = "") -> None:
    if limit and value > limit:
        raise LimitExceeded(
            f"{what}: {value}{unit} is over the server's limit of {limit}{unit} (lorastudio serve {option})."
        )


def check_priority(priority: int) -> None:
    """A priority the queue can store: -MAX_PRIORITY..MAX_PRIORITY."""
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidRequest(f"priority: {priority} is out of range; use -{MAX_PRIORITY}..{MAX_PRIORITY}.")


def check_generate_limits(
    limits: RequestLimits, cfg: GenerateConfig, init_size: tuple[int, int] | None = None
) -> None:
    """Refuse a generation that asks for more work than the server's limits (422 naming the option).

    `init_size`: the init picture's size; a request with no size samples at it (`request_size`)."""
    from lorastudio.generate.config import hires_target, request_size

    for key in ("seed", "subseed"):
        if getattr(cfg, key) > MAX_SEED:
            raise InvalidRequest(f"{key}: {getattr(cfg, key)} is out of range; use -1 (random) or 0..{MAX_SEED}.")
    chars = limits.max_prompt_chars
    _limit(len(cfg.prompt), chars, "prompt", "--max-prompt-chars", " characters")
    _limit(len(cfg.negative_prompt), chars, "negative_prompt", "--max-prompt-chars", " characters")
    _limit(cfg.steps, limits.max_steps, "steps", "--max-steps")
    _limit(cfg.hires_steps, limits.max_steps, "hires steps", "--max-steps")
    _limit(cfg.total_images, limits.max_images_per_request, "images (batch x count)", "--max-images")
    width, height = request_size(cfg, NATIVE_SIZE, init_size)
    what = f"size {width}x{height}" + (" (from the init image; send width and height)" if cfg.follows_picture else "")
    _limit(width * height, limits.max_image_pixels, what, "--max-pixels", " pixels")
    if cfg.hires_on:  # img2img has no hires pass
        upscaled, _ = hires_target(cfg, width, height)  # the largest image the pass holds, before a crop
        _limit(upscaled[0] * upscaled[1], limits.max_output_pixels, "hires output", "--max-output-pixels", " pixels")


def check_output_pixels(limits: RequestLimits, width: int, height: int, what: str) -> None:
    """An upscaled image (/extra-single-image) within `max_output_pixels`."""
    _limit(width * height, limits.max_output_pixels, what, "--max-output-pixels", " pixels")


def check_grid_cells(limits: RequestLimits, cells: int) -> None:
    """A grid of at most `--max-grid-cells` cells (each cell is one generation)."""
    limit = limits.max_grid_cells
    if limit and cells > limit:
        raise InvalidRequest(
            f"grid: {cells} cells is over the server's limit of {limit} (lorastudio serve --max-grid-cells)."
        )


def check_series_prompts(limits: RequestLimits, prompts: int) -> None:
    """A story series of at most `--max-grid-cells` prompts (each one generation, like a grid cell)."""
    limit = limits.max_grid_cells
    if limit and prompts > limit:
        raise InvalidRequest(
            f"series: {prompts} prompts is over the server's limit of {limit} (lorastudio serve --max-grid-cells)."
        )
