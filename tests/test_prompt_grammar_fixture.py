"""Every prompt in the recorded fixture still reads exactly as recorded.

The fixture (tests/fixtures/prompt_grammar/cases.json.gz, ~1900 prompts) pins the
A1111-compatible output of attention pairs, schedules, AND splitting and extra-network
tags, byte for byte, so the grammar can be restructured without changing a single
picture. See record.py in that folder for how the cases are made and re-recorded.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest


def _load_recorder():
    path = Path(__file__).parent / "fixtures" / "prompt_grammar" / "record.py"
    spec = importlib.util.spec_from_file_location("prompt_grammar_record", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record = _load_recorder()
CASES = json.loads(gzip.decompress(record.FIXTURE.read_bytes()))["cases"]


def _canonical(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_fixture_covers_the_recorded_prompts():
    assert [case["prompt"] for case in CASES] == record.prompts()
    assert len(CASES) > 1500


@pytest.mark.parametrize("chunk", range(8))
def test_every_recorded_prompt_reads_the_same(chunk):
    mismatches = []
    for case in CASES[chunk::8]:
        replayed = record.record_case(case["prompt"])
        for part in ("attention", "schedules", "composable", "networks"):
            if _canonical(replayed[part]) != _canonical(case[part]):
                mismatches.append((case["prompt"], part, case[part], replayed[part]))
    assert not mismatches, f"{len(mismatches)} differ, first: {mismatches[0]!r}"
