"""Training steps that do not wait on the GPU: pinned async copies, losses read a step late."""

from __future__ import annotations

import pytest
import torch

from lorastudio.train.async_steps import LaggedReadout, to_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_values_are_read_at_once_in_order():
    readout = LaggedReadout()
    assert readout.push(1, torch.tensor(0.5)) == [(1, 0.5)]
    assert readout.push((2, 1e-4), torch.tensor(0.25)) == [((2, 1e-4), 0.25)]
    assert readout.flush() == []


def test_to_device_on_a_cpu_is_the_plain_copy():
    tensor = torch.arange(6.0).view(2, 3)
    moved = to_device(tensor, "cpu")
    assert moved is tensor  # nothing to copy


class _OneStepLate(LaggedReadout):
    """A CPU stand-in for the CUDA lag: every value is read when the next one comes (or at a flush)."""

    def push(self, tag, value):
        self._pending.append((tag, value.detach().clone(), None))
        ready = []
        while len(self._pending) > 1:
            ready.append(self._read(self._pending.popleft()))
        return ready


@pytest.mark.slow
def test_a_lagged_loss_logs_each_step_once_with_its_own_learning_rate(workspace, tiny_models_dir, tmp_path, monkeypatch):
    """Read a step late (as on a GPU), the log, the events and the checkpoints are those of a plain run."""
    import json

    from lorastudio.service.training import run_training
    from lorastudio.train import trainer
    from training_helpers import tiny_train_config, write_images

    (workspace.models / "tiny-sd15").symlink_to(tiny_models_dir / "tiny-sd15", target_is_directory=True)
    data = write_images(tmp_path / "red", [((230, 20 + i, 25), "zqx") for i in range(4)])
    settings = ("train.steps=5", "train.save_every_steps=2", "lora.rank=4", "seed=3", "train.lr_warmup_steps=3")
    settings += ("scoring.enabled=false",)  # the logs and events are compared, not the scores

    def run(name: str) -> tuple[list[dict], list[dict]]:
        events = []
        cfg = tiny_train_config(data, "zqx", *settings, f"output.name={name}")
        run_training(workspace, cfg, progress=False, callback=lambda e: events.append(e) if e.get("event") == "step" else None)
        log = [json.loads(line) for line in (workspace.runs / name / "log.jsonl").read_text().splitlines()]
        return log, [{k: e[k] for k in ("step", "loss", "lr")} for e in events]

    plain_log, plain_events = run("plain")
    monkeypatch.setattr(trainer, "LaggedReadout", _OneStepLate)
    lagged_log, lagged_events = run("lagged")
    assert [r["step"] for r in lagged_log] == [1, 2, 3, 4, 5]
    assert len({r["lr"] for r in lagged_log}) > 1  # warm-up: each step has its own rate
    assert lagged_log == plain_log and lagged_events == plain_events
    checkpoint = workspace.runs / "lagged" / "checkpoints" / "step-2"
    assert checkpoint.is_dir()


@cuda
def test_cuda_values_are_read_one_push_late_and_flushed():
    readout = LaggedReadout()
    values = [torch.tensor(float(i), device="cuda") * 2 for i in range(3)]
    assert readout.push(0, values[0]) == []  # still being computed: nothing read yet
    assert readout.push(1, values[1]) == [(0, 0.0)]
    assert readout.push(2, values[2]) == [(1, 2.0)]
    assert readout.flush() == [(2, 4.0)]


@cuda
def test_a_pinned_copy_does_not_synchronise():
    tensor = torch.randn(4, 8)
    torch.cuda.set_sync_debug_mode("error")
    try:
        moved = to_device(tensor, "cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(moved.cpu(), tensor)


@cuda
def test_a_cuda_training_step_waits_on_the_gpu_no_more(workspace, tiny_models_dir, tmp_path):
    """Between step events, no operation makes the host wait for the GPU (torch's sync debug mode)."""
    import warnings

    from lorastudio.service.training import run_training
    from training_helpers import tiny_train_config, write_images

    (workspace.models / "tiny-sd15").symlink_to(tiny_models_dir / "tiny-sd15", target_is_directory=True)
    data = write_images(tmp_path / "red", [((230, 20 + i, 25), "zqx") for i in range(4)])
    cfg = tiny_train_config(data, "zqx", "train.steps=8", "train.save_every_steps=1000", "output.name=nosync")

    def watch(event: dict) -> None:
        if event.get("event") == "step" and event["step"] == 3:  # after the first steps' set-up
            torch.cuda.set_sync_debug_mode("warn")
        if event.get("event") == "step" and event["step"] == 6:
            torch.cuda.set_sync_debug_mode("default")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run_training(workspace, cfg, progress=False, callback=watch, device="cuda")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchronizing" in str(w.message)]
    assert not syncs, syncs[:3]
