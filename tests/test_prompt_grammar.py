"""The grammar's own pieces: the lexer, the schedule tree and the attention reading.

Compatibility with A1111 is pinned by test_prompt_parser.py and the recorded fixture;
these tests pin the structure and the corner cases where the two readings of one token
stream must disagree.
"""

from __future__ import annotations

import pytest

from lorastudio.generate.prompt_grammar import (
    BACKSLASH,
    ESCAPE,
    TEXT,
    Alternation,
    Edit,
    attention_pairs,
    parse_schedule,
    prompt_schedules,
    tokenize,
)


def test_tokens_give_the_prompt_back_and_keep_syntax_apart():
    prompt = "a (b:1.2) [c|d] \\( e\\\n\\"
    tokens = tokenize(prompt)
    assert "".join(token.text for token in tokens) == prompt
    assert [token.kind for token in tokens] == [
        TEXT, "(", TEXT, ":", TEXT, ")", TEXT, "[", TEXT, "|", TEXT, "]", TEXT, ESCAPE, TEXT,
        BACKSLASH, TEXT, BACKSLASH,
    ]  # fmt: skip


def test_schedule_tree_holds_edits_and_alternations():
    nodes = parse_schedule("a [b:c:5] (d:[e|f])")
    assert nodes[0] == "a "
    edit = nodes[1]
    assert isinstance(edit, Edit) and (edit.before, edit.after, edit.when) == (["b"], ["c"], "5")
    assert nodes[2:6] == [" ", "(", "d", ":"]
    assert isinstance(nodes[6], Alternation) and nodes[6].options == [["e"], ["f"]]
    assert nodes[7] == ")"


@pytest.mark.parametrize(
    ("prompt", "before", "after"),
    [("[b:3]", None, ["b"]), ("[a::3]", ["a"], []), ("[:3]", None, [])],
)
def test_schedule_tree_reads_the_short_edit_forms(prompt, before, after):
    (edit,) = parse_schedule(prompt)
    assert (edit.before, edit.after, edit.when) == (before, after, "3")


@pytest.mark.parametrize("prompt", ["a|b", "x\\", "a \\\nb", "[a|b]c|d"])
def test_prompts_outside_the_grammar_are_used_as_written(prompt):
    assert parse_schedule(prompt) is None
    assert prompt_schedules([prompt], 3) == [[[3, prompt]]]


def test_a_group_that_does_not_close_is_text_and_the_rest_still_parses():
    nodes = parse_schedule("(a [b:2]")
    assert nodes[:2] == ["(", "a "] and isinstance(nodes[2], Edit)
    assert prompt_schedules(["[(a:2] [b:2]"], 4) == [[[2, "[(a:2] "], [4, "[(a:2] b"]]]


def test_attention_accepts_crossing_brackets():
    assert attention_pairs("(a [b) c]") == [["a ", 1.1], ["b", 1.0], [" c", 1 / 1.1]]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("(a\\:1.2)", [["a", 1.2]]),  # an escaped colon still starts a weight
        ("(a:\\1.2)", [["a:1.2", 1.1]]),  # but a backslash after the colon breaks it
        ("x \\BREAK y", [["x ", 1.0], ["BREAK", -1], ["y", 1.0]]),
        ("a|b (c)", [["a|b ", 1.0], ["c", 1.1]]),  # `|` is only syntax for schedules
        (":1.2)", [[":1.2)", 1.0]]),  # a weight with no open bracket is text
    ],
)
def test_attention_reads_escapes_and_weights(prompt, expected):
    assert attention_pairs(prompt) == expected
