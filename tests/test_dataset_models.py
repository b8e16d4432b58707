"""Captioning and tagging with tiny models built in the test (no downloads)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from lorastudio.data.config import CaptionerConfig, TaggerConfig
from lorastudio.errors import NotFoundError
from lorastudio.service.datasets import caption_dataset, dataset_folder, import_dataset, tag_dataset

# Tag table: (name, category, weights on mean [B, G, R] in 0-1, bias). Scores = sigmoid(w.x + b).
TAGS = [
    ("general", 9, (0, 0, 0), 2.0),
    ("sensitive", 9, (0, 0, 0), -2.0),
    ("red_hair", 0, (0, 0, 6), -3.0),
    ("long_hair", 0, (0, 0, 2), -1.5),
    ("blue_sky", 0, (6, 0, 0), -3.0),
    ("^_^", 0, (0, 0, 0), 1.0),
    ("solo", 0, (0, 0, 0), -0.2),
    ("watermark", 0, (0, 0, 0), 2.5),
    ("alice_(character)", 4, (0, 0, 6), -2.0),
    ("bob_(character)", 4, (0, 0, 2), -1.0),
]


def build_tiny_wd14(folder):
    """A graph with WD14's signature: NHWC BGR 0-255 [N,448,448,3] -> sigmoid [N, tags]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([t[2] for t in TAGS], dtype=np.float32).T  # [3, T]
    bias = np.array([t[3] for t in TAGS], dtype=np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["input_1:0"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Div", ["mean", "scale"], ["unit"]),
        helper.make_node("MatMul", ["unit", "weights"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_wd14",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["N", 448, 448, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["N", len(TAGS)])],
        initializer=[
            numpy_helper.from_array(np.array([255.0], dtype=np.float32), "scale"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    rows = ["tag_id,name,category,count"] + [
        f"{i},{name},{cat},100" for i, (name, cat, _, _) in enumerate(TAGS)
    ]
    (folder / "selected_tags.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def coloured_set(workspace, tmp_path):
    src = tmp_path / "colours"
    src.mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(src / "red.png")
    Image.new("RGB", (32, 32), (0, 0, 255)).save(src / "blue.png")
    Image.new("RGB", (24, 24), (0, 0, 254)).save(src / "blue2.png")
    import_dataset(workspace, "colours", [src])
    return workspace


def _captions(ws) -> dict[str, str]:
    folder = dataset_folder(ws, "colours")
    return {item.original.split(".")[0]: folder.read_caption(item) for item in folder.items}


def test_wd14_tagger_thresholds_order_and_spelling(coloured_set, tmp_path):
    model = build_tiny_wd14(tmp_path / "wd14")
    config = TaggerConfig(model=str(model), undesired_tags=["watermark"], batch_size=2)
    result = tag_dataset(coloured_set, "colours", config)
    assert result["written"] == 3 and result["failed"] == []
    captions = _captions(coloured_set)
    # Red: character tag first (0.98 > 0.85; bob at 0.73 is under), then general tags by score.
    assert captions["red"] == "alice (character), red hair, ^_^, long hair, solo"
    assert captions["blue"] == "blue sky, ^_^, solo"
    assert "watermark" not in captions["blue2"]


def test_wd14_options_rating_underscores_confidence_order(coloured_set, tmp_path):
    from lorastudio.data.tagger import WD14Tagger

    tagger = WD14Tagger.load(
        TaggerConfig(
            model=str(build_tiny_wd14(tmp_path / "wd14")),
            replace_underscores=False,
            character_first=False,
            include_rating=True,
            general_threshold=0.7,
        )
    )
    scores = tagger.scores([Image.new("RGB", (16, 16), (255, 0, 0))])[0]
    assert scores[2] == pytest.approx(1 / (1 + math.exp(-3.0)), abs=1e-3)
    tags = [t.name for t in tagger.select(scores)]
    assert tags == ["general", "alice_(character)", "red_hair", "watermark", "^_^"]


def test_tagger_prepend_mode_and_resume_state_removed(coloured_set, tmp_path):
    folder = dataset_folder(coloured_set, "colours")
    for item in folder.items:
        folder.write_caption(item, "mychar, solo")
    config = TaggerConfig(model=str(build_tiny_wd14(tmp_path / "wd14")), undesired_tags=["watermark", "^_^"])
    assert tag_dataset(coloured_set, "colours", config, mode="missing")["written"] == 0
    tag_dataset(coloured_set, "colours", config, mode="append")
    assert _captions(coloured_set)["blue"] == "mychar, solo, blue sky"
    assert not list(folder.root.glob(".progress-*"))


def test_tagger_missing_files_named(tmp_path):
    from lorastudio.data.tagger import resolve_tagger_dir

    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.onnx").write_bytes(b"")
    with pytest.raises(NotFoundError, match="selected_tags.csv"):
        resolve_tagger_dir(str(tmp_path / "half"))
    with pytest.raises(NotFoundError, match="not in the local Hugging Face cache"):
        resolve_tagger_dir("SmilingWolf/not-cached-tagger")


def test_interrupted_tagging_resumes_without_redoing(coloured_set, tmp_path, monkeypatch):
    from lorastudio.data import labeling
    from lorastudio.data.tagger import WD14Tagger

    config = TaggerConfig(model=str(build_tiny_wd14(tmp_path / "wd14")), batch_size=1)
    real_tag = WD14Tagger.tag
    seen: list[int] = []

    def failing_tag(self, images):
        seen.append(len(images))
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real_tag(self, images)

    monkeypatch.setattr(WD14Tagger, "tag", failing_tag)
    with pytest.raises(KeyboardInterrupt):
        tag_dataset(coloured_set, "colours", config, mode="prepend")
    folder = dataset_folder(coloured_set, "colours")
    assert (folder.root / ".progress-tag.json").is_file()
    monkeypatch.setattr(WD14Tagger, "tag", real_tag)
    result = tag_dataset(coloured_set, "colours", config, mode="prepend")
    assert result["written"] == 2 and result["skipped"] == 1
    assert not (folder.root / ".progress-tag.json").exists()
    assert labeling.combine("a, b", "b, c", "prepend") == "a, b, c"


# -- captioner --------------------------------------------------------------------------------


def build_tiny_blip(folder):
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor

    try:
        from transformers import BlipImageProcessorPil as ImageProcessor  # no torchvision needed
    except ImportError:
        from transformers import BlipImageProcessor as ImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    words = ["a", "photo", "of", "red", "blue", "cat", "dog", "the", "on", "with"]
    vocab = folder / "vocab.txt"
    vocab.write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n", encoding="utf-8"
    )
    tokenizer = BertTokenizer(vocab=str(vocab))
    processor = BlipProcessor(
        image_processor=ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    config = BlipConfig(
        text_config={
            "vocab_size": len(words) + 5,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "max_position_embeddings": 64,
            "bos_token_id": 2,
            "sep_token_id": 3,
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    import torch

    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    return folder / "model"


def test_blip_captioner_writes_a_caption_per_image(coloured_set, tmp_path):
    model = build_tiny_blip(tmp_path / "blip")
    config = CaptionerConfig(model=str(model), max_new_tokens=5, batch_size=2, device="cpu")
    result = caption_dataset(coloured_set, "colours", config, mode="overwrite")
    assert result["written"] == 3
    folder = dataset_folder(coloured_set, "colours")
    for item in folder.items:
        assert folder.caption_path(item).is_file()
        assert isinstance(folder.read_caption(item), str)
    # The conditional prompt is kept at the start of the generated text (BLIP's behaviour).
    from lorastudio.data.captioner import Captioner

    prompted = Captioner(config.model_copy(update={"prompt": "a photo of"}))
    texts = prompted.caption([Image.new("RGB", (20, 20), (255, 0, 0))] * 2)
    assert len(texts) == 2 and all(text.startswith("a photo of") for text in texts)


def test_captioner_offline_unknown_model_is_named(coloured_set):
    with pytest.raises(NotFoundError, match="no-such/blip-model"):
        caption_dataset(coloured_set, "colours", CaptionerConfig(model="no-such/blip-model"))


def test_captioner_empty_folder_is_named(coloured_set, tmp_path):
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(NotFoundError, match="empty_model.*cannot load"):
        caption_dataset(coloured_set, "colours", CaptionerConfig(model=str(tmp_path / "empty_model")))


def test_hub_id_detection():
    from lorastudio.data.tagger import looks_like_hub_id

    assert looks_like_hub_id("SmilingWolf/wd-vit-tagger-v3")
    assert looks_like_hub_id("Salesforce/blip-image-captioning-base")
    for not_hub in ("/nowhere", "./x/y", "a/b/c", "../up", "plain"):
        assert not looks_like_hub_id(not_hub), not_hub
