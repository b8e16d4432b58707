"""Contact-sheet captions (story mode, series): wrapped at the cell's width over a few lines, by words
or, for Chinese, by characters, with an ellipsis only when the lines run out."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image


def _ink_lines(strip: np.ndarray) -> int:
    """Text lines in a caption strip: runs of rows with dark pixels, separated by blank rows."""
    inked = (strip.min(axis=(1, 2)) < 128).tolist()
    return sum(1 for i, row in enumerate(inked) if row and (i == 0 or not inked[i - 1]))


def test_a_chinese_caption_wraps_over_lines_on_the_contact_sheet(tmp_path):
    from lorastudio.generate.fonts import has_cjk_font, load_font, wrap_lines
    from lorastudio.generate.series import CAPTION_LINES, contact_sheet

    if not has_cjk_font() and not os.environ.get("CI"):
        pytest.skip("no CJK font here; install fonts-noto-cjk or fonts-wqy-microhei (CI must have one)")
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64), "gray").save(image)
    prompt = "1: 卡通，一个穿着休闲白衬衫和牛仔裤的青年蹲在地上，给一个毛发柔顺的灰色小猫咪喂食"
    sheet = np.asarray(Image.open(contact_sheet([image, image], [prompt, "2: 猫"], tmp_path / "s.png")).convert("RGB"))
    first, second = sheet[256:, :256], sheet[256:, 256:]
    assert _ink_lines(first) >= 3  # ~45 characters at 14 px in a 248 px line: three lines, none cut
    assert _ink_lines(second) == 1
    assert not any(line.endswith("…") for line in wrap_lines(load_font(14), prompt, 248, CAPTION_LINES))


def test_long_english_captions_wrap_at_spaces_and_end_in_an_ellipsis_only_when_lines_run_out(tmp_path):
    from lorastudio.generate.fonts import load_font, text_width, wrap_lines
    from lorastudio.generate.series import contact_sheet

    font = load_font(14)
    caption = "a young man in a white shirt and jeans feeds a fluffy grey kitten on the floor of a small flat"
    lines = wrap_lines(font, caption, 248, 5)
    assert len(lines) > 1 and " ".join(lines) == caption  # whole words on every line
    assert all(text_width(font, line) <= 248 for line in lines)
    cut = wrap_lines(font, caption * 3, 248, 2)
    assert len(cut) == 2 and cut[-1].endswith("…") and not cut[0].endswith("…")
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64), "gray").save(image)
    sheet = np.asarray(Image.open(contact_sheet([image], [caption], tmp_path / "s.png")).convert("RGB"))
    assert _ink_lines(sheet[256:]) == len(lines)


def test_a_very_long_label_is_measured_about_a_line_at_a_time(monkeypatch):
    """A grid label has no length limit: a 1,500-character word took ~100 s to fit into 20 labels (each
    character measured at every font size). Cutting a word is a doubling-then-halving search, and
    wrapping stops once the lines run out; the lines are the ones character-by-character wrapping gives."""
    from lorastudio.generate import fonts

    font = fonts.load_font(14)
    word = "x" * 1500
    by_character, line = [], ""
    for char in word:
        if line and fonts.text_width(font, line + char) > 200:
            by_character.append(line)
            line = ""
        line += char
    by_character.append(line)
    calls = []
    real = fonts.text_width
    monkeypatch.setattr(fonts, "text_width", lambda f, text: calls.append(len(text)) or real(f, text))
    assert fonts.wrap_text(font, word, 200) == by_character
    assert fonts.wrap_text(font, f"ab {word}", 200, stop_after=3) == ["ab", *by_character[:3]]
    calls.clear()
    fonts.fit_lines(word * 2, 512, 28, 4)
    assert len(calls) < 2000 and sum(calls) < 200_000  # per character at 15 sizes: 40,000 calls, 10**8 characters
