"""A kill at any point of a checkpoint save never breaks `--resume`, and resume stays bit-identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorastudio.service.training import run_training
from lorastudio.service.workspace import Workspace
from lorastudio.train import export as export_module
from lorastudio.train import trainer as trainer_module
from lorastudio.train.checkpoints import COMPLETE_MARKER
from training_helpers import tiny_train_config, write_images

pytestmark = pytest.mark.slow  # kills and resumes real training runs (~60 s)

TRIGGER = "mira"
SETTINGS = (
    "method=pivotal",  # LoRA + embedding: both outputs and both resume paths
    "train.steps=6",
    "train.save_every_steps=2",
    "lora.rank=2",
    "lora.alpha=1",
    "seed=5",
    "train.lr_scheduler=cosine",
    "train.lr_warmup_steps=1",
    "data.shuffle_tags=true",
    "data.flip=true",
    "scoring.enabled=false",
)
KILL_STEP = 4  # the second of the three saves (steps 2, 4, 6)


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the trainer catches it, no cleanup code runs after it."""


def _workspace(root: Path, tiny_models_dir: Path) -> Workspace:
    ws = Workspace.open(root)
    for name in ("tiny-sd15",):
        (ws.models / name).symlink_to(tiny_models_dir / name, target_is_directory=True)
    return ws


def _images(folder: Path) -> Path:
    return write_images(folder, [((210, 30 + 25 * i, 50), f"{TRIGGER}, red, round") for i in range(4)])


def _final_tensors(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    tensors = {f"lora/{k}": v for k, v in load_file(run_dir / f"{name}.safetensors").items()}
    embedding = run_dir / "embeddings" / f"{TRIGGER}.safetensors"
    tensors.update({f"embedding/{k}": v for k, v in load_file(embedding).items()})
    return tensors


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_models_dir):
    """The uninterrupted run every resumed run must equal, bit for bit."""
    root = tmp_path_factory.mktemp("straight")
    ws = _workspace(root / "studio", tiny_models_dir)
    cfg = tiny_train_config(_images(root / "images"), TRIGGER, *SETTINGS, "output.name=straight")
    run_training(ws, cfg, progress=False)
    return _final_tensors(ws.runs / "straight", "straight")


@pytest.fixture
def ws(tmp_path, tiny_models_dir):
    return _workspace(tmp_path / "studio", tiny_models_dir)


def _state_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _kill_in_state(keep_whole: int):
    """`accelerate.save_state` killed after `keep_whole` files, the next one half written."""
    real = trainer_module.Trainer._save_state

    def save_state(self, folder: Path) -> None:
        real(self, folder)
        if self.step != KILL_STEP:
            return
        files = _state_files(folder)
        assert keep_whole <= len(files), files
        for index, path in enumerate(files):
            if index == keep_whole:
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            elif index > keep_whole:
                path.unlink()
        raise Killed

    return "lorastudio.train.trainer.Trainer._save_state", save_state


def _kill_in_lora_file():
    """Killed while the LoRA file is being written (half a file on disk)."""
    real = export_module.save_lora

    def save_lora(lora_set, embedding, path, *args, **kwargs):
        real(lora_set, embedding, path, *args, **kwargs)
        if trainer_module_step[0] == KILL_STEP:
            path.write_bytes(path.read_bytes()[:100])
            raise Killed
        return path

    return "lorastudio.train.export.save_lora", save_lora


def _kill_in_embedding_file():
    real = export_module.save_embedding

    def save_embedding(embedding, path, *args, **kwargs):
        if trainer_module_step[0] == KILL_STEP:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x00" * 10)
            raise Killed
        return real(embedding, path, *args, **kwargs)

    return "lorastudio.train.export.save_embedding", save_embedding


def _kill_in_marker():
    """Every file written and fsynced, the marker half written, no rename yet."""
    from lorastudio.train import checkpoints

    real = checkpoints.publish_checkpoint

    def publish(partial: Path, final: Path, step: int) -> Path:
        if step == KILL_STEP:
            (partial / COMPLETE_MARKER).write_text('{"step": 4, "fil', encoding="utf-8")
            raise Killed
        return real(partial, final, step)

    return "lorastudio.train.saving.publish_checkpoint", publish


def _kill_after_rename():
    """The checkpoint is published; the kill comes while older states are pruned."""
    real = trainer_module.Trainer._prune_states

    def prune(self) -> None:
        if self.step == KILL_STEP:
            raise Killed
        real(self)

    return "lorastudio.train.trainer.Trainer._prune_states", prune


trainer_module_step = [0]  # the step being saved, for the module-level function patches

KILL_POINTS = {
    "lora-file": (_kill_in_lora_file, 2),
    "embedding-file": (_kill_in_embedding_file, 2),
    **{f"state-{k}-files": (lambda k=k: _kill_in_state(k), 2) for k in range(5)},
    "marker": (_kill_in_marker, 2),
    "after-rename": (_kill_after_rename, KILL_STEP),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_kill_during_a_save_resumes_from_the_last_complete_checkpoint(
    ws, tmp_path, monkeypatch, capsys, straight, point
):
    make_patch, resumed_from = KILL_POINTS[point]
    target, patched = make_patch()
    monkeypatch.setattr(target, patched)
    real_save = trainer_module.Trainer.save_checkpoint

    def save_checkpoint(self):
        trainer_module_step[0] = self.step
        return real_save(self)

    monkeypatch.setattr(trainer_module.Trainer, "save_checkpoint", save_checkpoint)
    cfg = tiny_train_config(_images(tmp_path / "images"), TRIGGER, *SETTINGS, "output.name=killed")
    with pytest.raises(Killed):
        run_training(ws, cfg, progress=False)
    monkeypatch.undo()
    checkpoints = ws.runs / "killed" / "checkpoints"
    published = sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith("."))
    assert published == sorted({"step-2", f"step-{resumed_from}"})

    capsys.readouterr()
    result = run_training(ws, resume="killed", progress=True)
    err = capsys.readouterr().err
    assert f"resumed from step-{resumed_from} " in err
    if resumed_from != KILL_STEP:
        assert f"removed .step-{KILL_STEP}.partial" in err
    assert result["finished"] and result["step"] == 6
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]  # leftovers cleaned
    _assert_identical(_final_tensors(ws.runs / "killed", "killed"), straight)
    steps = [json.loads(line)["step"] for line in (ws.runs / "killed" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_truncated_published_state_is_skipped_with_a_line(ws, tmp_path, capsys, straight):
    """A checkpoint damaged after it was written (a full disk, a copy cut short) is not resumed from."""
    cfg = tiny_train_config(_images(tmp_path / "images"), TRIGGER, *SETTINGS, "output.name=cut")
    run_training(ws, cfg, progress=False, stop_at_step=KILL_STEP)
    state = ws.runs / "cut" / "checkpoints" / f"step-{KILL_STEP}" / "state"
    victim = max(_state_files(state), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-64])
    capsys.readouterr()
    result = run_training(ws, resume="cut", progress=True)
    err = capsys.readouterr().err
    assert f"checkpoint step-{KILL_STEP}: skipped, incomplete: state/{victim.name} has" in err
    assert "resumed from step-2 " in err and result["step"] == 6
    _assert_identical(_final_tensors(ws.runs / "cut", "cut"), straight)


def test_a_real_sigkill_while_saving_resumes_bit_identically(ws, tmp_path, monkeypatch, straight):
    """`lorastudio train` SIGKILLed while a checkpoint folder is being written, then `--resume`.

    The killed run is this module's SETTINGS, so the uninterrupted `straight` run is its reference
    (a run in a process of its own gives the same bits at the same torch thread count). The resume
    is the CLI's `train --resume` in this process: only the kill needs a process of its own.
    """
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    data = _images(tmp_path / "images")
    threads = str(torch.get_num_threads())  # the straight run's: the same bits need the same count
    env = {**os.environ, "LORASTUDIO_HOME": str(ws.root), "OMP_NUM_THREADS": threads}
    args = [
        "model=tiny-sd15",
        f"data.dir={data}",
        f"trigger={TRIGGER}",
        "train.resolution=64",
        "train.mixed_precision=no",
        *SETTINGS,  # saves at steps 2, 4 and 6: the kill lands in the save of step 4 or 6
        "output.name=killed",
    ]
    checkpoints = ws.runs / "killed" / "checkpoints"
    command = [sys.executable, "-m", "lorastudio", "train", *args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    caught = None
    try:
        deadline = time.monotonic() + 300
        while caught is None and process.poll() is None and time.monotonic() < deadline:
            names = os.listdir(checkpoints) if checkpoints.is_dir() else []
            done = sum(name.startswith("step-") for name in names)
            partial = [name for name in names if name.endswith(".partial")]
            if done >= 1 and partial:  # a save after the first is under way: kill it there
                os.kill(process.pid, signal.SIGKILL)
                caught = partial[0]
            time.sleep(0.0005)
    finally:
        if process.poll() is None and caught is None:
            process.kill()
        process.wait()
    assert caught is not None, "the run ended before a save could be interrupted"
    assert process.returncode == -signal.SIGKILL

    monkeypatch.setenv("LORASTUDIO_HOME", str(ws.root))
    _register()
    cli = CliRunner().invoke(app, ["train", "--resume", "killed", "--json"])
    assert cli.exit_code == 0, cli.output
    resumed = json.loads(cli.stdout.strip().splitlines()[-1])
    assert resumed["finished"] and resumed["step"] == 6
    _assert_identical(_final_tensors(ws.runs / "killed", "killed"), straight)


@pytest.mark.parametrize(("damage", "said"), [("truncate", "is truncated"), ("remove", "is missing")])
def test_checkpoints_of_older_versions_have_their_state_files_checked(ws, tmp_path, capsys, straight, damage, said):
    """No marker (written before it existed): a whole state is resumed from, a damaged one skipped."""
    cfg = tiny_train_config(_images(tmp_path / "images"), TRIGGER, *SETTINGS, "output.name=old")
    run_training(ws, cfg, progress=False, stop_at_step=KILL_STEP)
    checkpoints = ws.runs / "old" / "checkpoints"
    for marker in checkpoints.glob(f"step-*/{COMPLETE_MARKER}"):
        marker.unlink()
    victim = checkpoints / f"step-{KILL_STEP}" / "state" / "custom_checkpoint_1.pkl"
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-30])
    else:
        victim.unlink()
    capsys.readouterr()
    result = run_training(ws, resume="old", progress=True)
    err = capsys.readouterr().err
    assert f"checkpoint step-{KILL_STEP}: skipped, incomplete: no {COMPLETE_MARKER}, and state/{victim.name} {said}" in err
    assert "resumed from step-2 " in err and result["step"] == 6
    _assert_identical(_final_tensors(ws.runs / "old", "old"), straight)


def test_a_whole_unet_run_without_room_for_one_checkpoint_stops_before_training(tmp_path, monkeypatch):
    from collections import namedtuple

    from lorastudio.errors import LorastudioError
    from lorastudio.train import checkpoints

    usage = namedtuple("usage", "total used free")
    weights = [torch.zeros(1000)]  # 4 kB fp32; a checkpoint needs 4 copies + the model file: 20 kB
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda _: usage(0, 0, 19_000))
    with pytest.raises(LorastudioError, match="MiB free"):
        checkpoints.check_checkpoint_space(tmp_path / "run", weights, weights, ema=True)
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda _: usage(0, 0, 21_000))
    checkpoints.check_checkpoint_space(tmp_path / "run", weights, weights, ema=True)
