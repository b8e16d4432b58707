"""Training end to end on the tiny models: effect, embedding, resume, files, CLI and errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from lorastudio.errors import LorastudioError
from lorastudio.service.training import run_training
from lorastudio.train.config import load_train_config
from training_helpers import tiny_train_config, write_images

pytestmark = pytest.mark.slow  # training end to end, two processes (~35 s)

TRIGGER = "zqx"


@pytest.fixture(scope="session")
def tiny_models(tiny_models_dir):
    """The session's tiny models (tests/conftest.py builds them once)."""
    return {name: tiny_models_dir / name for name in ("tiny-sd15", "tiny-sdxl")}


@pytest.fixture
def ws(workspace, tiny_models):
    for name, folder in tiny_models.items():
        (workspace.models / name).symlink_to(folder, target_is_directory=True)
    return workspace


@pytest.fixture
def red_set(tmp_path):
    return write_images(tmp_path / "red", [((230, 20 + i, 25), TRIGGER) for i in range(8)])


def _config(data_dir, *extra):
    base = ("train.steps=6", "train.save_every_steps=3", "lora.rank=4", "lora.alpha=2", "seed=3")
    return tiny_train_config(data_dir, TRIGGER, *base, *extra)


def _redness(pipe, prompt: str) -> float:
    generator = torch.Generator().manual_seed(0)
    images = pipe(
        [prompt] * 4,
        num_inference_steps=8,
        generator=generator,
        height=64,
        width=64,
        guidance_scale=1.0,
        output_type="np",
    ).images
    return float((images[..., 0] - (images[..., 1] + images[..., 2]) / 2).mean())


def test_lora_on_red_images_makes_trigger_generations_redder(ws, red_set, tiny_models):
    from diffusers import StableDiffusionPipeline

    cfg = _config(
        red_set,
        "train.steps=30",
        "train.batch_size=4",
        "train.save_every_steps=1000",
        "train.learning_rate=3e-2",
        "train.min_snr_gamma=1",
        "lora.rank=8",
        "lora.alpha=8",
        "output.name=redder",
    )
    result = run_training(ws, cfg, progress=False)
    assert Path(result["library_lora"]) == ws.loras / "redder.safetensors"
    pipe = StableDiffusionPipeline.from_pretrained(
        str(tiny_models["tiny-sd15"]),
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    base = _redness(pipe, TRIGGER)
    pipe.load_lora_weights(result["library_lora"])  # plain diffusers reads the kohya file
    trained = _redness(pipe, TRIGGER)
    assert trained > base + 0.05, (base, trained)


def test_resume_reaches_the_same_weights_bit_for_bit(ws, red_set):
    extra = (
        "method=pivotal",
        "embedding.num_vectors=2",
        "train.lr_scheduler=cosine",
        "train.lr_warmup_steps=2",
        "data.shuffle_tags=true",
        "data.flip=true",
        "train.min_snr_gamma=5",
        "train.noise_offset=0.05",
        "scoring.enabled=false",  # the final files are compared; scoring only picks what to publish
    )
    straight = run_training(ws, _config(red_set, "output.name=straight", *extra), progress=False)
    partial = run_training(ws, _config(red_set, "output.name=halves", *extra), progress=False, stop_at_step=3)
    assert partial == {
        "finished": False,
        "step": 3,
        "run_dir": str(ws.runs / "halves"),
        "name": "halves",
        "steps": 6,
    }
    assert (ws.runs / "halves" / "checkpoints" / "step-3" / "state").is_dir()
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    _register()
    cli = CliRunner().invoke(app, ["train", "--resume", "halves", "--json"])
    assert cli.exit_code == 0, cli.output
    resumed = json.loads(cli.stdout.strip().splitlines()[-1])
    assert resumed["finished"] and resumed["step"] == 6
    a, b = load_file(straight["lora"]), load_file(resumed["lora"])
    assert a.keys() == b.keys() and any(k.startswith("bundle_emb.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in (ws.runs / "halves" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_kohya_file_has_alpha_metadata_text_encoder_keys_and_embedding(ws, red_set):
    cfg = _config(
        red_set,
        "method=pivotal",
        "lora.train_text_encoder=true",
        "output.name=full",
        f"samples.prompts=[{TRIGGER}, a photo]",
        "samples.steps=2",
        "scoring.steps=2",  # its contact sheet is asserted, not what it draws
    )
    result = run_training(ws, cfg, progress=False)
    with safe_open(result["lora"], framework="pt") as handle:
        meta = handle.metadata()
        keys = set(handle.keys())
        alpha = handle.get_tensor("lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha")
    assert float(alpha) == 2.0
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight" in keys
    assert f"bundle_emb.{TRIGGER}.string_to_param.*" in keys
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_output_name"] == "full"
    assert meta["ss_steps"] == "6" and len(meta["sshs_model_hash"]) == 64
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.trigger_phrase"] == TRIGGER
    assert json.loads(meta["ss_lorastudio_config"])["lora"]["rank"] == 4
    embedding = load_file(ws.embeddings / f"{TRIGGER}.safetensors")
    assert embedding["emb_params"].shape == (1, 32)
    checkpoint = ws.runs / "full" / "checkpoints" / "step-3"
    assert (checkpoint / "full.safetensors").is_file()
    assert (checkpoint / "embeddings" / f"{TRIGGER}.safetensors").is_file()
    assert (ws.runs / "full" / "config.yaml").is_file() and (ws.runs / "full" / "loss.png").is_file()
    samples = sorted(p.relative_to(ws.runs / "full").as_posix() for p in (ws.runs / "full").rglob("*.png"))
    assert samples == [
        "checkpoints.png",  # checkpoint scoring's contact sheet
        "loss.png",
        "samples/step-3/00.png",
        "samples/step-3/01.png",
        "samples/step-6/00.png",
        "samples/step-6/01.png",
    ]


def test_embedding_alone_moves_the_trigger_conditioning(ws, red_set):
    from lorastudio.models.loading import load_model
    from lorastudio.train.text import TriggerEmbedding, encode_text

    cfg = _config(red_set, "method=embedding", "embedding.learning_rate=5e-2", "output.name=emb", "scoring.enabled=false")
    result = run_training(ws, cfg, progress=False)
    assert not any(k.startswith("lora_") for k in load_file(result["lora"]))
    trained = load_file(result["library_embedding"])["emb_params"]

    model = load_model("tiny-sd15", ws.models, ws.cache, device="cpu")
    embedding = TriggerEmbedding(TRIGGER, 1, "person", model.text_encoders, model.tokenizers)
    embedding.attach(model.text_encoders)
    with torch.no_grad():
        before = encode_text(model, [TRIGGER])[0]
        embedding.vectors[0].copy_(trained)
        after = encode_text(model, [TRIGGER])[0]
        other_before = other_after = encode_text(model, ["a photo"])[0]
    assert (after - before).abs().max() > 1e-3
    assert torch.equal(other_before, other_after)


def test_sdxl_pivotal_writes_ldm_names_and_both_embeddings(ws, red_set):
    cfg = load_train_config(
        preset="sdxl-character",
        overrides=[
            "model=tiny-sdxl",
            f"data.dir={red_set}",
            f"trigger={TRIGGER}",
            "train.resolution=64",
            "train.steps=2",
            "train.epochs_per_image=null",
            "train.save_every_steps=5",
            "lora.rank=2",
            "output.name=xl",
            "train.mixed_precision=no",
        ],
    )
    result = run_training(ws, cfg, progress=False)
    keys = set(load_file(result["lora"]))
    assert any(k.startswith("lora_unet_input_blocks_") for k in keys)
    assert {f"bundle_emb.{TRIGGER}.clip_l", f"bundle_emb.{TRIGGER}.clip_g"} <= keys
    assert set(load_file(result["library_embedding"])) == {"clip_l", "clip_g"}


def test_cli_trains_and_prints_one_json_object(ws, red_set):
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    _register()
    result = CliRunner().invoke(
        app,
        [
            "train",
            "model=tiny-sd15",
            f"data.dir={red_set}",
            f"trigger={TRIGGER}",
            "train.resolution=64",
            "train.steps=2",
            "lora.rank=2",
            "output.name=clirun",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["name"] == "clirun" and Path(payload["library_lora"]).is_file()


def test_clear_errors_before_heavy_work(ws, red_set, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LorastudioError, match="no images"):
        run_training(ws, _config(empty), progress=False)
    with pytest.raises(LorastudioError, match="lora.rank 64: larger than layer"):
        run_training(ws, _config(red_set, "lora.rank=64", "output.name=big"), progress=False)
    xl = load_train_config(
        preset="sdxl-character",
        overrides=[
            "model=tiny-sd15",
            f"data.dir={red_set}",
            f"trigger={TRIGGER}",
            "train.resolution=64",
            "output.name=xl15",
        ],
    )
    with pytest.raises(LorastudioError, match="text_encoder_2"):
        run_training(ws, xl, progress=False)


def test_resized_images_are_bucketed_and_cached_once(ws, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.full((256, 128, 3), 200, np.uint8)).save(folder / "tall.png")
    Image.fromarray(np.full((128, 256, 3), 50, np.uint8)).save(folder / "wide.png")
    cfg = load_train_config(
        overrides=[
            "model=tiny-sd15",
            f"data.dir={folder}",
            "train.resolution=128",
            "train.steps=1",
            "lora.rank=2",
            "output.name=mixed",
        ]
    )
    run_training(ws, cfg, progress=False)
    cached = sorted(p.name.split("-")[1] for p in (ws.cache / "latents").rglob("*.safetensors"))
    assert cached == ["192x64.safetensors", "64x192.safetensors"]


def test_two_process_cpu_run_keeps_ranks_identical(ws, red_set):
    import subprocess
    import sys

    command = [sys.executable, "-m", "lorastudio", "train", "model=tiny-sd15", f"data.dir={red_set}",
               f"trigger={TRIGGER}", "train.resolution=64", "train.steps=3", "lora.rank=2", "output.name=ddp",
               "--num-processes", "2", "--device", "cpu", "--json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    # The failing rank's own error, not only the launcher's traceback that follows it.
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if "Error" in line)[-3000:]
    payload = json.loads(done.stdout.strip().splitlines()[-1])
    assert payload["ranks_agree"] is True and payload["step"] == 3
    assert "plan: 3 steps x 2 samples per step" in done.stderr
    assert (ws.loras / "ddp.safetensors").is_file()


def test_a_trigger_embedding_of_another_family_is_not_replaced(ws, red_set):
    """An SD1.5 `embeddings/<trigger>.safetensors` is there: publishing keeps it, so an SDXL pivotal run
    with the same trigger could not publish its embedding; it is refused before any model loads, in
    words that say the file is kept (not "would replace"). The same family may retrain it."""
    from lorastudio.adapters import Embedding, save_embedding

    save_embedding(Embedding(TRIGGER, [torch.randn(2, 32)]), ws.embeddings / f"{TRIGGER}.safetensors", "sd15")
    before = (ws.embeddings / f"{TRIGGER}.safetensors").read_bytes()
    xl = _config(red_set, "method=pivotal", "model=tiny-sdxl", "output.name=xl-clash")
    with pytest.raises(LorastudioError, match="another model family, which publishing keeps.*pick another trigger") as refused:
        run_training(ws, xl)
    assert "replace" not in str(refused.value)
    assert (ws.embeddings / f"{TRIGGER}.safetensors").read_bytes() == before
    assert not (ws.runs / "xl-clash").exists()
    from lorastudio.service.training import _check_trigger_embedding_fits

    _check_trigger_embedding_fits(ws, _config(red_set, "method=pivotal"))  # SD1.5 again: fine
    _check_trigger_embedding_fits(ws, _config(red_set, "model=tiny-sdxl"))  # a LoRA alone publishes none
    # An SD2.x embedding has SD1.x's one tensor name, `emb_params`, and another width (1024, not 768).
    save_embedding(Embedding(TRIGGER, [torch.randn(2, 48)]), ws.embeddings / f"{TRIGGER}.safetensors", "sd15")
    with pytest.raises(LorastudioError, match="another model family"):
        _check_trigger_embedding_fits(ws, _config(red_set, "method=pivotal"))
    # HCP-Diffusion's SDXL matrix, CLIP-L and CLIP-G side by side (tiny-sdxl: 32 + 48): SDXL's, as prompts read it
    save_embedding(Embedding(TRIGGER, [torch.randn(2, 80)]), ws.embeddings / f"{TRIGGER}.safetensors", "sd15")
    _check_trigger_embedding_fits(ws, _config(red_set, "method=pivotal", "model=tiny-sdxl"))
    with pytest.raises(LorastudioError, match="another model family"):
        _check_trigger_embedding_fits(ws, _config(red_set, "method=pivotal"))  # 80 wide: not SD1.5's


def test_a_second_run_with_the_same_trigger_never_takes_over_the_first_runs_embedding(ws, red_set):
    """embeddings/<trigger>.safetensors wins over the one a LoRA bundles (A1111 and here): a second
    pivotal run with the same trigger replaced it silently, giving the first LoRA the second's
    trigger. The first run's file stays; each LoRA generates with its own trigger (the file wins
    only for its own run's LoRA, or as the user's); the first run may publish again."""
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.generate.infotext import parse_infotext
    from lorastudio.service.generation import run_generation
    from lorastudio.service.training import publish
    from lorastudio.train.config import saved_train_config

    pivotal = ("method=pivotal", "train.steps=2", "train.learning_rate=0.05")
    first = run_training(ws, _config(red_set, *pivotal, "output.name=va"), progress=False)
    embedding = ws.embeddings / f"{TRIGGER}.safetensors"
    before = embedding.read_bytes()
    second = run_training(ws, _config(red_set, *pivotal, "seed=9", "output.name=vb"), progress=False)
    assert embedding.read_bytes() == before and second["embedding_kept"] == str(embedding)

    def ti_hash(lora: str) -> str:
        request = GenerateConfig(model="tiny-sd15", prompt=f"{TRIGGER} <lora:{lora}:1>", steps=1, width=64, height=64)
        return parse_infotext(run_generation(ws, request).images[0].infotext)["TI hashes"]

    import hashlib

    from lorastudio.adapters.hashing import lora_short_hash

    assert ti_hash("va") == f"{TRIGGER}: {hashlib.sha256(before).hexdigest()[:12]}"  # its own run's file
    assert ti_hash("vb") == f"{TRIGGER}: {lora_short_hash(ws.loras / 'vb.safetensors')}"  # its bundle
    run_dir = Path(first["run_dir"])
    saved = saved_train_config(run_dir / "config.yaml")
    files = {"lora": run_dir / "va.safetensors", "embedding": run_dir / "embeddings" / f"{TRIGGER}.safetensors"}
    assert publish(ws, run_dir, saved, files, 2, "user")["library_embedding"] == str(embedding)  # its own: again


def test_a_resume_never_unpickles_code_and_a_run_never_replaces_another_lora(ws, red_set, tmp_path):
    """`train --resume FOLDER` of a run made elsewhere: accelerate unpickles its registered objects
    with weights_only=False, so an edited state ran code. It is refused before anything is loaded.
    A new run never writes over a LoRA or a finished run of the same name."""
    import shutil

    unscored = "scoring.enabled=false"  # what is refused or resumed is asserted, not which checkpoint is best
    run_training(ws, _config(red_set, "output.name=shared", unscored), progress=False, stop_at_step=3)
    copy = tmp_path / "from a stranger"
    shutil.copytree(ws.runs / "shared", copy)
    checkpoint = copy / "checkpoints" / "step-3"
    marker, victim = tmp_path / "PWNED", checkpoint / "state" / "custom_checkpoint_1.pkl"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch '{marker}'",))

    torch.save({"last_epoch": 3, "payload": Payload()}, victim)
    listing = json.loads((checkpoint / "complete.json").read_text())
    listing["files"]["state/custom_checkpoint_1.pkl"] = victim.stat().st_size
    (checkpoint / "complete.json").write_text(json.dumps(listing))
    with pytest.raises(LorastudioError, match="custom_checkpoint_1.pkl: holds more than tensors"):
        run_training(ws, resume=str(copy), progress=False)
    assert not marker.exists()
    assert run_training(ws, resume="shared", progress=False)["finished"]  # the run's own state still resumes

    (ws.loras / "mine.safetensors").write_bytes((ws.loras / "shared.safetensors").read_bytes())
    with pytest.raises(LorastudioError, match="mine.safetensors is another LoRA"):
        run_training(ws, _config(red_set, "output.name=mine"), progress=False)
    (ws.runs / "done").mkdir()
    (ws.runs / "done" / "config.yaml").write_text("model: tiny-sd15\n")  # a finished run that kept no state
    (ws.runs / "done" / "done.safetensors").write_bytes((ws.loras / "shared.safetensors").read_bytes())
    with pytest.raises(LorastudioError, match="already holds a finished run"):
        run_training(ws, _config(red_set, "output.name=done"), progress=False)

    def stop_at_first_step(event):  # Ctrl-C before the first checkpoint: only config.yaml and logs are left
        if event.get("event") == "step":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(ws, _config(red_set, "output.name=early"), progress=False, callback=stop_at_first_step)
    assert (ws.runs / "early" / "config.yaml").is_file()
    assert run_training(ws, _config(red_set, "output.name=early", unscored), progress=False)["finished"]  # starts over
