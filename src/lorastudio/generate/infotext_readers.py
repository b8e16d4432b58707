"""The readers `A1111_FIELDS`' rows are built from: an infotext key's text -> `GenerateConfig` fields.

Each reader takes the parsed keys (`parse_infotext(text, fill_defaults=False)`) and answers the
fields it sets, or nothing where the image does not state the key, so the config keeps its own
default. A key that must be a number and is not is one line naming the key. The table is
`generate.a1111_fields`, the writers `generate.infotext_writers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lorastudio.errors import LorastudioError

__all__ = [
    "read_denoising",
    "read_flag",
    "read_hires_resize",
    "read_inpaint_area",
    "read_masked_content",
    "read_number",
    "read_seed_resize",
    "read_size",
    "read_text",
    "read_unless",
]


def _as_number(params: dict[str, Any], key: str, cast: Callable[[Any], Any]) -> Any:
    value = params[key]
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise LorastudioError(f"infotext {key!r}: {value!r} is not a number; fix or remove it.") from None


def read_number(key: str, field: str, cast: Callable[[Any], Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def read(params: dict[str, Any]) -> dict[str, Any]:
        if params.get(key) in (None, ""):
            return {}
        return {field: _as_number(params, key, cast)}

    return read


def read_size(params: dict[str, Any]) -> dict[str, Any]:
    return {**read_number("Size-1", "width", int)(params), **read_number("Size-2", "height", int)(params)}


def read_seed_resize(params: dict[str, Any]) -> dict[str, Any]:
    return {
        **read_number("Seed resize from-1", "seed_resize_from_w", int)(params),
        **read_number("Seed resize from-2", "seed_resize_from_h", int)(params),
    }


def read_hires_resize(params: dict[str, Any]) -> dict[str, Any]:
    return {
        **read_number("Hires resize-1", "hires_resize_x", int)(params),
        **read_number("Hires resize-2", "hires_resize_y", int)(params),
    }


def read_denoising(params: dict[str, Any]) -> dict[str, Any]:
    """One key, two fields: the hires pass's strength when the image had one, else img2img's."""
    if params.get("Denoising strength") in (None, ""):
        return {}
    resized = any(str(params.get(f"Hires resize-{side}", 0) or 0) not in ("0", "") for side in (1, 2))
    field = "hires_strength" if "Hires upscale" in params or resized else "strength"
    return {field: _as_number(params, "Denoising strength", float)}


def read_inpaint_area(params: dict[str, Any]) -> dict[str, Any]:
    area = str(params.get("Inpaint area", "") or "").strip().lower()
    return {"inpaint_only_masked": area == "only masked"} if area else {}


def read_masked_content(params: dict[str, Any]) -> dict[str, Any]:
    from lorastudio.generate.images import INPAINTING_FILLS

    content = str(params.get("Masked content", "") or "").strip().lower()
    return {"inpainting_fill": INPAINTING_FILLS.index(content)} if content in INPAINTING_FILLS else {}


def read_text(
    key: str, field: str, cast: Callable[[str], Any] = str
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A text value read as it is written (or through `cast`, e.g. to a canonical label)."""

    def read(params: dict[str, Any]) -> dict[str, Any]:
        return {field: cast(str(params[key]))} if params.get(key) else {}

    return read


def read_flag(key: str, field: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A True/False key (A1111 writes only True)."""

    def read(params: dict[str, Any]) -> dict[str, Any]:
        value = str(params.get(key, "") or "").strip().lower()
        return {field: value in ("true", "1", "yes")} if value else {}

    return read


def read_unless(
    key: str, field: str, same: str, cast: Callable[[str], Any] = str
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A text value, where it is not A1111's word for the first pass's (`Use same sampler`)."""

    def read(params: dict[str, Any]) -> dict[str, Any]:
        value = str(params.get(key) or "").strip()
        return {field: cast(value)} if value and value.lower() != same.lower() else {}

    return read
