"""AUTOMATIC1111's prompt syntax, read exactly as the webui reads it.

Users paste prompts from A1111 and expect the same picture, so every rule here follows
the webui's behaviour, including its corner cases:

- attention: `(a)` x1.1, `(a:1.3)`, `[a]` /1.1, escapes `\\(`, unbalanced brackets;
- prompt editing: `[from:to:when]`, `[to:when]`, `[from::when]`, `[a|b]` alternation;
  a prompt the webui cannot parse is taken literally;
- composable prompts `a AND b :1.2`;
- extra networks `<lora:name:0.8>` removed from the text and returned separately.

A1111 builds the schedule with a lark Earley grammar; this module has a small hand-written
parser that accepts the same language and picks the same reading.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from lorastudio.errors import LorastudioError

__all__ = [
    "ExtraNetwork",
    "extract_extra_networks",
    "get_learned_conditioning_prompt_schedules",
    "parse_prompt_attention",
    "split_composable",
]

# ---------------------------------------------------------------------------------------
# Attention: (a) [a] (a:1.3)
# ---------------------------------------------------------------------------------------

ROUND_BRACKET_MULTIPLIER = 1.1
SQUARE_BRACKET_MULTIPLIER = 1 / 1.1

# One token per match, tried in this order (order matters: escapes before brackets).
_ATTENTION_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]              # escaped bracket or backslash: a literal character
    | \\                      # a lone backslash: dropped
    | [(\[]                   # opening bracket
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)   # ":1.3)" closes a round bracket with a weight
    | [)\]]                   # closing bracket
    | [^\\()\[\]:]+           # plain text
    | :                       # a colon that is not a weight
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text: str) -> list[list]:
    """Split a prompt into `[text, weight]` pairs the way A1111 does.

    `BREAK` becomes `["BREAK", -1]`; an empty prompt gives `[["", 1.0]]`; neighbours
    with equal weights are merged. Examples (A1111's own):

    >>> parse_prompt_attention("an (important) word")
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    >>> parse_prompt_attention("(unbalanced")
    [['unbalanced', 1.1]]
    """
    pieces: list[list] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale_from(start: int, multiplier: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= multiplier

    for match in _ATTENTION_TOKEN.finditer(text):
        token = match.group(0)
        weight = match.group("weight")
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token == "(":
            open_round.append(len(pieces))
        elif token == "[":
            open_square.append(len(pieces))
        elif weight is not None and open_round:
            scale_from(open_round.pop(), _parse_weight(weight, text))
        elif token == ")" and open_round:
            scale_from(open_round.pop(), ROUND_BRACKET_MULTIPLIER)
        elif token == "]" and open_square:
            scale_from(open_square.pop(), SQUARE_BRACKET_MULTIPLIER)
        else:
            for index, part in enumerate(_BREAK.split(token)):
                if index > 0:
                    pieces.append(["BREAK", -1])
                pieces.append([part, 1.0])

    # Brackets left open still count, like A1111 (`(unbalanced` is x1.1).
    for start in open_round:
        scale_from(start, ROUND_BRACKET_MULTIPLIER)
    for start in open_square:
        scale_from(start, SQUARE_BRACKET_MULTIPLIER)

    if not pieces:
        return [["", 1.0]]
    return _merge_equal_weights(pieces)


def _parse_weight(weight: str, prompt: str) -> float:
    try:
        return float(weight)
    except ValueError:
        raise LorastudioError(
            f"prompt {prompt!r}: attention weight {weight!r} is not a number; write it like (word:1.2)."
        ) from None


def _merge_equal_weights(pieces: list[list]) -> list[list]:
    merged = [pieces[0]]
    for text, weight in pieces[1:]:
        if merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return merged


# ---------------------------------------------------------------------------------------
# Prompt editing: [from:to:when], [a|b]
# ---------------------------------------------------------------------------------------

# lark's SIGNED_NUMBER as a Python regex; alternatives are tried in this order, as lark does.
_NUMBER = re.compile(r"[+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.(?:\d+)?|\.\d+)(?:[eE][+-]?\d+)?|\d+)")
_WHITESPACE = re.compile(r"\s+")
_SPECIAL = frozenset("[]():|")


@dataclass
class _Scheduled:
    """`[before:after:when]`; `before` is None for `[after:when]`."""

    before: list | None
    after: list
    when_text: str
    when: int = 0  # set by _resolve_steps


@dataclass
class _Alternate:
    """`[a|b|c]`: one option per sampling step, cycling."""

    options: list[list]


class _ParseFailed(Exception):
    """The prompt is outside A1111's grammar; the webui then uses it literally."""


class _ScheduleParser:
    """Recursive descent over A1111's schedule grammar.

    Inside a bracket only prompt syntax is allowed, so the reading is unique. At the top
    level a bracket that does not close into a valid group is plain text, like lark's
    `/[][():]/` fallback; `|` outside an alternation or a dangling backslash fails.
    Nodes are `str` (literal text), `_Scheduled` and `_Alternate`.
    """

    def __init__(self, text: str):
        self.text = text

    def parse(self) -> list:
        text, nodes, i = self.text, [], 0
        while i < len(text):
            char = text[i]
            if char in "([":
                try:
                    group, i = self._group(i)
                    nodes.extend(group)
                    continue
                except _ParseFailed:
                    pass
            if char in "[]():":
                nodes.append(char)
                i += 1
            elif char == "|":
                raise _ParseFailed
            else:
                end = self._plain_end(i)
                nodes.append(text[i:end])
                i = end
        return nodes

    def _char(self, i: int) -> str:
        return self.text[i] if i < len(self.text) else ""

    def _plain_end(self, i: int) -> int:
        """End of a plain run: anything but `[]():|`, or a backslash with any char but newline."""
        text = self.text
        start = i
        while i < len(text):
            char = text[i]
            if char == "\\":
                if i + 1 < len(text) and text[i + 1] != "\n":
                    i += 2
                    continue
                break
            if char in _SPECIAL:
                break
            i += 1
        if i == start:
            raise _ParseFailed  # a backslash at the end or before a newline
        return i

    def _prompt(self, i: int) -> tuple[list, int]:
        """A run of text and groups, stopping before `]`, `)`, `:`, `|` or the end."""
        nodes = []
        while True:
            char = self._char(i)
            if char in ("", "]", ")", ":", "|"):
                return nodes, i
            if char in "([":
                group, i = self._group(i)
                nodes.extend(group)
            else:
                end = self._plain_end(i)
                nodes.append(self.text[i:end])
                i = end

    def _group(self, i: int) -> tuple[list, int]:
        if self.text[i] == "(":
            return self._round(i)
        return self._square(i)

    def _round(self, i: int) -> tuple[list, int]:
        inner, j = self._prompt(i + 1)
        if self._char(j) == ")":
            return ["(", *inner, ")"], j + 1
        if self._char(j) == ":":
            weight, k = self._prompt(j + 1)
            if self._char(k) == ")":
                return ["(", *inner, ":", *weight, ")"], k + 1
        raise _ParseFailed

    def _square(self, i: int) -> tuple[list, int]:
        first, j = self._prompt(i + 1)
        char = self._char(j)
        if char == "]":
            return ["[", *first, "]"], j + 1
        if char == "|":
            options = [first]
            while self._char(j) == "|":
                option, j = self._prompt(j + 1)
                options.append(option)
            if self._char(j) != "]":
                raise _ParseFailed
            return [_Alternate(options)], j + 1
        if char == ":":
            when = self._when(j + 1)
            if when is not None:
                return [_Scheduled(None, first, when[0])], when[1]
            second, k = self._prompt(j + 1)
            if self._char(k) == ":":
                when = self._when(k + 1)
                if when is not None:
                    return [_Scheduled(first, second, when[0])], when[1]
        raise _ParseFailed

    def _when(self, i: int) -> tuple[str, int] | None:
        """`[whitespace] NUMBER [whitespace] ]` -> (number text, index after `]`)."""
        text = self.text
        space = _WHITESPACE.match(text, i)
        if space:
            i = space.end()
        number = _NUMBER.match(text, i)
        if not number:
            return None
        i = number.end()
        space = _WHITESPACE.match(text, i)
        if space:
            i = space.end()
        if self._char(i) != "]":
            return None
        return number.group(0), i + 1


def _walk(nodes: list):
    for node in nodes:
        yield node
        if isinstance(node, _Scheduled):
            yield from _walk(node.before or [])
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            for option in node.options:
                yield from _walk(option)


def _step_of(when_text: str, steps: int, int_offset: int, float_offset: float, old: bool) -> int:
    """The step a `[a:b:when]` switches at, with A1111's arithmetic (floats, truncation)."""
    value = float(when_text)
    if old:
        value = value * steps if value < 1 else value
    elif "." in when_text:
        value = (value - float_offset) * steps
    else:
        value = value - int_offset
    if math.isinf(value):  # A1111 crashes on `1e999`; clamp instead
        return steps if value > 0 else -1
    return min(steps, int(value))


def _text_at(nodes: list, step: int) -> str:
    parts = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, _Scheduled):
            chosen = (node.before or []) if step <= node.when else node.after
            parts.append(_text_at(chosen, step))
        else:
            parts.append(_text_at(node.options[(step - 1) % len(node.options)], step))
    return "".join(parts)


def _schedule_one(prompt: str, steps: int, int_offset: int, float_offset: float, old: bool) -> list[list]:
    try:
        nodes = _ScheduleParser(prompt).parse()
    except (_ParseFailed, RecursionError):  # brackets nested hundreds deep: take it literally
        return [[steps, prompt]]

    boundaries = {steps}
    for node in _walk(nodes):
        if isinstance(node, _Scheduled):
            node.when = _step_of(node.when_text, steps, int_offset, float_offset, old)
            if node.when >= 1:
                boundaries.add(node.when)
        elif isinstance(node, _Alternate):
            boundaries.update(range(1, steps + 1))
    return [[step, _text_at(nodes, step)] for step in sorted(boundaries)]


def get_learned_conditioning_prompt_schedules(
    prompts: list[str],
    steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> list[list[list]]:
    """For each prompt, the texts to condition on: `[[end_step, text], ...]`.

    `when` is a step count when it is an integer and a fraction of the steps when it has
    a decimal point. With `hires_steps` (the hires-fix pass), A1111 counts integers from
    the end of the first pass and fractions from 1.0, so `[a:b:1.5]` switches half-way
    through the hires pass; `use_old_scheduling` restores the pre-1.6 rule (values < 1
    are fractions). A prompt outside the grammar is used literally.

    >>> get_learned_conditioning_prompt_schedules(["a [b:c:5] d"], 10)
    [[[5, 'a b d'], [10, 'a c d']]]
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, float_offset, total = 0, 0.0, steps
    else:
        int_offset, float_offset, total = steps, 1.0, hires_steps

    cache: dict[str, list[list]] = {}
    result = []
    for prompt in prompts:
        if prompt not in cache:
            cache[prompt] = _schedule_one(prompt, total, int_offset, float_offset, use_old_scheduling)
        result.append([list(entry) for entry in cache[prompt]])
    return result


# ---------------------------------------------------------------------------------------
# Composable prompts: a AND b :1.2
# ---------------------------------------------------------------------------------------

_AND = re.compile(r"\bAND\b")
_SUBPROMPT_WEIGHT = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def split_composable(prompt: str) -> list[tuple[str, float]]:
    """Split on `AND` into `(text, weight)`; a trailing `:1.2` is the sub-prompt's weight.

    >>> split_composable("a cat AND a dog :0.5")
    [('a cat', 1.0), (' a dog', 0.5)]
    """
    parts = []
    for subprompt in _AND.split(prompt):
        match = _SUBPROMPT_WEIGHT.search(subprompt)
        if match is None:  # cannot happen with this pattern; kept for safety
            parts.append((subprompt, 1.0))
            continue
        text, weight = match.groups()
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


# ---------------------------------------------------------------------------------------
# Extra networks: <lora:name:0.8>
# ---------------------------------------------------------------------------------------

_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_LORA_KINDS = {"lora": "lora", "lyco": "lora"}  # A1111 registers lyco as an alias of lora


@dataclass(frozen=True)
class ExtraNetwork:
    """One `<kind:name:...>` tag. For LoRAs: te_weight scales the text encoder, unet_weight the UNet."""

    kind: str
    name: str
    te_weight: float = 1.0
    unet_weight: float = 1.0
    dyn_dim: int | None = None
    args: tuple[str, ...] = field(default=())


def extract_extra_networks(prompt: str) -> tuple[str, list[ExtraNetwork]]:
    """Remove `<kind:args>` tags from the prompt and return them, in order of appearance.

    LoRA arguments follow A1111's Lora extension: `<lora:name>` is weight 1,
    `<lora:name:w>` sets both weights, `<lora:name:te:unet>` or `te=`/`unet=`/`dyn=`
    set them separately. `<lyco:...>` is a LoRA.

    >>> extract_extra_networks("a girl <lora:mira:0.7>")
    ('a girl ', [ExtraNetwork(kind='lora', name='mira', te_weight=0.7, unet_weight=0.7, dyn_dim=None, args=('mira', '0.7'))])
    """
    found: list[ExtraNetwork] = []

    def take(match: re.Match) -> str:
        found.append(_extra_network(match.group(1), match.group(2).split(":"), match.group(0)))
        return ""

    return _EXTRA_NETWORK.sub(take, prompt), found


def _extra_network(kind: str, items: list[str], tag: str) -> ExtraNetwork:
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in items:
        parts = item.split("=", 2)
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)
    if not positional:
        raise LorastudioError(f"prompt tag {tag}: it names no network; write it like <lora:name:0.8>.")

    kind = _LORA_KINDS.get(kind, kind)
    strict = kind == "lora"  # other kinds keep 1.0 when an argument is not a number
    te_weight = _number(positional[1], tag, strict) if len(positional) > 1 else 1.0
    te_weight = _number(named["te"], tag, strict) if "te" in named else te_weight
    unet_weight = _number(positional[2], tag, strict) if len(positional) > 2 else te_weight
    unet_weight = _number(named["unet"], tag, strict) if "unet" in named else unet_weight
    dyn_text = named.get("dyn", positional[3] if len(positional) > 3 else None)
    dyn_dim = None
    if dyn_text is not None:
        dyn_dim = int(_number(dyn_text, tag, strict)) if strict else None
    return ExtraNetwork(kind, positional[0], te_weight, unet_weight, dyn_dim, tuple(items))


def _number(text: str, tag: str, strict: bool) -> float:
    try:
        return float(text)
    except ValueError:
        if not strict:
            return 1.0
        raise LorastudioError(
            f"prompt tag {tag}: {text!r} is not a number; write weights like <lora:name:0.8>."
        ) from None
