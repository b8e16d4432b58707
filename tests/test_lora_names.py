"""`lora export | merge` take library names, exports for other tools stay out of studio/loras, and a
missing model is said before the LoRAs its prompts name (the auditor's walk through the docs)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from lora_helpers import random_lora
from lorastudio.adapters import applied_loras, load_lora_file, save_kohya

TINY_ARGS = ("--steps", "3", "--width", "64", "--height", "64", "--seed", "5", "--json")


def _pixels(result) -> np.ndarray:
    path = json.loads(result.stdout)["images"][0]
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


@pytest.fixture
def red(tiny_workspace, sd15):
    """`loras/red.safetensors`: a LoRA on tiny-sd15 that says so in its metadata, as training writes."""
    lora = random_lora(sd15, seed=3, scale=0.6)
    return save_kohya(lora, tiny_workspace.loras / "red.safetensors", {"ss_sd_model_name": "tiny-sd15"}, family="sd15")


@pytest.mark.slow
def test_every_export_leaves_loras_alone_and_what_may_go_there_generates(cli, tiny_workspace, red, one_torch_thread):
    """`lora export red --to diffsynth` wrote `red-diffsynth.safetensors` into studio/loras, where `lora
    list` showed it (type -) and `<lora:red-diffsynth>` failed; diffusers/peft exports landed there too."""
    for fmt, name in (("kohya", "red-kohya.safetensors"), ("diffusers", "red-diffusers.safetensors"),
                      ("peft", "red-peft"), ("diffsynth", "red-diffsynth.safetensors")):  # fmt: skip
        done = cli("lora", "export", "red", "--to", fmt, "--json")  # a library name, as `lora delete` takes
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["path"] == str(tiny_workspace.exports / name)
        assert (tiny_workspace.exports / name).exists()
    assert [p.name for p in tiny_workspace.loras.iterdir()] == ["red.safetensors"]
    for fmt in ("diffusers", "peft", "diffsynth"):
        refused = cli("lora", "export", "red", "--to", fmt, "--out", tiny_workspace.loras / "sub" / f"red-{fmt}")
        assert refused.exit_code == 2 and "is not a LoRA A1111 or `<lora:…>` loads" in refused.stderr
    assert [p.name for p in tiny_workspace.loras.iterdir()] == ["red.safetensors"]

    kept = cli("lora", "export", "red", "--to", "kohya", "--out", tiny_workspace.loras / "copy.safetensors")
    assert kept.exit_code == 0, kept.output  # the one layout loras/ takes: every file there generates
    plain = cli("generate", "--model", "tiny-sd15", "--prompt", "a picture", *TINY_ARGS)
    for name in ("red", "copy"):
        with_lora = cli("generate", "--model", "tiny-sd15", "--prompt", f"a picture <lora:{name}:1>", *TINY_ARGS)
        assert with_lora.exit_code == 0, with_lora.output
        assert np.abs(_pixels(with_lora) - _pixels(plain)).mean() > 2
    listed = cli("lora", "list", "--json")
    assert all(row["type"] == "lora" for row in json.loads(listed.stdout)["loras"])

    # One copied in by hand (or left by an older export) says what it is and what to do.
    shutil.copy(tiny_workspace.exports / "red-diffsynth.safetensors", tiny_workspace.loras)
    copied = cli("generate", "--model", "tiny-sd15", "--prompt", "a picture <lora:red-diffsynth:1>", *TINY_ARGS)
    assert copied.exit_code == 2
    assert "red-diffsynth.safetensors: a DiffSynth-Studio LoRA (blocks.N names)" in copied.stderr
    assert "move it out of loras/, or convert it: `lorastudio lora import red-diffsynth.safetensors`" in copied.stderr


def _tiny_kolors_lora(tiny_models_dir, base: str):
    """A kohya LoRA (SDXL's LDM names) on tiny-kolors' attention, naming `base` as training does."""
    from lorastudio.models.loading import load_model

    model = load_model("tiny-kolors", tiny_models_dir, tiny_models_dir / ".cache", device="cpu")
    config = dict(model.unet.config)
    return random_lora(model, rank=2), config, {"ss_sd_model_name": base}


@pytest.mark.slow
def test_a_tiny_kolors_lora_exports_to_diffsynth_with_the_model_its_metadata_names(
    cli, tiny_workspace, tiny_models_dir, tmp_path
):
    """Its UNet layout is not full Kolors': without --model the export said "the LoRA was made for
    another model family"; now it uses tiny-kolors, named in the file, or asks for --model."""
    from safetensors.torch import load_file

    from lorastudio.adapters.diffsynth import diffsynth_attention_blocks

    lora, config, metadata = _tiny_kolors_lora(tiny_models_dir, "tiny-kolors")
    save_kohya(lora, tiny_workspace.loras / "cat.safetensors", metadata, family="kolors", unet_config=config)
    done = cli("lora", "export", "cat", "--to", "diffsynth", "--json")
    assert done.exit_code == 0, done.output
    blocks = {f"blocks.{n}." for n in diffsynth_attention_blocks(config)}  # tiny-kolors' own numbering
    written = load_file(json.loads(done.stdout)["path"])
    assert len(written) == 2 * len(lora.modules)
    assert all(any(key.startswith(b) for b in blocks) for key in written)

    save_kohya(lora, tmp_path / "stray.safetensors", {"ss_sd_model_name": "kolors-tiny-v2"}, family="kolors",
               unet_config=config)  # fmt: skip
    refused = cli("lora", "export", tmp_path / "stray.safetensors", "--to", "diffsynth")
    assert refused.exit_code == 2
    line = refused.stderr.strip()
    assert "\n" not in line and "another model family" not in line
    assert "made for 'kolors-tiny-v2', which the library lacks); pass --model NAME" in line
    with_model = cli("lora", "export", tmp_path / "stray.safetensors", "--to", "diffsynth", "--model", "tiny-kolors")
    assert with_model.exit_code == 0, with_model.output


def _unet_out(unet) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        return unet(sample, 10, encoder_hidden_states=context).sample


@pytest.mark.slow
def test_merge_takes_a_library_model_name_and_lora_names(cli, tiny_workspace, red, sd15, tmp_path):
    """`--model tiny-sd15` answered "no model_index.json", `--lora red:0.5` "LoRA file not found"."""
    out = tmp_path / "merged.safetensors"
    done = cli("lora", "merge", "--model", "tiny-sd15", "--lora", "red:0.5", "--out", out, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["format"] == "single-file"  # a .safetensors --out is a single file
    from lorastudio.models.loading import load_model

    merged = load_model(str(out), tiny_workspace.models, tiny_workspace.cache, device="cpu")
    with applied_loras(sd15.components, [(load_lora_file(red), 0.5, 0.5)]):
        expected = {k: v.clone() for k, v in sd15.unet.state_dict().items()}
    assert all(torch.equal(v, expected[k]) for k, v in merged.unet.state_dict().items())
    missing = cli("lora", "merge", "--model", "tiny-sd15", "--lora", "blue:0.5", "--out", tmp_path / "x.safetensors")
    assert missing.exit_code == 2 and "LoRA 'blue'" in missing.stderr and not (tmp_path / "x.safetensors").exists()
    # what a merge never does: write over an existing file (another model), into loras/, or with a NaN weight
    other = tiny_workspace.models / "other.safetensors"
    other.write_bytes(b"12345678")
    for args, said in (
        (("--lora", "red", "--out", other), "already exists; choose a new name"),
        (("--lora", "red", "--out", tiny_workspace.loras / "m.safetensors"), "does not go into loras/"),
        (("--lora", "red:nan", "--out", tmp_path / "n.safetensors"), "the weight nan is not a number"),
    ):
        refused = cli("lora", "merge", "--model", "tiny-sd15", *args)
        assert refused.exit_code == 2 and said in refused.stderr, refused.output
    assert other.read_bytes() == b"12345678" and not (tiny_workspace.loras / "m.safetensors").exists()
    # an export to kohya/diffusers is safetensors inside: a .ckpt name would be unpickled by A1111 and fail
    ckpt = cli("lora", "export", "red", "--to", "kohya", "--out", tiny_workspace.loras / "red2.ckpt")
    assert ckpt.exit_code == 2 and "name it red2.safetensors" in ckpt.stderr
    assert not (tiny_workspace.loras / "red2.ckpt").exists()


@pytest.mark.slow
def test_a_single_file_model_merges_into_a_single_file_a1111_and_models_import_load(
    cli, tiny_workspace, red, sd15, tmp_path
):
    """A checkpoint in studio/models could not be merged at all ("no model_index.json")."""
    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.models.checkpoint import read_safetensors_header, read_safetensors_metadata
    from lorastudio.models.loading import load_model

    source = tiny_workspace.models / "mine.safetensors"
    save_single_file(sd15.components, sd15.family, source, {"lorastudio.base_config": "tiny-sd15"}, dtype=torch.float16)
    out = tmp_path / "mine-red.safetensors"
    done = cli("lora", "merge", "--model", "mine", "--lora", "red:0.7", "--out", out, "--json")
    assert done.exit_code == 0, done.output
    header = read_safetensors_header(out)
    unet_keys = [k for k in header if k.startswith("model.diffusion_model.")]  # A1111's (LDM) names
    assert unet_keys and all(header[k]["dtype"] == "F16" for k in unet_keys)  # fp16 in, fp16 out
    assert any(k.startswith("cond_stage_model.") for k in header) and any(k.startswith("first_stage_model.") for k in header)
    assert json.loads(read_safetensors_metadata(out)["lorastudio.merged_loras"]) == ["red.safetensors:0.7"]

    base = load_model(str(source), tiny_workspace.models, tiny_workspace.cache, device="cpu")
    with applied_loras(base.components, [(load_lora_file(red), 0.7, 0.7)]):
        expected = {k: v.half().float() for k, v in base.unet.state_dict().items()}
        lora_out = _unet_out(base.unet)
    imported = cli("models", "import", out, "--name", "mine-red")
    assert imported.exit_code == 0, imported.output
    merged = load_model("mine-red", tiny_workspace.models, tiny_workspace.cache, device="cpu")
    assert all(torch.equal(v, expected[k]) for k, v in merged.unet.state_dict().items())
    assert torch.allclose(_unet_out(merged.unet), lora_out, atol=2e-2)
    assert not torch.allclose(_unet_out(base.unet), lora_out, atol=2e-2)

    refused = cli("lora", "merge", "--model", "mine", "--lora", "red", "--out", tmp_path / "folder", "--format", "diffusers")
    assert refused.exit_code == 2 and "a single-file model merges into a single file" in refused.stderr


def test_generate_names_a_missing_model_before_the_loras_of_its_prompts(cli, workspace):
    """The docs' `generate --model Kolors --prompts docs/examples/kolors-story.yaml`, with no Kolors model,
    said "LoRA 'kolors-cat' not found"."""
    from pathlib import Path

    story = Path(__file__).resolve().parent.parent / "docs" / "examples" / "kolors-story.yaml"
    for args in (("--prompts", story), ("--prompt", "卡通，一只猫 <lora:kolors-cat:1>")):
        result = cli("generate", "--model", "Kolors", *args, "--steps", "1")
        assert result.exit_code == 2
        assert "model 'Kolors' not found" in result.stderr and "kolors-cat" not in result.stderr


def _without_vae(source, target) -> None:
    """`source` rewritten without its VAE tensors (a checkpoint shared without one), metadata kept."""
    from safetensors.torch import load_file, save_file

    from lorastudio.models.checkpoint import read_safetensors_metadata

    state = {k: v for k, v in load_file(str(source)).items() if not k.startswith("first_stage_model.")}
    save_file(state, str(target), metadata=read_safetensors_metadata(source))


@pytest.mark.slow
def test_a_single_file_without_a_vae_merges_with_the_vae_given(cli, tiny_workspace, red, sd15, tmp_path):
    """load_model said "this checkpoint has no VAE; pass one with --vae FILE", which merge did not take."""
    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.models.checkpoint import read_safetensors_header
    from lorastudio.models.loading import load_model

    full = save_single_file(sd15.components, sd15.family, tmp_path / "full.safetensors",
                            {"lorastudio.base_config": "tiny-sd15"})  # fmt: skip
    _without_vae(full, tiny_workspace.models / "bare.safetensors")
    sd15.vae.save_pretrained(str(tiny_workspace.models / "my-vae"))  # a diffusers vae folder in models/
    out = tmp_path / "bare-red.safetensors"
    refused = cli("lora", "merge", "--model", "bare", "--lora", "red:0.7", "--out", out)
    assert refused.exit_code == 2 and "has no VAE; pass one with --vae" in refused.stderr

    done = cli("lora", "merge", "--model", "bare", "--lora", "red:0.7", "--out", out, "--vae", "my-vae", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["vae"] == str(tiny_workspace.models / "my-vae")
    assert any(k.startswith("first_stage_model.") for k in read_safetensors_header(out))  # the VAE baked in
    merged = load_model(str(out), tiny_workspace.models, tiny_workspace.cache, device="cpu")  # no --vae needed
    expected = sd15.vae.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in merged.vae.state_dict().items())
    with applied_loras(sd15.components, [(load_lora_file(red), 0.7, 0.7)]):
        unet = {k: v.clone() for k, v in sd15.unet.state_dict().items()}
    assert all(torch.equal(v, unet[k]) for k, v in merged.unet.state_dict().items())


def _tiny_ckpt_loads(monkeypatch) -> None:
    """A tiny model's .ckpt has no metadata to name its config in: its converted copy names tiny-sd15."""
    from safetensors.torch import load_file, save_file

    from lorastudio.models import loading
    from lorastudio.models.checkpoint import read_safetensors_metadata

    convert = loading.convert_ckpt_to_safetensors

    def convert_naming_tiny(path, out):
        convert(path, out)
        metadata = {**read_safetensors_metadata(out), "lorastudio.base_config": "tiny-sd15"}
        save_file(load_file(str(out)), str(out), metadata=metadata)
        return out

    monkeypatch.setattr(loading, "convert_ckpt_to_safetensors", convert_naming_tiny)


@pytest.mark.slow
def test_an_fp16_ckpt_merges_into_an_fp16_safetensors_file(cli, tiny_workspace, red, sd15, tmp_path, monkeypatch):
    """A .ckpt's merge came out fp32 (its dtype was read from a safetensors header only)."""
    from safetensors.torch import load_file

    from lorastudio.adapters.ldm import checkpoint_state_dict, save_single_file
    from lorastudio.models.loading import load_model

    single = save_single_file(sd15.components, sd15.family, tmp_path / "old.safetensors", dtype=torch.float16)
    torch.save({"state_dict": load_file(str(single)), "global_step": 1}, tiny_workspace.models / "old.ckpt")
    _tiny_ckpt_loads(monkeypatch)
    pickle_out = cli("lora", "merge", "--model", "old", "--lora", "red", "--out", tmp_path / "old-red.ckpt")
    assert pickle_out.exit_code == 2 and "never a pickle); name it old-red.safetensors" in pickle_out.stderr

    out = tmp_path / "old-red.safetensors"
    done = cli("lora", "merge", "--model", "old", "--lora", "red:0.7", "--out", out, "--json")
    assert done.exit_code == 0, done.output
    written = load_file(str(out))
    unet_keys = [k for k in written if k.startswith("model.diffusion_model.")]
    assert unet_keys and all(written[k].dtype == torch.float16 for k in unet_keys)  # fp16 in, fp16 out
    base = load_model("old", tiny_workspace.models, tiny_workspace.cache, device="cpu")
    with applied_loras(base.components, [(load_lora_file(red), 0.7, 0.7)]):
        expected = checkpoint_state_dict(base.components, base.family)
    assert all(torch.equal(written[k], expected[k].half()) for k in unet_keys)


@pytest.mark.slow
def test_a_ckpt_merge_unpickles_the_file_once(cli, tiny_workspace, red, sd15, tmp_path, monkeypatch):
    """The merge unpickled a .ckpt once for its dtype, then again to load it: now its dtype is the
    weights-only conversion's, the file the model loads from (and a second merge unpickles nothing)."""
    from safetensors.torch import load_file

    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.models import checkpoint

    single = save_single_file(sd15.components, sd15.family, tmp_path / "old.safetensors", dtype=torch.float16)
    torch.save({"state_dict": load_file(str(single)), "global_step": 1}, tiny_workspace.models / "old.ckpt")
    _tiny_ckpt_loads(monkeypatch)
    unpickled, load = [], checkpoint.weights_only_load

    def counted(path, *args, **kwargs):
        unpickled.append(path)
        return load(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "weights_only_load", counted)
    for name, times in (("first", 1), ("again", 1)):
        out = tmp_path / f"{name}.safetensors"
        done = cli("lora", "merge", "--model", "old", "--lora", "red:0.7", "--out", out, "--json")
        assert done.exit_code == 0, done.output
        assert len(unpickled) == times, unpickled  # once in all: the conversion is cached
        unet = [v for k, v in load_file(str(out)).items() if k.startswith("model.diffusion_model.")]
        assert unet and all(v.dtype == torch.float16 for v in unet)  # fp16 in, fp16 out


@pytest.mark.slow
def test_a_kolors_unet_only_merge_records_the_base_folder_it_was_completed_from(cli, tiny_workspace, tiny_models_dir):
    """A Kolors UNet-only file without `lorastudio.base_model` merged into a file naming the UNet-only
    file itself as its base, which no load can complete: now the library folder its load used."""
    from safetensors.torch import save_file

    from lorastudio.models.checkpoint import read_safetensors_metadata
    from lorastudio.models.loading import load_model

    shutil.copytree(tiny_models_dir / "tiny-kolors", tiny_workspace.models / "kolors-base")  # not a tiny name
    base = load_model("kolors-base", tiny_workspace.models, tiny_workspace.cache, device="cpu")
    finetune = tiny_workspace.models / "kolors-ft.safetensors"
    save_file({k: v.contiguous() for k, v in base.unet.state_dict().items()}, str(finetune))  # no metadata
    lora, config, metadata = _tiny_kolors_lora(tiny_models_dir, "tiny-kolors")
    save_kohya(lora, tiny_workspace.loras / "cat.safetensors", metadata, family="kolors", unet_config=config)
    out = tiny_workspace.exports / "kolors-cat.safetensors"
    done = cli("lora", "merge", "--model", "kolors-ft", "--lora", "cat:0.5", "--out", out, "--json")
    assert done.exit_code == 0, done.output
    assert read_safetensors_metadata(out)["lorastudio.base_model"] == "kolors-base"
    merged = load_model(str(out), tiny_workspace.models, tiny_workspace.cache, device="cpu")
    assert merged.base == tiny_workspace.models / "kolors-base"
    original = {k: v.clone() for k, v in base.unet.state_dict().items()}
    with applied_loras(base.components, [(load_lora_file(tiny_workspace.loras / "cat.safetensors"), 0.5, 0.5)]):
        expected = {k: v.clone() for k, v in base.unet.state_dict().items()}
    assert any(not torch.equal(v, original[k]) for k, v in expected.items())  # the LoRA changes the UNet
    assert all(torch.equal(v, expected[k]) for k, v in merged.unet.state_dict().items())


@pytest.mark.slow
def test_a_tiny_kolors_diffsynth_export_imports_back_without_model(cli, tiny_workspace, tiny_models_dir):
    """The export named no base model, so its re-import needed `--model tiny-kolors`: its block numbers
    count tiny-kolors' UNet, not full Kolors'."""
    from lorastudio.models.checkpoint import read_safetensors_metadata

    lora, config, metadata = _tiny_kolors_lora(tiny_models_dir, "tiny-kolors")
    save_kohya(lora, tiny_workspace.loras / "cat.safetensors", metadata, family="kolors", unet_config=config)
    done = cli("lora", "export", "cat", "--to", "diffsynth", "--json")
    assert done.exit_code == 0, done.output
    exported = json.loads(done.stdout)["path"]
    written = read_safetensors_metadata(exported)
    assert (written["ss_sd_model_name"], written["ss_base_model_version"]) == ("tiny-kolors", "kolors")

    back = cli("lora", "import", exported, "--name", "cat-back", "--json")  # no --model
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["family"] == "kolors"
    imported = tiny_workspace.loras / "cat-back.safetensors"
    assert read_safetensors_metadata(imported)["ss_sd_model_name"] == "tiny-kolors"
    again = load_lora_file(imported).with_diffusers_unet(config)
    original = lora.with_diffusers_unet(config) if lora.unet_layout == "ldm" else lora
    assert set(again.modules) == set(original.modules)
    for key, module in original.modules.items():
        torch.testing.assert_close(again.modules[key].delta() * again.modules[key].scale,
                                   module.delta() * module.scale, rtol=2e-3, atol=2e-4)  # fmt: skip

    from safetensors.torch import load_file, save_file

    elsewhere = tiny_workspace.exports / "cat-elsewhere.safetensors"  # its base model is not in this library
    save_file(load_file(exported), str(elsewhere), metadata={**written, "ss_sd_model_name": "kolors-tiny-v2"})
    refused = cli("lora", "import", elsewhere)
    assert refused.exit_code == 2 and "\n" not in refused.stderr.strip()
    assert "follow the UNet of 'kolors-tiny-v2', which the library lacks; pass --model NAME" in refused.stderr
