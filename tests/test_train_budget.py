"""Config layers and the step budget: a user's keys beat a preset's, --explain names each source,
kohya-style epochs (`train.max_epochs`, `train.save_every_epochs`) run and save as counted."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from lorastudio.errors import LorastudioError
from lorastudio.train.config import (
    TrainConfig,
    budget_steps,
    load_train_config,
    preset_names,
    request_train_config,
    resolve_train_config,
    saved_train_config,
)
from training_helpers import tiny_train_config, write_images

# What every preset needs besides its budget (dreambooth refuses to start without class images).
PRESET_NEEDS = {"dreambooth": ["prior.class_prompt=a photo of a dog"]}


def _preset(name: str, *overrides: str) -> TrainConfig:
    return load_train_config(preset=name, overrides=["trigger=mira", *PRESET_NEEDS.get(name, []), *overrides])


@pytest.mark.parametrize("name", preset_names())
def test_user_steps_are_the_step_count_under_every_preset(name):
    cfg = _preset(name, "train.steps=7")
    train = cfg.train
    assert (train.steps, train.epochs_per_image, train.max_epochs, train.max_steps_per_image) == (7, None, None, None)
    steps, why = budget_steps(cfg, num_images=3, num_samples=3)
    assert steps == 7, why  # not the preset's exposures per image, nor portrait's 200-per-photo cap


def test_preset_budget_stays_when_the_user_sets_none():
    assert budget_steps(_preset("character"), num_images=4, num_samples=4)[0] == 400  # 100 exposures x 4
    assert budget_steps(_preset("portrait"), num_images=3, num_samples=3)[0] == 600  # 800, capped 200/photo
    assert load_train_config().train.steps == 1000  # no layer sets a budget: the default


def test_two_budgets_in_one_layer_are_refused_in_one_line(tmp_path):
    with pytest.raises(LorastudioError) as info:
        _preset("character", "train.steps=50", "train.epochs_per_image=3")
    message = str(info.value)
    assert "\n" not in message and message.startswith("override:")
    assert "train.steps=50" in message and "train.epochs_per_image=3" in message and "drop one" in message
    file = tmp_path / "run.yaml"
    file.write_text("train:\n  steps: 50\n  max_epochs: 4\n", encoding="utf-8")
    with pytest.raises(LorastudioError, match=rf"file {file}: train.steps=50 and train.max_epochs=4"):
        load_train_config(file)
    # The API's request body is one layer too.
    with pytest.raises(ValidationError, match="train.steps and train.max_epochs both set"):
        TrainConfig.model_validate({"train": {"steps": 5, "max_epochs": 2}})


def test_a_higher_layer_replaces_a_lower_layers_budget(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("preset: portrait\ntrain:\n  epochs_per_image: 20\n", encoding="utf-8")
    resolved = resolve_train_config(file, ["trigger=anna"])
    train = resolved.config.train
    assert (train.steps, train.epochs_per_image, train.max_steps_per_image) == (None, 20, None)
    assert any(line.startswith("train.steps=800 (preset portrait) dropped") for line in resolved.dropped)
    assert any("train.max_steps_per_image=200 (preset portrait) dropped" in line for line in resolved.dropped)
    over = resolve_train_config(file, ["trigger=anna", "train.max_epochs=2"])
    assert (over.config.train.epochs_per_image, over.config.train.max_epochs) == (None, 2)
    assert over.sources["train.max_epochs"] == "override"
    # Explicit null unsets a preset's budget: the default step count applies.
    assert _preset("style", "train.epochs_per_image=null").train.steps == 1000


def test_save_every_epochs_replaces_the_presets_step_cadence():
    cfg = _preset("style", "train.save_every_epochs=2")
    assert (cfg.train.save_every_steps, cfg.train.save_every_epochs) == (None, 2)
    both = load_train_config(overrides=["train.save_every_epochs=2", "train.save_every_steps=10"])
    assert (both.train.save_every_steps, both.train.save_every_epochs) == (10, 2)  # kohya allows both
    assert load_train_config().train.save_every_steps == 500


def test_max_epochs_counts_batches_as_the_trainer_does():
    cfg = load_train_config(overrides=["train.max_epochs=3", "train.batch_size=2", "train.grad_accum=2"])
    steps, why = budget_steps(cfg, num_images=5, num_samples=10)
    assert steps == 8 and "3 epochs x 5 batches" in why  # ceil(3 x 5 batches / 2 per step)
    # One bucket per batch: 3 + 2 images in two buckets give 2 + 1 batches of 2, not ceil(5 / 2).
    steps, _ = budget_steps(cfg, num_images=5, num_samples=5, batches_per_epoch=3)
    assert steps == 5  # ceil(3 x 3 / 2)


def test_epoch_ends_inside_a_step_are_saved_at_that_step():
    from lorastudio.train.plan import ends_epoch

    # 3 batches an epoch, 2 per step (grad_accum 2): epochs end in steps 2 (batch 3) and 3 (batch 6).
    assert [s for s in range(1, 10) if ends_epoch(s, 2, 3)] == [2, 3, 5, 6, 8, 9]
    assert [s for s in range(1, 10) if ends_epoch(s, 2, 3, every=2)] == [3, 6, 9]
    assert [s for s in range(1, 7) if ends_epoch(s, 1, 2)] == [2, 4, 6]


def test_saved_configs_reload_old_and_new(tmp_path):
    old = tmp_path / "config.yaml"  # as runs saved it before train.steps could be empty
    old.write_text(
        yaml.safe_dump({"method": "lora", "train": {"steps": 1000, "epochs_per_image": 60.0, "batch_size": 2}}),
        encoding="utf-8",
    )
    assert saved_train_config(old).train.epochs_per_image == 60  # as it trained then
    new = _preset("style", "train.max_epochs=4")
    again = saved_train_config(json.loads(new.model_dump_json()))
    assert again == new and again.train.steps is None
    assert load_train_config(_dump(tmp_path, new)).train.max_epochs == 4  # a saved config is a valid --config


def _dump(tmp_path, cfg: TrainConfig):
    path = tmp_path / "saved.yaml"
    path.write_text(cfg.to_yaml(), encoding="utf-8")
    return path


def test_an_api_request_layers_over_its_preset():
    body = {"preset": "character", "trigger": "mira", "train": {"steps": 5, "learning_rate": 3e-4}}
    cfg = request_train_config(TrainConfig.model_validate(body))
    assert (cfg.method, cfg.train.steps, cfg.train.epochs_per_image) == ("pivotal", 5, None)
    assert cfg.train.learning_rate == 3e-4 and cfg.train.min_snr_gamma == 5.0  # request, then preset
    plain = request_train_config(TrainConfig.model_validate({"preset": "character", "trigger": "mira"}))
    assert plain.train.epochs_per_image == 100 and plain.train.steps is None
    with pytest.raises(LorastudioError, match="not a shipped preset"):
        request_train_config(TrainConfig.model_validate({"preset": "/etc/passwd.yaml"}))


def test_train_job_request_keeps_its_steps_under_a_preset(workspace):
    from fastapi.testclient import TestClient

    from lorastudio.api.app import create_app
    from lorastudio.service.studio import Studio, StudioSettings

    studio = Studio(workspace, StudioSettings())  # not started: the job stays queued
    try:
        (workspace.datasets / "set").mkdir()
        body = {"preset": "style", "model": "tiny-sd15", "data": {"dir": "set"}, "train": {"steps": 3}}
        response = TestClient(create_app(studio)).post("/api/v1/jobs/train", json=body)
        assert response.status_code == 200, response.text
        queued = studio.store.get(response.json()["id"]).payload["config"]
        assert queued["train"]["steps"] == 3 and queued["train"]["epochs_per_image"] is None
        assert queued["lora"]["targets"] == "locon"  # the rest of the preset applies
    finally:
        studio.close()


def _explained(output: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in output.splitlines():
        if " = " in line and "  <- " in line and not line.startswith("#"):
            key, rest = line.split(" = ", 1)
            value, source = rest.rsplit("  <- ", 1)
            rows[key.strip()] = (value.strip(), source.strip())
    return rows


def test_cli_explain_names_the_source_of_every_value(tiny_workspace, tmp_path):
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    file = tmp_path / "mine.yaml"
    file.write_text("lora:\n  rank: 8\n", encoding="utf-8")
    _register()
    result = CliRunner().invoke(
        app,
        ["train", "--preset", "character", "-c", str(file), "--explain", "trigger=mira", "train.steps=50"],
    )
    assert result.exit_code == 0, result.output
    rows = _explained(result.stdout)
    assert rows["train.min_snr_gamma"] == ("5.0", "preset character")
    assert rows["lora.rank"] == ("8", f"file {file}")
    assert rows["train.steps"] == ("50", "override")
    assert rows["train.epochs_per_image"] == ("null", "default")
    assert rows["train.weight_decay"] == ("0.01", "default")
    assert "# train.epochs_per_image=100 (preset character) dropped: override sets train.steps" in result.stdout
    assert "# plan: not checked (model: not set" in result.stdout
    data = write_images(tmp_path / "red", [((220, 30 + i, 30), "red") for i in range(3)])
    args = ["train", "--explain", "model=tiny-sd15", f"data.dir={data}", "data.repeats=2", "train.resolution=64"]
    planned = CliRunner().invoke(app, [*args, "train.batch_size=2", "train.max_epochs=4"])
    assert planned.exit_code == 0, planned.output
    assert "# plan: 4 epochs x 3 batches of 2 (3 images, 6 with repeats) / 1 batches per step = 12 steps" in planned.stdout
    assert not any(tiny_workspace.runs.iterdir())  # nothing trained


def test_cli_explain_with_a_kohya_config(workspace, tmp_path):
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    toml = tmp_path / "kohya.toml"
    toml.write_text("max_train_epochs = 6\nsave_every_n_epochs = 2\nnetwork_dim = 4\n", encoding="utf-8")
    _register()
    result = CliRunner().invoke(app, ["train", "--kohya-config", str(toml), "--explain", "lora.alpha=2"])
    assert result.exit_code == 0, result.output
    rows = _explained(result.stdout)
    assert rows["train.max_epochs"] == ("6", f"kohya {toml}")
    assert rows["train.save_every_epochs"] == ("2", f"kohya {toml}")
    assert rows["train.save_every_steps"] == ("null", "default")  # epoch checkpoints only, as kohya
    assert rows["lora.alpha"] == ("2.0", "override")
    assert rows["train.steps"] == ("null", "default")


def test_max_epochs_run_and_checkpoint_at_epoch_boundaries(tiny_workspace, tmp_path, one_torch_thread):
    """3 images x 2 repeats at batch 2 = 3 batches an epoch: 2 epochs are 6 steps, saved at 3 and 6."""
    from lorastudio.service.training import run_training
    from lorastudio.train.steps import step_folders

    data = write_images(tmp_path / "red", [((220, 30 + i, 30), "red") for i in range(3)])
    cfg = tiny_train_config(
        data,
        "zqx",
        "data.repeats=2",
        "train.batch_size=2",
        "train.max_epochs=2",
        "train.save_every_epochs=1",
        "lora.rank=2",
        "scoring.enabled=false",
        "output.name=epochs",
    )
    result = run_training(tiny_workspace, cfg, progress=False)
    run = tiny_workspace.runs / "epochs"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert result["steps"] == 6 and [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in records] == [0, 0, 0, 1, 1, 1]
    assert [step for step, _ in step_folders(run / "checkpoints")] == [3, 6]


def test_cli_preset_with_user_steps_trains_that_many_steps(tiny_workspace, tmp_path, one_torch_thread):
    """README's recipe with train.steps: the character preset's 100 exposures per image do not win."""
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    data = write_images(tmp_path / "mira", [((30, 30 + i, 220), "mira, blue") for i in range(3)])
    _register()
    args = ["train", "--preset", "character", "model=tiny-sd15", f"data.dir={data}", "trigger=mira"]
    args += ["train.steps=2", "train.resolution=64", "train.mixed_precision=no", "lora.rank=2"]
    args += ["scoring.enabled=false", "output.name=mira_steps", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "config: train.epochs_per_image=100 (preset character) dropped: override sets train.steps" in result.output
    assert "plan: 2 steps" in result.output
    records = (tiny_workspace.runs / "mira_steps" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in records] == [1, 2]


def test_kohya_yaml_keeps_the_command_lines_budget_over_the_files(workspace, tmp_path):
    """--write-yaml holds imported keys and overrides as one file: one budget, loadable as --config."""
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    toml = tmp_path / "kohya.toml"
    toml.write_text("max_train_epochs = 10\nsave_every_n_epochs = 2\nnetwork_dim = 4\n", encoding="utf-8")
    mine = tmp_path / "mine.yaml"
    _register()
    args = ["train", "--kohya-config", str(toml), "--dry-run", "--write-yaml", str(mine), "train.steps=30"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(mine.read_text(encoding="utf-8"))
    assert written["train"] == {"steps": 30, "save_every_epochs": 2}
    again = load_train_config(mine)
    assert (again.train.steps, again.train.max_epochs, again.train.save_every_epochs) == (30, None, 2)


def test_resume_refuses_settings_it_would_ignore(tiny_workspace):
    """`--resume RUN` trains with the run's own config.yaml: a setting beside it (train.steps=8 to
    train longer, a preset, a file) was silently ignored; it is refused before anything runs."""
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    _register()
    for extra in (["train.steps=8"], ["--preset", "style"]):
        result = CliRunner().invoke(app, ["train", "--resume", "some-run", *extra])
        assert result.exit_code == 2 and "would be ignored" in result.output, result.output
