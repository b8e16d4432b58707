"""The training config: one typed model, presets as YAML files, `key=value` overrides.

Key names such as `train.steps`, `lora.rank` and `data.dir` are public: scripts and docs
use them, so they only ever gain siblings, never change.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from lorastudio.config import StrictModel, load_config, read_config_file
from lorastudio.errors import NotFoundError

__all__ = [
    "TrainConfig",
    "DataConfig",
    "TrainSection",
    "LoraConfig",
    "EmbeddingConfig",
    "OutputConfig",
    "SamplesConfig",
    "ScoringConfig",
    "PriorConfig",
    "FULL_MODEL_METHODS",
    "preset_names",
    "read_preset",
    "load_train_config",
    "budget_steps",
]


FULL_MODEL_METHODS = ("dreambooth", "finetune")
FULL_MODEL_LEARNING_RATE = 2e-6  # whole-UNet training: two orders of magnitude below LoRA rates
# Optimizers that find their own step size: the learning rate is a multiplier (1.0 is usual).
ADAPTIVE_OPTIMIZERS = ("prodigy", "dadaptation", "dadapt_adam", "dadapt_lion")


def uses_relative_step(optimizer: str, args: dict[str, Any]) -> bool:
    """Adafactor with `relative_step` (its default) computes its own step size from the step count."""
    return optimizer == "adafactor" and bool(args.get("relative_step", True))


class DataConfig(StrictModel):
    dir: str = ""  # an imported data set name or a folder / metadata file path
    default_caption: str = ""  # caption for images without one (EasyPhoto: the trigger)
    caption_prefix_trigger: bool = True  # put the trigger first when a caption lacks it
    shuffle_tags: bool = False  # shuffle comma-separated tags, keeping the first `keep_tokens`
    keep_tokens: int = Field(1, ge=0)
    caption_dropout: float = Field(0.0, ge=0.0, le=1.0)  # chance of training on an empty caption
    flip: bool = False  # random horizontal flip (cached as a second latent)
    max_upscale: float = Field(1.0, ge=1.0)  # refuse images that would need more upscaling
    # kohya parity (caption_tag_dropout_rate, color_aug, bucket options, subset num_repeats).
    tag_dropout: float = Field(0.0, ge=0.0, le=1.0)  # drop each tag with this chance (not the first keep_tokens)
    color_aug: bool = False  # small hue/brightness jitter per exposure; encodes latents every step (no cache)
    repeats: int | None = Field(None, ge=1)  # exposures per epoch of every image (default: NN_ folder prefix)
    min_bucket_reso: int | None = Field(None, ge=64)  # smallest bucket side (default: half the resolution, <= 256)
    max_bucket_reso: int | None = Field(None, ge=64)  # largest bucket side (default: 2 x resolution)
    bucket_reso_steps: int = Field(64, ge=8, multiple_of=8)  # bucket sides are multiples of this
    bucket_no_upscale: bool = False  # small images keep their size (rounded down to bucket_reso_steps)


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
    steps: int = Field(1000, ge=1)
    epochs_per_image: float | None = Field(None, gt=0)  # exposures per image; overrides steps
    max_steps_per_image: int | None = Field(None, ge=1)  # cap: steps <= this x images (EasyPhoto)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    text_encoder_lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
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
    ] = "adamw"
    # Keyword arguments of the optimizer, checked against its signature (e.g. {betas: [0.9, 0.99]}).
    optimizer_args: dict[str, Any] = Field(default_factory=dict)
    lr_scheduler: LrSchedulerName = "constant_with_warmup"
    lr_warmup_steps: int = Field(0, ge=0)
    lr_scheduler_num_cycles: int = Field(1, ge=1)  # hard restarts of cosine_with_restarts
    lr_scheduler_power: float = Field(1.0, gt=0)  # exponent of polynomial decay
    resolution: int = Field(512, ge=64)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    min_snr_gamma: float | None = Field(None, gt=0)
    noise_offset: float = Field(0.0, ge=0.0)
    # Pyramid noise (kohya's multires noise): 6-10 iterations, discount 0.1-0.3 are typical.
    multires_noise_iterations: int = Field(0, ge=0)
    multires_noise_discount: float = Field(0.3, gt=0.0, le=1.0)
    attention: Literal["auto", "sdpa", "xformers"] = "auto"  # auto: xformers when installed, else SDPA
    max_grad_norm: float | None = Field(1.0, gt=0)
    save_every_steps: int = Field(500, ge=1)
    # Resumable states kept (newest first); default: all for LoRA runs, the last for dreambooth/finetune.
    keep_states: int | None = Field(None, ge=1)
    ema_decay: float | None = Field(None, gt=0, lt=1)  # EMA of the trained weights; saved files use it
    cache_text_encoder_outputs: bool = True  # on disk, when the text encoder is frozen and captions fixed

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare `no` as false

    @field_validator("optimizer", "lr_scheduler", mode="before")
    @classmethod
    def _lower_name(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value  # kohya spells AdamW8bit, Prodigy

    @model_validator(mode="after")
    def _optimizer_defaults(self) -> TrainSection:
        """Adaptive optimizers take the learning rate as a multiplier; relative-step Adafactor needs its scheduler."""
        if self.optimizer in ADAPTIVE_OPTIMIZERS and "learning_rate" not in self.model_fields_set:
            self.learning_rate = 1.0
        relative = uses_relative_step(self.optimizer, self.optimizer_args)
        if relative and self.lr_scheduler != "adafactor":
            if "lr_scheduler" in self.model_fields_set:
                raise ValueError(
                    f"optimizer adafactor with relative_step picks its own step size, so lr_scheduler"
                    f" {self.lr_scheduler!r} would not apply; set train.lr_scheduler=adafactor"
                    " or train.optimizer_args.relative_step=false"
                )
            self.lr_scheduler = "adafactor"
        if self.lr_scheduler == "adafactor" and not relative:
            raise ValueError(
                "lr_scheduler 'adafactor' only reports relative-step Adafactor's own step size;"
                " use it with train.optimizer=adafactor (relative_step true) or pick another scheduler"
            )
        return self


class LoraConfig(StrictModel):
    rank: int = Field(16, ge=1)
    alpha: float = Field(8.0, gt=0)
    targets: Literal["attn", "kohya", "locon"] = "kohya"
    conv_rank: int | None = Field(None, ge=1)  # locon: rank of 3x3 convs (default: rank)
    type: Literal["lora", "loha", "lokr"] = "lora"  # LyCORIS LoHa / LoKr: saved in LyCORIS' layout
    train_text_encoder: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class EmbeddingConfig(StrictModel):
    num_vectors: int = Field(1, ge=1, le=75)
    init_text: str = "person"
    learning_rate: float | None = Field(None, gt=0)  # default: train.text_encoder_lr or learning_rate


class OutputConfig(StrictModel):
    name: str = ""  # file name of the LoRA in the library (default: the run name)
    # LoRA / LyCORIS files and dreambooth/finetune checkpoints (kohya's --save_precision; fp16 as its guide).
    save_precision: Literal["fp16", "bf16", "fp32"] = "fp16"
    # Step checkpoints kept (kohya's save_last_n_epochs); the final and the best-scored one always stay.
    keep_last: int | None = Field(None, ge=1)


class PriorConfig(StrictModel):
    """Prior preservation (DreamBooth): class images keep the model's idea of the class.

    Set `class_prompt` to enable it with any method. Missing class images are generated
    with the base model before training and kept for later runs.
    """

    class_prompt: str = ""  # e.g. "a photo of a dog"; empty = no prior preservation
    class_dir: str = ""  # folder of class images (default: datasets/class-<prompt>-<model hash>)
    num_images: int = Field(100, ge=1)  # generate until the folder holds this many
    loss_weight: float = Field(1.0, gt=0)
    negative_prompt: str = ""
    steps: int = Field(25, ge=1)  # sampling steps for generated class images
    cfg_scale: float = 7.0
    sampler: str = "Euler a"
    seed: int = Field(0, ge=0)  # class image i uses seed + i (fixed: the folder is reused)


class SamplesConfig(StrictModel):
    prompts: list[str] = Field(default_factory=list)
    every_steps: int | None = Field(None, ge=1)  # default: train.save_every_steps
    negative: str = ""
    steps: int = Field(20, ge=1)
    cfg_scale: float = 7.0
    sampler: str = "Euler a"
    seed: int = 0


class ScoringConfig(StrictModel):
    """Checkpoint choice after training: score every checkpoint, copy the best to loras/."""

    enabled: bool = True
    prompts: list[str] = Field(default_factory=list)  # default: the trigger and one training caption
    scorers: list[str] = Field(
        default_factory=lambda: ["validation_loss", "clip_similarity", "tag_agreement"]
    )
    clip_model: str = ""  # a local CLIP-vision folder; enables `clip_similarity`
    tagger_model: str = ""  # a local WD14 tagger folder; enables `tag_agreement`
    validation_dir: str = ""  # held-out images (default: a few training images)
    steps: int = Field(20, ge=1)  # sampling steps of the contact sheet
    cfg_scale: float = 7.0
    sampler: str = "Euler a"
    seed: int = 0


class TrainConfig(StrictModel):
    """Everything one training run needs; saved as `config.yaml` in the run folder."""

    model: str = ""  # a library name, a path, or tiny-sd15 / tiny-sd2 / tiny-sdxl
    family: Literal["sd15", "sd2", "sdxl"] | None = None  # the family a preset was made for
    method: Literal["lora", "embedding", "pivotal", "dreambooth", "finetune"] = "lora"
    trigger: str = ""
    seed: int = 42
    clip_skip: int = Field(1, ge=1, le=12)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainSection = Field(default_factory=TrainSection)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    samples: SamplesConfig = Field(default_factory=SamplesConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    preset: str | None = None  # the preset this config started from (informational)

    @model_validator(mode="after")
    def _check_method(self) -> TrainConfig:
        if self.method in ("embedding", "pivotal") and not self.trigger:
            raise ValueError(f"method {self.method!r} trains a trigger embedding; set trigger=<word>")
        if self.trains_full_unet and "learning_rate" not in self.train.model_fields_set:
            # The 1e-4 default is a LoRA rate; it wrecks a whole UNet in a few hundred steps.
            self.train.learning_rate = FULL_MODEL_LEARNING_RATE
        if self.method == "dreambooth" and not self.prior.class_prompt:
            raise ValueError(
                "method 'dreambooth' needs class images; set prior.class_prompt='a photo of a <class>'"
                " (or use method=finetune without them)"
            )
        if self.trigger and (" " in self.trigger.strip() or "," in self.trigger):
            raise ValueError("trigger must be one word (no spaces or commas)")
        return self

    @model_validator(mode="after")
    def _check_buckets(self) -> TrainConfig:
        data, resolution = self.data, self.train.resolution
        step = data.bucket_reso_steps
        if resolution % step:
            raise ValueError(
                f"train.resolution {resolution} is not a multiple of data.bucket_reso_steps {step};"
                " change one of them"
            )
        if data.min_bucket_reso is not None and data.min_bucket_reso > resolution:
            raise ValueError(
                f"data.min_bucket_reso {data.min_bucket_reso} is above train.resolution {resolution}; lower it"
            )
        if data.max_bucket_reso is not None and data.max_bucket_reso < resolution:
            raise ValueError(
                f"data.max_bucket_reso {data.max_bucket_reso} is below train.resolution {resolution}; raise it"
            )
        return self

    @property
    def trains_lora(self) -> bool:
        return self.method in ("lora", "pivotal")

    @property
    def trains_embedding(self) -> bool:
        return self.method in ("embedding", "pivotal")

    @property
    def trains_full_unet(self) -> bool:
        """DreamBooth and fine-tune train every UNet weight and save a whole checkpoint."""
        return self.method in FULL_MODEL_METHODS

    @property
    def uses_prior(self) -> bool:
        return bool(self.prior.class_prompt)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def preset_names() -> list[str]:
    """Names of the presets shipped in the package (`train/presets/*.yaml`)."""
    folder = resources.files("lorastudio.train").joinpath("presets")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    """A preset as a dict: a shipped name, or a path to a user's own copy."""
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml", ".toml") and path.is_file():
        data = read_config_file(path)
    else:
        if name not in preset_names():
            raise NotFoundError(f"preset {name!r} not found; choose one of: {', '.join(preset_names())}.")
        text = (
            resources.files("lorastudio.train")
            .joinpath("presets", f"{name}.yaml")
            .read_text(encoding="utf-8")
        )
        data = yaml.safe_load(text) or {}
    data.setdefault("preset", path.stem if path.suffix else name)
    return data


def load_train_config(
    file: str | Path | None = None, overrides: Any = (), preset: str | None = None
) -> TrainConfig:
    """defaults < preset < file < overrides; a `preset:` key in the file selects a preset too."""
    base: dict[str, Any] = {}
    if preset is None and file is not None:
        preset = read_config_file(file).get("preset")
    if preset:
        base = read_preset(preset)
    return load_config(TrainConfig, file, overrides, base=base)


def budget_steps(
    cfg: TrainConfig, num_images: int, num_samples: int, num_processes: int = 1
) -> tuple[int, str]:
    """Optimizer steps for this data set, and a sentence saying how they were chosen."""
    per_step = cfg.train.batch_size * cfg.train.grad_accum * num_processes
    if cfg.train.epochs_per_image is not None:
        total = cfg.train.epochs_per_image * num_samples
        steps = max(1, math.ceil(total / per_step))
        why = (
            f"{num_images} images ({num_samples} with repeats) x {cfg.train.epochs_per_image:g} exposures"
            f" = {total:g} samples / {per_step} per step = {steps} steps"
        )
    else:
        steps = cfg.train.steps
        why = f"{steps} steps x {per_step} samples per step = {steps * per_step / max(num_samples, 1):.1f} exposures per image"
    cap = cfg.train.max_steps_per_image
    if cap is not None and steps > cap * num_images:
        steps = cap * num_images
        why += f"; capped at {cap} steps per image = {steps} steps"
    return steps, why
