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


def tokenize_prompt(
    parsed: list[list],
    tokenize: Callable[[list[str]], list[list[int]]],
    comma_token: int | None,
    chunk_length: int = 75,
    comma_padding_backtrack: int = 20,
    find_embedding: EmbeddingFinder | None = None,
) -> tuple[list[PromptChunk], int]:
    """Chunks for one parsed prompt and its token count (A1111's `tokenize_line`).

    `parsed` is `parse_prompt_attention()`'s output; `tokenize` maps texts to token ids
    without BOS/EOS. `find_embedding(tokens, position)` may return
    `(embedding, n_vectors, n_tokens_consumed)` for a textual-inversion trigger starting
    there. The token count is what A1111 shows under the prompt box (75 per full chunk).
    """
    tokenized = tokenize([text for text, _ in parsed])
    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    token_count = 0
    last_comma = -1

    def close_chunk(is_last: bool = False) -> None:
        nonlocal chunk, token_count, last_comma
        token_count += len(chunk.tokens) if is_last else chunk_length
        missing = chunk_length - len(chunk.tokens)
        if missing > 0:
            chunk.tokens += [None] * missing
            chunk.multipliers += [1.0] * missing
        chunks.append(chunk)
        chunk = PromptChunk()
        last_comma = -1

    for tokens, (text, weight) in zip(tokenized, parsed, strict=True):
        if text == "BREAK" and weight == -1:
            close_chunk()
            continue

        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma_token:
                last_comma = len(chunk.tokens)
            elif (
                comma_padding_backtrack != 0
                and len(chunk.tokens) == chunk_length
                and last_comma != -1
                and len(chunk.tokens) - last_comma <= comma_padding_backtrack
            ):
                # Move the words after the last comma to the next chunk.
                cut = last_comma + 1
                moved_tokens, moved_multipliers = chunk.tokens[cut:], chunk.multipliers[cut:]
                del chunk.tokens[cut:], chunk.multipliers[cut:]
                close_chunk()
                chunk.tokens, chunk.multipliers = moved_tokens, moved_multipliers

            if len(chunk.tokens) == chunk_length:
                close_chunk()

            found = find_embedding(tokens, position) if find_embedding else None
            if found is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                position += 1
                continue

            embedding, vectors, consumed = found
            if len(chunk.tokens) + vectors > chunk_length:
                close_chunk()
            chunk.fixes.append(EmbeddingFix(len(chunk.tokens), embedding, vectors))
            chunk.tokens += [EMBEDDING_PLACEHOLDER] * vectors
            chunk.multipliers += [weight] * vectors
            position += consumed

    if chunk.tokens or not chunks:
        close_chunk(is_last=True)
    return chunks, token_count


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
