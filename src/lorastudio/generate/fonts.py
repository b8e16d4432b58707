"""One font lookup for every picture lorastudio labels (grids, contact sheets, loss curves).

Captions and trigger words are often Chinese; Pillow's built-in font has no CJK glyphs
and draws them as boxes. The font is found once per process, in this order:

1. `LORASTUDIO_FONT` (a .ttf/.otf/.ttc file),
2. a CJK font known to the system (`fc-match :lang=zh-cn`, then well-known paths of
   Debian's fonts-noto-cjk / fonts-wqy-microhei / fonts-wqy-zenhei and their cousins),
3. Pillow's scalable default font (Latin only), with a one-time warning saying how to fix it.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from pathlib import Path

from PIL import ImageFont

from lorastudio.errors import LorastudioError

__all__ = [
    "FONT_ENV",
    "fit_lines",
    "fit_text",
    "font_path",
    "has_cjk_font",
    "line_height",
    "load_font",
    "text_width",
    "wrap_lines",
    "wrap_text",
]

FONT_ENV = "LORASTUDIO_FONT"
logger = logging.getLogger("lorastudio.fonts")

# Where Linux distributions and macOS put fonts that cover Chinese, Japanese and Korean.
KNOWN_CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/wqy-microhei/wqy-microhei.ttc",
    "/usr/share/fonts/wqy-zenhei/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
)
_FC_MATCH_TIMEOUT_S = 5


def _fc_match_cjk() -> str | None:
    """The file fontconfig picks for Chinese text, when fontconfig is installed and it has one."""
    if shutil.which("fc-match") is None:
        return None
    try:
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", ":lang=zh-cn"],
            capture_output=True,
            text=True,
            timeout=_FC_MATCH_TIMEOUT_S,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    # fontconfig answers with its best guess even without a CJK font (DejaVu): check coverage.
    if found and Path(found).is_file() and _covers_cjk(found):
        return found
    return None


def _covers_cjk(path: str) -> bool:
    """True when the font draws two different CJK characters differently (tofu boxes are identical)."""
    try:
        font = ImageFont.truetype(path, 24)
    except OSError:
        return False
    first, second = font.getmask("中"), font.getmask("画")
    return bool(first.getbbox()) and (first.size != second.size or bytes(first) != bytes(second))


@functools.cache
def font_path() -> str | None:
    """The font file to draw labels with; None means Pillow's default (no CJK)."""
    configured = os.environ.get(FONT_ENV, "").strip()
    if configured:
        if not Path(configured).expanduser().is_file():
            raise LorastudioError(
                f"{FONT_ENV}={configured!r}: no such font file; point it at a .ttf/.otf/.ttc file or unset it."
            )
        return str(Path(configured).expanduser())
    found = _fc_match_cjk()
    if found:
        return found
    for candidate in KNOWN_CJK_FONTS:
        if Path(candidate).is_file() and _covers_cjk(candidate):
            return candidate
    logger.warning(
        "no CJK font found: Chinese, Japanese or Korean labels will show as boxes. "
        "Install one (Debian/Ubuntu: apt-get install fonts-noto-cjk or fonts-wqy-microhei) "
        "or set %s=/path/to/font.ttc.",
        FONT_ENV,
    )
    return None


def has_cjk_font() -> bool:
    """Whether labels with Chinese text will be drawn with real glyphs."""
    path = font_path()
    return path is not None and _covers_cjk(path)


@functools.cache
def load_font(size: int = 16) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The label font at `size` pixels (cached per size)."""
    path = font_path()
    if path is not None:
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def text_width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> int:
    """Width in pixels of one line of `text` in `font`."""
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def fit_text(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str, width: int) -> str:
    """`text` cut (with an ellipsis) to fit one line of `width` pixels."""
    if text_width(font, text) <= width:
        return text
    while text and text_width(font, text + "…") > width:
        text = text[:-1]
    return text + "…" if text else ""


def line_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    """Pixels from one label line to the next: the tallest Latin and CJK ink, plus a gap."""
    _, top, _, bottom = font.getbbox("Hg中")
    return int(bottom - top) + 4


def wrap_text(
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str, width: int, stop_after: int | None = None
) -> list[str]:
    """Lines of `text` no wider than `width` pixels: by words, by characters for CJK or long words.

    With `stop_after`, wrapping stops at the line after that many: a caller that only asks whether the
    text fits (or where to cut it) never measures the rest of a very long label.
    """
    lines: list[str] = []

    def full() -> bool:
        return stop_after is not None and len(lines) > stop_after

    for paragraph in str(text).split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if text_width(font, candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
                line = ""
            start = 0
            while start < len(word):  # a word that fits nowhere (or Chinese, which has no spaces): cut it
                take = _longest_fitting_prefix(font, word, start, width)
                line = word[start : start + take]
                start += take
                if start < len(word):
                    lines.append(line)
                    line = ""
                    if full():
                        return lines
            if full():
                return lines
        lines.append(line)
        if full():
            return lines
    return lines


def _longest_fitting_prefix(font, word: str, start: int, width: int) -> int:
    """How many characters of `word[start:]` fit in `width` pixels (at least one), found by doubling then
    halving: a 1,500-character word is measured a dozen times per line, on strings about a line long,
    not once per character."""
    rest = len(word) - start
    low, high = 1, 2
    while high < rest and text_width(font, word[start : start + high]) <= width:
        low, high = high, high * 2
    high = min(high, rest)
    if text_width(font, word[start : start + high]) <= width:
        return high
    high -= 1
    while low < high:
        middle = (low + high + 1) // 2
        if text_width(font, word[start : start + middle]) <= width:
            low = middle
        else:
            high = middle - 1
    return low


def wrap_lines(
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str, width: int, max_lines: int
) -> list[str]:
    """`wrap_text` kept to `max_lines`: the last line ends in an ellipsis only when text is left over."""
    lines = wrap_text(font, text, width, stop_after=max_lines)
    if len(lines) <= max_lines:
        return lines
    last = lines[max_lines - 1]
    while last and text_width(font, last.rstrip() + "…") > width:
        last = last[:-1]
    return [*lines[: max_lines - 1], last.rstrip() + "…"]


def _is_cjk(char: str) -> bool:
    """Chinese, Japanese and Korean script (and their punctuation), which wraps between any characters."""
    return "\u2e80" <= char <= "\u9fff" or "\uac00" <= char <= "\ud7af" or "\uff00" <= char <= "\uffef"


def _breaks_a_word(font, text: str, width: int) -> bool:
    """Whether a word of `text` (not CJK) is wider than `width`, so wrap_text would cut it in two."""
    return any(
        text_width(font, word) > width for word in str(text).split() if not any(_is_cjk(c) for c in word)
    )


def fit_lines(
    text: str, width: int, size: int, max_lines: int, min_size: int | None = None, max_height: int | None = None
) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, list[str]]:
    """(font, lines): `text` wrapped to `width` pixels in at most `max_lines` lines (and `max_height`
    pixels) in the font of `size`, or a smaller one down to `min_size` (half of `size` by default).

    A1111 shrinks a grid label's font until its lines fit their cell; here the largest size whose lines
    fit with whole words wins, else the largest whose lines fit at all (Chinese, long words), else the
    smallest size with the last line ending in an ellipsis (`wrap_lines`)."""
    smallest = max(1, min(size, min_size if min_size is not None else size // 2))

    def limit(font) -> int:
        if max_height is None:
            return max_lines
        return max(1, min(max_lines, max_height // line_height(font)))

    sizes = range(size, smallest - 1, -1)
    for whole_words in (True, False):
        for candidate in sizes:
            font = load_font(candidate)
            if whole_words and _breaks_a_word(font, text, width):
                continue
            lines = wrap_text(font, text, width, stop_after=limit(font))
            if len(lines) <= limit(font):
                return font, lines
    font = load_font(smallest)
    return font, wrap_lines(font, text, width, limit(font))
