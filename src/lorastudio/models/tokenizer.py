"""The real CLIP BPE tokenizer, built offline from the vocabulary shipped in the package.

`vocab/bpe_simple_vocab_16e6.txt.gz` is OpenAI CLIP's merge list (MIT; the copy in
open_clip_torch). Every SD family's tokenizers are this vocabulary with a different pad
token, so we write the HF tokenizer files from it instead of shipping 2 MB of JSON.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

__all__ = ["write_clip_tokenizer", "clip_vocab_and_merges"]

VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table, so BPE never sees raw whitespace bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The 49,408-token vocabulary and its merge list, in CLIP's id order."""
    data = resources.files("lorastudio.models").joinpath("vocab/bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    # 49152 = 256 byte tokens + 256 end-of-word byte tokens + merges + 2 specials + slack in the file.
    merges = lines[1 : VOCAB_SIZE - 256 - 256 - 2 + 1]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(m.split()) for m in merges]
    tokens += [BOS, EOS]
    assert len(tokens) == VOCAB_SIZE, len(tokens)
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_clip_tokenizer(folder: str | Path, pad_token: str = EOS, max_length: int = 77) -> Path:
    """Write vocab.json/merges.txt/tokenizer_config.json that `CLIPTokenizer.from_pretrained` reads.

    SD1.x pads with `<|endoftext|>`; SD2.x and SDXL's second encoder (OpenCLIP) pad with `!`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": pad_token,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    return folder
