"""A run's files: presets as a user starts them, checked library copies, atomic checkpoints,
`output.keep_last`, save precision and the kohya metadata of what was trained."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lorastudio.errors import LorastudioError
from lorastudio.service.training import run_training
from lorastudio.train.config import preset_names
from lorastudio.train.outputs import atomic_file, copy_to_library, output_targets
from training_helpers import tiny_train_config, write_images

pytestmark = pytest.mark.slow  # trains every preset end to end (~40 s)

TRIGGER = "mira"


@pytest.fixture
def ws(workspace, tiny_models_dir):
    for name in ("tiny-sd15", "tiny-sdxl"):
        (workspace.models / name).symlink_to(tiny_models_dir / name, target_is_directory=True)
    return workspace


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "mira", [((200, 40 + 20 * i, 60), f"{TRIGGER}, red") for i in range(4)])


def _cli(*args: str) -> dict:
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    _register()
    result = CliRunner().invoke(app, ["train", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- presets as the README starts them ------------------------------------------------------
PRESET_MODELS = {"sdxl-character": "tiny-sdxl"}
PRESET_SIZES = {"sdxl-character": 1024}
# The tiny models' layers are 32 wide: portrait's rank 128 cannot fit them (a real model takes it).
TINY_MODEL_LIMITS = {"portrait": ("lora.rank=32", "lora.alpha=16")}


@pytest.mark.parametrize("preset", [p for p in preset_names() if p != "dreambooth"])
def test_every_preset_with_model_data_and_trigger_gives_a_lora_and_a_separate_embedding(
    ws, tmp_path, monkeypatch, preset
):
    """`train --preset P model=… data.dir=… trigger=mira`: nothing else set, as in the README."""
    from lorastudio.train.config import read_preset

    size = PRESET_SIZES.get(preset, 512)  # the preset's own resolution: no override
    data = write_images(tmp_path / "set", [((200, 40 + 20 * i, 60), "red, smiling") for i in range(2)], size)
    # The presets' budgets are hundreds of steps; the test only needs the files.
    monkeypatch.setattr("lorastudio.train.plan.budget_steps", lambda *args, **kwargs: (1, "1 step (test)"))
    model = PRESET_MODELS.get(preset, "tiny-sd15")
    result = _cli(
        "--preset", preset, f"model={model}", f"data.dir={data}", f"trigger={TRIGGER}", *TINY_MODEL_LIMITS.get(preset, ())
    )

    run_dir = Path(result["run_dir"])
    assert result["name"] == TRIGGER  # the run is named after its trigger, the case that broke
    lora_path = Path(result["library_lora"])
    assert lora_path == ws.loras / f"{TRIGGER}.safetensors"
    lora = load_file(lora_path)
    assert any(k.startswith("lora_unet_") and k.endswith((".lora_down.weight", ".hada_w1_a")) for k in lora)
    with safe_open(lora_path, framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_network_train_unet_only"] == "True"
    assert "ss_text_encoder_lr" not in meta  # no text-encoder LoRA, so no text-encoder rate
    trains_embedding = read_preset(preset)["method"] == "pivotal"
    if trains_embedding:
        embedding_path = Path(result["library_embedding"])
        assert embedding_path == ws.embeddings / f"{TRIGGER}.safetensors"
        keys = set(load_file(embedding_path))
        assert keys == ({"clip_l", "clip_g"} if model == "tiny-sdxl" else {"emb_params"})
        assert (run_dir / "embeddings" / f"{TRIGGER}.safetensors").is_file()
        assert any(k.startswith(f"bundle_emb.{TRIGGER}.") for k in lora)
    else:
        assert "library_embedding" not in result
        assert not (run_dir / "embeddings").exists()
    assert set(load_file(run_dir / f"{TRIGGER}.safetensors")) == set(lora)


def test_dreambooth_preset_names_the_missing_key_then_writes_a_checked_model(ws, tmp_path, monkeypatch):
    data = write_images(tmp_path / "set", [((200, 60, 60), "red")], 512)
    with pytest.raises(LorastudioError, match="prior.class_prompt"):
        from lorastudio.train.config import load_train_config

        load_train_config(preset="dreambooth", overrides=["model=tiny-sd15", f"data.dir={data}", "trigger=mira"])
    classes = write_images(tmp_path / "dogs", [((90, 90, 200), "a photo of a dog")], 512)
    monkeypatch.setattr("lorastudio.train.plan.budget_steps", lambda *args, **kwargs: (1, "1 step (test)"))
    result = _cli(
        "--preset",
        "dreambooth",
        "model=tiny-sd15",
        f"data.dir={data}",
        f"trigger={TRIGGER}",
        "prior.class_prompt=a photo of a dog",
        f"prior.class_dir={classes}",
    )
    model = Path(result["library_model"])
    assert model == ws.models / f"{TRIGGER}.safetensors"
    with safe_open(model, framework="pt") as handle:
        key = next(k for k in handle.keys() if k.startswith("model.diffusion_model."))
        assert handle.get_tensor(key).dtype == torch.float16  # output.save_precision default


# -- what enters the library ----------------------------------------------------------------
def test_outputs_of_a_run_named_after_its_trigger_are_separate_files(tmp_path):
    targets = output_targets(tmp_path, TRIGGER, TRIGGER, full_model=False, lora=True, embedding=True)
    assert targets == {
        "lora": tmp_path / f"{TRIGGER}.safetensors",
        "embedding": tmp_path / "embeddings" / f"{TRIGGER}.safetensors",
    }


def test_embeddings_of_older_runs_are_found_unless_they_are_the_lora_itself(tmp_path):
    from lorastudio.train.outputs import find_embedding

    (tmp_path / f"{TRIGGER}.safetensors").write_bytes(b"x")
    assert find_embedding(tmp_path, TRIGGER, "other-name") == tmp_path / f"{TRIGGER}.safetensors"
    assert find_embedding(tmp_path, TRIGGER, TRIGGER) is None  # that file is the (overwritten) LoRA
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "embeddings" / f"{TRIGGER}.safetensors").write_bytes(b"x")
    assert find_embedding(tmp_path, TRIGGER, TRIGGER) == tmp_path / "embeddings" / f"{TRIGGER}.safetensors"


def test_output_targets_refuse_two_outputs_on_one_path(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "lorastudio.train.outputs.embedding_file", lambda folder, trigger: folder / f"{trigger}.safetensors"
    )
    with pytest.raises(LorastudioError, match="same file; set output.name"):
        output_targets(tmp_path, TRIGGER, TRIGGER, full_model=False, lora=True, embedding=True)


def _lora_tensors() -> dict[str, torch.Tensor]:
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    return {
        f"{name}.lora_down.weight": torch.ones(2, 32),
        f"{name}.lora_up.weight": torch.ones(32, 2),
        f"{name}.alpha": torch.tensor(1.0),
    }


def test_the_trainer_writes_only_into_its_run_folder(ws, images, monkeypatch):
    """Without `service.training.publish` nothing reaches loras/, models/ or embeddings/."""
    library = (ws.models, ws.loras, ws.embeddings)
    before = {folder: sorted(folder.iterdir()) for folder in library}
    calls = []
    monkeypatch.setattr("lorastudio.service.training.publish", lambda *args: calls.append(args) or {})
    cfg = tiny_train_config(images, TRIGGER, "method=pivotal", "train.steps=2", "output.name=alone")
    result = run_training(ws, cfg, progress=False, device="cpu")
    assert {folder: sorted(folder.iterdir()) for folder in library} == before
    run_dir = ws.runs / "alone"
    files = {"lora": run_dir / "alone.safetensors", "embedding": run_dir / "embeddings" / f"{TRIGGER}.safetensors"}
    assert result["lora"] == str(files["lora"]) and "library_lora" not in result
    assert len(calls) == 1 and calls[0][3:] == (files, 2, "final")  # the final files, published once
    assert all(path.is_file() for path in files.values())


def test_a_scorer_that_fails_leaves_the_final_files_in_the_library(ws, images, monkeypatch):
    """The run is trained and saved: a broken scorer reports its error, the LoRA is still usable."""

    def broken_scoring(*args, **kwargs):
        raise RuntimeError("CLIP folder is broken")

    monkeypatch.setattr("lorastudio.service.training._choose_checkpoint", broken_scoring)
    cfg = tiny_train_config(images, TRIGGER, "train.steps=2", "train.save_every_steps=1", "output.name=scored")
    with pytest.raises(RuntimeError, match="CLIP folder is broken"):
        run_training(ws, cfg, progress=False, device="cpu")
    assert (ws.loras / "scored.safetensors").read_bytes() == (ws.runs / "scored" / "scored.safetensors").read_bytes()


def test_two_writers_of_one_file_never_touch_each_others_half_written_copy(tmp_path):
    """Both ranks of a two-process run write the run's config.yaml (CI saw one rank's rename take
    the other's temporary file away): each write has its own temporary; the last rename wins whole."""
    target = tmp_path / "config.yaml"
    with atomic_file(target) as first:
        first.write_text("first", encoding="utf-8")
        with atomic_file(target) as second:
            assert second != first
            second.write_text("second", encoding="utf-8")
        assert first.read_text(encoding="utf-8") == "first" and target.read_text(encoding="utf-8") == "second"
    assert target.read_text(encoding="utf-8") == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_a_broken_file_is_never_copied_into_the_library(tmp_path):
    library = tmp_path / "loras" / "mira.safetensors"
    # The old defect: the embedding written over the LoRA.
    embedding_only = tmp_path / "overwritten.safetensors"
    save_file({"emb_params": torch.ones(2, 32)}, str(embedding_only))
    with pytest.raises(LorastudioError, match="not a LoRA file.*not copied to the library"):
        copy_to_library(embedding_only, library, "lora")
    bundle_only = tmp_path / "bundle.safetensors"
    save_file({f"bundle_emb.{TRIGGER}.string_to_param.*": torch.ones(2, 32)}, str(bundle_only))
    with pytest.raises(LorastudioError, match="holds no LoRA weights"):
        copy_to_library(bundle_only, library, "lora")
    copy_to_library(bundle_only, tmp_path / "emb-run.safetensors", "lora", expect_lora_keys=False, trigger=TRIGGER)
    good = tmp_path / "good.safetensors"
    save_file(_lora_tensors(), str(good))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(LorastudioError, match="does not load"):
        copy_to_library(truncated, library, "lora")
    with pytest.raises(LorastudioError, match="no embedding vectors|does not load"):
        copy_to_library(good, tmp_path / "embeddings" / "mira.safetensors", "embedding")
    assert not library.exists() and not list(tmp_path.glob("loras/.*"))
    copy_to_library(good, library, "lora")
    assert library.read_bytes() == good.read_bytes()
    copy_to_library(embedding_only, tmp_path / "embeddings" / "mira.safetensors", "embedding")


# -- save precision and metadata ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("precision", "dtype"),
    [(None, torch.float16), ("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)],
)
def test_lora_files_are_saved_in_output_save_precision(ws, images, precision, dtype):
    extra = [f"output.save_precision={precision}"] if precision else []
    cfg = tiny_train_config(
        images, TRIGGER, "train.steps=1", "lora.rank=2", "output.name=prec", "lora.type=loha", *extra
    )
    result = run_training(ws, cfg, progress=False)
    for path in (result["lora"], result["library_lora"]):
        tensors = load_file(path)
        assert any(".hada_w1_a" in k for k in tensors)
        assert {t.dtype for t in tensors.values()} == {dtype}, path


def test_text_encoder_lora_metadata_says_it_was_trained(ws, images):
    cfg = tiny_train_config(
        images,
        TRIGGER,
        "train.steps=1",
        "lora.rank=2",
        "lora.train_text_encoder=true",
        "train.text_encoder_lr=3e-5",
        "output.name=te",
    )
    result = run_training(ws, cfg, progress=False)
    with safe_open(result["library_lora"], framework="pt") as handle:
        meta = handle.metadata()
    assert meta["ss_network_train_unet_only"] == "False"
    assert meta["ss_text_encoder_lr"] == "3e-05" and meta["ss_unet_lr"] == "0.0001"


def test_kohya_folders_are_the_subsets_of_the_dataset_dirs_and_tag_frequency_metadata(ws, tmp_path):
    """kohya keys `ss_dataset_dirs` and `ss_tag_frequency` by each subset folder ("10_mira"), with its
    own repeats and counts (an uncaptioned image counts its folder's name, as kohya trains it);
    the same folders imported as a data set give the same keys."""
    from lorastudio.service.datasets import import_dataset

    root = tmp_path / "train"
    write_images(root / "3_mira", [((200, 40, 60), f"{TRIGGER}, red"), ((210, 40, 60), None)])
    write_images(root / "1_style", [((20, 40, 200), "blue, sky")])
    expected_dirs = {"3_mira": {"n_repeats": 3, "img_count": 2}, "1_style": {"n_repeats": 1, "img_count": 1}}
    expected_tags = {"3_mira": {TRIGGER: 2, "red": 1}, "1_style": {"blue": 1, "sky": 1}}
    import_dataset(ws, "kohya-set", [root])
    for name, data in (("raw", str(root)), ("imported", "kohya-set")):
        cfg = tiny_train_config(data, TRIGGER, "train.steps=1", "lora.rank=2", f"output.name={name}")
        with safe_open(run_training(ws, cfg, progress=False)["library_lora"], framework="pt") as handle:
            meta = handle.metadata()
        assert json.loads(meta["ss_dataset_dirs"]) == expected_dirs, name
        assert json.loads(meta["ss_tag_frequency"]) == expected_tags, name
        # kohya's shapes, which A1111's LoRA info dialog reads (an int per bucket emptied it)
        assert json.loads(meta["ss_bucket_info"]) == {
            "buckets": {"0": {"resolution": [64, 64], "count": 7}}, "mean_img_ar_error": 0.0
        }
        assert meta["ss_num_train_images"] == "7"  # images x repeats, as kohya counts them
        assert abs(float(meta["ss_training_started_at"]) - time.time()) < 600
    # data.repeats replaces every folder's repeats; the keys stay the folders' names, as kohya's
    cfg = tiny_train_config(str(root), TRIGGER, "train.steps=1", "lora.rank=2", "data.repeats=2", "output.name=twice")
    with safe_open(run_training(ws, cfg, progress=False)["library_lora"], framework="pt") as handle:
        dirs = json.loads(handle.metadata()["ss_dataset_dirs"])
    assert dirs == {"3_mira": {"n_repeats": 2, "img_count": 2}, "1_style": {"n_repeats": 2, "img_count": 1}}


def test_the_last_step_is_a_checkpoint_too_so_the_final_weights_can_be_chosen(ws, images):
    """steps=5 saving every 2: kohya saves the last model too; the final weights were never a
    candidate (the library got step 4 while the job said 5). A run with no earlier checkpoint
    saves none (its final files are the result)."""
    settings = ("train.steps=5", "train.save_every_steps=2", "lora.rank=2", "output.name=five")
    settings += ("scoring.steps=2",)  # the scored steps are asserted, not the contact sheet's pictures
    cfg = tiny_train_config(images, TRIGGER, *settings)
    run_training(ws, cfg, progress=False)
    saved = sorted(p.name for p in (ws.runs / "five" / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert saved == ["step-2", "step-4", "step-5"]
    scores = json.loads((ws.runs / "five" / "scores.json").read_text(encoding="utf-8"))
    assert [row["step"] for row in scores["rows"]] == [2, 4, 5]


# -- output.keep_last --------------------------------------------------------------------------
def test_keep_last_keeps_the_newest_checkpoints_and_the_best_scored_one(ws, images):
    cfg = tiny_train_config(
        images,
        TRIGGER,
        "train.steps=6",
        "train.save_every_steps=1",
        "lora.rank=2",
        "output.keep_last=2",
        "scoring.enabled=false",
        "output.name=kept",
    )
    run_dir = ws.runs / "kept"
    run_dir.mkdir(parents=True)
    (run_dir / "scores.json").write_text(json.dumps({"best_step": 2, "rows": []}), encoding="utf-8")
    run_training(ws, cfg, progress=False)
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["step-2", "step-5", "step-6"]


def test_kohya_save_last_n_epochs_becomes_keep_last(tmp_path):
    from lorastudio.train.kohya_config import import_kohya_config, kohya_train_config

    toml = tmp_path / "config.toml"
    toml.write_text('pretrained_model_name_or_path = "tiny-sd15"\nsave_last_n_epochs = 3\n', encoding="utf-8")
    imported = import_kohya_config(toml)
    assert kohya_train_config(imported).output.keep_last == 3


def test_an_exported_base_model_is_a_name_or_a_path_that_resolves_from_anywhere(tmp_path, monkeypatch):
    """A UNet-only export (Kolors) names its base: a relative path would only resolve where training ran."""
    from types import SimpleNamespace

    from lorastudio.models.loading import resolve_model
    from lorastudio.train.export import base_reference

    models = tmp_path / "models"
    for folder in (tmp_path / "runs-here" / "my-kolors", models / "kolors-v1.0"):
        folder.mkdir(parents=True)
        (folder / "model_index.json").write_text("{}")
    monkeypatch.chdir(tmp_path / "runs-here")

    def recorded(ref: str) -> str:
        where = resolve_model(ref, models)
        return base_reference(ref, SimpleNamespace(source=str(where.path), name=where.name), models)

    from_cwd = [recorded("./my-kolors"), recorded("my-kolors")]  # a folder beside the run, bare or not
    library = recorded("kolors-v1.0")
    monkeypatch.chdir(tmp_path)  # a later session, elsewhere
    for ref in from_cwd:
        assert resolve_model(ref, models).path == (tmp_path / "runs-here" / "my-kolors").resolve()
    assert library == "kolors-v1.0"  # a library name stays portable (a dotted one too)
    assert base_reference("tiny-kolors", SimpleNamespace(source="/x", name="tiny-kolors"), models) == "tiny-kolors"
    hub = SimpleNamespace(source="Kwai-Kolors/Kolors-diffusers", name="Kolors-diffusers")
    assert base_reference("Kwai-Kolors/Kolors-diffusers", hub, models) == "Kwai-Kolors/Kolors-diffusers"
