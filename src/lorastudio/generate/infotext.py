"""A1111 "infotext": the generation parameters stored in an image.

The webui writes a PNG `parameters` text chunk (EXIF UserComment for JPEG/WebP) such as

    a girl, <lora:mira:0.8>
    Negative prompt: blurry
    Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1, Size: 512x768

and its "PNG Info" tab parses it back. Users drag images between tools and expect both
directions to work, so formatting and parsing follow A1111's `create_infotext` and
`parse_generation_parameters` (webui 1.10) exactly.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.generate.a1111_fields import (  # noqa: F401  (re-exported: the A1111 field table)
    A1111_FIELDS,
    A1111Field,
    InfotextFacts,
    clip_skip_shown,
    config_fields_from_infotext,
    infotext_params,
)
from lorastudio.generate.image_metadata import (  # noqa: F401  (re-exported: where the text is stored)
    PARAMETERS_KEY,
    decode_user_comment,
    encode_user_comment,
    infotext_and_items,
    read_infotext,
    save_png,
    write_jpeg_with_infotext,
)

__all__ = [
    "A1111_FIELDS",
    "A1111Field",
    "InfotextFacts",
    "KNOWN_KEY_ORDER",
    "config_fields_from_infotext",
    "infotext_params",
    "decode_user_comment",
    "encode_user_comment",
    "format_infotext",
    "infotext_and_items",
    "parse_infotext",
    "quote",
    "read_infotext",
    "save_png",
    "unquote",
    "write_jpeg_with_infotext",
]

# The fixed keys of A1111's create_infotext, in its order. Other keys (hires fix, Lora
# hashes, ...) follow in the order given; Version and User always come last.
KNOWN_KEY_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
)
TRAILING_KEYS: tuple[str, ...] = ("Version", "User")

_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")


# ---------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------


def quote(value: Any) -> Any:
    """JSON-quote a value holding `,` `:` or a newline, so the parameter line stays parseable."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:
        return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """Undo `quote` for a value in double quotes; anything else is returned as is."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def _ordered_params(params: dict[str, object]) -> list[tuple[str, object]]:
    known = [(key, params[key]) for key in KNOWN_KEY_ORDER if key in params]
    fixed = set(KNOWN_KEY_ORDER) | set(TRAILING_KEYS)
    extras = [(key, value) for key, value in params.items() if key not in fixed]
    trailing = [(key, params[key]) for key in TRAILING_KEYS if key in params]
    return known + extras + trailing


def format_infotext(prompt: str, negative: str, params: dict[str, object]) -> str:
    """A1111's infotext for one image.

    Keys whose value is None are left out, `Clip skip` only appears when > 1, a key
    whose value equals its name is written alone (A1111's flags), and values with `,`
    `:` or a newline are JSON-quoted.
    """
    pairs = []
    for key, value in _ordered_params(params):
        if value is None:
            continue
        if key == "Clip skip" and not clip_skip_shown(value):
            continue
        pairs.append(key if key == value else f"{key}: {quote(value)}")
    negative_text = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_text}\n{', '.join(pairs)}".strip()


def parse_infotext(text: str, fill_defaults: bool = True) -> dict[str, Any]:
    """A1111's `parse_generation_parameters`: prompt, negative prompt and every key.

    `Size: 512x768` becomes `Size-1`/`Size-2` (strings, as in A1111); quoted values are
    unquoted; the last line counts as parameters only when at least three `key: value`
    pairs match. Missing keys get the defaults A1111 fills in (e.g. `Clip skip` "1")
    unless `fill_defaults` is False. Style extraction (it needs styles.csv) is not done.
    """
    result: dict[str, Any] = {}
    *lines, last_line = text.strip().split("\n")
    if len(_PARAM.findall(last_line)) < 3:
        lines.append(last_line)
        last_line = ""

    prompt, negative, in_negative = "", "", False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[16:].strip()
        if in_negative:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    for key, value in _PARAM.findall(last_line):
        if not value:
            continue  # A1111 fails on an empty value and skips the key
        if value[0] == '"' and value[-1] == '"':
            value = unquote(value)
        size = _IMAGE_SIZE.match(value) if isinstance(value, str) else None
        if size is not None:
            result[f"{key}-1"] = size.group(1)
            result[f"{key}-2"] = size.group(2)
        else:
            result[key] = value

    result["Prompt"] = prompt
    result["Negative prompt"] = negative
    if fill_defaults:
        _fill_a1111_defaults(result)
    return result


def _fill_a1111_defaults(result: dict[str, Any]) -> None:
    """What A1111 assumes for keys an infotext does not mention (webui 1.10 defaults)."""
    result.setdefault("Clip skip", "1")

    hypernet = result.get("Hypernet")
    if hypernet is not None:
        result["Prompt"] += f"<hypernet:{hypernet}:{result.get('Hypernet strength', '1.0')}>"

    if "Hires resize-1" not in result:
        result["Hires resize-1"] = 0
        result["Hires resize-2"] = 0
    result.setdefault("Hires sampler", "Use same sampler")
    result.setdefault("Hires schedule type", "Use same scheduler")
    result.setdefault("Hires checkpoint", "Use same checkpoint")
    result.setdefault("Hires prompt", "")
    result.setdefault("Hires negative prompt", "")
    result.setdefault("Mask mode", "Inpaint masked")
    result.setdefault("Masked content", "original")
    result.setdefault("Inpaint area", "Whole picture")
    result.setdefault("Masked area padding", 32)

    _restore_old_hires_fix_params(result)

    result.setdefault("RNG", "GPU")
    result.setdefault("Schedule type", "Automatic")
    result.setdefault("Schedule max sigma", 0)
    result.setdefault("Schedule min sigma", 0)
    result.setdefault("Schedule rho", 0)
    result.setdefault("VAE Encoder", "Full")
    result.setdefault("VAE Decoder", "Full")
    result.setdefault("FP8 weight", "Disable")
    if "Cache FP16 weight for LoRA" not in result and result["FP8 weight"] != "Disable":
        result["Cache FP16 weight for LoRA"] = False

    if "Emphasis" not in result and _uses_emphasis(result["Prompt"], result["Negative prompt"]):
        result["Emphasis"] = "Original"
    result.setdefault("Refiner switch by sampling steps", False)

    _apply_version_backcompat(result)


def _restore_old_hires_fix_params(result: dict[str, Any]) -> None:
    """Infotexts from before webui 1.0 store `First pass size`; convert it like A1111."""
    first_w = result.get("First pass size-1")
    first_h = result.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    try:
        first_w, first_h = int(first_w), int(first_h)
        width = int(result.get("Size-1", 512))
        height = int(result.get("Size-2", 512))
    except (TypeError, ValueError):
        return
    if first_w == 0 or first_h == 0:
        first_w, first_h = _old_hires_first_pass_size(width, height)
    result["Size-1"], result["Size-2"] = first_w, first_h
    result["Hires resize-1"], result["Hires resize-2"] = width, height


def _old_hires_first_pass_size(width: int, height: int) -> tuple[int, int]:
    import math

    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _uses_emphasis(prompt: str, negative: str) -> bool:
    from lorastudio.generate.prompt_parser import parse_prompt_attention

    try:
        pieces = parse_prompt_attention(prompt) + parse_prompt_attention(negative)
    except LorastudioError:
        return True
    return any(weight != 1.0 and text != "BREAK" for text, weight in pieces)


def _apply_version_backcompat(result: dict[str, Any]) -> None:
    """Flags A1111 sets for images made by older webui versions (infotext_versions.py)."""
    version = _parse_version(result.get("Version"))
    if version is None:
        return
    from packaging.version import Version

    if version < Version("1.6.0") and "[" in result.get("Prompt", ""):
        result["Old prompt editing timelines"] = True
    if version < Version("1.6.0") and result.get("Sampler", "") in ("DDIM", "PLMS"):
        result["Pad conds v0"] = True
    if version < Version("v1.7.0-225"):
        result["Downcast alphas_cumprod"] = True
    if version < Version("1.8.0") and result.get("Refiner"):
        result["Refiner switch by sampling steps"] = True


def _parse_version(text: object):
    if not isinstance(text, str):
        return None
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # packaging ships with pip/transformers; without it skip backcompat
        return None
    match = re.match(r"([^-]+-[^-]+)-.*", text)
    if match:
        text = match.group(1)
    try:
        return Version(text)
    except InvalidVersion:
        return None
