"""A1111 prompt syntax: attention, prompt editing, AND, extra networks.

Expected values come from AUTOMATIC1111's own doctests and from running the webui's
lark-based parser (lark 1.1.2, as pinned by the webui) on each prompt.
"""

from __future__ import annotations

import pytest

from lorastudio.errors import LorastudioError
from lorastudio.generate.prompt_parser import (
    ExtraNetwork,
    extract_extra_networks,
    get_learned_conditioning_prompt_schedules,
    parse_prompt_attention,
    split_composable,
)

ATTENTION_CASES = [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ["a ", 1.0],
            ["house", 1.5730000000000004],
            [" ", 1.1],
            ["on", 1.0],
            [" a ", 1.1],
            ["hill", 0.55],
            [", sun, ", 1.1],
            ["sky", 1.4641000000000006],
            [".", 1.1],
        ],
    ),
    ("((a))", [["a", 1.2100000000000002]]),
    ("(abc:1.5)", [["abc", 1.5]]),
    ("\\(literal\\)", [["(literal)", 1.0]]),
    ("[abc]", [["abc", 0.9090909090909091]]),
    ("[[abc]]", [["abc", 0.8264462809917354]]),
    ("", [["", 1.0]]),
    ("()", [["", 1.0]]),
    ("a BREAK b", [["a", 1.0], ["BREAK", -1], ["b", 1.0]]),
    ("a BREAK", [["a", 1.0], ["BREAK", -1], ["", 1.0]]),
    ("(a BREAK b)", [["a", 1.1], ["BREAK", -1.1], ["b", 1.1]]),
    ("a\\b", [["ab", 1.0]]),
    ("\\\\", [["\\", 1.0]]),
    ("a:b", [["a:b", 1.0]]),
    ("(a:1.2", [["a:1.2", 1.1]]),
    ("(a: 1.2 )", [["a", 1.2]]),
    ("[a:1.2]", [["a:1.2", 0.9090909090909091]]),
    ("a)b]c", [["a)b]c", 1.0]]),
    ("(a:-1) BREAK", [["a", -1.0], ["", 1.0], ["BREAK", -1], ["", 1.0]]),
    ("(1girl:1.1), [blurry:0.5]", [["1girl", 1.1], [", ", 1.0], ["blurry:0.5", 0.9090909090909091]]),
    ("a BREAKfast", [["a BREAKfast", 1.0]]),
    ("x\nBREAK\ny", [["x", 1.0], ["BREAK", -1], ["y", 1.0]]),
    ("(a [b] c)", [["a ", 1.1], ["b", 1.0], [" c", 1.1]]),
]


@pytest.mark.parametrize(("prompt", "expected"), ATTENTION_CASES)
def test_parse_prompt_attention_matches_a1111(prompt, expected):
    assert parse_prompt_attention(prompt) == expected


def test_parse_prompt_attention_rejects_a_malformed_weight():
    with pytest.raises(LorastudioError, match="not a number"):
        parse_prompt_attention("(a:1.2.3)")


# (prompt, arguments after the prompt list, schedule)
SCHEDULE_CASES = [
    ("test", [10], [[10, "test"]]),
    ("a [b:3]", [10], [[3, "a "], [10, "a b"]]),
    ("a [b: 3]", [10], [[3, "a "], [10, "a b"]]),
    ("a [[[b]]:2]", [10], [[2, "a "], [10, "a [[b]]"]]),
    ("[(a:2):3]", [10], [[3, ""], [10, "(a:2)"]]),
    ("a [b : c : 1] d", [10], [[1, "a b  d"], [10, "a  c  d"]]),
    ("a[b:[c:d:2]:1]e", [10], [[1, "abe"], [2, "ace"], [10, "ade"]]),
    ("a [unbalanced", [10], [[10, "a [unbalanced"]]),
    ("a [b:.5] c", [10], [[5, "a  c"], [10, "a b c"]]),
    ("a [{b|d{:.5] c", [10], [[10, "a [{b|d{:.5] c"]]),
    ("((a][:b:c [d:3]", [10], [[3, "((a][:b:c "], [10, "((a][:b:c d"]]),
    ("[a|(b:1.1)]", [4], [[1, "a"], [2, "(b:1.1)"], [3, "a"], [4, "(b:1.1)"]]),
    ("[fe|]male", [4], [[1, "female"], [2, "male"], [3, "female"], [4, "male"]]),
    ("[fe|||]male", [5], [[1, "female"], [2, "male"], [3, "male"], [4, "male"], [5, "female"]]),
    ("a [b:c:5] d", [10], [[5, "a b d"], [10, "a c d"]]),
    ("a [cat:dog:0.5] photo", [20], [[10, "a cat photo"], [20, "a dog photo"]]),
    ("[a:b:3e1]", [10], [[10, "a"]]),
    ("[a:b:1e-1]", [10], [[10, "b"]]),
    ("a|b", [10], [[10, "a|b"]]),
    ("[a|b] c|d", [10], [[10, "[a|b] c|d"]]),
    ("x\\", [10], [[10, "x\\"]]),
    ("[a:b:-3]", [10], [[10, "b"]]),
    ("[a:b:+3]", [10], [[3, "a"], [10, "b"]]),
    ("[a:b: 3 ]", [10], [[3, "a"], [10, "b"]]),
    ("[a:[b:3]:5]", [10], [[3, "a"], [5, "a"], [10, "b"]]),
    ("a [b:.5] c", [10, 10], [[10, "a b c"]]),
    ("a [b:1.5] c", [10, 10], [[5, "a  c"], [10, "a b c"]]),
    ("a [b:12] c", [10, 10], [[2, "a  c"], [10, "a b c"]]),
    ("a [b:0.5] c", [10, 10, True], [[5, "a  c"], [10, "a b c"]]),
    ("a [b:5] c", [10, 10, True], [[5, "a  c"], [10, "a b c"]]),
    ("[a:b:0.29]", [100], [[28, "a"], [100, "b"]]),
    ("[a:b:0]", [10], [[10, "b"]]),
    ("\\[a:b:3\\]", [10], [[10, "\\[a:b:3\\]"]]),
    ("[a\\:b:3]", [10], [[3, ""], [10, "a\\:b"]]),
    ("[a|[b|c]]", [4], [[1, "a"], [2, "c"], [3, "a"], [4, "c"]]),
    ("[[a|b]:c:2]", [4], [[1, "a"], [2, "b"], [3, "c"], [4, "c"]]),
    ("(a:[b:c:2])", [4], [[2, "(a:b)"], [4, "(a:c)"]]),
    ("[:3]", [10], [[3, ""], [10, ""]]),
    ("[a::3]", [10], [[3, "a"], [10, ""]]),
    ("[a:b:3", [10], [[10, "[a:b:3"]]),
    ("[a:b]", [10], [[10, "[a:b]"]]),
    (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]",
        [100],
        [
            [25, "fantasy landscape with a mountain and an oak in foreground shoddy"],
            [50, "fantasy landscape with a lake and an oak in foreground in background shoddy"],
            [60, "fantasy landscape with a lake and an oak in foreground in background masterful"],
            [75, "fantasy landscape with a lake and an oak in background masterful"],
            [100, "fantasy landscape with a lake and a christmas tree in background masterful"],
        ],
    ),
    ("[a:b:12]", [10], [[10, "a"]]),
    ("[a:b:1.]", [10], [[10, "a"]]),
    (
        "1girl, [smile|frown], <lora:x:0.5>",
        [3],
        [
            [1, "1girl, smile, <lora:x:0.5>"],
            [2, "1girl, frown, <lora:x:0.5>"],
            [3, "1girl, smile, <lora:x:0.5>"],
        ],
    ),
    ("a\\\nb [c:2]", [4], [[4, "a\\\nb [c:2]"]]),
]


@pytest.mark.parametrize(("prompt", "args", "expected"), SCHEDULE_CASES)
def test_prompt_schedules_match_a1111(prompt, args, expected):
    assert get_learned_conditioning_prompt_schedules([prompt], *args) == [expected]


def test_schedules_are_per_prompt_and_repeat_for_duplicates():
    result = get_learned_conditioning_prompt_schedules(
        ["a red crown", "a [blue:green:5] jeweled crown", "a red crown"], 20
    )
    assert result == [
        [[20, "a red crown"]],
        [[5, "a blue jeweled crown"], [20, "a green jeweled crown"]],
        [[20, "a red crown"]],
    ]
    result[0][0][1] = "changed"  # callers may mutate; the cache must not leak
    assert result[2] == [[20, "a red crown"]]


def test_schedule_survives_pathological_nesting():
    prompt = "(" * 3000 + "a"
    assert get_learned_conditioning_prompt_schedules([prompt], 5) == [[[5, prompt]]]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a cat AND a dog", [("a cat", 1.0), (" a dog", 1.0)]),
        ("a AND b :1.2", [("a", 1.0), (" b", 1.2)]),
        ("a:0.5 AND b: -2", [("a", 0.5), (" b", -2.0)]),
        ("ANDROID AND x", [("ANDROID", 1.0), (" x", 1.0)]),
        ("(a:1.2) AND b", [("(a:1.2)", 1.0), (" b", 1.0)]),
        ("line one\nline two AND c :.5", [("line one\nline two", 1.0), (" c", 0.5)]),
    ],
)
def test_split_composable(prompt, expected):
    assert split_composable(prompt) == expected


@pytest.mark.parametrize(
    ("prompt", "text", "networks"),
    [
        (
            "a girl <lora:mira:0.7>",
            "a girl ",
            [ExtraNetwork("lora", "mira", 0.7, 0.7, None, ("mira", "0.7"))],
        ),
        ("<lora:mira>x", "x", [ExtraNetwork("lora", "mira", 1.0, 1.0, None, ("mira",))]),
        ("<lora:a:0.5:0.25>", "", [ExtraNetwork("lora", "a", 0.5, 0.25, None, ("a", "0.5", "0.25"))]),
        ("<lyco:b:0.3>", "", [ExtraNetwork("lora", "b", 0.3, 0.3, None, ("b", "0.3"))]),
        (
            "<lora:c:te=0.2:unet=0.9:dyn=8>",
            "",
            [ExtraNetwork("lora", "c", 0.2, 0.9, 8, ("c", "te=0.2", "unet=0.9", "dyn=8"))],
        ),
        ("<hypernet:h:0.4> y", " y", [ExtraNetwork("hypernet", "h", 0.4, 0.4, None, ("h", "0.4"))]),
        ("<foo:bar:baz>", "", [ExtraNetwork("foo", "bar", 1.0, 1.0, None, ("bar", "baz"))]),
        ("no tags <not a tag> <:x>", "no tags <not a tag> <:x>", []),
    ],
)
def test_extract_extra_networks(prompt, text, networks):
    assert extract_extra_networks(prompt) == (text, networks)


def test_extract_extra_networks_keeps_order_and_duplicates():
    text, networks = extract_extra_networks("<lora:a:1>, 1girl, <lora:b:0.5>, <lora:a:0.2>")
    assert text == ", 1girl, , "
    assert [(n.name, n.te_weight) for n in networks] == [("a", 1.0), ("b", 0.5), ("a", 0.2)]


def test_extract_extra_networks_rejects_a_non_numeric_lora_weight():
    with pytest.raises(LorastudioError, match="<lora:mira:strong>"):
        extract_extra_networks("<lora:mira:strong>")


@pytest.mark.parametrize("tag", ["<lora:x:1:1:inf>", "<lora:x:dyn=nan>", "<lora:x:dyn=2.7>", "<lyco:x:1:1:1e999>"])
def test_extract_extra_networks_refuses_a_dyn_that_is_not_a_whole_number(tag):
    with pytest.raises(LorastudioError, match="whole number") as refused:
        extract_extra_networks(f"a cat {tag}")
    assert tag in str(refused.value) and "\n" not in str(refused.value)


def test_other_extra_network_kinds_read_a_non_number_as_one_as_a1111_does():
    _, (network,) = extract_extra_networks("<hypernet:h:strong:0.5:x>")
    assert (network.te_weight, network.unet_weight, network.dyn_dim) == (1.0, 0.5, None)


def _cli():
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    _register()
    return CliRunner(), app


def test_prompt_parse_cli():
    import json

    runner, app = _cli()
    result = runner.invoke(app, ["prompt", "parse", "a (red:1.2) [dress]", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [["a ", 1.0], ["red", 1.2], [" ", 1.0], ["dress", 1 / 1.1]]
    result = runner.invoke(app, ["prompt", "parse", "(cat)"])
    assert result.exit_code == 0 and result.stdout.split() == ["1.1", "'cat'"]


def test_prompt_schedule_cli():
    import json

    runner, app = _cli()
    result = runner.invoke(app, ["prompt", "schedule", "a [cat:dog:0.5]", "--steps", "10", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [[5, "a cat"], [10, "a dog"]]
    result = runner.invoke(app, ["prompt", "schedule", "[fe|]male", "--steps", "3"])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["step 1: female", "step 2: male", "step 3: female"]
    result = runner.invoke(app, ["prompt", "schedule", "a [b:c:4]", "--steps", "10"])
    assert result.stdout.splitlines() == ["steps 1-4: a b", "steps 5-10: a c"]
