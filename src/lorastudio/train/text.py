"""Captions -> text-encoder conditioning for training, and the trainable trigger embedding.

The layer choice matches generation (`generate/conditioning.py`): SD1/SD2 take the last
hidden state, or with clip skip N the hidden state -N through the final layer norm; SDXL
concatenates the penultimate hidden states of both encoders and pools from encoder 2.
The trigger embedding is a separate parameter injected by a forward hook on the token
embedding, so the vocabulary matrix stays frozen and only the new vectors train.
"""

from __future__ import annotations

import random
import re
from typing import Any

import torch
from torch import nn

from lorastudio.errors import LorastudioError
from lorastudio.generate.conditioning import pooled_at

__all__ = ["TriggerEmbedding", "encode_text", "build_caption", "mentions_trigger", "trigger_tokens"]

MAX_TOKENS = 77


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


def encode_text(model, captions: list[str], clip_skip: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, 77, dim] conditioning (and SDXL's pooled [B, dim]) for a batch of captions.

    Kolors (ChatGLM): [B, 256, dim] and the pooled last token, as generation computes them.
    """
    if model.family.text_encoder_kind == "chatglm":
        from lorastudio.models.chatglm import encode_texts

        embeds, pooled = encode_texts(model.tokenizers[0], model.text_encoders[0], captions, model.family.max_prompt_tokens)
        return embeds.to(model.device), pooled.to(model.device)
    per_encoder = []
    pooled = None
    for encoder, tokenizer in zip(model.text_encoders, model.tokenizers, strict=True):
        ids = tokenizer(
            captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids.to(encoder.device)  # where the encoder is: CPU memory while it waits (train.offload)
        out = encoder(ids, output_hidden_states=True)
        per_encoder.append(_select_layer(model.family, encoder, out, clip_skip).to(model.device))
        if model.family.uses_pooled_text:  # at the first end-of-text token, never at the trigger's ids
            pooled = pooled_at(encoder, out, (ids == tokenizer.eos_token_id).int().argmax(-1))
    return torch.cat(per_encoder, dim=-1), pooled.to(model.device) if pooled is not None else None
