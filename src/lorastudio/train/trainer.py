"""The training loop: LoRA, trigger embedding, DreamBooth or full UNet fine-tune, on `accelerate`.

Reproducibility is built in rather than bolted on: the batch order, caption augmentation,
noise and timesteps of every micro-batch are drawn from generators seeded by
(seed, micro-batch index), and everything else that changes (LoRA weights, trigger
vectors, optimizer, LR scheduler, step, RNG) is in the `accelerate` state saved with each
checkpoint. A resumed run therefore ends with the same weights as an uninterrupted one.

Gradients of the trainable set are averaged across processes explicitly instead of
wrapping the UNet in DDP: for LoRA the UNet is frozen and never needs to be wrapped, and
one code path then serves LoRA and full fine-tuning alike.

Prior preservation (DreamBooth) adds a second loss per micro-batch on class images, drawn
from their own seeded schedule, so it stays reproducible and resumable too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lorastudio.errors import LorastudioError
from lorastudio.train.checkpoints import (
    clean_partial_folders,
    complete_step_folders,
    partial_folder,
    prune_checkpoints,
    publish_checkpoint,
    remove_folder,
)
from lorastudio.train.config import TrainConfig, budget_steps
from lorastudio.train.data import BatchSchedule, BucketOptions, TrainImage, color_jitter, scan_images
from lorastudio.train.ema import WeightAverage
from lorastudio.train.export import save_embedding, save_full_checkpoint, save_lora
from lorastudio.train.kohya_config import kohya_training_facts
from lorastudio.train.latents import LatentCache, check_cache_space, encode_image, vae_hash
from lorastudio.train.logs import RunLog, draw_loss_curve
from lorastudio.train.lora_modules import (
    LoraSet,
    TargetSpec,
    inject_lora,
    lycoris_network_args,
    text_encoder_targets,
    unet_targets,
)
from lorastudio.train.noise import training_noise
from lorastudio.train.optim import build_lr_scheduler, build_optimizer
from lorastudio.train.outputs import copy_to_library, output_targets
from lorastudio.train.text import TriggerEmbedding, build_caption, encode_text
from lorastudio.train.text_cache import TextEncoderCache, text_cache_key

__all__ = ["Trainer", "TrainPlan", "prepare_plan", "latest_state", "Callback"]

Callback = Callable[[dict], None]
_TEXT_CACHE_LIMIT = 4096
_REDUCE_BUCKET_ELEMENTS = 25_000_000


@dataclass
class TrainPlan:
    """What was checked before any model is loaded: images, buckets and the step budget."""

    images: list[TrainImage]
    steps: int
    explanation: str
    dataset_root: Path
    num_samples: int
    batches_per_epoch: int = 0  # micro-batches in one epoch (every image x repeats once)


@dataclass
class PriorSet:
    """Class images of a DreamBooth run with their latents and own batch order."""

    images: list[TrainImage]
    latents: LatentCache
    schedule: BatchSchedule


def resolve_dataset_path(data_dir: str, datasets_folder: Path) -> Path:
    if not data_dir:
        raise LorastudioError("data.dir: not set; pass data.dir=<data set name or folder>.")
    named = datasets_folder / data_dir
    if "/" not in data_dir and named.is_dir():
        return named
    return Path(data_dir).expanduser()


def prepare_plan(cfg: TrainConfig, datasets_folder: Path, num_processes: int = 1) -> TrainPlan:
    """Open the data set and check sizes and budget: every cheap error before heavy work."""
    from lorastudio.data.dataset import Dataset

    if not cfg.model:
        raise LorastudioError(
            "model: not set; pass model=<library name, path, or tiny-sd15 / tiny-sd2 / tiny-sdxl>."
        )
    path = resolve_dataset_path(cfg.data.dir, datasets_folder)
    dataset = Dataset.open(path, default_caption=cfg.data.default_caption or cfg.trigger)
    if len(dataset) == 0:
        raise LorastudioError(f"{path}: the data set is empty; add images first.")
    items = dataset.items()
    if cfg.data.repeats is not None:  # kohya subsets' num_repeats: one count for the whole data.dir
        items = [dataclasses.replace(item, repeats=cfg.data.repeats) for item in items]
    images = scan_images(
        items, cfg.train.resolution, cfg.data.max_upscale, options=BucketOptions.from_config(cfg.data)
    )
    from lorastudio.train.optim import check_optimizer_args

    check_optimizer_args(cfg.train.optimizer, cfg.train.optimizer_args)  # a typo fails before the model loads
    if cfg.uses_prior:
        from lorastudio.train.prior import check_class_dir

        check_class_dir(cfg, datasets_folder)
    num_samples = sum(img.repeats for img in images)
    batches = BatchSchedule(images, cfg.train.batch_size, cfg.seed, flip=False).batches_per_epoch
    steps, why = budget_steps(cfg, len(images), num_samples, num_processes, batches_per_epoch=batches)
    return TrainPlan(images, steps, why, dataset.root, num_samples, batches)


def ends_epoch(step: int, batches_per_step: int, batches_per_epoch: int, every: int = 1) -> bool:
    """Whether optimizer step `step` (1-based) completes an epoch whose number is a multiple of `every`.

    Batches run on across epochs, so an epoch may end inside a step: that step ends it.
    """

    def epochs_done(n: int) -> int:
        return n * batches_per_step // batches_per_epoch

    return epochs_done(step) // every > epochs_done(step - 1) // every


def latest_state(run_dir: Path, say: Callable[[str], None] | None = None) -> Path | None:
    """The newest complete `checkpoints/step-N/state` folder of a run, if any.

    An incomplete checkpoint (a kill while it was saved) is skipped, and `say` hears why.
    """
    states = _saved_states(run_dir, say)
    return states[-1] if states else None


def _saved_states(run_dir: Path, say: Callable[[str], None] | None = None) -> list[Path]:
    """Every complete `checkpoints/step-N/state` folder, oldest first."""
    return [folder / "state" for _, folder in complete_step_folders(run_dir / "checkpoints", say, "state")]


class _TrainableState:
    """LoRA tensors, trigger vectors and the step: the custom part of `accelerate`'s state."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        t = self.trainer
        return {
            "step": t.step,
            "lora": t.lora_set.lora_state_dict() if t.lora_set is not None else {},
            "embedding": t.embedding.as_tensors() if t.embedding is not None else [],
            # Only the main process writes the state; every rank loads that file on resume.
            "unet": _cpu_state(t.model.unet)
            if t.cfg.trains_full_unet and t.accelerator.is_main_process
            else {},
            "ema": t.ema.state_dict() if t.ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        t = self.trainer
        t.step = int(state["step"])
        if t.lora_set is not None:
            t.lora_set.load_lora_state_dict(state["lora"])
        if t.embedding is not None:
            with torch.no_grad():
                for param, saved in zip(t.embedding.vectors, state["embedding"], strict=True):
                    param.copy_(saved)
        if t.cfg.trains_full_unet:
            t.model.unet.load_state_dict(state["unet"])
        if t.ema is not None:
            t.ema.load_state_dict(state["ema"])


@contextlib.contextmanager
def unet_dtype_bridge(unet: torch.nn.Module, compute_dtype: torch.dtype, io_dtype: torch.dtype):
    """Let a UNet kept in `compute_dtype` take and return the sampler's `io_dtype` tensors.

    A fully fine-tuned UNet trains in fp32 while the VAE, text encoders and the sampling
    loop stay in the model's bf16/fp16; autocast would also reach the VAE's fp32 fallback.
    """
    if compute_dtype == io_dtype:
        yield
        return

    def cast(value, dtype):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(dtype)
        if isinstance(value, dict):
            return {k: cast(v, dtype) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return type(value)(cast(v, dtype) for v in value)
        return value

    def before(_module, args, kwargs):
        return cast(args, compute_dtype), cast(kwargs, compute_dtype)

    def after(_module, _args, output):
        if isinstance(output, tuple):
            return cast(output, io_dtype)
        output.sample = output.sample.to(io_dtype)
        return output

    handles = [
        unet.register_forward_pre_hook(before, with_kwargs=True),
        unet.register_forward_hook(after),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _buckets(tensors: list[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    """Consecutive groups of same-dtype, same-device tensors of at most `limit` elements each."""
    groups: list[list[torch.Tensor]] = []
    size = 0
    for tensor in tensors:
        last = groups[-1][-1] if groups else None
        fits = last is not None and (last.dtype, last.device) == (tensor.dtype, tensor.device)
        if not fits or size + tensor.numel() > limit:
            groups.append([])
            size = 0
        groups[-1].append(tensor)
        size += tensor.numel()
    return groups


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}  # written at once: no clone


def _mixed_precision(requested: str, device_type: str) -> str:
    if requested == "auto":
        if device_type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "no"
    if requested == "fp16" and device_type != "cuda":
        raise LorastudioError("train.mixed_precision=fp16: needs a CUDA GPU; use bf16 or no on the CPU.")
    return requested


class Trainer:
    """One training run. `run()` trains from scratch or from the run's last saved state."""

    def __init__(
        self,
        cfg: TrainConfig,
        workspace,
        run_dir: Path,
        name: str,
        callback: Callback | None = None,
        device: str | None = None,
        progress: bool = True,
        model_where: Any = None,
    ):
        self.cfg = cfg
        self.model_where = model_where  # a ModelRef found by the service (None: look cfg.model up)
        self.ws = workspace
        self.run_dir = Path(run_dir)
        self.name = name
        self.callback = callback
        self.device_request = device
        self.progress = progress
        self.step = 0
        self.lora_set: LoraSet | None = None
        self.embedding: TriggerEmbedding | None = None
        self.ema: WeightAverage | None = None
        self.prior: PriorSet | None = None
        self.text_disk_cache: TextEncoderCache | None = None
        self._text_cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

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

        cpu = self.device_request == "cpu" or not torch.cuda.is_available()
        mp = _mixed_precision(self.cfg.train.mixed_precision, "cpu" if cpu else "cuda")
        project = ProjectConfiguration(project_dir=str(self.run_dir), automatic_checkpoint_naming=False)
        return Accelerator(mixed_precision=mp, cpu=cpu, project_config=project)

    def _load_model(self):
        from lorastudio.models.loading import load_model

        device = self.accelerator.device
        model = load_model(
            self.cfg.model, self.ws.models, self.ws.cache, device=str(device), where=self.model_where
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
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.seed)
        if cfg.trains_full_unet:
            # fp32 master weights: optimizer updates of 1e-6 vanish in bf16/fp16 weights.
            model.unet.to(torch.float32).requires_grad_(True)
        if cfg.trains_embedding:
            self.embedding = TriggerEmbedding(
                cfg.trigger,
                cfg.embedding.num_vectors,
                cfg.embedding.init_text,
                model.text_encoders,
                model.tokenizers,
            ).to(model.device)
            self.embedding.attach(model.text_encoders)
        if cfg.trains_lora:
            self.lora_set = LoraSet()
            conv_rank = cfg.lora.conv_rank or cfg.lora.rank
            spec = TargetSpec("unet", cfg.lora.rank, conv_rank, cfg.lora.alpha, cfg.lora.targets, cfg.lora.type)
            inject_lora(
                model.unet,
                spec,
                unet_targets(model.unet, cfg.lora.targets),
                self.lora_set,
                generator,
                cfg.lora.dropout,
            )
            if cfg.lora.train_text_encoder:
                for component, encoder in zip(model.family.text_encoders, model.text_encoders, strict=True):
                    spec = TargetSpec(
                        component, cfg.lora.rank, conv_rank, cfg.lora.alpha, cfg.lora.targets, cfg.lora.type
                    )
                    inject_lora(
                        encoder,
                        spec,
                        text_encoder_targets(encoder, cfg.lora.targets),
                        self.lora_set,
                        generator,
                        cfg.lora.dropout,
                    )

    def _param_groups(self) -> list[dict]:
        cfg = self.cfg
        te_lr = cfg.train.text_encoder_lr or cfg.train.learning_rate
        groups = []
        if cfg.trains_full_unet:
            groups.append({"params": list(self.model.unet.parameters()), "lr": cfg.train.learning_rate})
        if self.lora_set is not None:
            groups.append({"params": self.lora_set.parameters_of(("unet",)), "lr": cfg.train.learning_rate})
            groups.append(
                {"params": self.lora_set.parameters_of(("text_encoder", "text_encoder_2")), "lr": te_lr}
            )
        if self.embedding is not None:
            emb_lr = cfg.embedding.learning_rate or te_lr
            groups.append({"params": list(self.embedding.parameters()), "lr": emb_lr, "weight_decay": 0.0})
        return groups

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self._param_groups() for p in group["params"]]

    # -- one micro-batch --------------------------------------------------------------------
    @property
    def _text_trains(self) -> bool:
        return self.embedding is not None or self.cfg.lora.train_text_encoder and self.cfg.trains_lora

    def _caption_of(self, caption: str, rng: random.Random) -> str:
        cfg = self.cfg
        text = build_caption(
            caption,
            cfg.trigger,
            cfg.data.caption_prefix_trigger,
            cfg.data.shuffle_tags,
            cfg.data.keep_tokens,
            cfg.data.caption_dropout,
            rng,
            tag_dropout=cfg.data.tag_dropout,
        )
        return self.embedding.expand(text) if self.embedding is not None else text

    def _captions(self, batch: list[tuple[int, bool]], micro_index: int) -> list[str]:
        rng = random.Random(f"{self.cfg.seed}:caption:{micro_index}")
        return [self._caption_of(self.images[index].caption, rng) for index, _ in batch]

    def _fixed_captions(self) -> list[str] | None:
        """Every caption training can produce, when that set is finite (no tag shuffling)."""
        cfg = self.cfg
        if cfg.data.shuffle_tags or cfg.data.tag_dropout:
            return None
        rng = random.Random(0)  # unused: no shuffling and no dropout here
        captions = [
            build_caption(img.caption, cfg.trigger, cfg.data.caption_prefix_trigger, False, 0, 0.0, rng)
            for img in self.images
        ]
        if cfg.data.caption_dropout:
            captions.append("")
        if self.prior is not None:
            captions += [img.caption for img in self.prior.images]
        return list(dict.fromkeys(captions))

    def _encode_missing(self, captions: list[str]) -> None:
        """Fill the in-memory text cache from the disk cache, encoding (and storing) the rest."""
        disk = self.text_disk_cache
        todo = []
        for caption in captions:
            found = disk.load(caption) if disk is not None else None
            if found is None:
                todo.append(caption)
                continue
            self._text_cache[caption] = found
        for start in range(0, len(todo), 16):
            chunk = todo[start : start + 16]
            with torch.no_grad():
                embeds, pooled = encode_text(self.model, chunk, self.cfg.clip_skip)
            for i, caption in enumerate(chunk):
                # Kept in host memory: thousands of SDXL captions would fill a GPU.
                pooled_i = pooled[i].cpu() if pooled is not None else None
                self._text_cache[caption] = (embeds[i].cpu(), pooled_i)
                if disk is not None:
                    disk.save(caption, embeds[i], pooled_i)

    def _encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._text_trains:
            return encode_text(self.model, captions, self.cfg.clip_skip)
        missing = [c for c in dict.fromkeys(captions) if c not in self._text_cache]
        if missing:
            if len(self._text_cache) + len(missing) > _TEXT_CACHE_LIMIT:
                self._text_cache.clear()
            self._encode_missing(missing)
        device = self.model.device
        embeds = torch.stack([self._text_cache[c][0] for c in captions]).to(device)
        pooled = [self._text_cache[c][1] for c in captions]
        return embeds, torch.stack(pooled).to(device) if pooled[0] is not None else None

    def _time_ids(self, images: list[TrainImage], batch: list[tuple[int, bool]]) -> torch.Tensor:
        rows = []
        for index, _ in batch:
            img = images[index]
            (w, h), (top, left), (bw, bh) = img.size, img.crop, img.bucket
            rows.append([h, w, top, left, bh, bw])
        return torch.tensor(rows, dtype=torch.float32, device=self.model.device)

    def _loss(self, micro_index: int) -> torch.Tensor:
        """The micro-batch's denoising loss, plus the weighted prior loss on class images."""
        batch = self.schedule.batch(micro_index)
        seed = self.cfg.seed * 1_000_003 + micro_index
        captions = self._captions(batch, micro_index)
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
        cfg, model = self.cfg, self.model
        device = model.device
        if cfg.data.color_aug and cache is self.latents:
            latents = self._color_augmented_latents(images, batch, seed).to(device)
        else:
            latents = torch.stack([cache.get(i, flipped) for i, flipped in batch]).to(device)
        generator = torch.Generator(device=device).manual_seed(seed)
        noise = training_noise(
            latents.shape,
            generator,
            device,
            offset=cfg.train.noise_offset,
            multires_iterations=cfg.train.multires_noise_iterations,
            multires_discount=cfg.train.multires_noise_discount,
        )
        num_timesteps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, num_timesteps, (latents.shape[0],), generator=generator, device=device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        embeds, pooled = self._encode(captions)
        dtype = self.unet_dtype
        added = None
        if model.family.uses_pooled_text:
            added = {"text_embeds": pooled.to(dtype), "time_ids": self._time_ids(images, batch).to(dtype)}
        with self.accelerator.autocast():
            prediction = model.unet(
                noisy.to(dtype),
                timesteps,
                encoder_hidden_states=embeds.to(dtype),
                added_cond_kwargs=added,
                return_dict=False,
            )[0]
        if self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if cfg.train.min_snr_gamma:
            per_sample = per_sample * self._snr_weights(timesteps)
        return per_sample.mean()

    def _color_augmented_latents(
        self, images: list[TrainImage], batch: list[tuple[int, bool]], seed: int
    ) -> torch.Tensor:
        """`data.color_aug`: every exposure gets its own colour jitter, so its latent is encoded now."""
        from lorastudio.data.images import open_image

        rng = random.Random(f"{seed}:color")
        latents = []
        for index, flipped in batch:
            image = images[index]
            jittered = color_jitter(open_image(image.path), rng)
            latents.append(encode_image(self.model.vae, jittered, image.bucket, flipped))
        return torch.stack(latents)

    def _snr_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """min-SNR-gamma (Hang et al. 2023): cap the weight of easy, low-noise timesteps."""
        alphas = self.noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
        snr = alphas / (1 - alphas)
        capped = torch.clamp(snr, max=self.cfg.train.min_snr_gamma)
        return capped / (snr + 1) if self.prediction_type == "v_prediction" else capped / snr

    # -- the loop -----------------------------------------------------------------------------
    def _reduce_gradients(self, params: list[torch.nn.Parameter]) -> None:
        if self.accelerator.num_processes == 1:
            return
        import torch.distributed as dist

        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        # One all-reduce per ~25M-element bucket, not per tensor (a whole UNet has ~700 tensors).
        for bucket in _buckets([p.grad for p in params], _REDUCE_BUCKET_ELEMENTS):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.accelerator.num_processes
            offset = 0
            for grad in bucket:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()

    def _prepare(self, plan: TrainPlan) -> None:
        from diffusers import DDPMScheduler

        self.accelerator = self._make_accelerator()
        self.images = plan.images
        self.total_steps = plan.steps
        self.model = self._load_model()
        cache_root = self.ws.cache / "latents"
        if self.cfg.uses_prior:
            # Before the trainables exist: class images come from the untouched base model.
            self.prior = self._prepare_prior(cache_root)
        torch.manual_seed(self.cfg.seed)
        self._setup_trainables(self.model)
        self.unet_dtype = next(self.model.unet.parameters()).dtype
        self.noise_scheduler = DDPMScheduler.from_config(self.model.scheduler_config)
        self.prediction_type = self.noise_scheduler.config.prediction_type
        if self.cfg.train.gradient_checkpointing:
            self.model.unet.enable_gradient_checkpointing()
            if self._text_trains:
                for encoder in self.model.text_encoders:
                    encoder.gradient_checkpointing_enable()
                    encoder.train()  # transformers checkpoints only in training mode (CLIP has no dropout)
        self._select_attention()
        self.latents = LatentCache(cache_root, self.model.vae, self._vae_digest)
        if self.cfg.data.color_aug:
            # As in kohya, colour augmentation and cached latents exclude each other.
            self._say("latents: data.color_aug is on, so latents are encoded every step (latent cache off)")
        else:
            check_cache_space(cache_root, self.images, self.cfg.data.flip)
            with self.accelerator.main_process_first():
                encoded = self.latents.prepare(self.images, self.cfg.data.flip)
            self._say(
                f"latents: {len(self.images)} images, {encoded} newly encoded (cache {self.latents.folder})"
            )
        self.schedule = BatchSchedule(
            self.images, self.cfg.train.batch_size, self.cfg.seed, self.cfg.data.flip
        )
        self._prepare_text_cache()
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
            self.cfg.train.lr_warmup_steps,
            self.total_steps,
            num_cycles=self.cfg.train.lr_scheduler_num_cycles,
            power=self.cfg.train.lr_scheduler_power,
        )
        self._say(f"optimizer: {type(optimizer).__name__}, lr scheduler: {self.cfg.train.lr_scheduler}")
        # The scheduler is stepped by hand (once per optimizer step on every process).
        self.optimizer = self.accelerator.prepare(optimizer)
        self.accelerator.register_for_checkpointing(_TrainableState(self), self.lr_scheduler)

    def _select_attention(self) -> None:
        """`train.attention`: SDPA, or xformers when installed; the choice is printed with the run."""
        from lorastudio.train.attention import ATTENTION_LABELS, apply_attention, resolve_attention

        self.attention = resolve_attention(self.cfg.train.attention, self.accelerator.device.type)
        apply_attention(self.model.unet, self.attention)
        self._say(f"attention: {ATTENTION_LABELS[self.attention]}")

    def _check_checkpoint_space(self) -> None:
        """A whole-UNet checkpoint is gigabytes (model file + fp32 weights + optimizer state)."""
        if not self.cfg.trains_full_unet:
            return
        trained = sum(p.numel() for p in self.params)
        everything = sum(p.numel() for m in self.model.components.values() for p in m.parameters())
        per_copy = 4 * trained * (3 + (1 if self.ema is not None else 0))  # weights, Adam m and v, EMA
        needed = per_copy + 4 * everything  # + the model file (fp32 at most)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.run_dir).free
        if free < needed:
            raise LorastudioError(
                f"{self.run_dir}: {free >> 20} MiB free, but one checkpoint of a whole-UNet run needs about"
                f" {needed >> 20} MiB; free disk space or raise train.save_every_steps."
            )

    @functools.cached_property
    def _vae_digest(self) -> str:
        """The latent-cache key, hashed once (the VAE never trains)."""
        return vae_hash(self.model.vae)

    def _prepare_prior(self, cache_root: Path) -> PriorSet:
        """Generate missing class images with the base model, then cache their latents."""
        from lorastudio.data.dataset import Dataset
        from lorastudio.train.prior import class_images_folder

        cfg = self.cfg
        folder = class_images_folder(cfg, self.ws.datasets, self.model.sha256)
        if not cfg.prior.class_dir:  # lorastudio's own folder: fill it up
            with self.accelerator.main_process_first():
                if self.accelerator.is_main_process:
                    self._generate_class_images(folder)
        dataset = Dataset.open(folder, default_caption=cfg.prior.class_prompt)
        items = dataset.items()[: cfg.prior.num_images]
        if not items:
            raise LorastudioError(
                f"prior.class_dir {folder}: holds no images; add class images or remove the setting."
            )
        if len(items) < cfg.prior.num_images:
            self._say(
                f"prior: {folder} holds {len(items)} class images (prior.num_images={cfg.prior.num_images})"
            )
        try:
            images = scan_images(
                items, cfg.train.resolution, cfg.data.max_upscale, options=BucketOptions.from_config(cfg.data)
            )
        except LorastudioError as exc:
            raise LorastudioError(f"class images in {folder}: {exc}") from None
        check_cache_space(cache_root, images, False)
        latents = LatentCache(cache_root, self.model.vae, self._vae_digest)
        with self.accelerator.main_process_first():
            latents.prepare(images, flip=False)
        schedule = BatchSchedule(images, cfg.train.batch_size, cfg.seed + 1, flip=False)
        self._say(f"prior: {len(images)} class images, loss weight {cfg.prior.loss_weight:g}")
        return PriorSet(images, latents, schedule)

    def _generate_class_images(self, folder: Path) -> None:
        from tqdm.auto import tqdm

        from lorastudio.train.prior import existing_class_images, generate_class_images

        cfg = self.cfg
        missing = max(cfg.prior.num_images - len(existing_class_images(folder)), 0)
        if not missing:
            return
        bar = tqdm(total=missing, desc="class images", unit="img", disable=not self.progress)

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)
            self._emit({"event": "class_images", "done": done, "total": total})

        vae_dtype = self.model.vae.dtype
        try:
            made = generate_class_images(cfg, self.model, folder, progress)
        finally:
            bar.close()
            # The fp16 NaN fallback may have moved the VAE to fp32; latents use the load precision.
            self.model.vae.to(vae_dtype)
        self._say(f"prior: generated {made} class images for {cfg.prior.class_prompt!r} in {folder}")

    def _prepare_text_cache(self) -> None:
        """Encode every fixed caption once (disk-cached across runs) when the text side is frozen."""
        if self._text_trains:
            return
        captions = self._fixed_captions()
        if captions is None or not self.cfg.train.cache_text_encoder_outputs:
            return
        model = self.model
        key = text_cache_key(model.sha256, model.family.name, self.cfg.clip_skip, model.dtype)
        self.text_disk_cache = TextEncoderCache(self.ws.cache / "text", key)
        with self.accelerator.main_process_first():
            self._encode_missing(captions)
        disk = self.text_disk_cache
        self._say(f"text: {len(captions)} captions, {disk.writes} newly encoded (cache {disk.folder})")

    def run(self, plan: TrainPlan, resume_from: Path | None = None, stop_at_step: int | None = None) -> dict:
        self._prepare(plan)
        if self.accelerator.is_main_process:
            for leftover in clean_partial_folders(self.run_dir / "checkpoints"):
                self._say(f"checkpoints: removed {leftover.name}, a save that a kill interrupted")
        self.accelerator.wait_for_everyone()
        if resume_from is not None:
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
        try:
            finished = self._loop(log, stop_at_step)
        finally:
            if log is not None:
                log.close()
        if not finished:
            return {"finished": False, "step": self.step}
        return self._finish(log)

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
        try:
            while self.step < self.total_steps:
                total_loss = torch.zeros((), device=acc.device)
                for micro in range(accum):
                    micro_index = (self.step * accum + micro) * world + rank
                    loss = self._loss(micro_index) / accum
                    acc.backward(loss)
                    total_loss += loss.detach()
                self._reduce_gradients(self.params)
                if cfg.train.max_grad_norm:
                    acc.clip_grad_norm_(self.params, cfg.train.max_grad_norm)
                self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update()
                self.step += 1
                self._after_step(log, bar, float(acc.reduce(total_loss, "mean")), started, first_step)
                if self._checkpoint_due(self.step) or self.step == stop_at_step:
                    self.save_checkpoint()
                if cfg.samples.prompts and self._samples_due(self.step):
                    self.write_samples()
                if stop_at_step is not None and self.step >= stop_at_step and self.step < self.total_steps:
                    return False
        finally:
            bar.close()
        return True

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

    def _after_step(self, log: RunLog | None, bar, loss: float, started: float, first_step: int) -> None:
        lr = self.lr_scheduler.get_last_lr()[0]
        done = self.step - first_step
        rate = done / max(time.perf_counter() - started, 1e-9)
        eta = (self.total_steps - self.step) / rate if rate else None
        record = {
            "step": self.step,
            "loss": loss,
            "lr": lr,
            "epoch": self.schedule.epoch_of(
                self.step * self.cfg.train.grad_accum * self.accelerator.num_processes - 1
            ),
        }
        if log is not None:
            log.write(record)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        bar.update(1)
        self._emit(
            {
                "event": "step",
                "step": self.step,
                "total": self.total_steps,
                "loss": loss,
                "lr": lr,
                "it_per_s": rate,
                "eta_s": eta,
            }
        )

    # -- outputs ----------------------------------------------------------------------------
    def _facts(self) -> dict[str, Any]:
        cfg, model = self.cfg, self.model
        tags: dict[str, int] = {}
        for img in self.images:
            for tag in (t.strip() for t in img.caption.split(",")):
                if tag:
                    tags[tag] = tags.get(tag, 0) + 1
        buckets: dict[str, int] = {}
        for img in self.images:
            key = f"{img.bucket[0]}x{img.bucket[1]}"
            buckets[key] = buckets.get(key, 0) + img.repeats
        return {
            "output_name": self.name,
            "network_dim": cfg.lora.rank if cfg.trains_lora else None,
            "network_alpha": cfg.lora.alpha if cfg.trains_lora else None,
            "network_args": {
                "targets": cfg.lora.targets,
                "conv_dim": cfg.lora.conv_rank or cfg.lora.rank,
                "method": cfg.method,
                **lycoris_network_args(cfg.lora),
            }
            if cfg.trains_lora
            else None,
            "network_module": "lycoris.kohya" if cfg.trains_lora and cfg.lora.type != "lora" else None,
            "steps": self.step,
            "epoch": self.schedule.epoch_of(
                max(self.step * cfg.train.grad_accum * self.accelerator.num_processes - 1, 0)
            )
            + 1,
            "resolution": (cfg.train.resolution, cfg.train.resolution),
            "clip_skip": cfg.clip_skip,
            "v2": model.family.name == "sd2",
            "v_parameterization": self.prediction_type == "v_prediction",
            "num_train_images": len(self.images),
            "sd_model_name": model.name,
            "sd_model_hash": model.short_hash,
            "new_sd_model_hash": model.sha256,
            "dataset_dirs": {
                cfg.data.dir: {
                    "n_repeats": max(i.repeats for i in self.images),
                    "img_count": len(self.images),
                }
            },
            "tag_frequency": {cfg.data.dir: tags},
            "bucket_info": {"buckets": buckets},
            "learning_rate": cfg.train.learning_rate,
            **self._learning_rate_facts(),
            "mixed_precision": self.accelerator.mixed_precision,
            "lr_scheduler": cfg.train.lr_scheduler,
            "optimizer": cfg.train.optimizer,
            "min_snr_gamma": cfg.train.min_snr_gamma,
            "noise_offset": cfg.train.noise_offset or None,
            "seed": cfg.seed,
            "training_comment": f"lorastudio {cfg.method}"
            + (f", prior preservation: {cfg.prior.class_prompt!r}" if cfg.uses_prior else "")
            + (f", EMA {cfg.train.ema_decay:g}" if cfg.train.ema_decay else ""),
            "lorastudio_config": cfg.model_dump(mode="json"),
            "trigger_phrase": cfg.trigger or None,
            **kohya_training_facts(cfg),
        }

    def _learning_rate_facts(self) -> dict[str, Any]:
        """kohya's `ss_network_train_unet_only`, `ss_unet_lr`, and `ss_text_encoder_lr` only where it applied.

        The trigger embedding's rate is `ss_embedding_lr`: kohya readers take `ss_text_encoder_lr`
        for the rate of text-encoder LoRA layers.
        """
        cfg = self.cfg
        te_lora = cfg.trains_lora and cfg.lora.train_text_encoder
        te_lr = cfg.train.text_encoder_lr or cfg.train.learning_rate
        facts: dict[str, Any] = {"text_encoder_lr": te_lr if te_lora else None}
        if cfg.trains_embedding:
            facts["embedding_lr"] = cfg.embedding.learning_rate or te_lr
        if cfg.trains_lora:
            facts["unet_lr"] = cfg.train.learning_rate
            facts["network_train_unet_only"] = not te_lora
        return facts

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
        with self._averaged():
            return self._write_output_files(folder)

    def _output_targets(self, folder: Path) -> dict[str, Path]:
        return output_targets(
            folder,
            self.name,
            self.cfg.trigger,
            full_model=self.cfg.trains_full_unet,
            lora=self.lora_set is not None,
            embedding=self.embedding is not None,
        )

    def _write_output_files(self, folder: Path) -> dict[str, Path]:
        """The LoRA (or model) and the embedding, each on its own path (see `train.outputs`)."""
        folder.mkdir(parents=True, exist_ok=True)
        facts, family = self._facts(), self.model.family
        precision = self.cfg.output.save_precision
        targets = self._output_targets(folder)
        if "model" in targets:
            save_full_checkpoint(
                self.model, targets["model"], facts, base_name=self.cfg.model, precision=precision
            )
        if "lora" in targets:
            save_lora(
                self.lora_set,
                self.embedding,
                targets["lora"],
                family,
                self.model.unet.config,
                facts,
                precision=precision,
            )
        if "embedding" in targets:
            save_embedding(self.embedding, targets["embedding"], family, facts)
        return targets

    def write_samples(self) -> list[Path]:
        """Sample images for `samples.prompts` with the live model (LoRA and trigger applied)."""
        if not self.accelerator.is_main_process:
            return []
        folder = self.run_dir / "samples" / f"step-{self.step}"
        folder.mkdir(parents=True, exist_ok=True)
        unet = self.model.unet
        with (
            self._averaged(),
            self._without_dropout(),
            unet_dtype_bridge(unet, self.unet_dtype, self.model.dtype),
        ):
            paths = self._sample_prompts(folder)
        self._emit({"event": "samples", "step": self.step, "paths": [str(p) for p in paths]})
        return paths

    def _sample_prompts(self, folder: Path) -> list[Path]:
        from lorastudio.generate.conditioning import PromptEncoder
        from lorastudio.train.sampling import render, sampling_request

        cfg, model = self.cfg, self.model
        paths = []
        for index, prompt in enumerate(cfg.samples.prompts):
            text = self.embedding.expand(prompt) if self.embedding is not None else prompt
            request = sampling_request(cfg, cfg.samples, text, cfg.samples.negative)
            images = render(model, request, PromptEncoder(model, cfg.clip_skip))
            path = folder / f"{index:02d}.png"
            images[0].image.save(path)
            paths.append(path)
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
        """Drop older resumable states beyond `train.keep_states`; the LoRA/model files stay for scoring."""
        keep = self.cfg.train.keep_states
        if keep is None and self.cfg.trains_full_unet:
            keep = 1  # a whole-UNet state is gigabytes
        if keep is None:
            return
        for old in _saved_states(self.run_dir)[:-keep]:
            remove_folder(old)

    def _prune_checkpoints(self) -> None:
        """`output.keep_last`: only the newest N step checkpoints stay, and the best-scored one."""
        keep = self.cfg.output.keep_last
        if keep is None:
            return
        from lorastudio.train.runs import RunFolder

        removed = prune_checkpoints(self.run_dir / "checkpoints", keep, protect=RunFolder(self.run_dir).chosen_steps)
        if removed:
            self._say(f"checkpoints: removed {', '.join(f'step-{s}' for s in removed)} (output.keep_last={keep})")

    def _copy_to_library(self, paths: dict[str, Path]) -> dict[str, str]:
        """Check each output, then copy it into models/, loras/ or embeddings/ (see `train.outputs`)."""
        ws, out = self.ws, {}
        trigger = self.cfg.trigger if self.embedding is not None else None
        if "model" in paths:
            library = ws.safe_child(ws.models, f"{self.name}.safetensors", "output.name")
            copy_to_library(paths["model"], library, "model")
            out.update(model=str(paths["model"]), library_model=str(library))
        if "lora" in paths:
            library = ws.safe_child(ws.loras, f"{self.name}.safetensors", "output.name")
            copy_to_library(
                paths["lora"], library, "lora", expect_lora_keys=self.lora_set is not None, trigger=trigger
            )
            out.update(lora=str(paths["lora"]), library_lora=str(library))
        if "embedding" in paths:
            library = ws.safe_child(ws.embeddings, f"{self.cfg.trigger}.safetensors", "trigger")
            copy_to_library(paths["embedding"], library, "embedding")
            out.update(embedding=str(paths["embedding"]), library_embedding=str(library))
        return out

    def _ranks_agree(self) -> bool:
        """True when every process ends with the same trainable weights (checksums compared)."""
        if self.accelerator.num_processes == 1:
            return True
        sums = torch.stack([p.detach().double().sum() for p in self.params])
        gathered = self.accelerator.gather(sums[None].to(self.accelerator.device))
        return bool((gathered == gathered[0]).all())

    def _finish(self, log: RunLog | None) -> dict:
        self.accelerator.wait_for_everyone()
        result: dict[str, Any] = {
            "finished": True,
            "step": self.step,
            "run_dir": str(self.run_dir),
            "name": self.name,
        }
        result["ranks_agree"] = self._ranks_agree()
        if self.accelerator.is_main_process:
            paths = self._write_outputs(self.run_dir)
            result.update(self._copy_to_library(paths))
            records = log.records if log is not None else []
            draw_loss_curve(records, self.run_dir / "loss.png")
            result["final_loss"] = records[-1]["loss"] if records else None
        self._emit({"event": "done", **result})
        self.accelerator.wait_for_everyone()
        return result


def _log_records(run_dir: Path) -> list[dict]:
    from lorastudio.train.logs import read_log

    return read_log(run_dir / "log.jsonl")
