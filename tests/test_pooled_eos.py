"""SDXL's pooled text vector comes from the end-of-text token, also with a trigger or an embedding.

Real SDXL configs say `eos_token_id: 2`, so transformers pools at `input_ids.argmax()`: at a
trained trigger's added ids (49408+) or at an embedding placeholder. A1111 and ComfyUI pool at
the end-of-text token. The tiny models say 49407, so each test sets the real value.
"""

from __future__ import annotations

import pytest
import torch

TRIGGER = "zqxmira"


@pytest.fixture
def real_eos_config(monkeypatch):
    """Make a loaded SDXL's second encoder pool as a real SDXL checkpoint's config makes it."""

    def apply(model):
        monkeypatch.setattr(model.text_encoders[1].text_model, "eos_token_id", 2)

    return apply


def _final_hidden(encoder):
    """Record the encoder's last hidden state (after its final layer norm) on each call."""
    seen: list[torch.Tensor] = []
    hook = encoder.text_model.final_layer_norm.register_forward_hook(lambda _m, _i, out: seen.append(out))
    return seen, hook


def _eos_position(tokenizer, text: str, extra_tokens: int = 0) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + extra_tokens + 1


def test_generation_pools_at_end_of_text_with_an_embedding(sdxl, real_eos_config):
    from lorastudio.generate.conditioning import PromptEncoder

    real_eos_config(sdxl)
    encoder = sdxl.text_encoders[1]
    g = torch.Generator().manual_seed(0)
    vectors = [torch.randn(2, e.get_input_embeddings().weight.shape[1], generator=g) for e in sdxl.text_encoders]
    hidden, hook = _final_hidden(encoder)
    try:
        with torch.no_grad():
            pooled = PromptEncoder(sdxl, embeddings={TRIGGER: vectors}).encode(f"{TRIGGER} red square").pooled
    finally:
        hook.remove()
    eos = _eos_position(sdxl.tokenizers[1], " red square", extra_tokens=2)
    with torch.no_grad():
        at_eos = encoder.text_projection(hidden[-1][0, eos])
        at_placeholder = encoder.text_projection(hidden[-1][0, 1])
    assert torch.equal(pooled[0], at_eos)
    assert not torch.allclose(pooled[0], at_placeholder, atol=1e-3)


def test_training_pools_at_end_of_text_with_a_trigger(tiny_models_dir, real_eos_config):
    from lorastudio.models.loading import load_model
    from lorastudio.train.text import TriggerEmbedding, encode_text

    model = load_model("tiny-sdxl", tiny_models_dir, tiny_models_dir / ".cache", device="cpu")
    real_eos_config(model)
    embedding = TriggerEmbedding(TRIGGER, 2, "person", model.text_encoders, model.tokenizers)
    embedding.attach(model.text_encoders)
    encoder = model.text_encoders[1]
    hidden, _ = _final_hidden(encoder)
    with torch.no_grad():
        _, pooled = encode_text(model, [embedding.expand(f"{TRIGGER}, red square")])
        _, plain = encode_text(model, ["red square"])
    eos = _eos_position(model.tokenizers[1], ", red square", extra_tokens=2)
    with torch.no_grad():
        at_eos = encoder.text_projection(hidden[0][0, eos])
        at_trigger = encoder.text_projection(hidden[0][0, 1])
    assert torch.equal(pooled[0], at_eos)
    assert not torch.allclose(pooled[0], at_trigger, atol=1e-3)
    assert not torch.allclose(pooled, plain, atol=1e-3)  # the trigger still counts, through attention
