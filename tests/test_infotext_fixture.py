"""The infotext reader answers exactly what it answered when the fixture was recorded.

`tests/fixtures/infotext/cases.jsonl.gz` holds ~2000 texts (made by `record.py` next to it) and
what `parse_infotext` gave for each, with and without A1111's defaults (and, for the texts
`format_infotext` wrote, what it was given). The reader is our own
code; this replay keeps its behaviour identical to the A1111 dialect users' images carry.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from lorastudio.generate.infotext import format_infotext, parse_infotext

CASES_FILE = Path(__file__).parent / "fixtures" / "infotext" / "cases.jsonl.gz"


def _cases() -> list[dict[str, Any]]:
    text = gzip.decompress(CASES_FILE.read_bytes()).decode("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _answer(text: str, fill_defaults: bool) -> Any:
    try:
        return parse_infotext(text, fill_defaults=fill_defaults)
    except Exception as error:  # noqa: BLE001  (the recorded answer may be an exception)
        return {"error": type(error).__name__}


def _exact(answer: dict[str, Any]) -> str:
    """Keys in order with values and their types: `0 == False` must not pass."""
    return json.dumps(list(answer.items()), ensure_ascii=True)


def _expected_filled(case: dict[str, Any]) -> dict[str, Any]:
    if "parsed" in case:
        return case["parsed"]
    expected = dict(case["parsed_raw"])
    expected.update(case["filled"])
    return expected


def test_fixture_covers_the_branches():
    cases = _cases()
    assert len(cases) > 1900
    filled = [_expected_filled(case) for case in cases]
    assert not any("error" in answer for answer in filled)  # old hires sizes of 0x0 or below read too
    assert any(case["parsed_raw"].get("Size-1") == "0" and "First pass size-1" in case["parsed_raw"] for case in cases)
    assert any(answer.get("Pad conds v0") for answer in filled)
    assert any(answer.get("Downcast alphas_cumprod") for answer in filled)
    assert any(answer.get("Hires resize-1") not in (0, None) for answer in filled)
    assert any("<hypernet:" in answer.get("Prompt", "") for answer in filled)


@pytest.mark.parametrize("chunk", range(4))
def test_parse_infotext_replays_the_fixture(chunk: int):
    cases = _cases()[chunk::4]
    wrong = []
    for case in cases:
        if _exact(_answer(case["text"], False)) != _exact(case["parsed_raw"]):
            wrong.append(("raw", case["text"]))
        if _exact(_answer(case["text"], True)) != _exact(_expected_filled(case)):
            wrong.append(("filled", case["text"]))
    assert not wrong, f"{len(wrong)} cases differ, first: {wrong[:3]}"


def test_format_infotext_replays_the_fixture():
    round_trips = [case for case in _cases() if "format" in case]
    assert len(round_trips) > 200
    for case in round_trips:
        prompt, negative, params = case["format"]
        assert format_infotext(prompt, negative, params) == case["text"]
