"""Typed options for the data-set jobs (CLI flags, API bodies and the UI share them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lorastudio.config import StrictModel

__all__ = ["CleanConfig", "CaptionerConfig", "TaggerConfig", "CaptionMode"]

CaptionMode = Literal["missing", "overwrite", "prepend", "append"]


class CleanConfig(StrictModel):
    """Filters for `dataset clean`. The data-juicer preset of the Kolors walk-through is
    `min_width=1024 min_height=1024 min_ratio=0.5 max_ratio=2.0`."""

    min_width: int = Field(0, ge=0, description="Drop images narrower than this (px).")
    min_height: int = Field(0, ge=0, description="Drop images shorter than this (px).")
    min_ratio: float | None = Field(None, gt=0, description="Drop images with width/height below this.")
    max_ratio: float | None = Field(None, gt=0, description="Drop images with width/height above this.")
    min_side: int = Field(0, ge=0, description="Drop images whose width or height is below this (px).")
    max_aspect: float | None = Field(
        None, ge=1, description="Drop images whose long side is more than this many times the short side."
    )
    dedupe: Literal["off", "exact", "near"] = Field(
        "near", description="exact: same pixels; near: perceptual hash within phash_threshold bits."
    )
    phash_threshold: int = Field(
        6, ge=0, le=32, description="Max differing bits (of 64) to call two images near duplicates."
    )
    min_sharpness: float | None = Field(
        None,
        ge=0,
        description="Drop images whose Laplacian variance is below this (blurry); ~100 is a common start.",
    )


class CaptionerConfig(StrictModel):
    """An image-to-text model (BLIP, BLIP-2, Florence-2, GIT...) run through transformers."""

    model: str = Field(
        ...,
        description="A transformers model folder (config.json, weights, processor files), or a hub id already"
        " in the cache (or with allow_download); not a single .pth file such as kohya's BLIP weights.",
    )
    prompt: str | None = Field(None, description="Text prompt for conditional captioning, e.g. 'a photo of'.")
    max_new_tokens: int = Field(40, ge=1, le=512, description="Longest caption in tokens.")
    num_beams: int = Field(1, ge=1, le=16, description="Beam search width (1 = greedy).")
    batch_size: int = Field(4, ge=1, description="Images per forward pass.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'.")
    allow_download: bool = Field(False, description="Fetch a hub id when it is not cached (needs network).")


class TaggerConfig(StrictModel):
    """A WD14-family ONNX tagger: a folder (or hub id) with model.onnx + selected_tags.csv."""

    model: str = Field(..., description="Folder with model.onnx and selected_tags.csv, or a cached hub id.")
    general_threshold: float = Field(0.35, ge=0, le=1, description="Minimum score for general tags.")
    character_threshold: float = Field(0.85, ge=0, le=1, description="Minimum score for character tags.")
    undesired_tags: list[str] = Field(
        default_factory=list, description="Tags never written (either spelling)."
    )
    replace_underscores: bool = Field(
        True, description="'long_hair' -> 'long hair' (kaomoji such as ^_^ are kept)."
    )
    character_first: bool = Field(True, description="Put character tags before general tags.")
    include_rating: bool = Field(False, description="Add the top rating tag (general, sensitive, ...).")
    batch_size: int = Field(8, ge=1, description="Images per ONNX run.")
    allow_download: bool = Field(False, description="Fetch a hub id when it is not cached (needs network).")
