"""Captions -> text-encoder conditioning for training, and the trainable trigger embedding.

The layer choice matches generation (`generate/conditioning.py`): SD1/SD2 take the last
hidden state, or with clip skip N the hidden state -N through the final layer norm; SDXL
concatenates the penultimate hidden states of both encoders and pools from encoder 2.
`data.max_token_length` 150 or 225 reads a caption as kohya's `max_token_length` does: 75-token
chunks, each `<BOS> 75 tokens <EOS|PAD>` through the encoder, joined as the first chunk's BOS,
every chunk's 75 token states and the last chunk's final state (2 + 75 n states); SDXL's pooled
text comes from the first chunk.
The trigger embedding is a separate parameter injected by a forward hook on the token
embedding, so the vocabulary matrix stays frozen and only the new vectors train.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lorastudio.errors import LorastudioError
from lorastudio.generate.conditioning import pooled_at

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lorastudio.models.loading import LoadedModel

__all__ = [
    "CaptionLengths",
    "TriggerEmbedding",
    "build_caption",
    "caption_lengths",
    "chunked_ids",
    "encode_text",
    "mentions_trigger",
    "trigger_tokens",
]

CHUNK_TOKENS = 75  # caption tokens per CLIP pass, between <BOS> and <EOS>


def trigger_tokens(trigger: str, num_vectors: int) -> list[str]:
    """`trigger`, `trigger_1`, ... one token per vector (the pivotal-tuning naming)."""
    return [trigger] + [f"{trigger}_{i}" for i in range(1, num_vectors)]


class TriggerEmbedding(nn.Module):
    """New token vectors for one trigger word, one [N, dim] parameter per text encoder."""

    def __init__(self, trigger: str, num_vectors: int, init_text: str, text_encoders: list, tokenizers: list):
        super().__init__()
        self.trigger = trigger
        self.tokens = trigger_tokens(trigger.lower(), num_vectors)
        self.vectors = nn.ParameterList()
        self.token_ids: list[list[int]] = []
        self._hooks: list[Any] = []
        for encoder, tokenizer in zip(text_encoders, tokenizers, strict=True):
            init = _init_vectors(encoder, tokenizer, init_text, num_vectors)
            tokenizer.add_tokens(self.tokens)
            ids = tokenizer.convert_tokens_to_ids(self.tokens)
            if len(tokenizer) > encoder.get_input_embeddings().num_embeddings:
                encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            self.token_ids.append(list(ids))
            self.vectors.append(nn.Parameter(init.float().clone()))

    def expand(self, caption: str) -> str:
        """Replace the trigger word with all its vector tokens."""
        if len(self.tokens) == 1:
            return caption
        pattern = re.compile(rf"(?<![\w]){re.escape(self.trigger)}(?![\w])", re.IGNORECASE)
        return pattern.sub(" ".join(self.tokens), caption)

    def attach(self, text_encoders: list) -> None:
        """Hook each encoder's token embedding so the trigger ids read the trainable vectors."""
        self.detach()
        for index, encoder in enumerate(text_encoders):
            self._hooks.append(encoder.get_input_embeddings().register_forward_hook(self._make_hook(index)))

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _make_hook(self, index: int):
        def inject(_module, inputs, output):
            input_ids = inputs[0]
            vectors = self.vectors[index]
            out = output
            for j, token_id in enumerate(self.token_ids[index]):
                mask = (input_ids == token_id).unsqueeze(-1)
                out = torch.where(mask, vectors[j].to(out.dtype), out)
            return out

        return inject

    def as_tensors(self) -> list[torch.Tensor]:
        return [v.detach().float().cpu().clone() for v in self.vectors]


def _init_vectors(encoder, tokenizer, init_text: str, num_vectors: int) -> torch.Tensor:
    """Initial vectors: the init text's token embeddings, repeated to N (mean if it has more)."""
    ids = tokenizer(init_text, add_special_tokens=False)["input_ids"] if init_text.strip() else []
    table = encoder.get_input_embeddings().weight.detach()
    if not ids:
        raise LorastudioError(
            f"embedding.init_text {init_text!r}: gives no tokens; use a word such as 'person'."
        )
    vectors = table[torch.tensor(ids, device=table.device)]
    if len(ids) >= num_vectors:
        chunks = torch.tensor_split(vectors, num_vectors)
        return torch.stack([c.mean(0) for c in chunks])
    return vectors[torch.arange(num_vectors) % len(ids)]


def mentions_trigger(text: str, trigger: str) -> bool:
    """Whether `text` holds the trigger as a whole word, in any case: the text encoder lowercases."""
    return bool(trigger) and re.search(rf"(?<![\w]){re.escape(trigger)}(?![\w])", text, re.I) is not None


def build_caption(
    caption: str,
    trigger: str,
    prefix_trigger: bool,
    shuffle_tags: bool,
    keep_tokens: int,
    dropout: float,
    rng: random.Random,
    tag_dropout: float = 0.0,
) -> str:
    """One training caption: shuffle tags after the first `keep_tokens`, add the trigger, maybe drop it.

    `tag_dropout` (kohya's caption_tag_dropout_rate) drops each tag after the first
    `keep_tokens` with that chance; a tag holding the trigger word ("Surtr (arknights)") is never dropped.
    """
    tags = [t.strip() for t in caption.split(",")]
    tags = [t for t in tags if t]
    if trigger and prefix_trigger and not any(mentions_trigger(t, trigger) for t in tags):
        tags.insert(0, trigger)
    if shuffle_tags and len(tags) > keep_tokens:
        head, tail = tags[:keep_tokens], tags[keep_tokens:]
        rng.shuffle(tail)
        tags = head + tail
    if tag_dropout:
        tags = tags[:keep_tokens] + [
            t for t in tags[keep_tokens:] if mentions_trigger(t, trigger) or rng.random() >= tag_dropout
        ]
    if dropout and rng.random() < dropout:
        return ""
    return ", ".join(tags)


def _select_layer(family, encoder, out, clip_skip: int):
    if family.uses_pooled_text:
        return out.hidden_states[-(clip_skip + 1)]
    if clip_skip <= 1:
        return out.last_hidden_state
    final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
    return final_norm(out.hidden_states[-clip_skip])


def chunked_ids(
    tokenizer: PreTrainedTokenizerBase, captions: list[str], max_tokens: int = CHUNK_TOKENS
) -> torch.Tensor:
    """[B, n, 77] token ids: the caption cut at `max_tokens`, in n = max_tokens / 75 chunks of
    `<BOS> 75 tokens <last>` (kohya's `get_input_ids`; one chunk is the plain 77-token input).

    Where padding is not the end token (SD 2.x, SDXL), a chunk that stops inside the caption ends in
    `<EOS>`, and an empty chunk starts `<BOS> <EOS>`, as kohya makes them.
    """
    chunks = max_tokens // CHUNK_TOKENS
    ids = tokenizer(
        captions, padding="max_length", max_length=max_tokens + 2, truncation=True, return_tensors="pt"
    ).input_ids
    if chunks == 1:
        return ids[:, None]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows = []
    for k in range(chunks):
        body = ids[:, 1 + k * CHUNK_TOKENS : 1 + (k + 1) * CHUNK_TOKENS]
        chunk = torch.cat([ids[:, :1], body, ids[:, -1:]], dim=1)
        if pad != eos:
            chunk[(chunk[:, -2] != eos) & (chunk[:, -2] != pad), -1] = eos
            chunk[chunk[:, 1] == pad, 1] = eos
        rows.append(chunk)
    return torch.stack(rows, dim=1)


def _joined_chunks(hidden: torch.Tensor, batch: int, chunks: int) -> torch.Tensor:
    """[B * n, 77, dim] -> [B, 2 + 75 n, dim]: first BOS, each chunk's 75 token states, last final state."""
    width = hidden.shape[1]
    hidden = hidden.reshape(batch, chunks * width, hidden.shape[-1])
    if chunks == 1:
        return hidden
    parts = [hidden[:, :1]]
    parts += [hidden[:, k * width + 1 : (k + 1) * width - 1] for k in range(chunks)]
    parts.append(hidden[:, -1:])
    return torch.cat(parts, dim=1)


def encode_text(
    model: LoadedModel, captions: list[str], clip_skip: int = 1, max_tokens: int = CHUNK_TOKENS
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, 77, dim] conditioning (and SDXL's pooled [B, dim]) for a batch of captions; with
    `max_tokens` 150 or 225, [B, 2 + max_tokens, dim] from 75-token chunks (see `chunked_ids`).

    Kolors (ChatGLM): [B, 256, dim] and the pooled last token, as generation computes them.
    """
    if model.family.text_encoder_kind == "chatglm":
        from lorastudio.models.chatglm import encode_texts

        embeds, pooled = encode_texts(model.tokenizers[0], model.text_encoders[0], captions, model.family.max_prompt_tokens)
        return embeds.to(model.device), pooled.to(model.device)
    per_encoder = []
    pooled = None
    for encoder, tokenizer in zip(model.text_encoders, model.tokenizers, strict=True):
        ids = chunked_ids(tokenizer, captions, max_tokens)
        batch, chunks = ids.shape[:2]
        ids = ids.reshape(batch * chunks, -1).to(encoder.device)  # where the encoder is: CPU memory while it waits
        out = encoder(ids, output_hidden_states=True)
        hidden = _select_layer(model.family, encoder, out, clip_skip)
        per_encoder.append(_joined_chunks(hidden, batch, chunks).to(model.device))
        if model.family.uses_pooled_text:  # at the first end-of-text token, never at the trigger's ids
            pooled = pooled_at(encoder, out, (ids == tokenizer.eos_token_id).int().argmax(-1))
            pooled = pooled[::chunks] if pooled is not None else None  # the first chunk's, as kohya
    return torch.cat(per_encoder, dim=-1), pooled.to(model.device) if pooled is not None else None


@dataclass(frozen=True)
class CaptionLengths:
    """Captions longer than the text encoder reads: how many, the longest (tokens) and its text."""

    limit: int
    cut: int
    total: int
    longest: int
    example: str

    hint: str = ""

    def line(self) -> str:
        example = f"{self.example[:60]!r}{'...' if len(self.example) > 60 else ''}"
        return (
            f"captions: {self.cut} of {self.total} are longer than {self.limit} tokens and are cut there"
            f" (longest: {self.longest} tokens, {example}){self.hint}"
        )

    def record(self) -> dict:
        return {"event": "captions_cut", "step": 0, "limit": self.limit, "cut": self.cut, "of": self.total,
                "longest": self.longest}  # fmt: skip


def caption_lengths(
    model: LoadedModel, captions: list[str], max_tokens: int = CHUNK_TOKENS
) -> CaptionLengths | None:
    """The captions the text encoder cuts (at `max_tokens`; Kolors at its 256), None when none is cut."""
    tokenizer = model.tokenizers[0]
    if model.family.text_encoder_kind == "chatglm":
        from lorastudio.models.chatglm import prompt_ids

        limit = model.family.max_prompt_tokens - len(tokenizer.get_prefix_tokens())
        lengths = {caption: len(prompt_ids(tokenizer, caption)) for caption in dict.fromkeys(captions)}
    else:
        limit = max_tokens
        lengths = {
            caption: len(tokenizer(caption, add_special_tokens=False, truncation=False).input_ids)
            for caption in dict.fromkeys(captions)
        }
    cut = [caption for caption in captions if lengths[caption] > limit]
    if not cut:
        return None
    longest = max(cut, key=lengths.__getitem__)
    hint = ""
    if model.family.text_encoder_kind != "chatglm" and limit < 225:
        wider = 150 if lengths[longest] <= 150 else 225
        hint = f"; data.max_token_length={wider} (kohya max_token_length) reads {wider} tokens"
    return CaptionLengths(limit, len(cut), len(captions), lengths[longest], longest, hint)
