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
from lorastudio.generate.config import CfgScale, SamplerName, SamplingSeed, SamplingSteps

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
    """The training images and how their captions are read."""

    dir: str = Field(
        "",
        description="An imported data set name, or a folder / metadata file path (kohya train_data_dir, in_json).",
    )
    default_caption: str = Field(
        "",
        description="Caption for images without one (EasyPhoto: the trigger; kohya: the NN_name folder's name).",
    )
    caption_prefix_trigger: bool = Field(
        True, description="Put the trigger first in every caption that lacks it."
    )
    shuffle_tags: bool = Field(
        False,
        description="Shuffle comma-separated caption tags each step, keeping the first `keep_tokens` in place"
        " (kohya shuffle_caption).",
    )
    keep_tokens: int = Field(
        1,
        ge=0,
        description="Leading caption tags kept in place by shuffling and never dropped by tag dropout"
        " (kohya keep_tokens).",
    )
    caption_dropout: float = Field(
        0.0, ge=0.0, le=1.0, description="Chance that an exposure trains on an empty caption (kohya caption_dropout_rate)."
    )
    flip: bool = Field(
        False, description="Random horizontal flip; cached as a second latent per image (kohya flip_aug)."
    )
    max_upscale: float = Field(
        1.0, ge=1.0, description="Refuse images that would need more upscaling than this to fill their bucket."
    )
    # kohya parity (caption_tag_dropout_rate, color_aug, bucket options, subset num_repeats).
    tag_dropout: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Drop each caption tag with this chance, except the first keep_tokens"
        " (kohya caption_tag_dropout_rate).",
    )
    color_aug: bool = Field(
        False,
        description="Small hue/brightness jitter per exposure (kohya color_aug); latents are then encoded"
        " every step instead of cached.",
    )
    repeats: int | None = Field(
        None,
        ge=1,
        description="Exposures of every image per epoch (kohya num_repeats / dataset_repeats);"
        " default: the NN_ prefix of the image folder, else 1.",
    )
    min_bucket_reso: int | None = Field(
        None,
        ge=64,
        description="Smallest aspect-ratio bucket side in pixels (kohya min_bucket_reso);"
        " default: half the resolution, at most 256.",
    )
    max_bucket_reso: int | None = Field(
        None,
        ge=64,
        description="Largest aspect-ratio bucket side in pixels (kohya max_bucket_reso); default: 2 x resolution.",
    )
    bucket_reso_steps: int = Field(
        64, ge=8, multiple_of=8, description="Bucket sides are multiples of this, in pixels (kohya bucket_reso_steps)."
    )
    bucket_no_upscale: bool = Field(
        False,
        description="Small images keep their size, rounded down to bucket_reso_steps, instead of being"
        " upscaled (kohya bucket_no_upscale).",
    )


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
        0, ge=0, description="Steps of linear warm-up from 0 to the learning rate (kohya lr_warmup_steps)."
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
        " square only).",
    )
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        "auto",
        description="Compute precision (kohya mixed_precision); auto: bf16 where the GPU has it, else fp16;"
        " no (fp32) on the CPU.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass: less memory, slower (kohya gradient_checkpointing).",
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
    """The LoRA network (methods lora and pivotal)."""

    rank: int = Field(16, ge=1, description="LoRA rank: size of the low-rank matrices (kohya network_dim).")
    alpha: float = Field(
        8.0,
        gt=0,
        description="LoRA alpha: the update is scaled by alpha / rank, so alpha = rank means no scaling"
        " (kohya network_alpha).",
    )
    targets: Literal["attn", "kohya", "locon"] = Field(
        "kohya",
        description="Layers that get a LoRA: attn (attention only), kohya (attention and transformer"
        " projections, as sd-scripts' networks.lora), locon (kohya plus the 3x3 convs).",
    )
    conv_rank: int | None = Field(
        None, ge=1, description="locon: rank of the 3x3 convs (kohya conv_dim); default: rank."
    )
    type: Literal["lora", "loha", "lokr"] = Field(
        "lora",
        description="Network type: plain LoRA, or LyCORIS LoHa / LoKr saved in LyCORIS' layout (kohya"
        " network_module lycoris.kohya, network_args algo).",
    )
    train_text_encoder: bool = Field(
        False,
        description="Also train LoRA layers on the text encoder(s) (kohya: network_train_unet_only false).",
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA down-projection output (kohya network_dropout)."
    )


class EmbeddingConfig(StrictModel):
    """The trigger embedding (textual inversion; methods embedding and pivotal)."""

    num_vectors: int = Field(
        1, ge=1, le=75, description="Tokens the trigger stands for (vectors per token of the embedding)."
    )
    init_text: str = Field(
        "person", description="Words whose token embeddings start the trigger's vectors."
    )
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="Learning rate of the embedding vectors; default: train.text_encoder_lr, else"
        " train.learning_rate.",
    )


class OutputConfig(StrictModel):
    """What the run saves and under which name."""

    name: str = Field(
        "",
        description="File name of the LoRA / model in the library, without suffix (kohya output_name);"
        " default: the run name.",
    )
    save_precision: Literal["fp16", "bf16", "fp32"] = Field(
        "fp16",
        description="Precision of saved LoRA / LyCORIS files and dreambooth/finetune checkpoints"
        " (kohya save_precision; fp16 as its guide recommends).",
    )
    keep_last: int | None = Field(
        None,
        ge=1,
        description="Step checkpoints kept, newest first (kohya save_last_n_epochs); the final and the"
        " best-scored one always stay. Default: all.",
    )


class PriorConfig(StrictModel):
    """Prior preservation (DreamBooth): class images keep the model's idea of the class.

    Set `class_prompt` to enable it with any method. Missing class images are generated
    with the base model before training and kept for later runs.
    """

    class_prompt: str = Field(
        "",
        description="Prompt of the class images, e.g. 'a photo of a dog'; empty = no prior preservation"
        " (kohya class_tokens of the reg subset).",
    )
    class_dir: str = Field(
        "",
        description="Folder or data set of class images (kohya reg_data_dir); default: lorastudio's own"
        " datasets/class-<prompt>-<settings>-<model>-<resolution>.",
    )
    num_images: int = Field(
        100, ge=1, description="Class images wanted: missing ones are generated until the folder holds this many."
    )
    loss_weight: float = Field(
        1.0, gt=0, description="Weight of the class-image loss beside the training loss (kohya prior_loss_weight)."
    )
    negative_prompt: str = Field("", description="Negative prompt of generated class images.")
    steps: SamplingSteps = Field(25, description="Sampling steps of generated class images.")
    cfg_scale: CfgScale = 7.0
    sampler: SamplerName = "Euler a"
    seed: SamplingSeed = Field(
        0,
        ge=0,
        description="Seed of the first class image; class image i uses seed + i (fixed, so the folder is reused).",
    )


class SamplesConfig(StrictModel):
    """Sample images drawn with the model being trained, saved in the run's samples/step-N/."""

    prompts: list[str] = Field(
        default_factory=list,
        description="Prompts drawn at every sample step (kohya sample_prompts); empty = no samples.",
    )
    every_steps: int | None = Field(
        None, ge=1, description="Draw samples every N steps (kohya sample_every_n_steps); default: at every checkpoint."
    )
    negative: str = Field("", description="Negative prompt of the samples.")
    steps: SamplingSteps = 20
    cfg_scale: CfgScale = 7.0
    sampler: SamplerName = Field("Euler a", description="A1111 sampler name of the samples (kohya sample_sampler).")
    seed: SamplingSeed = Field(0, description="Seed of every sample image (-1 = random).")


class ScoringConfig(StrictModel):
    """Checkpoint choice after training: score every checkpoint, copy the best to loras/."""

    enabled: bool = Field(True, description="Score the checkpoints after training and keep the best one.")
    prompts: list[str] = Field(
        default_factory=list,
        description="Prompts of the contact sheet and the image scorers; default: the trigger and one"
        " training caption.",
    )
    scorers: list[str] = Field(
        default_factory=lambda: ["validation_loss", "clip_similarity", "tag_agreement"],
        description="Scorers to run; the first one that can run decides the best checkpoint.",
    )
    clip_model: str = Field(
        "", description="A local CLIP-vision folder; enables the clip_similarity scorer."
    )
    tagger_model: str = Field(
        "", description="A local WD14 tagger folder; enables the tag_agreement scorer."
    )
    validation_dir: str = Field(
        "",
        description="Held-out images for validation_loss and the references; default: a few training images.",
    )
    steps: SamplingSteps = Field(20, description="Sampling steps of the contact sheet.")
    cfg_scale: CfgScale = 7.0
    sampler: SamplerName = "Euler a"
    seed: SamplingSeed = Field(0, description="Seed of every contact-sheet image (-1 = random).")


class TrainConfig(StrictModel):
    """Everything one training run needs; saved as `config.yaml` in the run folder."""

    model: str = Field(
        "",
        description="Base model: a library name, a path, or tiny-sd15 / tiny-sd2 / tiny-sdxl"
        " (kohya pretrained_model_name_or_path).",
    )
    family: Literal["sd15", "sd2", "sdxl"] | None = Field(
        None, description="The model family a preset was made for; checked against the model."
    )
    method: Literal["lora", "embedding", "pivotal", "dreambooth", "finetune"] = Field(
        "lora",
        description="What is trained: lora, embedding (textual inversion), pivotal (LoRA + trigger"
        " embedding), dreambooth or finetune (the whole UNet, saved as a checkpoint).",
    )
    trigger: str = Field(
        "", description="One word that calls up the subject in prompts; needed by embedding and pivotal."
    )
    seed: int = Field(42, description="Seed of the training noise, timesteps and shuffling (kohya seed).")
    clip_skip: int = Field(
        1, ge=1, le=12, description="Stop at the N-th last text-encoder layer (kohya clip_skip; 2 for many anime models)."
    )
    data: DataConfig = Field(default_factory=DataConfig, description="The training images and their captions.")
    train: TrainSection = Field(
        default_factory=TrainSection, description="How long and how the weights are optimised."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="The LoRA network (methods lora, pivotal).")
    embedding: EmbeddingConfig = Field(
        default_factory=EmbeddingConfig, description="The trigger embedding (methods embedding, pivotal)."
    )
    prior: PriorConfig = Field(
        default_factory=PriorConfig, description="Prior preservation with class images (DreamBooth)."
    )
    output: OutputConfig = Field(default_factory=OutputConfig, description="Saved files: name, precision, how many.")
    samples: SamplesConfig = Field(
        default_factory=SamplesConfig, description="Sample images drawn during training."
    )
    scoring: ScoringConfig = Field(
        default_factory=ScoringConfig, description="Scoring the checkpoints after training to pick the best."
    )
    preset: str | None = Field(
        None, description="The preset this config started from; an API request layers over it."
    )

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
