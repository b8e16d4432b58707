"""A1111 "infotext": the generation parameters stored in an image.

The webui writes a PNG `parameters` text chunk (EXIF UserComment for JPEG/WebP) such as

    a girl, <lora:mira:0.8>
    Negative prompt: blurry
    Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1, Size: 512x768

and its "PNG Info" tab parses it back. Users drag images between tools and expect both
directions to work, so this module writes and reads that format as webui 1.10 does: the
same key order, quoting, size keys and filled-in defaults. The code is lorastudio's own (a
scanner for the parameter line, the defaults as tables in generate/infotext_defaults.py);
tests/fixtures/infotext holds ~2000 recorded cases it must answer identically.
"""

from __future__ import annotations

import json
import math
from typing import Any

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
from lorastudio.generate.infotext_defaults import (
    DEFAULTS_AFTER_OLD_HIRES,
    DEFAULTS_BEFORE_OLD_HIRES,
    VERSION_FLAGS,
    InfotextDefault,
)

__all__ = [
    "A1111_FIELDS",
    "A1111Field",
    "add_version_flags",
    "InfotextFacts",
    "KNOWN_KEY_ORDER",
    "config_fields_from_infotext",
    "infotext_params",
    "decode_user_comment",
    "encode_user_comment",
    "fill_a1111_defaults",
    "format_infotext",
    "infotext_and_items",
    "parse_infotext",
    "quote",
    "read_infotext",
    "save_png",
    "scan_parameter_pairs",
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

NEGATIVE_PREFIX = "Negative prompt:"
MIN_PARAMETER_PAIRS = 3  # fewer `key: value` pairs and the last line is part of the prompt
KEY_PUNCTUATION = " -/"  # allowed in a key besides letters, digits and `_`


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
    """Prompt, negative prompt and every parameter of an infotext, as A1111's "PNG Info" reads them.

    The last line holds the parameters when at least three `key: value` pairs are found in it.
    Values are strings: quoted ones are unquoted, and a size such as `Size: 512x768` becomes
    `Size-1`/`Size-2`. Missing keys get the defaults A1111 fills in (e.g. `Clip skip` "1")
    unless `fill_defaults` is False. Style extraction (it needs styles.csv) is not done.
    """
    lines = text.strip().split("\n")
    pairs = scan_parameter_pairs(lines[-1])
    if len(pairs) >= MIN_PARAMETER_PAIRS:
        lines.pop()
    else:
        pairs = []

    result = _parameters(pairs)
    result["Prompt"], result["Negative prompt"] = _prompt_and_negative(lines)
    if fill_defaults:
        fill_a1111_defaults(result)
    return result


# ---------------------------------------------------------------------------------------
# The prompt lines
# ---------------------------------------------------------------------------------------


def _prompt_and_negative(lines: list[str]) -> tuple[str, str]:
    """Lines up to the first `Negative prompt:` are the prompt, that line and the rest the negative."""
    prompt: list[str] = []
    negative: list[str] = []
    current = prompt
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX):
            current = negative
            line = line[len(NEGATIVE_PREFIX) :].strip()
        current.append(line)
    return _joined(prompt), _joined(negative)


def _joined(lines: list[str]) -> str:
    """One text, without the empty lines before its first words."""
    return "\n".join(lines).lstrip("\n")


# ---------------------------------------------------------------------------------------
# The parameter line: `Key: value, Other key: "quoted, value", ...`
# ---------------------------------------------------------------------------------------


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _is_key_char(char: str) -> bool:
    return _is_word_char(char) or char in KEY_PUNCTUATION


def scan_parameter_pairs(line: str) -> list[tuple[str, str]]:
    """Every `key: value` pair in one line, values as written (quotes kept, may be empty).

    A key starts with a letter, digit or `_`, has at least two characters of those, spaces,
    `-` and `/`, and ends at its colon. Text that is not such a pair is skipped.
    """
    pairs = []
    position = 0
    while position < len(line):
        if not _is_word_char(line[position]):
            position += 1
            continue
        key_end = position
        while key_end < len(line) and _is_key_char(line[key_end]):
            key_end += 1
        if key_end - position < 2 or key_end == len(line) or line[key_end] != ":":
            position = key_end  # no key starts anywhere in this run of key characters
            continue
        key = line[position:key_end]
        value, position = _value_at(line, key_end + 1)
        pairs.append((key, value))
    return pairs


def _value_at(line: str, start: int) -> tuple[str, str | int]:
    """The value after a key's colon and where the next pair may start.

    A value is either a double-quoted string (backslash escapes inside) followed by a comma
    or the line's end, or else everything up to the next comma.
    """
    while start < len(line) and line[start].isspace():
        start += 1
    quoted_end = _quoted_end(line, start)
    if quoted_end is not None:
        return line[start:quoted_end], quoted_end + 1
    comma = line.find(",", start)
    if comma == -1:
        return line[start:], len(line)
    return line[start:comma], comma + 1


def _quoted_end(line: str, start: int) -> int | None:
    """The index after a non-empty quoted string starting at `start` that a comma or the line's end follows."""
    if start >= len(line) or line[start] != '"':
        return None
    position = start + 1
    while position < len(line):
        char = line[position]
        if char == "\\":
            if position + 1 == len(line):
                return None
            position += 2
        elif char == '"':
            if position == start + 1:
                return None  # "" is an empty value, read up to the comma
            end = position + 1
            return end if end == len(line) or line[end] == "," else None
        else:
            position += 1
    return None


def _parameters(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Parsed keys from the scanned pairs: empty values dropped, quotes undone, sizes split."""
    result: dict[str, Any] = {}
    for key, written in pairs:
        if not written:
            continue
        value = unquote(written)
        size = _image_size(value)
        if size is None:
            result[key] = value
        else:
            result[f"{key}-1"], result[f"{key}-2"] = size
    return result


def _image_size(value: str) -> tuple[str, str] | None:
    """`512x768` -> ("512", "768"), digits kept as text; anything else None (one trailing newline allowed)."""
    if value.endswith("\n"):
        value = value[:-1]
    width, x, height = value.partition("x")
    if x and width.isdecimal() and height.isdecimal():
        return width, height
    return None


# ---------------------------------------------------------------------------------------
# A1111's defaults for keys the text does not state
# ---------------------------------------------------------------------------------------


def fill_a1111_defaults(result: dict[str, Any]) -> None:
    """Fill in what A1111 assumes for keys an infotext leaves out (its webui 1.10 defaults).

    The tables are generate/infotext_defaults.py; the two steps in between convert what older
    webui versions wrote.
    """
    _add_hypernet_to_prompt(result)
    _fill(result, DEFAULTS_BEFORE_OLD_HIRES)
    _convert_old_hires_fix(result)
    _fill(result, DEFAULTS_AFTER_OLD_HIRES)
    add_version_flags(result)


def _fill(result: dict[str, Any], defaults: tuple[InfotextDefault, ...]) -> None:
    for default in defaults:
        if default.only_if is not None and (default.key in result or not default.only_if(result)):
            continue
        if isinstance(default.value, tuple):
            if f"{default.key}-1" not in result:
                result[f"{default.key}-1"], result[f"{default.key}-2"] = default.value
        else:
            result.setdefault(default.key, default.value)


def _add_hypernet_to_prompt(result: dict[str, Any]) -> None:
    """Old infotexts name a hypernetwork as a key; A1111 puts it back into the prompt."""
    hypernet = result.get("Hypernet")
    if hypernet is not None:
        strength = result.get("Hypernet strength", "1.0")
        result["Prompt"] += f"<hypernet:{hypernet}:{strength}>"


def _convert_old_hires_fix(result: dict[str, Any]) -> None:
    """Before webui 1.0 `Size` was the final size and `First pass size` the first pass's.

    Today's keys say it the other way round: `Size` is the first pass and `Hires resize` the
    final size. A first pass of 0x0 meant "about 512x512 in the final aspect ratio".
    Sizes no webui could have made (negative, or a final size with no area) are left as
    written: the image's other keys still read, and a recipe using them is refused later.
    """
    if result.get("First pass size-1") is None or result.get("First pass size-2") is None:
        return
    try:
        first_width = int(result["First pass size-1"])
        first_height = int(result["First pass size-2"])
        final_width = int(result.get("Size-1", 512))
        final_height = int(result.get("Size-2", 512))
    except (TypeError, ValueError):
        return
    if min(first_width, first_height) < 0 or min(final_width, final_height) <= 0:
        return
    if first_width == 0 or first_height == 0:
        first_width, first_height = _first_pass_of_512_area(final_width, final_height)
    result["Size-1"], result["Size-2"] = first_width, first_height
    result["Hires resize-1"], result["Hires resize-2"] = final_width, final_height


def _first_pass_of_512_area(width: int, height: int) -> tuple[int, int]:
    """The size with the area of 512x512 and the aspect ratio of `width`x`height`, rounded up to 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def add_version_flags(result: dict[str, Any]) -> None:
    """Set the flags for images an older webui made (see `VERSION_FLAGS`); no or odd version, none.

    A1111 sets them whenever it reads an image's parameters (its `auto_backcompat`), so a recipe
    read for regenerating gets them even where no other default is filled in.
    """
    version = _webui_version(result.get("Version"))
    if version is None:
        return
    from packaging.version import Version

    for flag in VERSION_FLAGS:
        if version < Version(flag.before) and (flag.only_if is None or flag.only_if(result)):
            result[flag.key] = True


def _webui_version(text: object):
    """`v1.10.1` or `1.7.0-225-gabc1234` (a build after a release; the commit is dropped), else None."""
    if not isinstance(text, str):
        return None
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # packaging ships with pip/transformers; without it skip the flags
        return None
    parts = text.split("-")
    if len(parts) > 2 and parts[0] and parts[1]:
        text = f"{parts[0]}-{parts[1]}"
    try:
        return Version(text)
    except InvalidVersion:
        return None
