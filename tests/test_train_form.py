"""The Train tab's service side without a browser: preset values, the request a form sends,
a run folder read while it trains, and resuming a cancelled training job."""

from __future__ import annotations

import json

import pytest

from lorastudio.errors import LorastudioError
from lorastudio.service.train_runs import form_keys, preset_values, run_progress, train_request, training_eta
from lorastudio.train.config import request_train_config


def test_the_form_has_every_config_key_and_the_preset_fills_it():
    keys = form_keys()
    assert {"model", "train.learning_rate", "lora.rank", "samples.prompts", "scoring.enabled"} <= set(keys)
    assert "preset" not in keys and "train" not in keys  # sections are walked, not shown as one box
    plain = preset_values(None)
    assert plain["train.learning_rate"] == 1e-4 and plain["method"] == "lora" and plain["samples.prompts"] == []
    character = preset_values("character")
    assert character["method"] == "pivotal" and character["train.epochs_per_image"] == 100
    with pytest.raises(LorastudioError, match="not a shipped preset"):
        preset_values("/etc/passwd")


def test_the_request_holds_only_what_the_user_changed_so_the_preset_layers_under_it():
    values = preset_values("character")
    values.update({"trigger": "zq", "train.steps": 7, "data.dir": "reds"})
    request = train_request("character", values)
    assert request.model_dump(exclude_unset=True) == {
        "trigger": "zq",
        "data": {"dir": "reds"},
        "train": {"steps": 7},
        "preset": "character",
    }
    resolved = request_train_config(request)  # what Studio.submit_train does
    # the user's steps replace the preset's epochs_per_image; the rest is the preset's
    assert (resolved.train.steps, resolved.train.epochs_per_image) == (7, None)
    assert (resolved.method, resolved.lora.rank, resolved.train.lr_warmup_steps) == ("pivotal", 16, 50)


def test_a_refused_form_names_the_key():
    values = preset_values(None)
    values["train.learning_rate"] = -1.0
    with pytest.raises(LorastudioError, match="train.learning_rate"):
        train_request(None, values)
    with pytest.raises(LorastudioError, match="no_such"):
        train_request(None, {"train.no_such": 1})


def test_run_progress_reads_the_log_samples_and_scores_of_a_run(workspace):
    run = workspace.runs / "小红"
    (run / "samples" / "step-2").mkdir(parents=True)
    (run / "samples" / "step-4").mkdir()
    for step in (2, 4):
        (run / "samples" / f"step-{step}" / "0.png").write_bytes(b"png")
    lines = [json.dumps({"step": 1, "loss": 0.5}), json.dumps({"step": 2, "loss": 0.25}), '{"step": 3, "lo']
    (run / "log.jsonl").write_text("\n".join(lines), encoding="utf-8")  # the last line is being written
    table = {"scorers": {"clip": {}}, "rows": [{"step": 2, "scores": {"clip": 0.3}}], "best_step": 2}
    (run / "scores.json").write_text(json.dumps(table), encoding="utf-8")
    state = run_progress(workspace, "小红")
    assert state["loss"] == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
    assert [label for _, label in state["samples"]] == ["step 4", "step 2"]  # newest first
    assert state["scorers"] == ["clip"] and state["best_step"] == 2 and state["result_step"] is None
    with pytest.raises(LorastudioError):
        run_progress(workspace, "../outside")


def test_training_eta_follows_the_pace_so_far():
    class Job:
        progress, started_at = 0.25, 100.0

    assert training_eta(Job(), now=110.0) == pytest.approx(30.0)
    Job.progress = 0.0
    assert training_eta(Job(), now=110.0) is None


def test_only_a_cancelled_or_failed_training_job_resumes_and_it_keeps_its_run(workspace):
    from lorastudio.service.studio import Studio, StudioSettings

    studio = Studio(workspace, StudioSettings())  # not started: jobs stay queued
    try:
        payload = {"config": {"model": "tiny-sd15", "data": {"dir": "reds"}}, "run": "小红"}
        job = studio.submit("train", payload, user="ann")
        with pytest.raises(LorastudioError, match="only a cancelled or failed"):
            studio.resume_train(job.id, user="ann")
        studio.cancel_job(job.id)
        with pytest.raises(LorastudioError, match="another user's training run"):
            studio.resume_train(job.id, user="bob")  # Ann's run folder, Bob's quota: refused
        again = studio.resume_train(job.id, user="ann")
        assert again.id != job.id and again.kind == "train" and again.user == "ann"
        assert again.payload == payload and again.state == "queued"
        with pytest.raises(LorastudioError, match="another user's job"):
            studio.cancel_job(again.id, user="")  # an unnamed token is a caller too
        studio.cancel_job(again.id, user=None)  # auth off: whoever runs the studio may cancel ...
        anyone = studio.resume_train(again.id, user=None)  # ... and resume, under the run owner's name
        assert anyone.user == "ann" and anyone.state == "queued"
    finally:
        studio.close()


def test_a_purged_jobs_run_resumes_and_picks_by_its_run_name(workspace, monkeypatch):
    """The Train tab still shows a run whose job record `jobs purge` deleted: Resume and "Use this
    checkpoint" find the run by its folder name, as `train --resume RUN` does."""
    from lorastudio.service import training
    from lorastudio.service.retention import purge_jobs
    from lorastudio.service.studio import Studio, StudioSettings
    from lorastudio.service.train_runs import pick_training, resume_training
    from lorastudio.train.config import TrainConfig

    studio = Studio(workspace, StudioSettings())  # not started: jobs stay queued
    try:
        cfg = TrainConfig.model_validate({"model": "tiny-sd15", "data": {"dir": "reds"}, "output": {"name": "小红"}})
        run_dir = workspace.runs / "小红"
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        job = studio.submit("train", {"config": cfg.model_dump(mode="json"), "run": "小红"}, user="ann")
        studio.cancel_job(job.id)
        purge_jobs(workspace, studio.store, 0)
        with pytest.raises(LorastudioError, match="not found"):
            studio.resume_train(job.id, user="ann")  # what the tab said before
        with pytest.raises(LorastudioError, match="no saved checkpoint") as refused:
            resume_training(studio, job.id, "小红", user="ann")
        assert refused.value.key == "run_no_checkpoint"
        monkeypatch.setattr(training, "has_checkpoint", lambda ws, run: run == "小红")
        again = resume_training(studio, job.id, "小红", user="ann")
        assert again.kind == "train" and again.user == "ann" and again.state == "queued"
        assert again.payload["run"] == "小红" and again.payload["config"]["model"] == "tiny-sd15"
        with pytest.raises(LorastudioError, match="only a cancelled or failed"):  # its record now answers for the run
            resume_training(studio, job.id, "小红", user="ann")
        with pytest.raises(LorastudioError, match="another user's training run"):
            resume_training(studio, job.id, "小红", user="bob")
        studio.cancel_job(again.id)
        purge_jobs(workspace, studio.store, 0)
        picked = []
        monkeypatch.setattr(
            training, "pick_training_checkpoint", lambda ws, run, step, by: picked.append((run, step, by)) or {"step": step}
        )
        assert pick_training(studio, job.id, "小红", 20, user="ann") == {"step": 20}
        assert picked == [("小红", 20, "user")]
        with pytest.raises(LorastudioError, match="not found"):
            pick_training(studio, job.id, "", 20, user="ann")  # no run shown: the job's own answer
        (run_dir / "小红.safetensors").write_bytes(b"")  # its final files: the run ended
        with pytest.raises(LorastudioError, match="finished already"):
            resume_training(studio, job.id, "小红", user="ann")
    finally:
        studio.close()


def test_the_generated_form_reads_lists_mappings_and_empty_numbers_back_as_config_values():
    import gradio as gr

    from lorastudio.ui.config_form import build_config_form
    from lorastudio.ui.i18n import translator

    with gr.Blocks():
        form = build_config_form(translator("zh"), form_keys(), preset_values(None), ["model", "train.steps"])
    assert list(form.controls)[:2] == ["model", "train.steps"]  # basic keys first
    assert form.controls["model"].label == "底模" and form.controls["lora.conv_rank"].label == "卷积秩 (conv dim)"
    # tooltip: the YAML / CLI name, then the field's description
    assert form.controls["train.learning_rate"].info.startswith("train.learning_rate: Learning rate")
    submitted = {control: None for control in form.controls.values()}
    submitted.update({
        form.controls["samples.prompts"]: "a red square\n\n 小红, smiling ",
        form.controls["train.optimizer_args"]: '{"betas": [0.9, 0.99]}',
        form.controls["train.steps"]: 0,  # an empty optional number
        form.controls["lora.rank"]: 8.0,
    })  # fmt: skip
    values = form.read(submitted)
    assert values["samples.prompts"] == ["a red square", "小红, smiling"]
    assert values["train.optimizer_args"] == {"betas": [0.9, 0.99]}
    assert values["train.steps"] is None and values["lora.rank"] == 8 and isinstance(values["lora.rank"], int)
    submitted[form.controls["train.optimizer_args"]] = "betas=0.9"
    with pytest.raises(LorastudioError, match="train.optimizer_args: not JSON"):
        form.read(submitted)
