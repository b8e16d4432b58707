"""ChatGLM (Kolors' text encoder): token ids in, Kolors' conditioning out.

Kolors reads ChatGLM3 the way diffusers' `KolorsPipeline.encode_prompt` does: the prompt
behind the `[gMASK] sop` prefix, left-padded to 256 tokens; the context is the
penultimate hidden state, the pooled text the last token's final hidden state (before
the final norm). ChatGLM's hidden states are sequence-first: [tokens, batch, width].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    import torch
    from diffusers.pipelines.kolors import ChatGLMModel, ChatGLMTokenizer

__all__ = ["prompt_ids", "chatglm_inputs", "run_chatglm", "encode_texts", "check_vocabulary"]

# ChatGLM pads its embedding table past the tokenizer's vocabulary (64 794 -> 65 024):
# more slack than this means the tokenizer belongs to another model.
_VOCAB_SLACK = 512


def prompt_ids(tokenizer: ChatGLMTokenizer, text: str) -> list[int]:
    """The prompt's token ids without the prefix (what A1111-style weighting splits)."""
    return tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"] if text else []


def chatglm_inputs(
    tokenizer: ChatGLMTokenizer, token_lists: list[list[int]], max_length: int, device: Any = "cpu"
) -> dict:
    """`[gMASK] sop` + ids, cut to `max_length` and left-padded like ChatGLMTokenizer pads."""
    import torch

    prefix = tokenizer.get_prefix_tokens()
    ids, masks, positions = [], [], []
    for tokens in token_lists:
        row = (prefix + list(tokens))[:max_length]
        pad = max_length - len(row)
        ids.append([tokenizer.pad_token_id] * pad + row)
        masks.append([0] * pad + [1] * len(row))
        positions.append([0] * pad + list(range(len(row))))
    return {
        "input_ids": torch.tensor(ids, device=device),
        "attention_mask": torch.tensor(masks, device=device),
        "position_ids": torch.tensor(positions, device=device),
    }


def run_chatglm(encoder: ChatGLMModel, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(context [batch, tokens, width], pooled [batch, width]) as Kolors conditions on them."""
    out = encoder(**inputs, output_hidden_states=True)
    context = out.hidden_states[-2].permute(1, 0, 2)
    pooled = out.hidden_states[-1][-1]
    return context, pooled


def encode_texts(
    tokenizer: ChatGLMTokenizer, encoder: ChatGLMModel, texts: list[str], max_length: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain prompts (no weighting) -> (context, pooled); used by training and the tiny build."""
    device = next(encoder.parameters()).device
    inputs = chatglm_inputs(tokenizer, [prompt_ids(tokenizer, t) for t in texts], max_length, device)
    return run_chatglm(encoder, inputs)


def check_vocabulary(tokenizer: ChatGLMTokenizer, encoder: ChatGLMModel, where: str) -> None:
    """Refuse a tokenizer whose vocabulary does not fit the text encoder's embedding table.

    Token ids of another vocabulary index the wrong (or no) embeddings: the model would run
    and make nonsense, e.g. tiny-kolors' test tokenizer beside real ChatGLM3 weights.
    """
    vocab = int(tokenizer.vocab_size)
    table = int(encoder.config.padded_vocab_size)
    if not vocab <= table < vocab + _VOCAB_SLACK:
        raise LorastudioError(
            f"{where}: tokenizer has {vocab} tokens but text_encoder's table has {table}; "
            "use the tokenizer folder that came with these text-encoder weights."
        )
