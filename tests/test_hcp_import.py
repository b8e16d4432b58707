"""HCP-Diffusion LoRA halves (`unet-N` / `text_encoder-N`, seed 003) read by their keys, never lost."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lorastudio.adapters import applied_loras, load_lora_file
from lorastudio.errors import LorastudioError

SEP = ".___."
TE_PATH = "text_model.encoder.layers.0.self_attn.q_proj"
UNET_PATH = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"


def _hcp_half(module_path: str, width_in: int, width_out: int, seed: int, alpha_over_rank: float = 0.5):
    gen = torch.Generator().manual_seed(seed)
    return {
        f"lora:{module_path}{SEP}layer.lora_down.weight": torch.randn(4, width_in, generator=gen) * 0.2,
        f"lora:{module_path}{SEP}layer.lora_up.weight": torch.randn(width_out, 4, generator=gen) * 0.2,
        f"lora:{module_path}{SEP}alpha": torch.tensor(alpha_over_rank),
    }


def _widths(sd15):
    te = sd15.components["text_encoder"].get_submodule(TE_PATH.removeprefix("text_model."))
    unet = sd15.components["unet"].get_submodule(UNET_PATH)
    return (te.in_features, te.out_features), (unet.in_features, unet.out_features)


@pytest.fixture
def hcp_pair(sd15, tmp_path):
    (te_in, te_out), (u_in, u_out) = _widths(sd15)
    folder = tmp_path / "ckpts"
    folder.mkdir()
    te = _hcp_half(TE_PATH, te_in, te_out, 1)
    unet = _hcp_half(UNET_PATH, u_in, u_out, 2)
    save_file(te, str(folder / "text_encoder-1000.safetensors"))
    save_file(unet, str(folder / "unet-1000.safetensors"))
    return folder, te, unet


def test_text_encoder_file_alone_is_a_text_encoder_lora(hcp_pair, tmp_path, sd15):
    folder, te, _ = hcp_pair
    alone = tmp_path / "text_encoder-1000.safetensors"
    alone.write_bytes((folder / "text_encoder-1000.safetensors").read_bytes())
    lora = load_lora_file(alone)
    assert set(lora.modules) == {("text_encoder", "encoder.layers.0.self_attn.q_proj")}
    module = lora.modules[("text_encoder", "encoder.layers.0.self_attn.q_proj")]
    assert module.scale == pytest.approx(0.5)  # HCP stores alpha / rank
    # applied: the text encoder's q_proj moves by weight * stored_alpha * up @ down
    layer = sd15.components["text_encoder"].get_submodule("encoder.layers.0.self_attn.q_proj")
    before = layer.weight.detach().clone()
    down, up = (te[f"lora:{TE_PATH}{SEP}layer.lora_{s}.weight"] for s in ("down", "up"))
    with applied_loras(sd15.components, [(lora, 0.8, 1.0)]):
        assert torch.allclose(layer.weight, before + 0.8 * 0.5 * up @ down, atol=1e-6)
    assert torch.equal(layer.weight, before)


def test_import_keeps_both_halves_under_kohya_prefixes(hcp_pair, workspace):
    from lorastudio.service.loras import import_lora

    folder, _, _ = hcp_pair
    for source, name in (("unet-1000", "from-unet"), ("text_encoder-1000", "from-te")):
        info = import_lora(workspace, folder / f"{source}.safetensors", name=name, family="sd15")
        with safe_open(info["path"], framework="pt") as handle:
            bases = {k.split(".", 1)[0] for k in handle.keys()}
        assert bases == {
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
        }, source
    # alone, a text-encoder half becomes lora_te_ modules (never lora_unet_text_model_*)
    (folder / "unet-1000.safetensors").unlink()
    info = import_lora(workspace, folder / "text_encoder-1000.safetensors", family="sd15")
    assert info["name"] == "1000"
    with safe_open(info["path"], framework="pt") as handle:
        assert {k.split(".", 1)[0] for k in handle.keys()} == {"lora_te_text_model_encoder_layers_0_self_attn_q_proj"}


def test_single_file_with_both_halves_and_old_te_name(hcp_pair, tmp_path):
    folder, te, unet = hcp_pair
    both = tmp_path / "both.safetensors"
    save_file({**te, **unet}, str(both))
    assert load_lora_file(both).components() == {"unet", "text_encoder"}
    old = tmp_path / "old"
    old.mkdir()
    save_file(te, str(old / "TE-mine.safetensors"))
    save_file(unet, str(old / "unet-mine.safetensors"))
    assert load_lora_file(old / "TE-mine.safetensors").components() == {"unet", "text_encoder"}


def test_unmappable_keys_are_refused_by_name(hcp_pair, tmp_path):
    _, te, _ = hcp_pair
    odd = dict(te)
    odd[f"lora:vae.decoder.conv_in{SEP}layer.lora_down.weight"] = torch.zeros(4, 4)
    odd["base:text_model.embeddings.token_embedding.weight"] = torch.zeros(2, 2)
    path = tmp_path / "text_encoder-5.safetensors"
    save_file(odd, str(path))
    with pytest.raises(LorastudioError) as info:
        load_lora_file(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith("text_encoder-5.safetensors: 2 keys")
    assert "vae.decoder.conv_in" in message and "base:text_model" in message


def test_loading_an_hcp_pair_reads_each_half_once(hcp_pair, monkeypatch):
    from lorastudio.models import checkpoint

    folder, _, _ = hcp_pair
    real, reads = checkpoint.read_safetensors_private, []
    monkeypatch.setattr(checkpoint, "read_safetensors_private", lambda path, *data: reads.append(path.name) or real(path, *data))
    lora = load_lora_file(folder / "unet-1000.safetensors")
    assert lora.components() == {"unet", "text_encoder"}
    assert sorted(reads) == ["text_encoder-1000.safetensors", "unet-1000.safetensors"]


def test_a_civitai_file_name_becomes_a_library_name(hcp_pair, workspace):
    """`detail tweaker (v2).safetensors` was refused ("name ... is not allowed"); its name is now the
    stem with what a name may not hold as `_`, and it is used in prompts by that name."""
    import shutil

    from lorastudio.service.loras import import_lora

    folder, _, _ = hcp_pair
    civitai = folder / "detail tweaker (v2).safetensors"
    shutil.copy(folder / "unet-1000.safetensors", civitai)
    info = import_lora(workspace, civitai, family="sd15")
    assert info["name"] == "detail_tweaker_v2"
    assert (workspace.loras / "detail_tweaker_v2.safetensors").is_file()
