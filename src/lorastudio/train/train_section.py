"""The `train:` section of a training config: how long and how the weights are optimised.

How long: one of `train.steps`, `train.epochs_per_image`, `train.max_epochs` (BUDGET_KEYS),
else DEFAULT_STEPS. How: optimizer, learning rates and schedule, precision, noise, checkpoint
cadence. `set_derived` fills defaults the config works out itself (not the user's keys).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from lorastudio.config import StrictModel
from lorastudio.models.compiled import CompileBackend

__all__ = [
    "ADAPTIVE_OPTIMIZERS",
    "BUDGET_KEYS",
    "DEFAULT_STEPS",
    "LrSchedulerName",
    "TrainSection",
    "set_derived",
    "uses_relative_step",
]

DEFAULT_STEPS = 1000  # when no layer says how long to train
# The ways to say how long a run lasts: one per config, a higher layer's replaces a lower one's.
BUDGET_KEYS = ("train.steps", "train.epochs_per_image", "train.max_epochs")
# Optimizers that find their own step size: the learning rate is a multiplier (1.0 is usual).
ADAPTIVE_OPTIMIZERS = ("prodigy", "dadaptation", "dadapt_adam", "dadapt_lion")


def set_derived(model: BaseModel, name: str, value: Any) -> None:
    """Fill a value the config derives (not the user's): it stays out of `model_fields_set`.

    An API request's set keys are the user's layer; a derived default must not pose as one.
    """
    model.__dict__[name] = value


def uses_relative_step(optimizer: str, args: dict[str, Any]) -> bool:
    """Adafactor with `relative_step` (its default) computes its own step size from the step count."""
    return optimizer == "adafactor" and bool(args.get("relative_step", True))


LrSchedulerName = Literal[
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "adafactor",  # kohya's: follows a relative-step Adafactor's own rate
]


class TrainSection(StrictModel):
    """How long and how the weights are optimised."""

    steps: int | None = Field(
        None,
        ge=1,
        description="Optimizer steps to train (kohya max_train_steps). Set one of steps, epochs_per_image"
        " and max_epochs; default: 1000 steps.",
    )
    epochs_per_image: float | None = Field(
        None,
        gt=0,
        description="How long to train as exposures per image (repeats counted); steps = this x images /"
        " (batch_size x grad_accum).",
    )
    max_epochs: int | None = Field(
        None,
        ge=1,
        description="How long to train in kohya epochs: every image x repeats once per epoch (kohya max_train_epochs).",
    )
    max_steps_per_image: int | None = Field(
        None, ge=1, description="Cap on the budget: steps <= this x number of images (EasyPhoto)."
    )
    batch_size: int = Field(1, ge=1, description="Images per batch (kohya train_batch_size).")
    grad_accum: int = Field(
        1,
        ge=1,
        description="Batches added up per optimizer step: the effective batch is batch_size x grad_accum"
        " (kohya gradient_accumulation_steps).",
    )
    learning_rate: float = Field(
        1e-4,
        gt=0,
        description="Learning rate of the UNet / LoRA weights (kohya learning_rate, unet_lr); default 1e-4,"
        " 2e-6 for dreambooth/finetune, 1.0 (a multiplier) for prodigy and D-Adaptation.",
    )
    text_encoder_lr: float | None = Field(
        None,
        gt=0,
        description="Learning rate of the text-encoder weights (kohya text_encoder_lr); default: learning_rate.",
    )
    weight_decay: float = Field(
        1e-2, ge=0, description="Optimizer weight decay (kohya optimizer_args weight_decay)."
    )
    optimizer: Literal[
        "adamw",
        "adamw8bit",
        "lion",
        "prodigy",
        "dadaptation",
        "dadapt_adam",
        "dadapt_lion",
        "adafactor",
        "came",
    ] = Field(
        "adamw",
        description="Optimizer (kohya optimizer_type, any case: AdamW8bit, Prodigy...); adamw8bit needs"
        " bitsandbytes and a CUDA GPU, the others but adamw the pytorch-optimizer package.",
    )
    optimizer_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the optimizer, checked against its signature, e.g."
        " {betas: [0.9, 0.99]} (kohya optimizer_args).",
    )
    lr_scheduler: LrSchedulerName = Field(
        "constant_with_warmup",
        description="Learning-rate schedule (kohya lr_scheduler); 'adafactor' follows relative-step"
        " Adafactor's own rate.",
    )
    lr_warmup_steps: int = Field(
        0,
        ge=0,
        description="Steps of linear warm-up from 0 to the learning rate (kohya lr_warmup_steps); as a share"
        " of the run: lr_warmup_ratio.",
    )
    lr_scheduler_num_cycles: int = Field(
        1, ge=1, description="Hard restarts of cosine_with_restarts (kohya lr_scheduler_num_cycles)."
    )
    lr_scheduler_power: float = Field(
        1.0, gt=0, description="Exponent of the polynomial decay (kohya lr_scheduler_power)."
    )
    resolution: int = Field(
        512,
        ge=64,
        description="Training resolution in pixels: buckets hold about resolution^2 pixels (kohya resolution,"
        " square only); left out, the base model's native size: SD 1.x 512, SD 2.x 768-v 768, SDXL and"
        " Kolors 1024.",
    )
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto",
        description="Compute precision (kohya mixed_precision); auto: bf16 where the GPU has it, else fp16;"
        " no (fp32) on the CPU.",
    )
    vae_fp32: bool = Field(
        False,
        description="Encode the training latents with the VAE in fp32 (kohya no_half_vae, sdxl_no_half_vae); off,"
        " on a GPU the VAE encodes in the model's bf16 (fp16 where the GPU lacks bf16), whatever mixed_precision"
        " says, with no NaN retry: the SDXL VAE can overflow in fp16. The latents cache apart from half ones.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass: less memory, slower (kohya gradient_checkpointing).",
    )
    torch_compile: bool = Field(
        False,
        description="torch.compile the UNet for training (kohya torch_compile): each bucket shape compiles"
        " once (static shapes), later steps run the fused code; pays off on a GPU over hundreds of steps.",
    )
    dynamo_backend: CompileBackend = Field(
        "inductor",
        description="The torch.compile backend (kohya dynamo_backend); eager and aot_eager trace without"
        " generating code (debugging).",
    )
    min_snr_gamma: float | None = Field(
        None,
        gt=0,
        description="Min-SNR loss weighting gamma, 5 is usual; unset = off (kohya min_snr_gamma).",
    )
    noise_offset: float = Field(
        0.0,
        ge=0.0,
        description="Offset noise strength, e.g. 0.05-0.1 for darker darks and brighter brights; 0 = off"
        " (kohya noise_offset).",
    )
    multires_noise_iterations: int = Field(
        0,
        ge=0,
        description="Pyramid (kohya multires) noise levels, 6-10 typical; 0 = off (kohya multires_noise_iterations).",
    )
    multires_noise_discount: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="Weight of each coarser pyramid-noise level, 0.1-0.3 typical (kohya multires_noise_discount).",
    )
    attention: Literal["auto", "sdpa", "xformers"] = Field(
        "auto",
        description="Attention kernel; auto: xformers when installed, else PyTorch SDPA (kohya xformers / sdpa).",
    )
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the gradient norm to this; unset = no clipping (kohya max_grad_norm)."
    )
    save_every_steps: int | None = Field(
        500,
        ge=1,
        description="Save a checkpoint every N steps (kohya save_every_n_steps); default 500, off when"
        " save_every_epochs is set.",
    )
    save_every_epochs: int | None = Field(
        None,
        ge=1,
        description="Save a checkpoint at every Nth epoch boundary (kohya save_every_n_epochs).",
    )
    keep_states: int | None = Field(
        None,
        ge=1,
        description="Resumable optimizer states kept, newest first; default: all for LoRA runs, the last"
        " for dreambooth/finetune.",
    )
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Keep an exponential moving average of the trained weights (e.g. 0.999); saved files"
        " use it. Unset = off.",
    )
    cache_text_encoder_outputs: bool = Field(
        True,
        description="Cache caption embeddings on disk when the text encoder is frozen and captions are"
        " fixed (kohya cache_text_encoder_outputs).",
    )
    lr_warmup_ratio: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Warm-up as a share of the run's steps, e.g. 0.1 (kohya lr_warmup_steps below 1):"
        " int(ratio x steps) warm-up steps; replaces lr_warmup_steps.",
    )

    def warmup_steps(self, total_steps: int) -> int:
        """The warm-up in steps: a ratio of the run is `int(ratio x steps)`, as kohya counts it."""
        if self.lr_warmup_ratio is not None:
            return int(self.lr_warmup_ratio * total_steps)
        return self.lr_warmup_steps

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare `no` as false

    @field_validator("optimizer", "lr_scheduler", mode="before")
    @classmethod
    def _lower_name(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value  # kohya spells AdamW8bit, Prodigy

    @model_validator(mode="after")
    def _one_budget(self) -> TrainSection:
        """One way to say how long to train; 1000 steps when none is given."""
        given = [key.split(".")[1] for key in BUDGET_KEYS if getattr(self, key.split(".")[1]) is not None]
        if len(given) > 1:
            first, second = given[0], given[1]
            raise ValueError(
                f"train.{first} and train.{second} both set how long training runs;"
                f" drop one of them (train.{second} to keep train.{first}, or train.{first})"
            )
        if not given:
            set_derived(self, "steps", DEFAULT_STEPS)
        if self.lr_warmup_ratio is not None and self.lr_warmup_steps:
            raise ValueError(
                f"train.lr_warmup_steps={self.lr_warmup_steps} and train.lr_warmup_ratio={self.lr_warmup_ratio:g}"
                " both set the warm-up; drop one of them"
            )
        if self.save_every_epochs is not None and "save_every_steps" not in self.model_fields_set:
            set_derived(self, "save_every_steps", None)  # epoch checkpoints only, as asked
        return self

    @model_validator(mode="after")
    def _optimizer_defaults(self) -> TrainSection:
        """Adaptive optimizers take the learning rate as a multiplier; relative-step Adafactor needs its scheduler."""
        if self.optimizer in ADAPTIVE_OPTIMIZERS and "learning_rate" not in self.model_fields_set:
            set_derived(self, "learning_rate", 1.0)
        relative = uses_relative_step(self.optimizer, self.optimizer_args)
        if relative and self.lr_scheduler != "adafactor":
            if "lr_scheduler" in self.model_fields_set:
                raise ValueError(
                    f"optimizer adafactor with relative_step picks its own step size, so lr_scheduler"
                    f" {self.lr_scheduler!r} would not apply; set train.lr_scheduler=adafactor"
                    " or train.optimizer_args.relative_step=false"
                )
            set_derived(self, "lr_scheduler", "adafactor")
        if self.lr_scheduler == "adafactor" and not relative:
            raise ValueError(
                "lr_scheduler 'adafactor' only reports relative-step Adafactor's own step size;"
                " use it with train.optimizer=adafactor (relative_step true) or pick another scheduler"
            )
        return self
