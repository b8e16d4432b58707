"""What a training run writes while it trains: checkpoints, sample images and the run's files.

A checkpoint is the run's files and `accelerate`'s resumable state in `checkpoints/step-N/`,
written into a hidden `.step-N.partial/` and renamed once complete (`train.checkpoints`), then
pruned to `train.keep_states` / `output.keep_last`. Kept apart from `train.trainer` so the
loop reads on one page: `SavingMixin` is a part of `Trainer` and reads what the trainer sets up
(`cfg`, `name`, `paths`, `run_dir`, `step`, `total_steps`, `accelerator`, `model`, `images`,
`schedule`, `lora_set`, `embedding`, `ema`, `prior`, `parked`, `unet_dtype`, `prediction_type`,
`training_started_at`, `_emit`, `_say`).
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from pathlib import Path
from typing import Any

from lorastudio.models.compiled import eager_calls
from lorastudio.train.checkpoints import partial_folder, prune_checkpoints, prune_states, publish_checkpoint
from lorastudio.train.export import training_facts, write_training_outputs
from lorastudio.train.logs import draw_loss_curve
from lorastudio.train.plan import ends_epoch
from lorastudio.train.trainables import unet_dtype_bridge

__all__ = ["SavingMixin"]


class SavingMixin:
    """When and what a `Trainer` saves: checkpoints, samples and the run's files."""

    # -- when -------------------------------------------------------------------------------
    @functools.cached_property
    def _last_checkpoint_step(self) -> int | None:
        """A run that saved checkpoints before its end saves one at its last step too (kohya always
        saves the last model): the final weights are a candidate when the best one is chosen."""
        earlier = any(self._checkpoint_due(step) for step in range(1, self.total_steps))
        return self.total_steps if earlier else None

    def _checkpoint_due(self, step: int) -> bool:
        """Every `save_every_steps` steps, and at the end of every `save_every_epochs`-th epoch."""
        train = self.cfg.train
        if train.save_every_steps and step % train.save_every_steps == 0:
            return True
        if train.save_every_epochs:
            per_step = train.grad_accum * self.accelerator.num_processes
            return ends_epoch(step, per_step, self.schedule.batches_per_epoch, train.save_every_epochs)
        return False

    def _samples_due(self, step: int) -> bool:
        """Every `samples.every_steps` steps, else with each checkpoint."""
        every = self.cfg.samples.every_steps
        return step % every == 0 if every else self._checkpoint_due(step)

    # -- what ------------------------------------------------------------------------------
    def _facts(self) -> dict[str, Any]:
        accumulated = self.step * self.cfg.train.grad_accum * self.accelerator.num_processes
        return training_facts(
            self.cfg,
            self.name,
            self.model,
            self.images,
            self.step,
            self.schedule.epoch_of(max(accumulated - 1, 0)) + 1,
            self.accelerator.mixed_precision,
            self.prediction_type,
            self.training_started_at,
            self.prior.images if self.prior is not None else None,
        )

    def _averaged(self):
        """The EMA weights in place while saving or sampling (a no-op without EMA)."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def _without_dropout(self):
        """LoRA dropout is for training steps only; samples use every LoRA weight."""
        layers = [layer for _, layer in self.lora_set.items()] if self.lora_set is not None else []
        for layer in layers:
            layer.eval()
        try:
            yield
        finally:
            for layer in layers:
                layer.train()

    def _write_outputs(self, folder: Path) -> dict[str, Path]:
        """The run's files into `folder` (EMA weights when averaging), named by `train.outputs`."""
        with self._averaged():
            facts = self._facts()
            return write_training_outputs(
                folder, self.cfg, self.name, self.model, self.lora_set, self.embedding, facts, self.paths.models
            )

    def write_samples(self) -> list[Path]:
        """Sample images for `samples.prompts` with the live model (LoRA and trigger applied), each
        with the infotext that redraws it from this step's checkpoint (`train.samples`)."""
        from lorastudio.train.samples import draw_samples

        if not self.accelerator.is_main_process:
            return []
        folder = self.run_dir / "samples" / f"step-{self.step}"
        checkpoint = self.run_dir / "checkpoints" / f"step-{self.step}"
        unet = self.model.unet
        with (
            self._averaged(),
            self._without_dropout(),
            unet_dtype_bridge(unet, self.unet_dtype, self.model.dtype),
            eager_calls(unet),  # a compiled UNet is compiled for the training shapes only
            self.parked.back_for_samples(),
        ):
            paths = draw_samples(
                self.cfg, self.model, self.embedding, folder, checkpoint if checkpoint.is_dir() else None, self.name
            )
        self._emit({"event": "samples", "step": self.step, "paths": [str(p) for p in paths]})
        return paths

    def save_checkpoint(self) -> Path:
        """LoRA + embedding files and the full resumable state in `checkpoints/step-N/`, atomically.

        Everything goes into a hidden `.step-N.partial/` first; only a finished, fsynced folder
        is renamed to `step-N` (see `train.checkpoints`), so a kill mid-save never breaks resume.
        """
        parent = self.run_dir / "checkpoints"
        folder = parent / f"step-{self.step}"
        partial = partial_folder(parent, self.step)
        if self.accelerator.is_main_process:
            if partial.exists():
                shutil.rmtree(partial)
            self._write_outputs(partial)
            draw_loss_curve(_log_records(self.run_dir), self.run_dir / "loss.png")
        self.accelerator.wait_for_everyone()
        self._save_state(partial / "state")
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            publish_checkpoint(partial, folder, self.step)
            self._prune_states()
            self._prune_checkpoints()
        self.accelerator.wait_for_everyone()
        self._emit({"event": "checkpoint", "step": self.step, "path": str(folder)})
        return folder

    def _save_state(self, folder: Path) -> None:
        """`accelerate`'s resumable state (one seam, so tests can interrupt it)."""
        self.accelerator.save_state(str(folder))

    def _prune_states(self) -> None:
        """`train.keep_states` (a whole-UNet run keeps one by default: each state is gigabytes)."""
        keep = self.cfg.train.keep_states
        prune_states(self.run_dir, 1 if keep is None and self.cfg.trains_full_unet else keep)

    def _prune_checkpoints(self) -> None:
        """`output.keep_last`: only the newest N step checkpoints stay, and the best-scored one."""
        keep = self.cfg.output.keep_last
        if keep is None:
            return
        from lorastudio.train.runs import RunFolder

        removed = prune_checkpoints(self.run_dir / "checkpoints", keep, protect=RunFolder(self.run_dir).chosen_steps)
        if removed:
            self._say(f"checkpoints: removed {', '.join(f'step-{s}' for s in removed)} (output.keep_last={keep})")


def _log_records(run_dir: Path) -> list[dict]:
    from lorastudio.train.logs import read_log

    return read_log(run_dir / "log.jsonl")
