"""Prompt text -> text-encoder conditioning, the way A1111 computes it.

Long prompts are cut into 75-token chunks (BREAK and comma back-tracking per A1111),
each chunk is encoded alone with BOS/EOS and the results are concatenated; every token's
vector is scaled by its attention weight and the mean is restored ("Original" emphasis).
Textual-inversion embeddings are used by name: their vectors replace placeholder token
embeddings through a hook, so the tokenizer and text encoder are never modified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lorastudio.generate.prompt_chunks import build_chunks
from lorastudio.generate.prompt_parser import parse_prompt_attention

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from lorastudio.models.loading import LoadedModel

__all__ = ["TextConditioning", "PromptEncoder", "pad_to_same_length", "pooled_at", "stack_conditionings"]

CHUNK_LENGTH = 75
_PLACEHOLDER_BASE = 10_000_000  # token ids at or above this stand for embedding vectors


@dataclass
class TextConditioning:
    embeds: Any  # [1, 77 * chunks, dim]; one row per AND sub-prompt once stacked
    pooled: Any | None  # [1, pooled_dim] for SDXL


@dataclass
class _Embedding:
    name: str
    vectors: list[Any]  # one [n, dim] tensor per text encoder


class PromptEncoder:
    """Encodes prompts for one loaded model; caches results for the life of a request."""

    def __init__(
        self, model: LoadedModel, clip_skip: int = 1, embeddings: dict[str, list[Any]] | None = None
    ) -> None:
        self.model = model
        self.clip_skip = clip_skip
        self.embeddings = [_Embedding(name, vecs) for name, vecs in (embeddings or {}).items()]
        self._cache: dict[str, TextConditioning] = {}
        tokenizer = model.tokenizers[0]
        self._chatglm = model.family.text_encoder_kind == "chatglm"
        self._comma = None if self._chatglm else tokenizer.convert_tokens_to_ids(",</w>")
        self._pattern = (
            re.compile(r"(?<![\w])(" + "|".join(re.escape(e.name) for e in self.embeddings) + r")(?![\w])")
            if self.embeddings
            else None
        )
        self.used_embeddings: set[str] = set()

    # -- tokenization -------------------------------------------------------------------
    def _tokenize_one(self, text: str) -> list[int]:
        tokenizer = self.model.tokenizers[0]
        if self._pattern is None:
            return tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
        ids: list[int] = []
        for i, part in enumerate(self._pattern.split(text)):
            if i % 2 == 1:  # an embedding name
                index = next(k for k, e in enumerate(self.embeddings) if e.name == part)
                count = self.embeddings[index].vectors[0].shape[0]
                ids += [_PLACEHOLDER_BASE + index * 1000 + v for v in range(count)]
                self.used_embeddings.add(part)
            elif part:
                ids += tokenizer(part, add_special_tokens=False, truncation=False)["input_ids"]
        return ids

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return [self._tokenize_one(t) for t in texts]

    # -- encoding -----------------------------------------------------------------------
    def encode(self, text: str) -> TextConditioning:
        if text not in self._cache:
            self._cache[text] = self._encode_uncached(text)
        return self._cache[text]

    def _encode_uncached(self, text: str):
        import torch

        if self._chatglm:
            return self._encode_chatglm(text)
        chunks = build_chunks(parse_prompt_attention(text), self._tokenize, self._comma, CHUNK_LENGTH)
        per_encoder = []
        pooled = None
        for k, (encoder, tokenizer) in enumerate(
            zip(self.model.text_encoders, self.model.tokenizers, strict=True)
        ):
            parts = []
            for c, chunk in enumerate(chunks):
                z, pooled_chunk = self._encode_chunk(encoder, tokenizer, k, chunk)
                parts.append(z)
                if c == 0 and pooled_chunk is not None:
                    pooled = pooled_chunk  # A1111 takes the pooled output of the first chunk
            per_encoder.append(torch.cat(parts, dim=1))
        return TextConditioning(torch.cat(per_encoder, dim=-1), pooled)

    def _encode_chunk(self, encoder, tokenizer, encoder_index: int, chunk):
        import torch

        bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        tokens = [eos if t is None else t for t in chunk.tokens]
        ids = [bos] + tokens + [eos]
        multipliers = [1.0] + list(chunk.multipliers) + [1.0]
        # After the first end-of-text token, OpenCLIP-style tokenizers pad with their own id.
        first_eos = next(i for i, t in enumerate(ids[1:], start=1) if t == eos)
        ids = ids[: first_eos + 1] + [pad] * (len(ids) - first_eos - 1)
        replacements = {}
        for pos, t in enumerate(ids):
            if t >= _PLACEHOLDER_BASE:
                emb_index, vec_index = divmod(t - _PLACEHOLDER_BASE, 1000)
                replacements[pos] = self.embeddings[emb_index].vectors[encoder_index][vec_index]
                ids[pos] = eos
        device = self.model.device
        input_ids = torch.tensor([ids], device=device)
        hook = None
        if replacements:

            def inject(_module, _inputs, output):
                output = output.clone()
                for pos, vec in replacements.items():
                    output[0, pos] = vec.to(output.dtype).to(output.device)
                return output

            hook = encoder.get_input_embeddings().register_forward_hook(inject)
        try:
            out = encoder(input_ids, output_hidden_states=True)
        finally:
            if hook is not None:
                hook.remove()
        z = self._select_layer(encoder, out)
        pooled = pooled_at(encoder, out, [first_eos]) if self.model.family.uses_pooled_text else None
        if any(m != 1.0 for m in multipliers):
            z = _apply_emphasis(z, multipliers)
        return z, pooled

    def _select_layer(self, encoder, out):
        if self.model.family.uses_pooled_text:
            # SDXL is conditioned on the penultimate layer, without the final layer norm.
            return out.hidden_states[-(self.clip_skip + 1)]
        if self.clip_skip <= 1:
            return out.last_hidden_state
        final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
        return final_norm(out.hidden_states[-self.clip_skip])

    def _encode_chatglm(self, text: str) -> TextConditioning:
        """Kolors: one left-padded window of the family's 256 tokens, no chunks, no clip skip.

        The prompt without its weighting syntax is tokenized whole, so a plain prompt gets
        exactly diffusers' tokens; each token then takes the weight of the text it starts in
        and scales its vector (mean restored, as for CLIP). BREAK has no chunk to end and
        is dropped; tokens past the window are cut, as Kolors does.
        """
        from lorastudio.models.chatglm import chatglm_inputs, prompt_ids, run_chatglm

        tokenizer, encoder = self.model.tokenizers[0], self.model.text_encoders[0]
        window = self.model.family.max_prompt_tokens
        parts = [(piece, weight) for piece, weight in parse_prompt_attention(text) if piece != "BREAK"]
        plain = "".join(piece for piece, _ in parts)
        tokens = prompt_ids(tokenizer, plain)
        multipliers = _token_weights(tokenizer, tokens, plain, [w for piece, w in parts for _ in piece])
        room = window - len(tokenizer.get_prefix_tokens())
        tokens, multipliers = tokens[:room], multipliers[:room]
        # The encoder may sit in CPU memory while Kolors trains (see train/trainer.py).
        inputs = chatglm_inputs(tokenizer, [tokens], window, next(encoder.parameters()).device)
        context, pooled = (t.to(self.model.device) for t in run_chatglm(encoder, inputs))
        if any(m != 1.0 for m in multipliers):
            context = _apply_emphasis(context, [1.0] * (window - len(multipliers)) + multipliers)
        return TextConditioning(context, pooled)

    def empty_chunk(self) -> Any:
        """The encoding of one empty chunk, used to pad the shorter of cond/uncond."""
        z = self.encode("").embeds
        if self._chatglm:
            return z  # every ChatGLM prompt is one window long: nothing is ever padded
        return z[:, : CHUNK_LENGTH + 2]


def pooled_at(encoder: torch.nn.Module, out: Any, eos_positions: Sequence[int]) -> torch.Tensor | None:
    """SDXL's pooled text: the projected final hidden state at each row's first real end-of-text token.

    transformers pools at `input_ids.argmax()` when the config says eos_token_id 2, as every
    real SDXL config does; that lands on a trigger's added token or an embedding placeholder.
    A1111 pools at the end-of-text token. None for an encoder without a projection (SDXL's first).
    """
    import torch

    projection = getattr(encoder, "text_projection", None)
    if projection is None:
        return None
    hidden = out.last_hidden_state
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return projection(hidden[rows, torch.as_tensor(eos_positions, device=hidden.device)])


def _token_weights(tokenizer, tokens: list[int], plain: str, char_weights: list[float]) -> list[float]:
    """Each token's weight: that of the first non-space prompt character its text covers.

    A token's start is where the text decoded so far ends; byte-fallback tokens in the
    middle of a character ("\ufffd" so far) keep the start of that character.
    """
    weights, start = [], 0
    for k in range(len(tokens)):
        first = start
        while first < len(plain) - 1 and plain[first].isspace():
            first += 1
        weights.append(char_weights[min(first, len(char_weights) - 1)] if char_weights else 1.0)
        decoded = tokenizer.decode(tokens[: k + 1])
        if not decoded.endswith("\ufffd"):
            start = max(start, len(decoded))
    return weights


def _apply_emphasis(z, multipliers: list[float]):
    """A1111's "Original" emphasis: scale each token, then restore the overall mean."""
    import torch

    weights = torch.tensor(multipliers, device=z.device, dtype=z.dtype).view(1, -1, 1)
    original_mean = z.mean()
    weighted = z * weights
    new_mean = weighted.mean()
    if new_mean.abs() < 1e-12:  # a mean of ~0 cannot be restored; keep the plain weighting
        return weighted
    return weighted * (original_mean / new_mean)


def pad_to_same_length(
    a: torch.Tensor, b: torch.Tensor, filler: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Make two conditionings the same token length by appending empty-chunk encodings (A1111).

    `a` and `b` may hold several rows (AND sub-prompts); `filler` is one row, repeated.
    """
    import torch

    while a.shape[1] < b.shape[1]:
        a = torch.cat([a, filler.expand(a.shape[0], -1, -1)], dim=1)
    while b.shape[1] < a.shape[1]:
        b = torch.cat([b, filler.expand(b.shape[0], -1, -1)], dim=1)
    return a, b


def fit_to_length(embeds: torch.Tensor, length: int) -> torch.Tensor:
    """A conditioning cut to `length` tokens, or extended by repeating its last token vector:
    how A1111 before 1.6 matched the negative prompt to the prompt ("Pad conds v0")."""
    import torch

    if embeds.shape[1] >= length:
        return embeds[:, :length]
    return torch.cat([embeds, embeds[:, -1:].expand(-1, length - embeds.shape[1], -1)], dim=1)


def stack_conditionings(conds: list[TextConditioning]) -> TextConditioning:
    """One row per AND sub-prompt, so the UNet sees them all in one batch.

    Sub-prompts of different chunk counts are made equal the way A1111's `stack_conds`
    does it: the shorter ones repeat their last token vector (not an empty chunk, which
    is only used between the prompt and the negative prompt). SDXL's pooled vectors are
    stacked alongside. A single conditioning is returned as it is.
    """
    import torch

    if len(conds) == 1:
        return conds[0]
    length = max(c.embeds.shape[1] for c in conds)
    rows = [
        torch.cat([c.embeds, c.embeds[:, -1:].expand(-1, length - c.embeds.shape[1], -1)], dim=1)
        for c in conds
    ]
    pooled = None if conds[0].pooled is None else torch.cat([c.pooled for c in conds])
    return TextConditioning(torch.cat(rows), pooled)
