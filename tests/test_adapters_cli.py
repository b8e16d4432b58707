"""`lorastudio lora import | export | merge` on the tiny SD 1.5 model."""

from __future__ import annotations

import json

import pytest
import torch

from lorastudio.adapters import LoraFile, LoraModule, applied_loras, load_lora_file, save_kohya

pytestmark = pytest.mark.slow  # CLI import/export/merge on a tiny model (~6 s)


@pytest.fixture(scope="session")
def tiny_sd15(tiny_models_dir):
    return tiny_models_dir / "tiny-sd15"


def _pipe(folder):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)


def _lora_for(pipe, seed=0) -> LoraFile:
    generator = torch.Generator().manual_seed(seed)
    lora = LoraFile()
    for component in ("unet", "text_encoder"):
        for path, module in getattr(pipe, component).named_modules():
            if isinstance(module, torch.nn.Linear) and path.endswith(("to_k", "to_v", "q_proj", "fc1")):
                down = torch.randn(2, module.in_features, generator=generator) * 0.3
                lora.add(
                    component,
                    path,
                    LoraModule(down, torch.randn(module.out_features, 2, generator=generator) * 0.3, 1.0),
                )
    return lora


def _unet_out(unet):
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        return unet(sample, 10, encoder_hidden_states=context).sample


def test_import_and_export_convert_formats(cli, workspace, tiny_sd15, tmp_path):
    lora = _lora_for(_pipe(tiny_sd15))
    source = save_kohya(lora, tmp_path / "mira.safetensors", family="sd15")

    exported = cli(
        "lora",
        "export",
        str(source),
        "--to",
        "diffusers",
        "--out",
        str(tmp_path / "mira-d.safetensors"),
        "--json",
    )
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.output)["format"] == "diffusers"

    imported = cli("lora", "import", str(tmp_path / "mira-d.safetensors"), "--name", "mira_v2", "--json")
    assert imported.exit_code == 0, imported.output
    info = json.loads(imported.output)
    assert info["source_format"] == "diffusers" and info["family"] == "sd15" and len(info["hash"]) == 12
    library_file = workspace.loras / "mira_v2.safetensors"
    back = load_lora_file(library_file)
    assert back.source_format == "kohya"
    for key, module in lora.modules.items():
        assert torch.equal(back.modules[key].up, module.up) and back.modules[key].alpha == module.alpha

    peft = cli("lora", "export", str(library_file), "--to", "peft", "--out", str(tmp_path / "peft"))
    assert peft.exit_code == 0, peft.output
    assert (tmp_path / "peft" / "unet" / "adapter_config.json").is_file()
    again = cli("lora", "import", str(tmp_path / "mira.safetensors"), "--name", "mira_v2")
    assert again.exit_code == 2 and "mira_v2" in again.output  # name taken


def test_merge_single_file_equals_applied_lora(cli, tiny_sd15, tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = _pipe(tiny_sd15)
    source = save_kohya(_lora_for(pipe, seed=4), tmp_path / "s.safetensors", family="sd15")
    out = tmp_path / "merged.safetensors"
    result = cli(
        "lora",
        "merge",
        "--model",
        str(tiny_sd15),
        "--lora",
        f"{source}:0.5",
        "--out",
        str(out),
        "--format",
        "single-file",
    )
    assert result.exit_code == 0, result.output

    with applied_loras({"unet": pipe.unet}, [(load_lora_file(source), 0.5, 0.5)]):
        expected = _unet_out(pipe.unet)
        patched = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    merged = StableDiffusionPipeline.from_single_file(str(out), config=str(tiny_sd15), local_files_only=True)
    # The baked weights are bit-identical; outputs only to float rounding, since CPU kernels
    # may take other paths for differently allocated tensors.
    assert all(torch.equal(v, patched[k]) for k, v in merged.unet.state_dict().items())
    from lorastudio.models.loading import load_model  # lorastudio reads it back by itself too

    loaded = load_model(str(out), tiny_sd15.parent, tmp_path / "cache", device="cpu")
    assert all(torch.equal(v, patched[k]) for k, v in loaded.unet.state_dict().items())
    assert torch.allclose(_unet_out(merged.unet), expected, atol=1e-5)
    assert not torch.allclose(_unet_out(pipe.unet), expected, atol=1e-3)
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as handle:  # the LoRAs by file name, not where they lie
        assert json.loads(handle.metadata()["lorastudio.merged_loras"]) == ["s.safetensors:0.5"]


def test_merge_refuses_sdxl_lora_on_sd15(cli, tiny_sd15, tmp_path):
    lora = LoraFile()
    lora.add(
        "text_encoder_2",
        "encoder.layers.0.self_attn.q_proj",
        LoraModule(torch.randn(2, 32), torch.randn(32, 2)),
    )
    source = save_kohya(lora, tmp_path / "xl.safetensors", family="sdxl")
    result = cli(
        "lora", "merge", "--model", str(tiny_sd15), "--lora", str(source), "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 2
    assert "SDXL" in result.output and not (tmp_path / "o").exists()
