"""`lora export --to diffsynth` (DiffSynth-Studio's Kolors/SDXL/SD1 LoRA names, alpha baked in) and the
rank and alpha a DiffSynth import records."""

from __future__ import annotations

import re
from dataclasses import replace

import torch
from typer.testing import CliRunner

from lorastudio.adapters.lora_file import LoraFile, LoraModule

# What DiffSynth-Studio's `GeneralLoRAFromPeft` turns a key into: the UNet weight it adds B @ A to.
# It loads nothing at all when one of them is not a weight of its UNet (diffsynth/models/lora.py).
_DIFFSYNTH_WEIGHT = re.compile(r"^blocks\.\d+\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out)\.weight$")

_KOLORS_PROJECTIONS = (
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.2.attentions.1.transformer_blocks.3.attn2.to_k",
    "mid_block.attentions.0.transformer_blocks.9.attn2.to_v",
    "up_blocks.0.attentions.2.transformer_blocks.1.attn1.to_out.0",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_q",
)


def _invoke(*args: str):
    from lorastudio.cli import _register, app

    _register()
    return CliRunner().invoke(app, list(args))


def _pair(out_features: int, in_features: int, rank: int, alpha: float, generator):
    """A linear pair in fp16, as kohya saves them."""
    down = torch.randn(rank, in_features, generator=generator) * 0.3
    up = torch.randn(out_features, rank, generator=generator) * 0.3
    return LoraModule(down.half(), up.half(), alpha, "linear")


def _kolors_lora(rank: int = 8, alpha: float = 2.0) -> LoraFile:
    """Attention projections DiffSynth holds, and four modules it cannot (feed-forward, proj_in, a ResNet
    conv, a LoHa), on the real Kolors/SDXL layout (Kolors LoRAs have no text-encoder part)."""
    from lorastudio.adapters.lycoris import LohaModule

    generator = torch.Generator().manual_seed(0)
    lora = LoraFile(metadata={"ss_base_model_version": "kolors"})
    for path in _KOLORS_PROJECTIONS:
        width = 1280 if "blocks.2" in path or "mid_block" in path or "up_blocks.0" in path else 640
        lora.add("unet", path, _pair(width, width, rank, alpha, generator))
    lora.add("unet", "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", _pair(640, 2560, rank, alpha, generator))
    lora.add("unet", "down_blocks.1.attentions.1.proj_in", _pair(640, 640, rank, alpha, generator))
    conv = LoraModule(torch.randn(rank, 320, 3, 3, generator=generator), torch.randn(640, rank, 1, 1, generator=generator))
    lora.add("unet", "down_blocks.1.resnets.0.conv1", replace(conv, alpha=alpha, kind="conv"))
    loha = LohaModule(*(torch.randn(s, generator=generator) for s in ((640, 2), (2, 640), (640, 2), (2, 640))), alpha=1.0)
    lora.add("unet", "up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_k", loha)
    return lora


def _deltas(lora: LoraFile) -> dict[str, torch.Tensor]:
    """Each plain pair's weight delta at strength 1 (alpha / rank applied)."""
    return {path: m.delta() * m.scale for (_, path), m in lora.modules.items() if type(m) is LoraModule}


def _diffsynth_adds(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What DiffSynth-Studio's loader adds to each weight at its default lora_alpha=1.0: B @ A."""
    adds = {}
    for key, up in state.items():
        if ".lora_B." in key:
            down = state[key.replace(".lora_B.", ".lora_A.")]
            adds[key.replace(".lora_B.default", "")] = up.float() @ down.float()
    return adds


def test_kolors_export_bakes_alpha_drops_the_rest_in_one_line_and_imports_back_to_the_same_deltas(workspace, tmp_path):
    from safetensors.torch import load_file

    from lorastudio.adapters import load_lora_file
    from lorastudio.adapters.diffsynth import KOLORS_UNET_LAYOUT, diffsynth_attention_blocks
    from lorastudio.adapters.kohya import save_kohya
    from lorastudio.models.checkpoint import read_safetensors_metadata
    from lorastudio.service.loras import list_loras

    original = _kolors_lora(rank=8, alpha=2.0)  # scale 0.25: DiffSynth's loader would not apply it
    source = tmp_path / "hero.safetensors"
    save_kohya(original, source, family="kolors", unet_config=default_unet_config_of_kolors())
    out = tmp_path / "hero-ds.safetensors"
    done = _invoke("lora", "export", str(source), "--to", "diffsynth", "--out", str(out), "--json")
    assert done.exit_code == 0, done.output
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: hero.safetensors: dropped 4 modules a DiffSynth-Studio LoRA cannot hold (1 feed-forward, 1 loha, "
        "1 proj_in/proj_out, 1 resnet/conv); kept 5 attention projections (to_q/to_k/to_v/to_out)."
    ]

    state = load_file(str(out))
    assert all(k.endswith((".lora_A.default.weight", ".lora_B.default.weight")) for k in state)
    adds = _diffsynth_adds(state)
    assert len(adds) == 5 and all(_DIFFSYNTH_WEIGHT.match(name) for name in adds)
    numbers = {path: n for n, path in diffsynth_attention_blocks(KOLORS_UNET_LAYOUT).items()}
    expected = _deltas(original)
    for path in _KOLORS_PROJECTIONS:  # strength 1 in DiffSynth = our delta, alpha / rank included
        block = "mid_block.attentions.0" if path.startswith("mid") else ".".join(path.split(".")[:4])
        name = f"blocks.{numbers[block]}{path[len(block):].removesuffix('.0')}.weight"
        torch.testing.assert_close(adds[name], expected[path], rtol=2e-3, atol=2e-4)
    metadata = read_safetensors_metadata(out)
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"]) == ("8", "8.0")

    assert _invoke("lora", "import", str(out), "--name", "hero-back").exit_code == 0  # no --alpha needed
    back = load_lora_file(workspace.loras / "hero-back.safetensors").with_diffusers_unet(default_unet_config_of_kolors())
    assert {p for _, p in back.modules} == set(_KOLORS_PROJECTIONS)
    for path, delta in _deltas(back).items():
        torch.testing.assert_close(delta, expected[path], rtol=2e-3, atol=2e-4)
    row = next(r for r in list_loras(workspace) if r["name"] == "hero-back")
    assert row["training"] == {"rank": "8", "alpha": "8.0"}
    assert read_safetensors_metadata(workspace.loras / "hero-back.safetensors")["ss_base_model_version"] == "kolors"


def default_unet_config_of_kolors() -> dict:
    from lorastudio.adapters.kohya import default_unet_config
    from lorastudio.models.families import get_family

    return default_unet_config(get_family("kolors"))


def test_diffsynth_export_refuses_sd2_and_a_lora_with_nothing_it_can_hold(workspace, tmp_path):
    from lorastudio.adapters.kohya import save_kohya

    generator = torch.Generator().manual_seed(1)
    sd2 = LoraFile(metadata={})
    sd2.add("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", _pair(320, 1024, 4, 4.0, generator))
    save_kohya(sd2, tmp_path / "sd2.safetensors", family="sd2")
    refused = _invoke("lora", "export", str(tmp_path / "sd2.safetensors"), "--to", "diffsynth")
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "sd2.safetensors: DiffSynth-Studio has no SD 2.x UNet to load this LoRA into" in refused.stderr
    assert "use --to kohya" in refused.stderr

    nothing = LoraFile(metadata={})
    nothing.add("unet", "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", _pair(640, 2560, 4, 4.0, generator))
    nothing.add("text_encoder_2", "encoder.layers.0.self_attn.q_proj", _pair(1280, 1280, 4, 4.0, generator))
    save_kohya(nothing, tmp_path / "te.safetensors", family="sdxl")
    refused = _invoke("lora", "export", str(tmp_path / "te.safetensors"), "--to", "diffsynth")
    assert refused.exit_code == 2
    assert "te.safetensors: none of its modules (feed-forward, text-encoder) is an attention projection" in refused.stderr
    assert not list(tmp_path.glob("*-diffsynth.*"))


def test_an_sdxl_export_takes_the_kolors_numbers_and_drops_its_text_encoder_parts(workspace, tmp_path):
    """DiffSynth-Studio builds one SDXLUNet for SDXL and Kolors: the same block numbers serve both."""
    from safetensors.torch import load_file

    from lorastudio.adapters.kohya import save_kohya
    from lorastudio.service.loras import export_lora

    generator = torch.Generator().manual_seed(3)
    lora = LoraFile(metadata={})
    lora.add("unet", _KOLORS_PROJECTIONS[0], _pair(640, 640, 4, 4.0, generator))
    lora.add("text_encoder", "encoder.layers.0.self_attn.q_proj", _pair(768, 768, 4, 4.0, generator))
    lora.add("text_encoder_2", "encoder.layers.0.self_attn.q_proj", _pair(1280, 1280, 4, 4.0, generator))
    save_kohya(lora, tmp_path / "xl.safetensors", family="sdxl")
    info = export_lora(tmp_path / "xl.safetensors", "diffsynth", ws=workspace)
    assert info["family"] == "sdxl" and info["modules"] == 1 and info["dropped"] == {"text-encoder": 2}
    assert info["warnings"][0].startswith("xl.safetensors: dropped 2 modules a DiffSynth-Studio LoRA cannot hold (2 text-encoder)")
    assert set(load_file(info["path"])) == {
        "blocks.7.transformer_blocks.0.attn1.to_q.lora_A.default.weight",
        "blocks.7.transformer_blocks.0.attn1.to_q.lora_B.default.weight",
    }
    assert info["path"].endswith("xl-diffsynth.safetensors")


def test_sd15_numbers_as_diffsynth_sd_unet_and_a_ckpt_export_round_trips_with_the_rank_as_alpha(workspace, tmp_path):
    from lorastudio.adapters import load_lora_file
    from lorastudio.adapters.diffsynth import diffsynth_attention_blocks
    from lorastudio.adapters.kohya import default_unet_config, save_kohya
    from lorastudio.models.checkpoint import weights_only_load
    from lorastudio.models.families import get_family
    from lorastudio.service.loras import export_lora

    # DiffSynth-Studio's SDUNet block list (diffsynth/models/sd_unet.py): its attention blocks.
    sd15 = default_unet_config(get_family("sd15"))
    assert sorted(diffsynth_attention_blocks(sd15)) == [1, 4, 9, 12, 17, 20, 29, 40, 43, 46, 50, 53, 56, 60, 63, 66]
    generator = torch.Generator().manual_seed(2)
    lora = LoraFile(metadata={})
    paths = ("down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q", "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0")
    for path in paths:
        lora.add("unet", path, _pair(320, 320, 4, 1.0, generator))
    save_kohya(lora, tmp_path / "girl.safetensors", family="sd15")

    info = export_lora(tmp_path / "girl.safetensors", "diffsynth", tmp_path / "girl.ckpt", ws=workspace)
    assert info["warnings"] == [] and info["dropped"] == {}
    assert info["reimport"] == f"lorastudio lora import {tmp_path / 'girl.ckpt'} --alpha 4"
    state = weights_only_load(tmp_path / "girl.ckpt")  # what the walk-through's torch.load reads
    assert set(_diffsynth_adds(state)) == {
        "blocks.4.transformer_blocks.0.attn1.to_q.weight", "blocks.66.transformer_blocks.0.attn2.to_out.weight"
    }
    done = _invoke("lora", "import", str(tmp_path / "girl.ckpt"), "--family", "sd15", "--alpha", "4", "--name", "girl")
    assert done.exit_code == 0, done.output
    back = load_lora_file(workspace.loras / "girl.safetensors")
    expected = _deltas(lora)
    for path, delta in _deltas(back).items():
        torch.testing.assert_close(delta, expected[path], rtol=2e-3, atol=2e-4)
    assert set(_deltas(back)) == set(paths)


def test_a_diffsynth_trained_ckpt_import_records_its_rank_and_the_alpha_used(workspace, tmp_path):
    from lorastudio.models.checkpoint import read_safetensors_metadata
    from lorastudio.service.loras import import_lora, list_loras

    prefix = "blocks.7.transformer_blocks.0.attn1.to_q"  # rank 16, as the walk-through trains
    state = {f"{prefix}.lora_A.default.weight": torch.randn(16, 640), f"{prefix}.lora_B.default.weight": torch.randn(640, 16)}
    torch.save(state, tmp_path / "epoch=0-step=500.ckpt")
    import_lora(workspace, tmp_path / "epoch=0-step=500.ckpt", name="cat")  # DiffSynth's default alpha 4.0
    import_lora(workspace, tmp_path / "epoch=0-step=500.ckpt", name="cat-a2", alpha=2.0)
    metadata = read_safetensors_metadata(workspace.loras / "cat.safetensors")
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"]) == ("16", "4.0")
    rows = {row["name"]: row["training"] for row in list_loras(workspace)}
    assert rows == {"cat": {"rank": "16", "alpha": "4.0"}, "cat-a2": {"rank": "16", "alpha": "2.0"}}


def test_a_negative_alpha_and_a_comfyui_bias_difference_keep_the_attention_delta():
    """A negative alpha flips the delta (its square root was complex: the factors came out ~0), and a
    ComfyUI pair with a `diff_b` beside it is still a pair (only its bias difference is dropped)."""
    from lorastudio.adapters.diffsynth import baked_module, split_for_diffsynth
    from lorastudio.adapters.lycoris import BiasDiffModule

    generator = torch.Generator().manual_seed(3)
    negative = _pair(640, 640, 4, -2.0, generator)
    baked = baked_module(negative)
    expected = negative.scale * (negative.up.float() @ negative.down.float())
    assert torch.allclose(baked.up.float() @ baked.down.float(), expected, atol=1e-2, rtol=1e-2)

    lora = LoraFile()
    pair = _pair(640, 640, 4, 4.0, generator)
    lora.add("unet", _KOLORS_PROJECTIONS[0], BiasDiffModule(pair, torch.zeros(640)))
    kept, dropped = split_for_diffsynth(lora)
    assert list(kept.modules.values()) == [pair] and dropped == {"bias difference": 1}


def test_lora_list_says_what_an_old_diffsynth_or_diffusers_export_in_loras_is(workspace, tmp_path):
    """Files earlier versions exported into studio/loras were listed as `type=-` and nothing more."""
    import json
    import shutil

    from lorastudio.adapters.kohya import save_kohya

    generator = torch.Generator().manual_seed(4)
    lora = LoraFile(metadata={})
    lora.add("unet", "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q", _pair(320, 320, 4, 1.0, generator))
    save_kohya(lora, workspace.loras / "girl.safetensors", family="sd15")
    for fmt in ("diffsynth", "diffusers"):
        assert _invoke("lora", "export", "girl", "--to", fmt).exit_code == 0
        shutil.copy(workspace.exports / f"girl-{fmt}.safetensors", workspace.loras)

    listed = _invoke("lora", "list", "--json")
    rows = {row["name"]: row for row in json.loads(listed.stdout)["loras"]}
    assert rows["girl"]["error"] is None and rows["girl"]["type"] == "lora"
    assert rows["girl-diffsynth"]["error"] == (
        "girl-diffsynth.safetensors: a DiffSynth-Studio LoRA (blocks.N names), which A1111 and <lora:…> do not "
        "read; move it out of loras/, or convert it: `lorastudio lora import girl-diffsynth.safetensors` "
        "(with --name NEW while it is still in loras/)."
    )
    # a diffusers-layout LoRA is no problem: <lora:…> here and ComfyUI read it (many hub downloads are)
    assert rows["girl-diffusers"]["error"] is None
    text = {line.split()[0]: line for line in _invoke("lora", "list").stdout.splitlines()}
    assert "! girl-diffsynth.safetensors: a DiffSynth-Studio LoRA" in text["girl-diffsynth"]
    assert "!" not in text["girl"] and "!" not in text["girl-diffusers"]

    moved = tmp_path / "girl-diffsynth.safetensors"  # what the note says works
    shutil.move(workspace.loras / "girl-diffsynth.safetensors", moved)
    assert _invoke("lora", "import", str(moved), "--family", "sd15").exit_code == 0
    rows = {row["name"]: row for row in json.loads(_invoke("lora", "list", "--json").stdout)["loras"]}
    assert rows["girl-diffsynth"]["error"] is None and rows["girl-diffsynth"]["type"] == "lora"
