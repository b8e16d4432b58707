"""A1111's long-prompt chunking at the token level, independent of any tokenizer.

CLIP sees 77 tokens at a time (BOS + 75 + EOS). A1111 cuts longer prompts into chunks of
75 tokens, encodes each chunk on its own and concatenates the results; `BREAK` closes a
chunk early, and a comma in the last 20 tokens of a full chunk moves the words after it
to the next chunk so a phrase is not split. Matching these rules token for token is what
makes a long prompt give the same picture as in the webui.

Padding convention: a `PromptChunk` holds exactly `chunk_length` entries without BOS/EOS;
padding positions hold `None` (multiplier 1.0), always at the end. `to_ids()` turns a
chunk into the 77 ids A1111 feeds the text encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EmbeddingFix",
    "PromptChunk",
    "build_chunks",
    "count_prompt_tokens",
    "pad_chunk_counts",
    "tokenize_prompt",
]

# Textual-inversion placeholder token, as in A1111: the embedding's vectors replace it.
EMBEDDING_PLACEHOLDER = 0


@dataclass(frozen=True)
class EmbeddingFix:
    """Put `embedding`'s `vectors` vectors at `offset` (0-based, without BOS) in the chunk."""

    offset: int
    embedding: Any
    vectors: int


@dataclass
class PromptChunk:
    """`chunk_length` token ids (None = padding) and one attention multiplier per token."""

    tokens: list[int | None] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[EmbeddingFix] = field(default_factory=list)

    @classmethod
    def empty(cls, chunk_length: int = 75) -> PromptChunk:
        """A chunk of padding only: what A1111 encodes for an empty prompt."""
        return cls([None] * chunk_length, [1.0] * chunk_length, [])

    @property
    def length(self) -> int:
        """Number of real (non-padding) tokens."""
        return sum(1 for token in self.tokens if token is not None)

    def to_ids(self, bos: int, eos: int, pad: int | None = None) -> list[int]:
        """`[BOS] + tokens + [EOS] + padding`, chunk_length + 2 ids.

        A1111 pads with EOS; models whose tokenizer has its own pad id (SD2, SDXL's
        OpenCLIP) pass `pad`, which replaces everything after the first EOS.
        """
        real = [token for token in self.tokens if token is not None]
        padding = len(self.tokens) - len(real)
        return [bos, *real, eos, *([eos if pad is None else pad] * padding)]

    def multipliers_with_ends(self) -> list[float]:
        """Multipliers for `to_ids()`: 1.0 for BOS and EOS."""
        return [1.0, *self.multipliers, 1.0]


EmbeddingFinder = Callable[[Sequence[int], int], "tuple[Any, int, int] | None"]


class _ChunkWriter:
    """Fills chunks of `length` tokens one token at a time and decides where each chunk ends.

    Three rules end a chunk: it is full; `BREAK`; or it is full and its last comma is at most
    `backtrack` tokens from the end (0: never), in which case the tokens after that comma open
    the next chunk instead (an embedding fix stays with the chunk it was written into).
    An embedding's vectors are never split: they open a new chunk when they do not fit.
    `token_count` is the counter A1111 shows: `length` per closed chunk, the real tokens of
    the last one.
    """

    def __init__(self, length: int, backtrack: int, comma_token: int | None):
        self.length = length
        self.backtrack = backtrack
        self.comma_token = comma_token
        self.chunks: list[PromptChunk] = []
        self.current = PromptChunk()
        self.comma_at: int | None = None  # where the current chunk's last comma is
        self.token_count = 0

    def _at_capacity(self) -> bool:
        return len(self.current.tokens) == self.length

    def end_chunk(self, last: bool = False) -> None:
        """Pad the current chunk with `None` to `length` and start a new one."""
        written = len(self.current.tokens)
        self.token_count += written if last else self.length
        padding = max(0, self.length - written)
        self.current.tokens += [None] * padding
        self.current.multipliers += [1.0] * padding
        self.chunks.append(self.current)
        self.current = PromptChunk()
        self.comma_at = None

    def _comma_is_near_the_end(self) -> bool:
        if self.backtrack == 0 or self.comma_at is None:
            return False
        return len(self.current.tokens) - self.comma_at <= self.backtrack

    def _end_chunk_at_comma(self) -> None:
        """Close the chunk right after its last comma; what followed the comma opens the next one."""
        cut = self.comma_at + 1  # type: ignore[operator]  (only called with a comma)
        carried_tokens = self.current.tokens[cut:]
        carried_multipliers = self.current.multipliers[cut:]
        del self.current.tokens[cut:]
        del self.current.multipliers[cut:]
        self.end_chunk()
        self.current.tokens = carried_tokens
        self.current.multipliers = carried_multipliers

    def make_room_for(self, token: int) -> None:
        """Before writing `token`: note a comma, or end a full chunk (at its last comma if near)."""
        if token == self.comma_token:
            self.comma_at = len(self.current.tokens)
        elif self._at_capacity() and self._comma_is_near_the_end():
            self._end_chunk_at_comma()
        if self._at_capacity():
            self.end_chunk()

    def write_token(self, token: int, weight: float) -> None:
        self.current.tokens.append(token)
        self.current.multipliers.append(weight)

    def write_embedding(self, embedding: Any, vectors: int, weight: float) -> None:
        if len(self.current.tokens) + vectors > self.length:
            self.end_chunk()
        self.current.fixes.append(EmbeddingFix(len(self.current.tokens), embedding, vectors))
        self.current.tokens += [EMBEDDING_PLACEHOLDER] * vectors
        self.current.multipliers += [weight] * vectors

    def finish(self) -> tuple[list[PromptChunk], int]:
        """The chunks (at least one, padding only for an empty prompt) and the token count."""
        if self.current.tokens or not self.chunks:
            self.end_chunk(last=True)
        return self.chunks, self.token_count


def _is_break(text: str, weight: float) -> bool:
    """`parse_prompt_attention` marks BREAK as the piece ["BREAK", -1]."""
    return text == "BREAK" and weight == -1


def tokenize_prompt(
    parsed: list[list],
    tokenize: Callable[[list[str]], list[list[int]]],
    comma_token: int | None,
    chunk_length: int = 75,
    comma_padding_backtrack: int = 20,
    find_embedding: EmbeddingFinder | None = None,
) -> tuple[list[PromptChunk], int]:
    """Chunks for one parsed prompt and its token count (what A1111 shows under the prompt box).

    `parsed` is `parse_prompt_attention()`'s output; `tokenize` maps texts to token ids
    without BOS/EOS. `find_embedding(tokens, position)` may return
    `(embedding, n_vectors, n_tokens_consumed)` for a textual-inversion trigger starting
    there. See `_ChunkWriter` for where chunks end.
    """
    writer = _ChunkWriter(chunk_length, comma_padding_backtrack, comma_token)
    for tokens, (text, weight) in zip(tokenize([text for text, _ in parsed]), parsed, strict=True):
        if _is_break(text, weight):
            writer.end_chunk()
            continue
        position = 0
        while position < len(tokens):
            writer.make_room_for(tokens[position])
            found = find_embedding(tokens, position) if find_embedding else None
            if found is None:
                writer.write_token(tokens[position], weight)
                position += 1
            else:
                embedding, vectors, consumed = found
                writer.write_embedding(embedding, vectors, weight)
                position += consumed
    return writer.finish()


def build_chunks(
    parsed: list[list],
    tokenize: Callable[[list[str]], list[list[int]]],
    comma_token: int | None,
    chunk_length: int = 75,
    comma_padding_backtrack: int = 20,
    find_embedding: EmbeddingFinder | None = None,
) -> list[PromptChunk]:
    """A1111's chunks for one parsed prompt; see `tokenize_prompt` for the arguments."""
    chunks, _ = tokenize_prompt(
        parsed, tokenize, comma_token, chunk_length, comma_padding_backtrack, find_embedding
    )
    return chunks


def count_prompt_tokens(
    parsed: list[list],
    tokenize: Callable[[list[str]], list[list[int]]],
    comma_token: int | None,
    chunk_length: int = 75,
    comma_padding_backtrack: int = 20,
) -> int:
    """The token counter A1111 shows next to the prompt box (e.g. 80 -> "80/150")."""
    _, count = tokenize_prompt(parsed, tokenize, comma_token, chunk_length, comma_padding_backtrack)
    return count


def pad_chunk_counts(
    a: list[PromptChunk], b: list[PromptChunk], chunk_length: int | None = None
) -> tuple[list[PromptChunk], list[PromptChunk]]:
    """Give the prompt and negative prompt the same number of chunks, adding empty ones.

    Both conditionings must have the same length to be batched for classifier-free
    guidance; A1111 pads the shorter with empty chunks (encodings of "").
    """
    length = chunk_length or _chunk_length_of(a) or _chunk_length_of(b) or 75
    target = max(len(a), len(b))
    padded_a = list(a) + [PromptChunk.empty(length) for _ in range(target - len(a))]
    padded_b = list(b) + [PromptChunk.empty(length) for _ in range(target - len(b))]
    return padded_a, padded_b


def _chunk_length_of(chunks: list[PromptChunk]) -> int | None:
    return len(chunks[0].tokens) if chunks else None
