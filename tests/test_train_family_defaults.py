"""`train.resolution` left out follows the base model's native size (512 was the default for SDXL and Kolors too)."""

from __future__ import annotations

import json
import shutil

import pytest

from lorastudio.errors import LorastudioError
from lorastudio.service.training import explain_training, run_training
from lorastudio.train.config import resolve_train_config


def _explained(ws, *overrides: str, preset: str | None = None) -> str:
    resolved = resolve_train_config(overrides=[f"data.dir={ws.datasets}", *overrides], preset=preset)
    return next(line for line in explain_training(ws, resolved) if line.startswith("train.resolution "))


def test_explain_gives_the_family_native_size_and_says_so(tiny_workspace):
    ws = tiny_workspace
    sdxl = _explained(ws, "model=tiny-sdxl")
    assert " = 1024 " in sdxl and sdxl.endswith("<- default: SDXL native size (tiny-sdxl)")
    assert " = 1024 " in _explained(ws, "model=tiny-kolors") and "Kolors native size" in _explained(ws, "model=tiny-kolors")
    assert " = 512 " in _explained(ws, "model=tiny-sd15") and "SD 1.x native size" in _explained(ws, "model=tiny-sd15")
    assert " = 768 " in _explained(ws, "model=tiny-sd2") and "768-v" in _explained(ws, "model=tiny-sd2")
    explicit = _explained(ws, "model=tiny-sdxl", "train.resolution=256")
    assert " = 256 " in explicit and explicit.endswith("<- override")  # an explicit value still wins
    preset = _explained(ws, "model=tiny-sdxl", "trigger=zq", preset="character")
    assert " = 512 " in preset and "preset character" in preset  # and so does a preset's


def test_a_noise_predicting_sd2_model_trains_at_512(tiny_workspace):
    ws = tiny_workspace
    base = ws.models / "sd2-base"
    shutil.copytree(ws.models / "tiny-sd2", base, symlinks=False)
    scheduler = base / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "prediction_type": "epsilon"}))
    line = _explained(ws, "model=sd2-base")
    assert " = 512 " in line and "512-base" in line


def test_a_run_and_a_queued_job_train_at_the_native_size(tiny_workspace, monkeypatch):
    from lorastudio.service.names import STRICT
    from lorastudio.service.requests import RequestResolver
    from lorastudio.train import plan

    ws = tiny_workspace
    seen = []

    def stop(config, *args, **kwargs):
        seen.append(config.train.resolution)
        raise LorastudioError("planned")

    monkeypatch.setattr(plan, "prepare_plan", stop)
    for overrides in (["model=tiny-sdxl"], ["model=tiny-sdxl", "train.resolution=128"]):
        cfg = resolve_train_config(overrides=[*overrides, f"data.dir={ws.datasets}", "output.name=x"]).config
        with pytest.raises(LorastudioError, match="planned"):
            run_training(ws, cfg, progress=False)
    assert seen == [1024, 128]
    (ws.datasets / "reds").mkdir()
    queued, _ = RequestResolver(ws, STRICT).train(resolve_train_config(overrides=["model=tiny-kolors", "data.dir=reds"]).config)
    assert queued.model_dump()["train"]["resolution"] == 1024  # the job payload holds it
    assert "resolution" not in queued.train.model_fields_set  # derived, not posing as the user's key


def test_a_bucket_limit_below_the_native_size_is_one_line(tiny_workspace):
    cfg = resolve_train_config(overrides=["model=tiny-sdxl", "data.max_bucket_reso=768", "output.name=y"]).config
    with pytest.raises(LorastudioError, match="max_bucket_reso 768 is below train.resolution 1024.*SDXL native"):
        run_training(tiny_workspace, cfg, progress=False)
