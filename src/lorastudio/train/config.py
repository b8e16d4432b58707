"""The training config: one typed model, presets as YAML files, `key=value` overrides.

Key names such as `train.steps`, `lora.rank` and `data.dir` are public: scripts and docs
use them, so they only ever gain siblings, never change.

Layers, lowest first: model defaults < preset < config file(s) < kohya import < overrides
(or an API request). A key the user sets beats the preset's; the ways to say how long a
run lasts (`train.steps`, `train.epochs_per_image`, `train.max_epochs`) replace each other
across layers and are refused together within one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

from lorastudio.config import (
    ConfigLayer,
    KeyGroup,
    ResolvedConfig,
    StrictModel,
    file_layers,
    flatten_keys,
    override_layer,
    read_config_file,
    resolve_config,
)
from lorastudio.errors import LorastudioError, NotFoundError

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
    "resolve_train_config",
    "saved_train_config",
    "request_train_config",
    "explain_lines",
    "budget_steps",
    "BUDGET_KEYS",
    "DEFAULT_STEPS",
]


FULL_MODEL_METHODS = ("dreambooth", "finetune")
FULL_MODEL_LEARNING_RATE = 2e-6  # whole-UNet training: two orders of magnitude below LoRA rates
DEFAULT_STEPS = 1000  # when no layer says how long to train
# The ways to say how long a run lasts: one per config, a higher layer's replaces a lower one's.
BUDGET_KEYS = ("train.steps", "train.epochs_per_image", "train.max_epochs")
BUDGET = KeyGroup(BUDGET_KEYS, (*BUDGET_KEYS, "train.max_steps_per_image"), "set how long training runs")
# Checkpoint cadence: a user's `save_every_epochs` replaces a preset's `save_every_steps` (both may be set together).
SAVE_CADENCE = KeyGroup(
    ("train.save_every_steps", "train.save_every_epochs"),
    ("train.save_every_steps", "train.save_every_epochs"),
    "set when checkpoints are saved",
    one_per_layer=False,
)
TRAIN_KEY_GROUPS = (BUDGET, SAVE_CADENCE)
# Optimizers that find their own step size: the learning rate is a multiplier (1.0 is usual).
ADAPTIVE_OPTIMIZERS = ("prodigy", "dadaptation", "dadapt_adam", "dadapt_lion")


def _derive(model: BaseModel, name: str, value: Any) -> None:
    """Fill a value the config derives (not the user's): it stays out of `model_fields_set`.

    An API request's set keys are the user's layer; a derived default must not pose as one.
    """
    model.__dict__[name] = value


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
    # How long to train: set one of these three (default: 1000 steps).
    steps: int | None = Field(None, ge=1)  # optimizer steps
    epochs_per_image: float | None = Field(None, gt=0)  # exposures per image
    max_epochs: int | None = Field(None, ge=1)  # kohya epochs: every image x repeats once per epoch
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
    save_every_steps: int | None = Field(500, ge=1)  # default: off when save_every_epochs is set
    save_every_epochs: int | None = Field(None, ge=1)  # checkpoint at every Nth epoch boundary (kohya)
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
            _derive(self, "steps", DEFAULT_STEPS)
        if self.save_every_epochs is not None and "save_every_steps" not in self.model_fields_set:
            _derive(self, "save_every_steps", None)  # epoch checkpoints only, as asked
        return self

    @model_validator(mode="after")
    def _optimizer_defaults(self) -> TrainSection:
        """Adaptive optimizers take the learning rate as a multiplier; relative-step Adafactor needs its scheduler."""
        if self.optimizer in ADAPTIVE_OPTIMIZERS and "learning_rate" not in self.model_fields_set:
            _derive(self, "learning_rate", 1.0)
        relative = uses_relative_step(self.optimizer, self.optimizer_args)
        if relative and self.lr_scheduler != "adafactor":
            if "lr_scheduler" in self.model_fields_set:
                raise ValueError(
                    f"optimizer adafactor with relative_step picks its own step size, so lr_scheduler"
                    f" {self.lr_scheduler!r} would not apply; set train.lr_scheduler=adafactor"
                    " or train.optimizer_args.relative_step=false"
                )
            _derive(self, "lr_scheduler", "adafactor")
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
    every_steps: int | None = Field(None, ge=1)  # default: with every checkpoint
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
    preset: str | None = None  # the preset this config started from; an API request layers over it

    @model_validator(mode="after")
    def _check_method(self) -> TrainConfig:
        if self.method in ("embedding", "pivotal") and not self.trigger:
            raise ValueError(f"method {self.method!r} trains a trigger embedding; set trigger=<word>")
        if self.trains_full_unet and "learning_rate" not in self.train.model_fields_set:
            # The 1e-4 default is a LoRA rate; it wrecks a whole UNet in a few hundred steps.
            _derive(self.train, "learning_rate", FULL_MODEL_LEARNING_RATE)
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


def _preset_layer(name: str) -> ConfigLayer:
    data = read_preset(name)
    return ConfigLayer(f"preset {data.get('preset') or name}", data)


def resolve_train_config(
    files: str | Path | Sequence[str | Path] | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    preset: str | None = None,
    imported: Sequence[ConfigLayer] = (),
) -> ResolvedConfig[TrainConfig]:
    """defaults < preset < file(s) < imported (kohya) < overrides, with every value's source.

    A `preset:` key in a file selects the preset when `preset` is not given (a later file wins).
    """
    middle = [*file_layers(files), *imported]
    if preset is None:
        named = [layer.data["preset"] for layer in middle if layer.data.get("preset")]
        preset = named[-1] if named else None
    layers = [_preset_layer(preset)] if preset else []
    layers += [*middle, override_layer(overrides)]
    source = str(files) if isinstance(files, str | Path) else "config"
    return resolve_config(TrainConfig, layers, TRAIN_KEY_GROUPS, source=source)


def load_train_config(
    file: str | Path | Sequence[str | Path] | None = None, overrides: Any = (), preset: str | None = None
) -> TrainConfig:
    """defaults < preset < file(s) < overrides; a `preset:` key in the file selects a preset too."""
    return resolve_train_config(file, overrides, preset).config


def saved_train_config(data: Mapping[str, Any] | str | Path) -> TrainConfig:
    """A resolved config as a run saved it (`config.yaml`, a queued job): no layers to apply.

    Runs saved before `train.steps` became optional hold `steps` beside `epochs_per_image`;
    the latter won then, so it wins here too.
    """
    source = str(data) if isinstance(data, str | Path) else "saved config"
    raw = read_config_file(data) if isinstance(data, str | Path) else dict(data)
    train = raw.get("train")
    if isinstance(train, Mapping) and train.get("steps") is not None:
        if any(train.get(key.split(".")[1]) is not None for key in BUDGET_KEYS[1:]):
            raw["train"] = {k: v for k, v in train.items() if k != "steps"}
    return resolve_config(TrainConfig, [ConfigLayer(source, raw)], source=source).config


def request_train_config(cfg: TrainConfig) -> TrainConfig:
    """An API request's config: with `preset` set, the request's keys layer over that shipped preset.

    Only shipped presets: a request must not make the server read a file of its choosing.
    """
    if not cfg.preset:
        return cfg
    if cfg.preset not in preset_names():
        raise LorastudioError(
            f"preset {cfg.preset!r}: not a shipped preset; choose one of {', '.join(preset_names())}"
            " or send the whole config without `preset`."
        )
    request = ConfigLayer("request", cfg.model_dump(mode="json", exclude_unset=True))
    return resolve_config(TrainConfig, [_preset_layer(cfg.preset), request], TRAIN_KEY_GROUPS, "request").config


def explain_lines(resolved: ResolvedConfig[TrainConfig]) -> list[str]:
    """The resolved config, one `key = value  <- source` line per setting, then what was dropped."""
    values = flatten_keys(resolved.config.model_dump(mode="json"))
    width = max(len(key) for key in values)
    lines = ["# resolved training config: defaults < preset < file(s) < overrides"]
    for key, value in values.items():
        source = resolved.sources.get(key) or _source_above(key, resolved.sources) or "default"
        shown = json.dumps(value, ensure_ascii=False, default=str)
        lines.append(f"{key:<{width}} = {shown:<24}  <- {source}")
    lines += [f"# {line}" for line in resolved.dropped]
    return lines


def _source_above(key: str, sources: Mapping[str, str]) -> str | None:
    """A value inside a mapping a layer set as a whole (`train.optimizer_args: {...}`)."""
    parts = key.split(".")
    for end in range(len(parts) - 1, 0, -1):
        found = sources.get(".".join(parts[:end]))
        if found:
            return found
    return None


def budget_steps(
    cfg: TrainConfig,
    num_images: int,
    num_samples: int,
    num_processes: int = 1,
    batches_per_epoch: int | None = None,
) -> tuple[int, str]:
    """Optimizer steps for this data set, and a sentence saying how they were chosen.

    `batches_per_epoch` is the trainer's count (one bucket per batch, so it can exceed
    samples / batch size); without it, samples / batch size rounded up.
    """
    train = cfg.train
    per_step = train.batch_size * train.grad_accum * num_processes
    if train.max_epochs is not None:
        batches = batches_per_epoch or math.ceil(num_samples / train.batch_size)
        per_step_batches = train.grad_accum * num_processes
        steps = max(1, math.ceil(train.max_epochs * batches / per_step_batches))
        why = (
            f"{train.max_epochs} epochs x {batches} batches of {train.batch_size}"
            f" ({num_images} images, {num_samples} with repeats) / {per_step_batches} batches per step"
            f" = {steps} steps"
        )
    elif train.epochs_per_image is not None:
        total = train.epochs_per_image * num_samples
        steps = max(1, math.ceil(total / per_step))
        why = (
            f"{num_images} images ({num_samples} with repeats) x {train.epochs_per_image:g} exposures"
            f" = {total:g} samples / {per_step} per step = {steps} steps"
        )
    else:
        steps = train.steps or DEFAULT_STEPS
        why = f"{steps} steps x {per_step} samples per step = {steps * per_step / max(num_samples, 1):.1f} exposures per image"
    cap = train.max_steps_per_image
    if cap is not None and steps > cap * num_images:
        steps = cap * num_images
        why += f"; capped at {cap} steps per image = {steps} steps"
    return steps, why
