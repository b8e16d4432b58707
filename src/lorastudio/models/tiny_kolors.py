"""`tiny-kolors`: Kolors' diffusers folder layout at a few MB, built offline from a seed.

ChatGLM3's 65 k vocabulary does not ship on PyPI, so the tiny model brings its own: a
small sentencepiece model (byte fallback, so any text round-trips) trained in a fraction
of a second on a fixed mixed Chinese/English prompt text. The text encoder is a 2-layer
`ChatGLMModel`, the UNet SDXL's block layout with Kolors' `encoder_hid_proj` text
projection, the VAE the colour-passing tiny VAE of the other tiny models. The UNet learns
the colour words in Chinese and English ("红色" / "red"), so prompts have measurable effects.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.models.families.kolors import SCHEDULER_CONFIG
from lorastudio.models.tiny_layouts import make_unet_sdxl
from lorastudio.models.tiny_widths import KOLORS_CROSS_WIDTH

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["build_kolors", "train_vocabulary", "COLOUR_WORDS_ZH"]

TEXT_WIDTH = 32  # ChatGLM3 is 4096 wide; the UNet's text projection maps it to 48 here (2048 there)
VOCAB_SIZE = 640
PRETRAIN_STEPS = 300
COLOUR_WORDS_ZH = {
    "red": "红色",
    "green": "绿色",
    "blue": "蓝色",
    "yellow": "黄色",
    "white": "白色",
    "black": "黑色",
    "purple": "紫色",
    "orange": "橙色",
    "grey": "灰色",
}
# What the vocabulary is trained on: colour phrases, the prompts of a Kolors story workflow
# (DiffSynth-Studio's Kolors LoRA tutorial) and A1111 syntax.
_CORPUS_EXTRA = (
    "二次元，一个紫色短发小女孩，在家中沙发上坐着，双手托着腮，很无聊，全身，粉色连衣裙",
    "丑陋、变形、嘈杂、模糊、低对比度",
    "卡通，一个可爱的灰色小猫咪，在一个圆形睡垫睡着，头埋在胸前，很悠闲，全身，处在一个房间内，毛发柔顺",
    "卡通，一个毛发柔顺的灰色小猫咪躺在圆形睡垫上，抬头望向门口，露出惊喜的神情",
    "卡通，一个穿着休闲白衬衫和牛仔裤的青年打开门，低头看向屋内，一只毛发柔顺的灰色小猫咪，睡在睡垫",
    "卡通，一个穿着休闲白衬衫和牛仔裤的青年蹲在地上，给一个毛发柔顺的灰色小猫咪喂食，小猫咪贴近青年的手吃食物",
    "卡通，一个穿着休闲白衬衫和牛仔裤的青年坐在沙发上，青年用手抚摸怀中的一个毛发柔顺的灰色小猫咪，面前有一台电视",
    "卡通，一个穿着休闲白衬衫和牛仔裤的青年抱着一个灰色小猫咪睡在床上，年帅气，白净，猫咪可爱",
    "a photo of a cat, masterpiece, best quality, (red:1.2), [blue:green:0.5], BREAK",
    "portrait of a girl, anime style, detailed face, sitting on a sofa, 1girl, solo",
)


def _corpus() -> list[str]:
    lines = []
    for en, zh in COLOUR_WORDS_ZH.items():
        lines += [f"a {en} square", f"{en}", f"一个{zh}的方块", f"{zh}", f"{en} background, {zh}背景"]
    return (lines + list(_CORPUS_EXTRA)) * 4


def train_vocabulary() -> bytes:
    """The tiny sentencepiece model, byte-identical on every run (one thread, no shuffling).

    "identity" normalisation keeps full-width punctuation ("，") as typed, so decoding gives
    back the prompt; unseen characters fall back to UTF-8 bytes.
    """
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=model,
        vocab_size=VOCAB_SIZE,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        num_threads=1,
        shuffle_input_sentence=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def _text_encoder(vocab_words: int, seed: int):
    """A 2-layer ChatGLM3 (multi-query attention, RMSNorm, rotary) with seeded weights.

    ChatGLMModel skips initialisation by default (uninitialised memory): every weight is
    set here, so builds are reproducible.
    """
    import torch
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig, ChatGLMModel

    config = ChatGLMConfig(
        num_layers=2,
        padded_vocab_size=(vocab_words + 127) // 128 * 128,
        hidden_size=TEXT_WIDTH,
        ffn_hidden_size=TEXT_WIDTH * 2,
        kv_channels=8,
        num_attention_heads=4,
        seq_length=256,
        multi_query_attention=True,
        multi_query_group_num=2,
        add_qkv_bias=True,
        original_rope=True,
        use_cache=False,
    )
    encoder = ChatGLMModel(config, empty_init=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if name.endswith("layernorm.weight") or param.ndim == 1 and "norm" in name:
                param.fill_(1.0)
            elif param.ndim == 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            else:
                std = 1.0 if "word_embeddings" in name else 0.1
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return encoder.eval()


def _unet(size: int):
    """SDXL's tiny UNet, plus Kolors' `text_proj` from ChatGLM's width."""
    projection = {"encoder_hid_dim": TEXT_WIDTH, "encoder_hid_dim_type": "text_proj"}
    return make_unet_sdxl(size, KOLORS_CROSS_WIDTH, TEXT_WIDTH, **projection)


def build_kolors(
    work: Path, seed: int, size: int, colour_words: list[str], pretrain: Callable[..., None]
) -> dict:
    """Write tokenizer, text encoder, UNet and scheduler into `work`; return model_index.json.

    `pretrain(unet, context, pooled, (context_zh, pooled_zh), scheduler_config, steps)` is
    the other tiny models' colour training (models/tiny.py), given the English colour
    words (and "") and their Chinese phrases as conditioning rows.
    """
    import torch
    from diffusers import EulerDiscreteScheduler
    from diffusers.pipelines.kolors import ChatGLMTokenizer

    from lorastudio.models.chatglm import encode_texts

    (work / "tokenizer").mkdir(parents=True)
    (work / "tokenizer" / "tokenizer.model").write_bytes(train_vocabulary())
    tokenizer = ChatGLMTokenizer(str(work / "tokenizer" / "tokenizer.model"))
    tokenizer.save_pretrained(work / "tokenizer")
    encoder = _text_encoder(tokenizer.vocab_size, seed)
    unet = _unet(size)
    # Kolors' own schedule (1100 steps, beta_end 0.014), predicting v like the other tiny
    # models: a few hundred CPU steps give a stable denoiser that way.
    scheduler_config = dict(SCHEDULER_CONFIG, prediction_type="v_prediction")
    english = list(colour_words) + [""]
    chinese = [f"一个{COLOUR_WORDS_ZH[w]}的方块" for w in colour_words] + [""]
    with torch.no_grad():
        context, pooled = encode_texts(tokenizer, encoder, english)
        synonyms = encode_texts(tokenizer, encoder, chinese)
    pretrain(unet, context, pooled, synonyms, scheduler_config, PRETRAIN_STEPS)
    unet.save_pretrained(work / "unet")
    encoder.save_pretrained(work / "text_encoder")
    scheduler = EulerDiscreteScheduler.from_config(scheduler_config)
    scheduler.save_pretrained(work / "scheduler")
    return {
        "_class_name": "KolorsPipeline",
        "force_zeros_for_empty_prompt": False,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["kolors", "ChatGLMModel"],
        "tokenizer": ["kolors", "ChatGLMTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
    }
