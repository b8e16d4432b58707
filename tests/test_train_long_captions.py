"""Captions past 75 tokens: kohya's `max_token_length` chunks, and a cut caption is said once per run."""

from __future__ import annotations

import json

import pytest
import torch

from lorastudio.train.text import caption_lengths, encode_text
from lorastudio.train.text_cache import text_cache_key
from training_helpers import tiny_train_config, write_images

LONG = "red " * 100  # 100 one-token words


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sd2", "tiny-sdxl"])
def test_long_captions_are_read_in_75_token_chunks_as_kohya_joins_them(name, request):
    """Captions were cut at 77 tokens whatever was asked; 150 reads two chunks, joined as sd-scripts does:
    the first chunk's <BOS>, each chunk's 75 token states, the last chunk's final state; SDXL pools the first."""
    from lorastudio.models.loading import load_model

    root = request.getfixturevalue("tiny_models_dir")
    model = load_model(name, root, root / ".cache", device="cpu")
    with torch.no_grad():
        long150, pooled150 = encode_text(model, [LONG, "red"], max_tokens=150)
        long75, pooled75 = encode_text(model, [LONG, "red"])
        rest, _ = encode_text(model, ["red " * 25])  # tokens 76-100: the second chunk on its own
        empty, _ = encode_text(model, [""])
    assert long150.shape[1] == 152 and long75.shape[1] == 77
    assert torch.equal(long150[:, :76], long75[:, :76])  # <BOS> and the first 75 tokens
    assert torch.equal(long150[:1, 76:151], rest[:, 1:76]) and torch.equal(long150[0, 151], rest[0, 76])
    assert torch.equal(long150[1:, 76:151], empty[:, 1:76])  # a short caption's empty chunk: <BOS> <EOS> <PAD>...
    if pooled150 is not None:
        assert torch.allclose(pooled150, pooled75, atol=1e-5)  # from the first chunk
    with torch.no_grad():
        assert torch.equal(encode_text(model, [LONG], max_tokens=225)[0][:, :151], long150[:1, :151])


def test_the_text_cache_keys_on_the_caption_length():
    old = text_cache_key("abc", "sd15", 1, torch.float32)
    assert text_cache_key("abc", "sd15", 1, torch.float32, 75) == old  # caches made before stay valid
    assert len({old, text_cache_key("abc", "sd15", 1, torch.float32, 150), text_cache_key("abc", "sd15", 1, torch.float32, 225)}) == 3


def test_cut_captions_are_counted_with_the_longest(sd15):
    found = caption_lengths(sd15, ["red", LONG, "red " * 80], 75)
    assert (found.cut, found.total, found.longest, found.limit) == (2, 3, 100, 75)
    assert "2 of 3 are longer than 75 tokens" in found.line() and "data.max_token_length=150" in found.line()
    assert caption_lengths(sd15, ["red", LONG], 150) is None


def test_kohya_max_token_length_maps(tmp_path):
    from lorastudio.train.kohya_config import import_kohya_config

    toml = tmp_path / "train.toml"
    toml.write_text('pretrained_model_name_or_path = "tiny-sd15"\nmax_token_length = 225\n', encoding="utf-8")
    imported = import_kohya_config(toml)
    assert imported.config["data"]["max_token_length"] == 225
    assert not [line for line in imported.lines() if "max_token_length" in line and "NOT MAPPED" in line]


@pytest.mark.slow
def test_a_run_with_long_captions_trains_and_says_once_how_many_were_cut(tiny_workspace, sd15, tmp_path, capsys):
    from lorastudio.service.training import run_training

    captions = [f"zq, {'red ' * (60 + 50 * i)}".strip() for i in range(3)]
    data = write_images(tmp_path / "long", [((230, 20 + i, 25), caption) for i, caption in enumerate(captions)])
    longest = len(sd15.tokenizers[0](captions[2], add_special_tokens=False).input_ids)
    events = []
    cfg = tiny_train_config(data, "zq", "train.steps=2", "data.max_token_length=150", "scoring.enabled=false")
    assert run_training(tiny_workspace, cfg, progress=True, callback=events.append)["finished"]
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("captions:")]
    assert len(said) == 1 and f"1 of 3 are longer than 150 tokens and are cut there (longest: {longest} tokens" in said[0]
    assert said[0].endswith("data.max_token_length=225 (kohya max_token_length) reads 225 tokens")
    records = [json.loads(line) for line in (tiny_workspace.runs / "zq" / "log.jsonl").read_text().splitlines()]
    cut = [r for r in records if r.get("event") == "captions_cut"]
    assert cut == [{"event": "captions_cut", "step": 0, "limit": 150, "cut": 1, "of": 3, "longest": longest}]
    assert [e["line"] for e in events if e.get("event") == "log"] == said  # the job log says it too
