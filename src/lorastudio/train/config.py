"""The training config: one typed model, presets as YAML files, `key=value` overrides.

Key names such as `train.steps`, `lora.rank` and `data.dir` are public: scripts and docs
use them, so they only ever gain siblings, never change.

The sections live in modules of their own: `train:` in train.train_section, the others
(data, lora, embedding, prior, output, samples, scoring) in train.sections; this module puts
them together as `TrainConfig` and resolves the layers.

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
from pydantic import Field, model_validator

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
from lorastudio.train.foreign_keys import OverrideSpelling, foreign_config_message, foreign_key_hint
from lorastudio.train.sections import (
    DataConfig,
    EmbeddingConfig,
    LoraConfig,
    OutputConfig,
    PriorConfig,
    SamplesConfig,
    ScoringConfig,
)
from lorastudio.train.train_section import (
    ADAPTIVE_OPTIMIZERS,
    BUDGET_KEYS,
    DEFAULT_STEPS,
    LrSchedulerName,
    TrainSection,
    set_derived,
    uses_relative_step,
)

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
    "ignored_keys",
    "budget_steps",
    "BUDGET_KEYS",
    "DEFAULT_STEPS",
    "ADAPTIVE_OPTIMIZERS",
    "LrSchedulerName",
    "uses_relative_step",
]


FULL_MODEL_METHODS = ("dreambooth", "finetune")
FULL_MODEL_LEARNING_RATE = 2e-6  # whole-UNet training: two orders of magnitude below LoRA rates
BUDGET = KeyGroup(BUDGET_KEYS, (*BUDGET_KEYS, "train.max_steps_per_image"), "set how long training runs")
# Checkpoint cadence: a user's `save_every_epochs` replaces a preset's `save_every_steps` (both may be set together).
SAVE_CADENCE = KeyGroup(
    ("train.save_every_steps", "train.save_every_epochs"),
    ("train.save_every_steps", "train.save_every_epochs"),
    "set when checkpoints are saved",
    one_per_layer=False,
)
# Warm-up: a user's ratio replaces a preset's step count and the reverse (a saved config.yaml holds both, one unset).
WARMUP = KeyGroup(
    ("train.lr_warmup_steps", "train.lr_warmup_ratio"),
    ("train.lr_warmup_steps", "train.lr_warmup_ratio"),
    "set the learning-rate warm-up",
    one_per_layer=False,
)
TRAIN_KEY_GROUPS = (BUDGET, SAVE_CADENCE, WARMUP)


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
            set_derived(self.train, "learning_rate", FULL_MODEL_LEARNING_RATE)
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
    spelling: OverrideSpelling | None = None,
) -> ResolvedConfig[TrainConfig]:
    """defaults < preset < file(s) < imported (kohya) < overrides, with every value's source.

    A `preset:` key in a file selects the preset when `preset` is not given (a later file wins).
    A kohya, HCP-Diffusion or DiffSynth file among `files` is refused in one line naming the flag
    that reads it; an unknown key another tool spells so is answered with its lorastudio key, in
    the command's own spelling (`spelling`: `--set key=value` for `portrait train`).
    """
    _refuse_foreign_files(files)
    middle = [*file_layers(files), *imported]
    if preset is None:
        named = [layer.data["preset"] for layer in middle if layer.data.get("preset")]
        preset = named[-1] if named else None
    layers = [_preset_layer(preset)] if preset else []
    layers += [*middle, override_layer(overrides)]
    source = str(files) if isinstance(files, str | Path) else "config"
    spelling = spelling or OverrideSpelling()

    def hint(key: str, value: Any, layer: str, tails: bool = True) -> str | None:
        return foreign_key_hint(key, value, layer, spelling, tails)

    return resolve_config(TrainConfig, layers, TRAIN_KEY_GROUPS, source=source, hint=hint)


def _refuse_foreign_files(files: str | Path | Sequence[str | Path] | None) -> None:
    """`--config kohya.toml`: one line pointing at --kohya-config instead of a page of unknown keys."""
    paths = [] if files is None else [files] if isinstance(files, str | Path) else list(files)
    for path in paths:
        message = foreign_config_message(Path(path), set(TrainConfig.model_fields))
        if message:
            raise LorastudioError(message)


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
    return lines + [f"# {line}" for line in ignored_keys(resolved.config)]


def ignored_keys(cfg: TrainConfig) -> list[str]:
    """A line per section set for another method (`lora.*` of an embedding run, `embedding.*` of a
    LoRA run): the run trains without them, and a user who set them should hear it."""
    lines = []
    for section, used, what in (("lora", cfg.trains_lora, "LoRA"), ("embedding", cfg.trains_embedding, "trigger embedding")):
        values = getattr(cfg, section).model_dump(mode="json")
        defaults = type(getattr(cfg, section))().model_dump(mode="json")
        changed = [f"{section}.{key}={json.dumps(value)}" for key, value in values.items() if value != defaults[key]]
        if changed and not used:
            lines.append(f"{', '.join(changed)} ignored: method {cfg.method!r} trains no {what}")
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
