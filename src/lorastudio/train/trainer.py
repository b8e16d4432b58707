"""The training loop: LoRA, trigger embedding, DreamBooth or full UNet fine-tune, on `accelerate`.

Reproducibility is built in rather than bolted on: the batch order, caption augmentation,
noise and timesteps of every micro-batch are drawn from generators seeded by
(seed, micro-batch index), and everything else that changes (LoRA weights, trigger
vectors, optimizer, LR scheduler, step, RNG) is in the `accelerate` state saved with each
checkpoint. A resumed run therefore ends with the same weights as an uninterrupted one.

Gradients of the trainable set are averaged across processes explicitly, without DDP
(see `train.distributed`). What is trained is set up in `train.trainables`, each micro-batch's
captions are `train.captions`, the loss is `train.losses`, the files and their metadata are
`train.export`; when and what the run saves (checkpoints, samples) is `train.saving`.

Prior preservation (DreamBooth) adds a second loss per micro-batch on class images, drawn
from their own seeded schedule, so it stays reproducible and resumable too.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lorastudio.errors import LorastudioError
from lorastudio.train.async_steps import LaggedReadout
from lorastudio.train.caches import cut_captions, prepare_caches
from lorastudio.train.captions import every_caption, micro_batch_captions
from lorastudio.train.checkpoints import check_checkpoint_space, clean_partial_folders, refuse_unsafe_state
from lorastudio.train.config import TrainConfig
from lorastudio.train.data import BatchSchedule, TrainImage
from lorastudio.train.distributed import average_gradients, ranks_agree
from lorastudio.train.ema import WeightAverage
from lorastudio.train.latents import LatentCache, vae_hash
from lorastudio.train.logs import RunLog, draw_loss_curve
from lorastudio.train.lora_modules import LoraSet
from lorastudio.train.losses import DenoisingLoss
from lorastudio.train.offload import ParkedModules
from lorastudio.train.optim import build_lr_scheduler, build_optimizer
from lorastudio.train.plan import TrainPlan
from lorastudio.train.precision import mixed_precision_for
from lorastudio.train.prior import PriorSet, prepare_prior
from lorastudio.train.runs import TrainPaths
from lorastudio.train.saving import SavingMixin
from lorastudio.train.text import TriggerEmbedding
from lorastudio.train.text_cache import CaptionEncoder
from lorastudio.train.trainables import TrainableState, param_groups, setup_trainables
from lorastudio.train.unet_setup import set_up_unet

__all__ = ["Trainer", "Callback"]

Callback = Callable[[dict], None]


class Trainer(SavingMixin):
    """One training run. `run()` trains from scratch or from the run's last saved state."""

    def __init__(
        self,
        cfg: TrainConfig,
        paths: TrainPaths,
        name: str,
        callback: Callback | None = None,
        device: str | None = None,
        progress: bool = True,
        model_where: Any = None,
    ):
        self.cfg = cfg
        self.model_where = model_where  # a ModelRef found by the service (None: look cfg.model up)
        self.paths = paths
        self.run_dir = Path(paths.run_dir)
        self.training_started_at: float | None = None
        self.name = name
        self.callback = callback
        self.device_request = device
        self.progress = progress
        self.step = 0
        self.lora_set: LoraSet | None = None
        self.embedding: TriggerEmbedding | None = None
        self.ema: WeightAverage | None = None
        self.prior: PriorSet | None = None
        self.caption_encoder: CaptionEncoder | None = None  # set up with the model

    # -- events ---------------------------------------------------------------------------
    def _emit(self, event: dict) -> None:
        if self.callback is not None and self.accelerator.is_main_process:
            self.callback(event)

    def _say(self, text: str) -> None:
        if self.progress and self.accelerator.is_main_process:
            print(text, file=sys.stderr, flush=True)

    # -- setup ----------------------------------------------------------------------------
    def _make_accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        if self.device_request:  # an unknown device, or CUDA asked for on a machine without: one line
            from lorastudio.models.loading import pick_device

            pick_device(self.device_request)
        # --device mps: accelerate picks the Apple GPU itself when it is not told to use the CPU
        cpu = self.device_request == "cpu" or (self.device_request != "mps" and not torch.cuda.is_available())
        family = self._peek_family()
        mp = mixed_precision_for(
            self.cfg.train.mixed_precision, "cpu" if cpu else "cuda", family.train_precision if family else "auto"
        )
        project = ProjectConfiguration(project_dir=str(self.run_dir), automatic_checkpoint_naming=False)
        return Accelerator(mixed_precision=mp, cpu=cpu, project_config=project)

    def _peek_family(self):
        """The base model's family before it loads (None when it cannot be told cheaply)."""
        from lorastudio.models.loading import peek_family, resolve_model

        try:
            where = self.model_where or resolve_model(self.cfg.model, self.paths.models)
        except LorastudioError:
            return None  # _load_model says what is wrong
        return peek_family(where)

    def _load_model(self):
        from lorastudio.models.loading import load_model

        device = self.accelerator.device
        model = load_model(
            self.cfg.model, self.paths.models, self.paths.cache, device=str(device), where=self.model_where
        )
        wanted = self.cfg.family
        if wanted and model.family.name != wanted:
            needs = "both SDXL text encoders (text_encoder_2)" if wanted == "sdxl" else f"a {wanted} model"
            raise LorastudioError(
                f"preset {self.cfg.preset or wanted!r}: needs {needs}, but {self.cfg.model!r} is {model.family.label};"
                f" use a {wanted} model or another preset."
            )
        return model

    def _setup_trainables(self, model) -> None:
        self.lora_set, self.embedding = setup_trainables(self.cfg, model)

    def _param_groups(self) -> list[dict]:
        return param_groups(self.cfg, self.model, self.lora_set, self.embedding)

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self._param_groups() for p in group["params"]]

    # -- one micro-batch --------------------------------------------------------------------
    @property
    def _text_trains(self) -> bool:
        return self.embedding is not None or self.cfg.lora.train_text_encoder and self.cfg.trains_lora

    def _loss(self, micro_index: int) -> torch.Tensor:
        """The micro-batch's denoising loss, plus the weighted prior loss on class images."""
        batch = self.schedule.batch(micro_index)
        seed = self.cfg.seed * 1_000_003 + micro_index
        captions = micro_batch_captions(self.cfg, self.images, self.embedding, batch, micro_index)
        loss = self._denoising_loss(self.images, self.latents, batch, captions, seed)
        if self.prior is not None:
            prior_batch = self.prior.schedule.batch(micro_index)
            prior_captions = [self.prior.images[i].caption for i, _ in prior_batch]
            prior_loss = self._denoising_loss(
                self.prior.images, self.prior.latents, prior_batch, prior_captions, seed + (1 << 40)
            )
            loss = loss + self.cfg.prior.loss_weight * prior_loss
        return loss

    def _denoising_loss(
        self,
        images: list[TrainImage],
        cache: LatentCache,
        batch: list[tuple[int, bool]],
        captions: list[str],
        seed: int,
    ) -> torch.Tensor:
        color_aug = self.cfg.data.color_aug and cache is self.latents
        return self.denoising_loss(images, cache, batch, captions, seed, color_aug=color_aug)

    # -- the loop -----------------------------------------------------------------------------
    def _prepare(self, plan: TrainPlan) -> None:
        from diffusers import DDPMScheduler

        self.accelerator = self._make_accelerator()
        self.images = plan.images
        self.total_steps = plan.steps
        self.model = self._load_model()
        if self.cfg.train.vae_fp32:  # kohya no_half_vae: the latents (and samples) from an fp32 VAE
            self.model.vae.to(torch.float32)
        cache_root = self.paths.cache / "latents"
        if self.cfg.uses_prior:
            # Before the trainables exist: class images come from the untouched base model.
            self.prior = prepare_prior(
                self.cfg,
                self.model,
                self.paths.datasets,
                cache_root,
                self._vae_digest,
                self.accelerator,
                say=self._say,
                emit=self._emit,
                show_progress=self.progress,
            )
        torch.manual_seed(self.cfg.seed)
        self._setup_trainables(self.model)
        self.unet_dtype = next(self.model.unet.parameters()).dtype
        self.noise_scheduler = DDPMScheduler.from_config(self.model.scheduler_config)
        self.prediction_type = self.noise_scheduler.config.prediction_type
        self.caption_encoder = CaptionEncoder(
            self.model, self.cfg.clip_skip, trains_text=self._text_trains, max_tokens=self.cfg.data.max_token_length
        )
        self.captions_cut = cut_captions(self.cfg, self.model, self.images, self.embedding)
        self.parked = ParkedModules(self.model.device)  # filled once the caches are
        self.denoising_loss = DenoisingLoss(
            self.cfg,
            self.model,
            self.noise_scheduler,
            self.unet_dtype,
            encode=self.caption_encoder,
            autocast=self.accelerator.autocast,
        )
        self.attention = set_up_unet(
            self.cfg, self.model, self.accelerator.device.type, self._text_trains, self.paths.cache, self._say
        )
        self.latents = LatentCache(cache_root, self.model.vae, self._vae_digest)
        prepare_caches(
            self.cfg,
            self.model,
            self.images,
            self.latents,
            self.caption_encoder,
            self._cached_captions(),
            self.paths.cache / "text",
            self.accelerator,
            self.parked,
            self._say,
        )
        self.schedule = BatchSchedule(
            self.images, self.cfg.train.batch_size, self.cfg.seed, self.cfg.data.flip
        )
        self.params = self._trainable_parameters()
        if self.cfg.train.ema_decay:
            self.ema = WeightAverage(self.params, self.cfg.train.ema_decay)
        self._check_checkpoint_space()
        optimizer = build_optimizer(
            self.cfg.train.optimizer,
            self._param_groups(),
            self.cfg.train.weight_decay,
            self.cfg.train.optimizer_args,
        )
        self.lr_scheduler = build_lr_scheduler(
            self.cfg.train.lr_scheduler,
            optimizer,
            self.cfg.train.warmup_steps(self.total_steps),
            self.total_steps,
            num_cycles=self.cfg.train.lr_scheduler_num_cycles,
            power=self.cfg.train.lr_scheduler_power,
        )
        self._say(f"optimizer: {type(optimizer).__name__}, lr scheduler: {self.cfg.train.lr_scheduler}")
        # The scheduler is stepped by hand (once per optimizer step on every process).
        self.optimizer = self.accelerator.prepare(optimizer)
        self.accelerator.register_for_checkpointing(TrainableState(self), self.lr_scheduler)

    def _check_checkpoint_space(self) -> None:
        if self.cfg.trains_full_unet:
            everything = (p for m in self.model.components.values() for p in m.parameters())
            check_checkpoint_space(self.run_dir, self.params, everything, ema=self.ema is not None)

    @functools.cached_property
    def _vae_digest(self) -> str:
        """The latent-cache key, hashed once (the VAE never trains)."""
        return vae_hash(self.model.vae)

    def _cached_captions(self) -> list[str] | None:
        """The captions to encode once and cache: all of them, while the text side is frozen."""
        if self._text_trains or not self.cfg.train.cache_text_encoder_outputs:
            return None
        return every_caption(self.cfg, self.images, self.prior.images if self.prior is not None else None)

    def run(self, plan: TrainPlan, resume_from: Path | None = None, stop_at_step: int | None = None) -> dict:
        self._prepare(plan)
        if self.accelerator.is_main_process:
            for leftover in clean_partial_folders(self.run_dir / "checkpoints"):
                self._say(f"checkpoints: removed {leftover.name}, a save that a kill interrupted")
        self.accelerator.wait_for_everyone()
        if resume_from is not None:
            refuse_unsafe_state(Path(resume_from))  # before accelerate unpickles anything
            self.accelerator.load_state(str(resume_from))
            self._say(f"resumed from {resume_from.parent.name} (step {self.step}/{self.total_steps})")
        self._emit(
            {
                "event": "plan",
                "steps": self.total_steps,
                "images": len(self.images),
                "explanation": plan.explanation,
                "start_step": self.step,
                "attention": self.attention,
            }
        )
        log = RunLog(self.run_dir, resume_step=self.step) if self.accelerator.is_main_process else None
        self._report_cut_captions(log)
        self.training_started_at = time.time()  # kohya's ss_training_started_at: this session's start
        try:
            finished = self._loop(log, stop_at_step)
        finally:
            if log is not None:
                log.close()
        if not finished:
            return {"finished": False, "step": self.step}
        return self._finish(log)

    def _report_cut_captions(self, log: RunLog | None) -> None:
        """Captions past `data.max_token_length`: said once per run (a resume finds it in log.jsonl)."""
        cut = self.captions_cut
        if cut is not None and log is not None and log.note_once(cut.record()):
            self._say(cut.line())
            self._emit({"event": "log", "line": cut.line()})

    def _loop(self, log: RunLog | None, stop_at_step: int | None) -> bool:
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.accelerator
        accum, world, rank = cfg.train.grad_accum, acc.num_processes, acc.process_index
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=f"train {self.name}",
            unit="step",
            disable=not (self.progress and acc.is_main_process),
            dynamic_ncols=True,
        )
        started, first_step = time.perf_counter(), self.step
        losses = LaggedReadout()  # each step's loss read a step late: no wait on the GPU per step

        def report(ready: list) -> None:
            for (step, lr), loss in ready:
                self._after_step(log, bar, step, lr, loss, started, first_step)

        try:
            while self.step < self.total_steps:
                total_loss = torch.zeros((), device=acc.device)
                for micro in range(accum):
                    micro_index = (self.step * accum + micro) * world + rank
                    loss = self._loss(micro_index) / accum
                    acc.backward(loss)
                    total_loss += loss.detach()
                average_gradients(self.params, acc.num_processes)
                if cfg.train.max_grad_norm:
                    acc.clip_grad_norm_(self.params, cfg.train.max_grad_norm)
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update()
                self.step += 1
                report(losses.push((self.step, self.lr_scheduler.get_last_lr()[0]), acc.reduce(total_loss, "mean")))
                checkpoint = self._checkpoint_due(self.step) or self.step in (stop_at_step, self._last_checkpoint_step)
                samples = cfg.samples.prompts and self._samples_due(self.step)
                stopping = stop_at_step is not None and stop_at_step <= self.step < self.total_steps
                if checkpoint or samples or stopping:
                    report(losses.flush())  # the log is complete before a checkpoint, samples or a stop
                if checkpoint:
                    self.save_checkpoint()
                if samples:
                    self.write_samples()
                if stopping:
                    return False
            report(losses.flush())
        finally:
            bar.close()
        return True

    def _after_step(
        self, log: RunLog | None, bar, step: int, lr: float, loss: float, started: float, first_step: int
    ) -> None:
        done = step - first_step
        rate = done / max(time.perf_counter() - started, 1e-9)
        eta = (self.total_steps - step) / rate if rate else None
        record = {
            "step": step,
            "loss": loss,
            "lr": lr,
            "epoch": self.schedule.epoch_of(step * self.cfg.train.grad_accum * self.accelerator.num_processes - 1),
        }
        if log is not None:
            log.write(record)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        bar.update(1)
        self._emit(
            {
                "event": "step",
                "step": step,
                "total": self.total_steps,
                "loss": loss,
                "lr": lr,
                "it_per_s": rate,
                "eta_s": eta,
            }
        )

    # -- the end ---------------------------------------------------------------------------
    def _finish(self, log: RunLog | None) -> dict:
        self.accelerator.wait_for_everyone()
        result: dict[str, Any] = {
            "finished": True,
            "step": self.step,
            "run_dir": str(self.run_dir),
            "name": self.name,
        }
        result["ranks_agree"] = ranks_agree(self.accelerator, self.params)
        if self.accelerator.is_main_process:
            # The run folder only: `service.training.publish` copies the chosen files into the library.
            paths = self._write_outputs(self.run_dir)
            result.update({kind: str(path) for kind, path in paths.items()})
            records = log.records if log is not None else []
            draw_loss_curve(records, self.run_dir / "loss.png")
            result["final_loss"] = records[-1]["loss"] if records else None
        self._emit({"event": "done", **result})
        self.accelerator.wait_for_everyone()
        return result
