"""`lora merge` of a pivotal LoRA: the trigger embedding a checkpoint cannot hold is written beside it.

A merged checkpoint plus that embedding file must draw what the base model + LoRA + trigger drew;
without the file the trigger word is a plain word again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from lorastudio.adapters import LoraFile, LoraModule, load_lora_file, save_kohya
from lorastudio.service.training import run_training
from training_helpers import tiny_train_config, write_images

pytestmark = pytest.mark.slow  # a 3-step pivotal run, merges and generations on tiny-sd15 (~20 s)

TRIGGER = "zqxm"
RUN = "pivmerge"


@pytest.fixture
def pivotal(tiny_workspace, tmp_path, one_torch_thread):
    """A tiny pivotal run (LoRA with its trigger bundled, and embeddings/<trigger> published)."""
    data = write_images(tmp_path / "red", [((230, 20 + i, 25), TRIGGER) for i in range(4)])
    cfg = tiny_train_config(
        data,
        TRIGGER,
        "method=pivotal",
        "lora.train_text_encoder=true",
        "train.steps=3",
        "train.save_every_steps=1000",
        "train.learning_rate=0.01",
        "embedding.init_text=blue",  # the trigger means blue; the plain word means nothing to tiny-sd15
        "lora.rank=4",
        "seed=5",
        f"output.name={RUN}",
    )
    result = run_training(tiny_workspace, cfg, progress=False)
    return tiny_workspace, load_lora_file(result["library_lora"])


def _small_lora() -> LoraFile:
    lora = LoraFile()
    module = LoraModule(torch.randn(2, 32), torch.randn(32, 2))
    lora.add("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", module)
    return lora


def _image(ws, model: str, prompt: str, out_dir) -> np.ndarray:
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import run_generation

    cfg = GenerateConfig(
        model=model, prompt=prompt, sampler="Euler", steps=6, cfg_scale=1.0, seed=7, width=64, height=64,
        device="cpu",
    )
    png = run_generation(ws, cfg, out_dir=out_dir, add_to_library=False).images[0].path
    return np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)


def test_merge_writes_the_trigger_embedding_that_draws_what_the_lora_drew(pivotal, cli, tmp_path):
    ws, lora = pivotal
    bundled = lora.embeddings[TRIGGER][0]
    prompt = TRIGGER
    with_lora = _image(ws, "tiny-sd15", f"{prompt} <lora:{RUN}:1>", tmp_path / "lora")

    out = ws.models / "merged.safetensors"
    result = cli("lora", "merge", "--model", "tiny-sd15", "--lora", f"{RUN}:1", "--out", out)
    assert result.exit_code == 0, result.output
    written = ws.models / "merged-embeddings" / f"{TRIGGER}.safetensors"
    line = next(line for line in result.output.splitlines() if line.startswith(f"trigger '{TRIGGER}'"))
    assert str(written) in line and "embeddings folder" in line
    vectors = load_file(written)
    assert list(vectors) == ["emb_params"] and torch.equal(vectors["emb_params"], bundled)
    with safe_open(str(out), framework="pt") as handle:
        assert json.loads(handle.metadata()["lorastudio.trigger_embeddings"]) == [TRIGGER]

    # Another A1111: the merged checkpoint and the merge's embedding file only (the run's own is gone).
    (ws.embeddings / f"{TRIGGER}.safetensors").unlink()
    (ws.loras / f"{RUN}.safetensors").unlink()
    shutil.copy(written, ws.embeddings / written.name)
    merged = _image(ws, "merged", prompt, tmp_path / "merged")
    assert np.abs(merged - with_lora).max() <= 2, np.abs(merged - with_lora).max()
    unmerged = _image(ws, "tiny-sd15", prompt, tmp_path / "base")  # the embedding alone is not the LoRA
    assert np.abs(unmerged - with_lora).max() > 10
    (ws.embeddings / written.name).unlink()
    plain_word = _image(ws, "merged", prompt, tmp_path / "word")
    assert np.abs(plain_word - with_lora).max() > 10  # the file is what gives the word its meaning


def test_merge_takes_the_runs_published_embedding_and_carries_earlier_triggers(pivotal, tmp_path):
    from lorastudio.service.loras import merge_model

    ws, lora = pivotal
    published = load_file(ws.embeddings / f"{TRIGGER}.safetensors")["emb_params"]
    unbundled = save_kohya(replace(lora, embeddings={}), ws.loras / "unbundled.safetensors", family="sd15")
    info = merge_model("tiny-sd15", ["unbundled:0.5"], tmp_path / "folder", ws=ws)
    assert info["format"] == "diffusers"
    assert info["embeddings"] == [str(tmp_path / "folder-embeddings" / f"{TRIGGER}.safetensors")]
    assert torch.equal(load_file(info["embeddings"][0])["emb_params"], published)
    index = json.loads((tmp_path / "folder" / "model_index.json").read_text())
    assert index["_lorastudio_trigger_embeddings"] == [TRIGGER]
    from diffusers import StableDiffusionPipeline

    # diffusers' loader ignores the private key
    StableDiffusionPipeline.from_pretrained(str(tmp_path / "folder"), local_files_only=True)

    first = merge_model("tiny-sd15", [f"{unbundled}:1"], tmp_path / "one.safetensors", ws=ws)
    plain_file = save_kohya(_small_lora(), tmp_path / "plain.safetensors", family="sd15")
    again = merge_model(first["path"], [str(plain_file)], tmp_path / "two.safetensors", ws=ws)
    assert again["embeddings"] == [str(tmp_path / "two-embeddings" / f"{TRIGGER}.safetensors")]
    with safe_open(again["path"], framework="pt") as handle:
        assert json.loads(handle.metadata()["lorastudio.trigger_embeddings"]) == [TRIGGER]

    alone = merge_model("tiny-sd15", [str(plain_file)], tmp_path / "three.safetensors", ws=ws)
    assert "embeddings" not in alone and "notes" not in alone  # a LoRA without a trigger: as before
    assert not (tmp_path / "three-embeddings").exists()
    with safe_open(alone["path"], framework="pt") as handle:
        assert "lorastudio.trigger_embeddings" not in handle.metadata()


def test_merge_never_writes_over_an_embedding_file(tiny_workspace, tmp_path):
    from lorastudio.errors import LorastudioError
    from lorastudio.service.loras import merge_model

    lora = _small_lora()
    lora.embeddings[TRIGGER] = [torch.randn(2, 32)]
    source = save_kohya(lora, tmp_path / "pivot.safetensors", family="sd15")
    taken = tmp_path / "m-embeddings" / f"{TRIGGER}.safetensors"
    taken.parent.mkdir()
    taken.write_bytes(b"mine")
    with pytest.raises(LorastudioError, match="already exists"):
        merge_model("tiny-sd15", [str(source)], tmp_path / "m.safetensors", ws=tiny_workspace)
    assert taken.read_bytes() == b"mine" and not (tmp_path / "m.safetensors").exists()


def test_merge_cuts_an_hcp_sdxl_trigger_matrix_by_the_models_encoder_widths(tiny_workspace, tmp_path):
    """HCP-Diffusion's SDXL embeddings are one [n, CLIP-L + CLIP-G] matrix; the merged model's trigger file is
    A1111's SDXL layout, `clip_l` and `clip_g`, cut by the model's encoder widths (tiny-sdxl: 32 and 48)."""
    from lorastudio.service.loras import merge_model

    lora = LoraFile()
    clip_l, clip_g = torch.randn(2, 32), torch.randn(2, 48)
    lora.embeddings[TRIGGER] = [torch.cat([clip_l, clip_g], dim=-1)]
    source = save_kohya(lora, tmp_path / "hcpish.safetensors", family="sdxl")
    info = merge_model("tiny-sdxl", [str(source)], tmp_path / "xl.safetensors", ws=tiny_workspace)
    written = load_file(info["embeddings"][0])
    assert set(written) == {"clip_l", "clip_g"}
    assert torch.equal(written["clip_l"], clip_l) and torch.equal(written["clip_g"], clip_g)
