"""The prompt language users paste from AUTOMATIC1111's webui, read by our own lexer and parsers.

A prompt is read in two layers:

- prompt level, on the raw text: extra-network tags `<lora:name:0.8>` are taken out and
  `AND` splits composable sub-prompts (`a cat AND a dog :0.5`). Both cut straight
  through brackets, so they are found before any bracket is looked at;
- bracket level, on one token stream (`tokenize`): prompt editing `[from:to:when]`,
  alternation `[a|b]`, attention `(a)` `(a:1.3)` `[a]`, escapes `\\(`, and `BREAK`.

The bracket level has two readings of the same tokens, because the webui reads a prompt
twice and the two readings disagree on purpose: the schedule reading (`parse_schedule`)
only resolves editing and alternation and keeps attention brackets as text; a bracket it
cannot close is literal. The attention reading (`attention_pairs`) then weighs each
scheduled text; it tolerates unbalanced and even crossing brackets (`(a [b) c]`), so
emphasis is a list of spans over the text rather than a tree.

Compatibility is measured, not assumed: tests/fixtures/prompt_grammar holds ~1900
recorded prompts that must read the same byte for byte.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from lorastudio.errors import LorastudioError

__all__ = [
    "ExtraNetwork",
    "attention_pairs",
    "extract_extra_networks",
    "parse_schedule",
    "prompt_schedules",
    "split_composable",
    "tokenize",
]

# =======================================================================================
# Lexer: one token stream for the bracket level
# =======================================================================================

TEXT = "text"  # a run of ordinary characters
ESCAPE = "escape"  # a backslash and the character after it (never a newline)
BACKSLASH = "backslash"  # a backslash with nothing to escape: at the end or before a newline
# Each of `()[]:|` is a token on its own whose kind is the character itself.
_TOKEN = re.compile(r"(?P<escape>\\.)|(?P<backslash>\\)|(?P<syntax>[()\[\]:|])|(?P<text>[^\\()\[\]:|]+)")
_KINDS = {"escape": ESCAPE, "backslash": BACKSLASH, "text": TEXT}
_OPENING = ("(", "[")


@dataclass(frozen=True)
class Token:
    """One lexeme; `kind` is TEXT, ESCAPE, BACKSLASH or the syntax character itself."""

    kind: str
    text: str


def tokenize(prompt: str) -> list[Token]:
    """Cut a prompt into tokens; joining their texts gives the prompt back."""
    return [Token(_KINDS.get(match.lastgroup, match.group(0)), match.group(0)) for match in _TOKEN.finditer(prompt)]


# =======================================================================================
# Schedule reading: [from:to:when] and [a|b]
# =======================================================================================


@dataclass(eq=False)
class Edit:
    """`[before:after:when]`; `before` is None for `[after:when]` (nothing before the switch)."""

    before: list[Node] | None
    after: list[Node]
    when: str  # the number as written: its form (integer or decimal) decides its unit


@dataclass(eq=False)
class Alternation:
    """`[a|b|c]`: the options take turns, one per sampling step."""

    options: list[list[Node]]


Node = str | Edit | Alternation

# A number after the last colon of an edit: integer, decimal or exponent, optionally signed.
_WHEN_NUMBER = re.compile(r"[+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.(?:\d+)?|\.\d+)(?:[eE][+-]?\d+)?|\d+)")
_SPACE = re.compile(r"\s*")
_INNER_STOP = frozenset("])|:")


class _NotInGrammar(Exception):
    """The tokens do not form a valid group; the caller decides what that means."""


class _ScheduleParser:
    """Recursive descent over the token stream.

    At the top a bracket that does not close into a valid group is ordinary text. Inside a
    group everything must be valid. A `|` outside an alternation, or a backslash with
    nothing to escape, puts the whole prompt outside the grammar (it is then used as is).
    """

    def __init__(self, tokens: list[Token]):
        self.tokens = tokens

    def kind_at(self, index: int) -> str:
        return self.tokens[index].kind if index < len(self.tokens) else ""

    def top(self) -> list[Node]:
        nodes: list[Node] = []
        index = 0
        while index < len(self.tokens):
            token = self.tokens[index]
            if token.kind in _OPENING:
                try:
                    group, index = self.group(index)
                    nodes.extend(group)
                    continue
                except _NotInGrammar:
                    pass
            if token.kind in (BACKSLASH, "|"):
                raise _NotInGrammar
            nodes.append(token.text)
            index += 1
        return nodes

    def sequence(self, index: int) -> tuple[list[Node], int]:
        """Text and groups up to a closing bracket, `:`, `|` or the end."""
        nodes: list[Node] = []
        while index < len(self.tokens):
            kind = self.kind_at(index)
            if kind in _INNER_STOP:
                break
            if kind == BACKSLASH:
                raise _NotInGrammar
            if kind in _OPENING:
                group, index = self.group(index)
                nodes.extend(group)
            else:
                nodes.append(self.tokens[index].text)
                index += 1
        return nodes, index

    def group(self, index: int) -> tuple[list[Node], int]:
        if self.kind_at(index) == "(":
            return self.emphasis(index)
        return self.square(index)

    def emphasis(self, index: int) -> tuple[list[Node], int]:
        """`(inner)` or `(inner:weight)`: kept as text, its inside may hold edits."""
        inner, index = self.sequence(index + 1)
        if self.kind_at(index) == ")":
            return ["(", *inner, ")"], index + 1
        if self.kind_at(index) == ":":
            weight, index = self.sequence(index + 1)
            if self.kind_at(index) == ")":
                return ["(", *inner, ":", *weight, ")"], index + 1
        raise _NotInGrammar

    def square(self, index: int) -> tuple[list[Node], int]:
        first, index = self.sequence(index + 1)
        kind = self.kind_at(index)
        if kind == "]":
            return ["[", *first, "]"], index + 1
        if kind == "|":
            return self.alternation(first, index)
        if kind == ":":
            return self.edit(first, index + 1)
        raise _NotInGrammar

    def alternation(self, first: list[Node], index: int) -> tuple[list[Node], int]:
        options = [first]
        while self.kind_at(index) == "|":
            option, index = self.sequence(index + 1)
            options.append(option)
        if self.kind_at(index) != "]":
            raise _NotInGrammar
        return [Alternation(options)], index + 1

    def edit(self, first: list[Node], index: int) -> tuple[list[Node], int]:
        """After `[first:`: either `when]` (first is what comes after) or `after:when]`."""
        ending = self.switch_point(index)
        if ending is not None:
            return [Edit(None, first, ending[0])], ending[1]
        after, index = self.sequence(index)
        if self.kind_at(index) == ":":
            ending = self.switch_point(index + 1)
            if ending is not None:
                return [Edit(first, after, ending[0])], ending[1]
        raise _NotInGrammar

    def switch_point(self, index: int) -> tuple[str, int] | None:
        """A number alone in a text token right before `]`, spaces allowed: (number, next index)."""
        if self.kind_at(index) != TEXT or self.kind_at(index + 1) != "]":
            return None
        text = self.tokens[index].text
        number = _WHEN_NUMBER.match(text, _SPACE.match(text).end())
        if number is None or _SPACE.match(text, number.end()).end() != len(text):
            return None
        return number.group(0), index + 2


def parse_schedule(prompt: str) -> list[Node] | None:
    """The prompt as text, edits and alternations, or None when the prompt is outside the grammar."""
    try:
        return _ScheduleParser(tokenize(prompt)).top()
    except (_NotInGrammar, RecursionError):  # brackets nested hundreds deep: use it as is
        return None


def _nested(nodes: list[Node]):
    """Every node, depth first, including those in branches a step may never show."""
    for node in nodes:
        yield node
        if isinstance(node, Edit):
            yield from _nested(node.before or [])
            yield from _nested(node.after)
        elif isinstance(node, Alternation):
            for option in node.options:
                yield from _nested(option)


@dataclass(frozen=True)
class _Timing:
    """How edit numbers map to steps: `steps` in this pass, and where counting starts."""

    steps: int
    integer_start: int = 0
    fraction_start: float = 0.0
    old_rule: bool = False

    def last_step_before(self, when: str) -> int:
        """The last step that still shows `before`; integers count steps, decimals the pass."""
        value = float(when)
        if self.old_rule:
            value = value * self.steps if value < 1 else value
        elif "." in when:
            value = (value - self.fraction_start) * self.steps
        else:
            value = value - self.integer_start
        if math.isinf(value):  # `1e999`: before forever, or never
            return self.steps if value > 0 else -1
        return min(self.steps, int(value))


def _render(nodes: list[Node], step: int, switch: dict[Edit, int]) -> str:
    parts = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, Edit):
            parts.append(_render((node.before or []) if step <= switch[node] else node.after, step, switch))
        else:
            parts.append(_render(node.options[(step - 1) % len(node.options)], step, switch))
    return "".join(parts)


def _schedule(prompt: str, timing: _Timing) -> list[list]:
    nodes = parse_schedule(prompt)
    if nodes is None:
        return [[timing.steps, prompt]]
    switch: dict[Edit, int] = {}
    changes = {timing.steps}
    for node in _nested(nodes):
        if isinstance(node, Edit):
            switch[node] = timing.last_step_before(node.when)
            if switch[node] >= 1:
                changes.add(switch[node])
        elif isinstance(node, Alternation):
            changes.update(range(1, timing.steps + 1))
    return [[step, _render(nodes, step, switch)] for step in sorted(changes)]


def prompt_schedules(
    prompts: list[str], steps: int, hires_steps: int | None = None, use_old_scheduling: bool = False
) -> list[list[list]]:
    """For each prompt, `[[last_step, text], ...]`: the text to condition on up to each step.

    In the hires pass (`hires_steps`) integers count on from the first pass's steps and
    decimals from 1.0, so `[a:b:1.5]` switches half-way through it. `use_old_scheduling`
    is the webui's pre-1.6 rule: any value below 1 is a fraction, in either pass.
    """
    if hires_steps is None or use_old_scheduling:
        timing = _Timing(steps, old_rule=use_old_scheduling)
    else:
        timing = _Timing(hires_steps, integer_start=steps, fraction_start=1.0)
    known: dict[str, list[list]] = {}
    result = []
    for prompt in prompts:
        if prompt not in known:
            known[prompt] = _schedule(prompt, timing)
        result.append([list(entry) for entry in known[prompt]])  # callers may edit their copy
    return result


# =======================================================================================
# Attention reading: (a) (a:1.3) [a] and BREAK
# =======================================================================================

ROUND_BRACKET_MULTIPLIER = 1.1
SQUARE_BRACKET_MULTIPLIER = 1 / 1.1
_LITERAL_ESCAPES = frozenset("()[]\\")
_EXPLICIT_WEIGHT = re.compile(r"\s*([+-]?[.\d]+)\s*")
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True)
class _Item:
    """What attention sees: `run` (text), `literal` (an escaped bracket or backslash, or
    an empty text where a backslash escapes nothing) or a syntax character."""

    kind: str
    text: str = ""


def _attention_items(tokens: list[Token]) -> list[_Item]:
    """Regroup tokens for attention: `|` is ordinary text, and a backslash before anything
    but a bracket or backslash is dropped, the character after it reading as unescaped."""
    items: list[_Item] = []
    for token in tokens:
        kind, text = token.kind, token.text
        if kind == ESCAPE and text[1] in _LITERAL_ESCAPES:
            items.append(_Item("literal", text[1]))
            continue
        if kind in (ESCAPE, BACKSLASH):
            items.append(_Item("literal", ""))  # the empty piece still separates weights
            if kind == BACKSLASH:
                continue
            kind, text = (":" if text[1] == ":" else TEXT), text[1]
        if kind not in (TEXT, "|"):
            items.append(_Item(kind))
        elif items and items[-1].kind == "run":
            items[-1] = _Item("run", items[-1].text + text)
        else:
            items.append(_Item("run", text))
    return items


@dataclass(frozen=True)
class _Span:
    """Pieces [start, end) are multiplied by `factor`."""

    start: int
    end: int
    factor: float


def _explicit_weight(items: list[_Item], index: int) -> str | None:
    """The number in `:1.3)` starting at the colon `items[index]`, else None."""
    if index + 2 >= len(items) or items[index + 1].kind != "run" or items[index + 2].kind != ")":
        return None
    match = _EXPLICIT_WEIGHT.fullmatch(items[index + 1].text)
    return match.group(1) if match else None


def _weight_value(weight: str, prompt: str) -> float:
    try:
        return float(weight)
    except ValueError:
        raise LorastudioError(
            f"prompt {prompt!r}: attention weight {weight!r} is not a number; write it like (word:1.2)."
        ) from None


def _pieces_and_spans(prompt: str) -> tuple[list[list], list[_Span]]:
    """Text pieces (with BREAK markers) and the emphasis spans, in the order they apply:
    as each bracket closes, then unclosed round ones, then unclosed square ones."""
    items = _attention_items(tokenize(prompt))
    pieces: list[list] = []
    spans: list[_Span] = []
    opened: dict[str, list[int]] = {"(": [], "[": []}

    def close(opening: str, factor: float) -> None:
        spans.append(_Span(opened[opening].pop(), len(pieces), factor))

    index = 0
    while index < len(items):
        item = items[index]
        weight = _explicit_weight(items, index) if item.kind == ":" else None
        if item.kind in opened:
            opened[item.kind].append(len(pieces))
        elif weight is not None and opened["("]:
            close("(", _weight_value(weight, prompt))
            index += 2
        elif item.kind == ")" and opened["("]:
            close("(", ROUND_BRACKET_MULTIPLIER)
        elif item.kind == "]" and opened["["]:
            close("[", SQUARE_BRACKET_MULTIPLIER)
        elif item.kind == "run":
            for number, part in enumerate(_BREAK_WORD.split(item.text)):
                if number:
                    pieces.append(["BREAK", -1])
                pieces.append([part, 1.0])
        elif item.kind == "literal":
            pieces.append([item.text, 1.0])
        else:  # a stray closing bracket or colon
            pieces.append([item.kind, 1.0])
        index += 1

    for opening, factor in (("(", ROUND_BRACKET_MULTIPLIER), ("[", SQUARE_BRACKET_MULTIPLIER)):
        spans.extend(_Span(start, len(pieces), factor) for start in opened[opening])
    return pieces, spans


def attention_pairs(prompt: str) -> list[list]:
    """`[text, weight]` pairs; `BREAK` is `["BREAK", -1]`, equal neighbours are joined.

    >>> attention_pairs("an (important) word")
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    """
    pieces, spans = _pieces_and_spans(prompt)
    for span in spans:
        for piece in pieces[span.start : span.end]:
            piece[1] *= span.factor
    if not pieces:
        return [["", 1.0]]
    joined = [pieces[0]]
    for text, weight in pieces[1:]:
        if joined[-1][1] == weight:
            joined[-1][0] += text
        else:
            joined.append([text, weight])
    return joined


# =======================================================================================
# Prompt level: AND and extra-network tags
# =======================================================================================

_AND_WORD = re.compile(r"\bAND\b")
_TRAILING_WEIGHT = re.compile(r"\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+))\s*\Z")
_TRAILING_SPACE = re.compile(r"\s*\Z")


def split_composable(prompt: str) -> list[tuple[str, float]]:
    """Split on the word `AND` into `(text, weight)`; a final `:1.2` is that part's weight.

    >>> split_composable("a cat AND a dog :0.5")
    [('a cat', 1.0), (' a dog', 0.5)]
    """
    parts = []
    for part in _AND_WORD.split(prompt):
        weight = _TRAILING_WEIGHT.search(part)
        if weight is not None:
            parts.append((part[: weight.start()], float(weight.group(1))))
        else:
            parts.append((part[: _TRAILING_SPACE.search(part).start()], 1.0))
    return parts


_TAG = re.compile(r"<(?P<kind>\w+):(?P<arguments>[^>]+)>")
_LORA_ALIASES = {"lora": "lora", "lyco": "lora"}  # LyCORIS tags load through the LoRA path


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
    """Take `<kind:args>` tags out of the prompt; return the rest and the tags in order.

    `<lora:name>` is weight 1, `<lora:name:w>` sets both weights, `<lora:name:te:unet>`
    or `te=`/`unet=`/`dyn=` set them one by one (`dyn`, the rank kept, is a whole number);
    `<lyco:...>` is a LoRA. A LoRA weight that is not a number is refused; for other kinds
    (`<hypernet:h:strong>`) it reads as 1.0, as in the webui.

    >>> extract_extra_networks("a girl <lora:mira:0.7>")
    ('a girl ', [ExtraNetwork(kind='lora', name='mira', te_weight=0.7, unet_weight=0.7, dyn_dim=None, args=('mira', '0.7'))])
    """
    found: list[ExtraNetwork] = []

    def take(tag: re.Match) -> str:
        found.append(_network(tag.group("kind"), tag.group("arguments").split(":"), tag.group(0)))
        return ""

    return _TAG.sub(take, prompt), found


def _network(kind: str, arguments: list[str], tag: str) -> ExtraNetwork:
    """Read a tag's arguments: `key=value` (exactly one `=`) is named, anything else positional."""
    named = dict(argument.split("=") for argument in arguments if argument.count("=") == 1)
    positional = [argument for argument in arguments if argument.count("=") != 1]
    if not positional:
        raise LorastudioError(f"prompt tag {tag}: it names no network; write it like <lora:name:0.8>.")
    kind = _LORA_ALIASES.get(kind, kind)
    strict = kind == "lora"  # other kinds take 1.0 for an argument that is not a number

    def number(text: str) -> float:
        return _tag_number(text, tag, strict)

    # Each value is read in the order written here so the first bad one is the one reported.
    te_weight = number(positional[1]) if len(positional) > 1 else 1.0
    te_weight = number(named["te"]) if "te" in named else te_weight
    unet_weight = number(positional[2]) if len(positional) > 2 else te_weight
    unet_weight = number(named["unet"]) if "unet" in named else unet_weight
    dyn_text = named.get("dyn", positional[3] if len(positional) > 3 else None)
    dyn_dim = _dyn_dim(dyn_text, tag) if strict and dyn_text is not None else None
    return ExtraNetwork(kind, positional[0], te_weight, unet_weight, dyn_dim, tuple(arguments))


def _tag_number(text: str, tag: str, strict: bool) -> float:
    """A weight. LoRA tags refuse a word; other kinds (`<hypernet:h:strong>`) read it as 1.0,
    as the webui does, because their arguments may mean something to an extension."""
    try:
        return float(text)
    except ValueError:
        if not strict:
            return 1.0
        raise LorastudioError(
            f"prompt tag {tag}: {text!r} is not a number; write weights like <lora:name:0.8>."
        ) from None


_WHOLE_NUMBER = re.compile(r"\s*[+-]?\d+\s*")


def _dyn_dim(text: str, tag: str) -> int:
    """The rank `dyn=` keeps: a whole number, as the webui's `int(...)` requires (`2.7`, `inf` refused)."""
    if _WHOLE_NUMBER.fullmatch(text) is None:
        raise LorastudioError(
            f"prompt tag {tag}: dyn {text!r} is not a whole number; write the rank to keep like <lora:name:1:1:8>."
        )
    return int(text)
