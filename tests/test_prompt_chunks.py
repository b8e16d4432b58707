"""A1111's long-prompt chunking, checked with a fake word-level tokenizer."""

from __future__ import annotations

import re

import pytest

from lorastudio.generate.prompt_chunks import (
    EmbeddingFix,
    PromptChunk,
    build_chunks,
    count_prompt_tokens,
    pad_chunk_counts,
    tokenize_prompt,
)
from lorastudio.generate.prompt_parser import parse_prompt_attention

COMMA = 267  # CLIP's ",</w>"
BOS, EOS = 49406, 49407
_WORD_IDS = {"a": 320, "b": 321, "c": 322, "emb": 9000, "BREAK": 9001}


def fake_tokenize(texts: list[str]) -> list[list[int]]:
    """Words and commas to ids: `wN` -> 1000 + N, a comma -> COMMA, known words fixed."""
    result = []
    for text in texts:
        ids = []
        for word in re.findall(r"[^\s,]+|,", text):
            if word == ",":
                ids.append(COMMA)
            elif re.fullmatch(r"w\d+", word):
                ids.append(1000 + int(word[1:]))
            else:
                ids.append(_WORD_IDS[word])
        result.append(ids)
    return result


def words(start: int, stop: int) -> str:
    return " ".join(f"w{i}" for i in range(start, stop))


def chunks_of(prompt: str, **kwargs) -> list[PromptChunk]:
    return build_chunks(parse_prompt_attention(prompt), fake_tokenize, COMMA, **kwargs)


def real(chunk: PromptChunk) -> list[int | None]:
    return [token for token in chunk.tokens if token is not None]


def test_short_prompt_is_one_padded_chunk():
    (chunk,) = chunks_of("a b c")
    assert chunk.tokens == [320, 321, 322] + [None] * 72
    assert chunk.multipliers == [1.0] * 75
    assert chunk.length == 3
    assert chunk.to_ids(BOS, EOS) == [BOS, 320, 321, 322] + [EOS] * 73
    assert chunk.to_ids(BOS, EOS, pad=0) == [BOS, 320, 321, 322, EOS] + [0] * 72
    assert chunk.multipliers_with_ends() == [1.0] * 77


def test_empty_prompt_gives_one_chunk_of_padding():
    chunks, count = tokenize_prompt(parse_prompt_attention(""), fake_tokenize, COMMA)
    assert count == 0
    assert len(chunks) == 1 and chunks[0].tokens == [None] * 75
    assert chunks[0].to_ids(BOS, EOS) == [BOS] + [EOS] * 76


def test_weights_follow_their_tokens():
    (chunk,) = chunks_of("(a) [b] (c:1.5)")
    assert chunk.multipliers[:3] == [1.1, pytest.approx(1 / 1.1), 1.5]
    assert chunk.multipliers[3:] == [1.0] * 72


@pytest.mark.parametrize(
    ("n_words", "sizes", "count"),
    [(74, [74], 74), (75, [75], 75), (76, [75, 1], 76), (80, [75, 5], 80), (151, [75, 75, 1], 151)],
)
def test_long_prompts_split_every_75_tokens(n_words, sizes, count):
    chunks, token_count = tokenize_prompt(parse_prompt_attention(words(0, n_words)), fake_tokenize, COMMA)
    assert [chunk.length for chunk in chunks] == sizes
    assert all(len(chunk.tokens) == 75 and len(chunk.multipliers) == 75 for chunk in chunks)
    assert [t for chunk in chunks for t in real(chunk)] == [1000 + i for i in range(n_words)]
    assert token_count == count


def test_comma_in_last_20_tokens_moves_the_rest_to_the_next_chunk():
    prompt = f"{words(0, 70)}, {words(70, 80)}"
    first, second = chunks_of(prompt)
    assert real(first) == [1000 + i for i in range(70)] + [COMMA]
    assert first.tokens[71:] == [None] * 4
    assert real(second) == [1000 + i for i in range(70, 80)]


def test_comma_too_far_back_does_not_move_anything():
    prompt = f"{words(0, 10)}, {words(10, 90)}"
    first, second = chunks_of(prompt)
    assert first.length == 75 and second.length == 16  # 10 words + comma + 80 words


def test_comma_backtrack_can_be_disabled_or_narrowed():
    prompt = f"{words(0, 70)}, {words(70, 80)}"
    assert [c.length for c in chunks_of(prompt, comma_padding_backtrack=0)] == [75, 6]
    # the comma sits 5 tokens before the end of the full chunk
    assert [c.length for c in chunks_of(prompt, comma_padding_backtrack=4)] == [75, 6]
    assert [c.length for c in chunks_of(prompt, comma_padding_backtrack=5)] == [71, 10]


def test_small_chunk_length_exact_layout():
    # chunk_length 6, backtrack 3: "a b c , w1 w2 | w3" -> comma at index 3 is 3 from the end
    chunks = chunks_of("a b c, w1 w2 w3", chunk_length=6, comma_padding_backtrack=3)
    assert [chunk.tokens for chunk in chunks] == [
        [320, 321, 322, COMMA, None, None],
        [1001, 1002, 1003, None, None, None],
    ]


def test_comma_at_a_chunk_boundary_starts_the_next_chunk():
    chunks = chunks_of(f"{words(0, 75)}, a", chunk_length=75)
    assert chunks[0].length == 75
    assert real(chunks[1]) == [COMMA, 320]


def test_break_closes_the_chunk():
    chunks, count = tokenize_prompt(parse_prompt_attention("a b BREAK c"), fake_tokenize, COMMA)
    assert [real(chunk) for chunk in chunks] == [[320, 321], [322]]
    assert count == 76  # a closed chunk counts as 75, like A1111's counter


def test_trailing_break_adds_no_empty_chunk():
    chunks, count = tokenize_prompt(parse_prompt_attention("a BREAK"), fake_tokenize, COMMA)
    assert [real(chunk) for chunk in chunks] == [[320]]
    assert count == 75


def test_break_inside_brackets_is_just_a_word():
    # A1111 weights the BREAK marker (-1.1), so it no longer splits the chunk.
    (chunk,) = chunks_of("(a BREAK b)")
    assert real(chunk) == [320, 9001, 321]


def test_count_prompt_tokens_matches_a1111_counter():
    parsed = parse_prompt_attention(words(0, 80))
    assert count_prompt_tokens(parsed, fake_tokenize, COMMA) == 80


def test_embeddings_take_their_vectors_and_move_whole_to_the_next_chunk():
    def find(tokens, position):
        return ("emb-vectors", 3, 1) if tokens[position] == 9000 else None

    (chunk,) = build_chunks(parse_prompt_attention("a (emb) b"), fake_tokenize, COMMA, find_embedding=find)
    assert chunk.tokens[:5] == [320, 0, 0, 0, 321]
    assert chunk.multipliers[:5] == [1.0, 1.1, 1.1, 1.1, 1.0]
    assert chunk.fixes == [EmbeddingFix(1, "emb-vectors", 3)]

    first, second = build_chunks(
        parse_prompt_attention(f"{words(0, 73)} emb"), fake_tokenize, COMMA, find_embedding=find
    )
    assert first.length == 73 and first.fixes == []
    assert second.tokens[:3] == [0, 0, 0] and second.fixes == [EmbeddingFix(0, "emb-vectors", 3)]


def test_pad_chunk_counts_adds_empty_chunks_to_the_shorter():
    long_chunks = chunks_of(words(0, 100))
    short_chunks = chunks_of("a")
    padded_long, padded_short = pad_chunk_counts(long_chunks, short_chunks)
    assert len(padded_long) == len(padded_short) == 2
    assert padded_long == long_chunks
    assert padded_short[0] == short_chunks[0]
    assert padded_short[1].tokens == [None] * 75 and padded_short[1].to_ids(BOS, EOS) == [BOS] + [EOS] * 76
    assert len(short_chunks) == 1  # inputs are not modified

    b, a = pad_chunk_counts(short_chunks, long_chunks)
    assert len(a) == len(b) == 2
