"""Embeddings (A1111/kohya/SDXL/bundled), the pickle guard, hashes and metadata."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lorastudio.adapters import (
    Embedding,
    LoraFile,
    LoraModule,
    build_metadata,
    embeddings_from_lora,
    legacy_hash,
    load_embedding,
    load_lora_file,
    lora_short_hash,
    model_short_hash,
    safetensors_model_hash,
    save_embedding,
    save_kohya,
)
from lorastudio.errors import LorastudioError, UnsafeFileError
from lorastudio.models.families import get_family


def test_sd15_embedding_round_trip(tmp_path):
    vectors = torch.randn(3, 768)
    path = save_embedding(
        Embedding("mira", [vectors]), tmp_path / "mira.safetensors", "sd15", {"step": "100"}
    )
    with safe_open(str(path), framework="pt") as handle:
        assert list(handle.keys()) == ["emb_params"]  # what kohya and A1111 read
        assert handle.metadata()["step"] == "100"
    back = load_embedding(path)
    assert back.name == "mira" and back.num_vectors == 3
    assert torch.equal(back.vectors[0], vectors)


def test_sdxl_embedding_round_trip(tmp_path):
    clip_l, clip_g = torch.randn(2, 768), torch.randn(2, 1280)
    path = save_embedding(Embedding("x", [clip_l, clip_g]), tmp_path / "style.safetensors", "sdxl")
    with safe_open(str(path), framework="pt") as handle:
        assert set(handle.keys()) == {"clip_l", "clip_g"}
    back = load_embedding(path, name="trigger")
    assert back.name == "trigger"
    assert torch.equal(back.vectors[0], clip_l) and torch.equal(back.vectors[1], clip_g)
    with pytest.raises(LorastudioError, match="text encoders"):
        save_embedding(Embedding("x", [clip_l]), tmp_path / "bad.safetensors", "sdxl")


def test_a1111_pt_embedding_is_read_with_weights_only(tmp_path):
    vectors = torch.randn(2, 768)
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vectors},
        "name": "oldstyle",
        "step": 3000,
        "sd_checkpoint": "abcdef12",
        "sd_checkpoint_name": "v1-5",
    }
    torch.save(data, tmp_path / "oldstyle.pt")
    back = load_embedding(tmp_path / "oldstyle.pt")
    assert back.name == "oldstyle"
    assert torch.equal(back.vectors[0], vectors)


def test_original_textual_inversion_pt_with_a_parameter_dict_is_read(tmp_path, capsys):
    vectors = torch.randn(2, 768)
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors.clone())})
    torch.save({"string_to_token": {"*": torch.tensor(265)}, "string_to_param": params}, tmp_path / "old.pt")
    back = load_embedding(tmp_path / "old.pt")
    assert back.name == "old" and torch.equal(back.vectors[0], vectors)
    # the class allowed for it carries no code: a payload beside it is still refused, unrun
    torch.save({"string_to_param": params, "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeFileError, match="evil.pt"):
        load_embedding(tmp_path / "evil.pt")
    assert "pwned" not in capsys.readouterr().out


def _a1111_png(path, data: dict, chunk: str = "sd-ti-embedding"):
    """A picture with an embedding as A1111 saves one: base64 JSON, tensors as {"TORCHTENSOR": lists}."""
    import base64

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    def encode(value):
        if isinstance(value, torch.Tensor):
            return {"TORCHTENSOR": value.tolist()}
        return {k: encode(v) for k, v in value.items()} if isinstance(value, dict) else value

    info = PngInfo()
    info.add_text(chunk, base64.b64encode(json.dumps(encode(data)).encode()).decode())
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_a1111_png_embedding_is_read_from_its_text_chunk(tmp_path):
    vectors = torch.randn(2, 768)
    data = {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "pic", "step": 500}
    back = load_embedding(_a1111_png(tmp_path / "pic.png", data))
    assert back.name == "pic" and torch.equal(back.vectors[0], vectors)
    plain = _a1111_png(tmp_path / "preview.png", data, chunk="parameters")  # a picture, no embedding
    with pytest.raises(LorastudioError, match="preview.png: a picture without embedding data"):
        load_embedding(plain)


class Payload:
    """A pickled custom class: what a malicious .pt would carry."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_custom_class_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 4)}, "x": Payload()}, path)
    with pytest.raises(UnsafeFileError) as info:
        load_embedding(path)
    assert "evil.pt" in str(info.value) and "\n" not in str(info.value)
    assert "print" in str(info.value.__cause__)  # refused for the pickled global, not the format
    assert "pwned" not in capsys.readouterr().out  # the payload never ran


def test_bundled_embeddings_survive_a_kohya_round_trip(tmp_path):
    lora = LoraFile()
    lora.add(
        "unet", "down_blocks.0.attentions.0.proj_in", LoraModule(torch.randn(2, 8), torch.randn(8, 2), 1.0)
    )
    lora.embeddings = {"mira": [torch.randn(2, 768), torch.randn(2, 1280)]}
    path = save_kohya(lora, tmp_path / "b.safetensors", family="sdxl", unet_config=_small_config())
    with safe_open(str(path), framework="pt") as handle:
        assert {"bundle_emb.mira.clip_l", "bundle_emb.mira.clip_g"} <= set(handle.keys())
    back = load_lora_file(path)
    assert torch.equal(back.embeddings["mira"][1], lora.embeddings["mira"][1])
    (bundled,) = embeddings_from_lora(back)
    assert bundled.name == "mira" and bundled.num_vectors == 2

    sd1 = LoraFile(embeddings={"tok": [torch.randn(1, 768)]})
    sd1.add(
        "unet", "down_blocks.0.attentions.0.proj_in", LoraModule(torch.randn(2, 8), torch.randn(8, 2), 1.0)
    )
    path = save_kohya(sd1, tmp_path / "c.safetensors", family="sd15")
    with safe_open(str(path), framework="pt") as handle:
        assert "bundle_emb.tok.string_to_param.*" in handle.keys()
    assert torch.equal(load_lora_file(path).embeddings["tok"][0], sd1.embeddings["tok"][0])


def _small_config():
    return {
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
    }


def test_hashes_match_their_definitions(tmp_path):
    state = {"a": torch.arange(600_000, dtype=torch.float32)}  # > 1 MiB + 64 KiB of data
    first, second = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    save_file(state, str(first), metadata={"ss_output_name": "one"})
    save_file(state, str(second), metadata={"ss_output_name": "a much longer different name"})
    # sshs_model_hash ignores the header (metadata), the file hash does not
    assert safetensors_model_hash(first) == safetensors_model_hash(second)
    assert model_short_hash(first) != model_short_hash(second)
    raw = first.read_bytes()
    assert model_short_hash(first) == hashlib.sha256(raw).hexdigest()[:10]
    header = int.from_bytes(raw[:8], "little")
    assert safetensors_model_hash(first) == hashlib.sha256(raw[8 + header :]).hexdigest()
    assert legacy_hash(first) == hashlib.sha256(raw[0x100000:0x110000]).hexdigest()[:8]
    assert lora_short_hash(first) == safetensors_model_hash(first)[:12]


def test_build_metadata_has_what_a1111_reads():
    facts = {
        "output_name": "mira_v2",
        "network_dim": 16,
        "network_alpha": 8.0,
        "steps": 1200,
        "resolution": (512, 768),
        "tag_frequency": {"10_mira": {"mira": 20, "1girl": 18}},
        "training_started_at": 1700000000.0,
        "trigger_phrase": "mira",
    }
    meta = build_metadata(facts, get_family("sdxl"))
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["ss_output_name"] == "mira_v2"
    assert json.loads(meta["ss_tag_frequency"]) == {"10_mira": {"mira": 20, "1girl": 18}}
    assert meta["ss_network_dim"] == "16" and meta["ss_network_alpha"] == "8.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.resolution"] == "512x768"
    assert meta["modelspec.trigger_phrase"] == "mira"
    assert meta["modelspec.title"] == "mira_v2"
    assert build_metadata({}, get_family("sd15"))["ss_v2"] == "False"
    # SD 2.x: 768-v models are v-prediction, the 512 base is not; A1111/civitai read both keys.
    sd2_v = build_metadata({"v_parameterization": True}, get_family("sd2"))
    sd2_eps = build_metadata({"v_parameterization": False}, get_family("sd2"))
    assert (sd2_v["ss_base_model_version"], sd2_v["modelspec.architecture"]) == (
        "sd_v2_v",
        "stable-diffusion-v2-768-v/lora",
    )
    assert (sd2_eps["ss_base_model_version"], sd2_eps["modelspec.architecture"]) == (
        "sd_v2",
        "stable-diffusion-v2-512/lora",
    )
    from lorastudio.adapters.metadata import family_from_metadata

    assert sd2_eps["ss_v_parameterization"] == "False" and family_from_metadata(sd2_eps).name == "sd2"
