"""Checkpoint choice after training: score table, best checkpoint, contact sheet, override, CLI."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from lorastudio.service import training
from lorastudio.service.training import pick_training_checkpoint, run_training
from lorastudio.train import outputs
from lorastudio.train.config import load_train_config
from lorastudio.train.scoring import score_run

# One training run shared by every test, and the tests build on each other's picks (~7 s).
pytestmark = pytest.mark.slow

TRIGGER = "zqx"
PUBLISHED: list[dict] = []  # publish calls of the training run below (files, step, by)
COPIED: list = []  # every destination copy_to_library wrote during that run


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_models_dir):
    """One pivotal run with 3 checkpoints, scored by the training hook (shared by the tests)."""
    from lorastudio.service.workspace import Workspace

    root = tmp_path_factory.mktemp("scoring")
    ws = Workspace.open(root / "studio")
    (ws.models / "tiny-sd15").symlink_to(tiny_models_dir / "tiny-sd15", target_is_directory=True)
    images = root / "red"
    images.mkdir()
    for i in range(6):
        Image.new("RGB", (64, 64), (230, 20 + 10 * i, 25)).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text(f"{TRIGGER}, red square", encoding="utf-8")
    cfg = load_train_config(
        overrides=[
            "model=tiny-sd15",
            f"data.dir={images}",
            f"trigger={TRIGGER}",
            "method=pivotal",
            "train.resolution=64",
            "train.steps=6",
            "train.save_every_steps=2",
            "train.learning_rate=2e-2",
            "lora.rank=4",
            "seed=5",
            "train.mixed_precision=no",
            "output.name=scored",
            "scoring.steps=3",
        ]
    )
    real_publish, real_copy = training.publish, outputs.copy_to_library

    def publish(ws, run_dir, cfg, files, step, by):
        PUBLISHED.append({"files": dict(files), "step": step, "by": by})
        return real_publish(ws, run_dir, cfg, files, step, by)

    def copy_to_library(source, destination, *args, **kwargs):
        COPIED.append(destination)
        return real_copy(source, destination, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "publish", publish)
        patch.setattr(outputs, "copy_to_library", copy_to_library)
        result = run_training(ws, cfg, progress=False, device="cpu")
    return ws, result


def test_training_scores_three_checkpoints_and_copies_the_lowest_loss(trained):
    ws, result = trained
    table = json.loads((ws.runs / "scored" / "scores.json").read_text())
    assert [row["step"] for row in table["rows"]] == [2, 4, 6]
    assert sum(row["best"] for row in table["rows"]) == 1
    losses = {row["step"]: row["scores"]["validation_loss"] for row in table["rows"]}
    best = min(losses, key=losses.get)
    assert table["best_step"] == best == result["best_step"]
    assert table["decided_by"] == "validation_loss"
    assert table["result_step"] == best and table["picked_by"] == "score"
    assert "training images (no held-out set" in table["validation_set"]
    checkpoint = ws.runs / "scored" / "checkpoints" / f"step-{best}"
    assert (ws.loras / "scored.safetensors").read_bytes() == (checkpoint / "scored.safetensors").read_bytes()
    assert (ws.embeddings / f"{TRIGGER}.safetensors").read_bytes() == (
        checkpoint / "embeddings" / f"{TRIGGER}.safetensors"
    ).read_bytes()


def test_training_with_scoring_publishes_once_the_best_checkpoint(trained):
    ws, result = trained
    best = result["best_step"]
    checkpoint = ws.runs / "scored" / "checkpoints" / f"step-{best}"
    assert PUBLISHED == [
        {
            "files": {
                "lora": checkpoint / "scored.safetensors",
                "embedding": checkpoint / "embeddings" / f"{TRIGGER}.safetensors",
            },
            "step": best,
            "by": "score",
        }
    ]
    assert [p for p in COPIED if p.parent == ws.loras] == [ws.loras / "scored.safetensors"]  # one write
    assert sorted(p.name for p in ws.loras.iterdir()) == ["scored.safetensors"]


def test_the_summary_names_the_checkpoint_that_became_the_lora(trained):
    """The CLI said only `lora: …/loras/scored.safetensors`; scores.json knew the best step."""
    from types import SimpleNamespace

    from lorastudio.cli.train import checkpoint_summary
    from lorastudio.service.job_steps import json_ready
    from lorastudio.ui.i18n import translator
    from lorastudio.ui.tabs.train import _done_text

    ws, result = trained
    best = result["best_step"]
    job_result = json_ready(result)  # what the train job stores: GET /api/v1/jobs/{id} shows it
    assert (job_result["result_step"], job_result["picked_by"], job_result["decided_by"]) == (best, "score", "validation_loss")
    assert checkpoint_summary(result) == (
        f"best checkpoint: step {best} by validation_loss ({ws.runs / 'scored' / 'scores.json'})"
    )
    ctx = SimpleNamespace(t=translator("en"))
    assert f"best checkpoint: step {best} (by validation_loss)" in _done_text(ctx, job_result, "scored")
    assert f"第 {best} 步" in _done_text(SimpleNamespace(t=translator("zh")), job_result, "scored")


def test_contact_sheet_is_checkpoints_by_prompts(trained):
    ws, _ = trained
    table = json.loads((ws.runs / "scored" / "scores.json").read_text())
    assert table["prompts"] == [TRIGGER, f"{TRIGGER}, red square"]
    with Image.open(ws.runs / "scored" / "checkpoints.png") as sheet:
        assert sheet.size == (2 * 256, 3 * (256 + 28))


def test_clip_scorer_is_skipped_with_a_reason_without_a_model(trained):
    ws, _ = trained
    table = json.loads((ws.runs / "scored" / "scores.json").read_text())
    assert "clip_similarity" not in table["scorers"]
    assert "scoring.clip_model" in table["skipped"]["clip_similarity"]


def test_scoring_again_gives_the_same_numbers_and_pick_overrides(trained):
    ws, _ = trained
    first = json.loads((ws.runs / "scored" / "scores.json").read_text())
    again = score_run(ws, "scored", scorers=["validation_loss"])
    assert [r["scores"] for r in again["rows"]] == [r["scores"] for r in first["rows"]]
    other = next(r["step"] for r in again["rows"] if not r["best"])
    picked = pick_training_checkpoint(ws, "scored", other)
    checkpoint = ws.runs / "scored" / "checkpoints" / f"step-{other}"
    assert (ws.loras / "scored.safetensors").read_bytes() == (checkpoint / "scored.safetensors").read_bytes()
    assert picked["step"] == other
    table = json.loads((ws.runs / "scored" / "scores.json").read_text())
    assert table["result_step"] == other and table["picked_by"] == "user"
    # Renamed in the library (its run follows it), then another checkpoint picked: the renamed file
    # is replaced; no second LoRA under the run's first name appears.
    from lorastudio.service.loras import list_loras, rename_lora

    rename_lora(ws, "scored", "surtr_v1")
    best = next(r["step"] for r in again["rows"] if r["best"])
    pick_training_checkpoint(ws, "scored", best)
    checkpoint = ws.runs / "scored" / "checkpoints" / f"step-{best}"
    assert (ws.loras / "surtr_v1.safetensors").read_bytes() == (checkpoint / "scored.safetensors").read_bytes()
    assert [row["name"] for row in list_loras(ws)] == ["surtr_v1"]
    rename_lora(ws, "surtr_v1", "scored")  # as the module's other tests expect it


def test_cli_pick_and_errors(trained, monkeypatch):
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    ws, _ = trained
    monkeypatch.setenv("LORASTUDIO_HOME", str(ws.root))
    _register()
    runner = CliRunner()
    done = runner.invoke(app, ["train", "pick", "scored", "4", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout.strip().splitlines()[-1])["step"] == 4
    checkpoint = ws.runs / "scored" / "checkpoints" / "step-4"
    assert (ws.loras / "scored.safetensors").read_bytes() == (checkpoint / "scored.safetensors").read_bytes()
    missing = runner.invoke(app, ["train", "pick", "scored", "5"])
    assert missing.exit_code != 0 and "saved steps: 2, 4, 6" in missing.output
    scored = runner.invoke(app, ["train", "score", "scored", "--json"])
    assert scored.exit_code == 0, scored.output
    table = json.loads(scored.stdout.strip().splitlines()[-1])
    assert len(table["rows"]) == 3 and table["best_step"] in (2, 4, 6)
    assert runner.invoke(app, ["train", "score"]).exit_code != 0
    presets = runner.invoke(app, ["train", "presets", "--json"])
    assert presets.exit_code == 0 and json.loads(presets.stdout)["presets"]


def test_clip_similarity_runs_with_a_local_clip_vision_folder(trained, tmp_path):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    ws, _ = trained
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(config).save_pretrained(tmp_path / "clip")
    (tmp_path / "clip" / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "size": {"shortest_edge": 32},
                "crop_size": {"height": 32, "width": 32},
                "do_center_crop": True,
                "do_normalize": True,
                "do_resize": True,
                "do_rescale": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            }
        )
    )
    table = score_run(
        ws, "scored", scorers=["clip_similarity", "validation_loss"], clip_model=str(tmp_path / "clip")
    )
    assert table["decided_by"] == "clip_similarity" and not table["skipped"]
    sims = [row["scores"]["clip_similarity"] for row in table["rows"]]
    assert all(-1.0 <= s <= 1.0 for s in sims)
    assert table["best_step"] == table["rows"][sims.index(max(sims))]["step"]
    assert table["result_step"] == 4 and table["picked_by"] == "user"  # the earlier pick is kept
