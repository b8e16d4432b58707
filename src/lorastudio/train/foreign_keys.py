"""Training settings as other tools spell them: kohya (sd-scripts), HCP-Diffusion, EasyPhoto.

Two uses. A `key=value` override (or a config-file key) lorastudio does not know is answered with
the lorastudio key when it is another tool's name (`kohya's network_dim is lora.rank here:
lora.rank=32`), one line per key instead of the list of valid keys. And a whole kohya, HCP-Diffusion
or DiffSynth file given to `--config` is told apart and pointed at the flag that reads it.

The kohya names come from the import's own table (`train.kohya_keys`); HCP-Diffusion's are the
dotted keys of its YAML configs (`cfgs/train/train_base.yaml`, the anime-character example),
EasyPhoto's the fields of its training form and API. docs/TRAINING.md shows the same tables.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorastudio.config import nest_keys
from lorastudio.train.kohya_keys import (
    GUI_ALIASES,
    KOHYA_KEYS,
    OPTIMIZER_NAMES,
    SPECIAL_KEYS,
    NoEffect,
    Unmapped,
)

__all__ = [
    "EASYPHOTO_KEYS",
    "HCP_KEYS",
    "KOHYA_HINTS",
    "ForeignKey",
    "OverrideSpelling",
    "foreign_config_message",
    "foreign_key_hint",
]


@dataclass(frozen=True)
class ForeignKey:
    """Another tool's key: the lorastudio key it is, how its value converts, and a note.

    `convert` turns the tool's value into {lorastudio key: value} (several keys where one of
    the tool's sets two); it raises NoEffect or Unmapped (train.kohya_keys) with the reason
    when no lorastudio key is needed or none exists.
    """

    target: str | None
    convert: Callable[[Any], dict[str, Any]] | None = None
    note: str = ""

    def settings(self, value: Any) -> dict[str, Any]:
        if self.convert is not None:
            return self.convert(value)
        if self.target is None:
            raise Unmapped(self.note or "no lorastudio setting")
        return {self.target: value}


def _to(target: str, convert: Callable[[Any], Any], note: str = "") -> ForeignKey:
    return ForeignKey(target, lambda value: {target: convert(value)}, note)


def _none(reason: str) -> ForeignKey:
    def convert(_value: Any) -> dict[str, Any]:
        raise NoEffect(reason)

    return ForeignKey(None, convert)


def _unmapped(reason: str) -> ForeignKey:
    def convert(_value: Any) -> dict[str, Any]:
        raise Unmapped(reason)

    return ForeignKey(None, convert)


# -- kohya: the import's table, plus the keys it maps with the whole file in view --------------
def _optimizer(value: Any) -> str:
    name = OPTIMIZER_NAMES.get(str(value).split(".")[-1].lower())
    if name is None:
        raise Unmapped(f"optimizer {value!r} is not available; choose one of {', '.join(sorted(set(OPTIMIZER_NAMES)))}")
    return name


KOHYA_HINTS: dict[str, ForeignKey] = {
    "optimizer_type": _to("train.optimizer", _optimizer),
    "optimizer_args": ForeignKey(
        "train.optimizer_args", note='a mapping: train.optimizer_args="{betas: [0.9, 0.99], d_coef: 2}"'
    ),
    "use_8bit_adam": _to("train.optimizer", lambda _v: "adamw8bit"),
    "use_lion_optimizer": _to("train.optimizer", lambda _v: "lion"),
    "network_module": _unmapped("lora.type (lora, loha, lokr) and method (lora, dreambooth, finetune) say it"),
    "network_args": _unmapped("its arguments are lora.* keys: conv_dim lora.conv_rank, conv_alpha lora.conv_alpha"),
    "network_train_unet_only": _to("lora.train_text_encoder", lambda v: not v),
    "conv_dim": ForeignKey(
        "lora.conv_rank", lambda v: {"lora.conv_rank": v, "lora.targets": "locon"}, "with lora.targets=locon"
    ),
    "conv_alpha": ForeignKey("lora.conv_alpha"),
    "train_data_dir": ForeignKey("data.dir"),
    "in_json": ForeignKey("data.dir"),
    "reg_data_dir": ForeignKey("prior.class_dir"),
    "sample_prompts": ForeignKey("samples.prompts", note="the prompts themselves, not their file"),
    "sample_every_n_epochs": _unmapped("samples are drawn with each checkpoint: train.save_every_epochs=N"),
    "dataset_config": _unmapped("give the dataset TOML with --dataset-config FILE"),
    "LoRA_type": _unmapped("lora.type (lora, loha, lokr) and lora.targets=locon say it"),
    "lr_warmup": ForeignKey(
        "train.lr_warmup_ratio",
        lambda v: {"train.lr_warmup_ratio": float(v) / 100},
        "the kohya_ss GUI's percent of the run, as a share",
    ),
    "stop_text_encoder_training": _unmapped("training the text encoder for part of the run is not supported"),
}


def _kohya_key(key: str) -> ForeignKey | None:
    key = GUI_ALIASES.get(key, key)
    if key in KOHYA_HINTS:
        return KOHYA_HINTS[key]
    from lorastudio.train.kohya_gui import gui_rule  # sd-scripts' table, then the kohya_ss GUI's own keys

    rule = gui_rule(key)
    if rule is None:
        return None

    def convert(value: Any) -> dict[str, Any]:
        from lorastudio.train.kohya_keys import MappedTo

        converted = rule.convert(value)
        if isinstance(converted, MappedTo):
            return {converted.target: converted.value}
        if rule.target is None:
            raise Unmapped(rule.reason)
        return {rule.target: converted}

    return ForeignKey(rule.target, convert)


# -- HCP-Diffusion: the dotted keys of its train configs ----------------------------------------
def _scheduler(value: Any) -> str:
    from typing import get_args

    from lorastudio.train.train_section import LrSchedulerName

    if str(value) in get_args(LrSchedulerName):
        return str(value)
    raise Unmapped(f"scheduler {value!r} is not available; choose one of {', '.join(get_args(LrSchedulerName))}")


def _target_area(value: Any) -> int:
    """HCP's bucket `target_area` (`${times:512,704}` or a pixel count) as a square side."""
    numbers = [int(n) for n in re.findall(r"\d+", str(value))]
    area = numbers[0] * numbers[1] if len(numbers) >= 2 else numbers[0]
    return int(round(math.sqrt(area) / 64) * 64)


def _first_entry(value: Any) -> Mapping[str, Any]:
    """HCP's `lora_unet` / `lora_text_encoder` / `tokenizer_pt.train` lists: the first entry."""
    entry = value[0] if isinstance(value, list) and value else value
    if not isinstance(entry, Mapping):
        raise Unmapped("give its entries' values as lorastudio keys")
    return entry


def _lora_unet(value: Any) -> dict[str, Any]:
    entry = _first_entry(value)
    if isinstance(entry.get("rank"), float) and entry["rank"] < 1:
        raise Unmapped("a rank as a share of each layer's width; lorastudio's lora.rank is one number")
    pairs = (("rank", "lora.rank"), ("alpha", "lora.alpha"), ("lr", "train.learning_rate"))
    return {target: entry[key] for key, target in pairs if key in entry}


def _lora_text_encoder(value: Any) -> dict[str, Any]:
    entry = _first_entry(value)
    return {"lora.train_text_encoder": True, **({"train.text_encoder_lr": entry["lr"]} if "lr" in entry else {})}


def _trigger_embedding(value: Any) -> dict[str, Any]:
    entry = _first_entry(value)
    settings = {"method": "pivotal", "trigger": entry.get("name")}
    if "lr" in entry:
        settings["embedding.learning_rate"] = entry["lr"]
    return {key: val for key, val in settings.items() if val is not None}


HCP_KEYS: dict[str, ForeignKey] = {
    "character_name": ForeignKey("trigger"),
    "dataset_dir": ForeignKey("data.dir"),
    "exp_dir": ForeignKey("output.name", note="runs go to studio/runs/<output.name>/"),
    "mixed_precision": ForeignKey("train.mixed_precision"),
    "unet_rank": ForeignKey("lora.rank"),
    "text_encoder_rank": _unmapped("one rank for the UNet and the text encoder: lora.rank"),
    "lora_unet": ForeignKey("lora.rank", _lora_unet, "its rank, alpha and lr"),
    "lora_text_encoder": ForeignKey("lora.train_text_encoder", _lora_text_encoder, "its lr is train.text_encoder_lr"),
    "tokenizer_pt.train": ForeignKey("trigger", _trigger_embedding, "the trained word, with method=pivotal"),
    "tokenizer_pt.emb_dir": _none("the trigger embedding is made and saved by the run (runs/<name>/embeddings/)"),
    "train.train_steps": ForeignKey("train.steps"),
    "train.train_epochs": ForeignKey("train.max_epochs"),
    "train.save_step": ForeignKey("train.save_every_steps"),
    "train.gradient_accumulation_steps": ForeignKey("train.grad_accum"),
    "train.workers": _none("lorastudio trains from cached latents"),
    "train.scheduler.name": _to("train.lr_scheduler", _scheduler),
    "train.scheduler.num_warmup_steps": ForeignKey("train.lr_warmup_steps"),
    "train.scheduler.num_training_steps": _none("the schedule follows the run's steps"),
    "train.optimizer.weight_decay": ForeignKey("train.weight_decay"),
    "train.resume": _unmapped("continue a lorastudio run with `lorastudio train --resume RUN`"),
    "model.pretrained_model_name_or_path": ForeignKey("model"),
    "model.clip_skip": _to("clip_skip", lambda v: int(v) + 1, "HCP counts from 0, lorastudio from 1"),
    "model.gradient_checkpointing": ForeignKey("train.gradient_checkpointing"),
    "model.enable_xformers": _to("train.attention", lambda v: "auto" if v else "sdpa"),
    "data.dataset1.batch_size": ForeignKey("train.batch_size"),
    "data.dataset1.cache_latents": _none("latents are always cached"),
    "data.dataset1.source.data_source1.img_root": ForeignKey("data.dir"),
    "data.dataset1.bucket.target_area": _to("train.resolution", _target_area),
}

# -- EasyPhoto: its training form and API fields ------------------------------------------------
EASYPHOTO_KEYS: dict[str, ForeignKey] = {
    "rank": ForeignKey(
        "lora.rank", lambda v: {"lora.rank": v, "lora.alpha": v / 2}, "with EasyPhoto's alpha of rank / 2"
    ),
    "network_alpha": ForeignKey("lora.alpha"),
    "max_train_steps": ForeignKey("train.steps"),
    "steps_per_photos": ForeignKey("train.max_steps_per_image"),
    "val_and_checkpointing_steps": ForeignKey("train.save_every_steps", note="checkpoints are scored after the run"),
    "train_batch_size": ForeignKey("train.batch_size"),
    "gradient_accumulation_steps": ForeignKey("train.grad_accum"),
    "learning_rate": ForeignKey("train.learning_rate"),
    "resolution": ForeignKey("train.resolution"),
    "dataloader_num_workers": _none("lorastudio trains from cached latents"),
}

_LOOKUPS: dict[str, Callable[[str], ForeignKey | None]] = {
    "kohya": _kohya_key,
    "HCP-Diffusion": HCP_KEYS.get,
    "EasyPhoto": EASYPHOTO_KEYS.get,
}


@dataclass(frozen=True)
class OverrideSpelling:
    """How the command at hand takes a setting (`key=value`, `--set key=value`) and whose names come first."""

    set_flag: str = ""  # "--set " for `portrait train`
    tools: tuple[str, ...] = ("kohya", "HCP-Diffusion", "EasyPhoto")


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value if re.fullmatch(r"[\w./:+-]+", value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, ensure_ascii=False, default=str)


def _as_file_keys(settings: Mapping[str, Any]) -> str:
    """{"lora.rank": 32} -> `lora: {rank: 32}` (how a YAML file holds it)."""
    nested = nest_keys(settings)

    def flow(node: Any) -> str:
        if isinstance(node, dict):
            return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in node.items()) + "}"
        return _scalar(node)

    return flow(nested)[1:-1]


def foreign_key_hint(
    key: str, value: Any, layer: str, spelling: OverrideSpelling = OverrideSpelling(), tails: bool = True
) -> str | None:
    """One line for a key lorastudio does not know but another tool does; None for any other key.

    `layer` is where the key came from ("override", "file my.yaml", "request", ...): a file is told
    the YAML to write, a REST request the JSON, a command line the `key=value` words.
    The whole dotted key is looked up first, then (`tails`: the key is one lorastudio does not have) its tails:
    kohya's and EasyPhoto's keys are flat, so `lora.network_dim` or `train.max_train_steps` means what
    `network_dim` and `max_train_steps` mean. A key inside a section lorastudio has may be its own: no tails.
    """
    parts = key.split(".")
    for tail in (".".join(parts[start:]) for start in range(len(parts) if tails else 1)):
        for tool in spelling.tools:
            entry = _LOOKUPS[tool](tail)
            if entry is not None:
                return _phrase(f"{tool}'s {tail}", entry, value, layer, spelling)
    return None


def _phrase(name: str, entry: ForeignKey, value: Any, layer: str, spelling: OverrideSpelling) -> str:
    try:
        settings = entry.settings(value)
    except NoEffect as why:
        return f"{name} needs no setting here: {why}"
    except Unmapped as why:
        return f"{name} has no lorastudio setting: {why}"
    except (TypeError, ValueError, KeyError, IndexError):
        settings = {}
    target = entry.target if entry.target in settings or not settings else " and ".join(settings)
    note = f" ({entry.note})" if entry.note else ""
    if not settings:
        return f"{name} is {target} here{note}"
    if layer == "request":
        how = json.dumps(nest_keys(settings), ensure_ascii=False, default=str)
    elif layer.startswith("file "):
        how = _as_file_keys(settings)
    else:
        how = " ".join(f"{spelling.set_flag}{key}={_scalar(val)}" for key, val in settings.items())
    return f"{name} is {target} here{note}: {how}"


# -- whole files given to --config --------------------------------------------------------------
_DIFFSYNTH_MARKS = re.compile(r"train_kolors_lora\.py|--(?:lora_rank|pretrained_unet_path|lora_target_modules)\b")
_HCP_TOP = ("_base_", "lora_unet", "lora_text_encoder", "tokenizer_pt", "character_name", "dataset_dir", "exp_dir")
_HCP_TRAIN = ("train_steps", "train_epochs", "save_step", "scheduler", "loss", "optimizer_pt")


def _is_hcp(data: Mapping[str, Any]) -> bool:
    train, model = data.get("train"), data.get("model")
    return (
        any(key in data for key in _HCP_TOP)
        or (isinstance(train, Mapping) and any(key in train for key in _HCP_TRAIN))
        or isinstance(model, Mapping)
    )


def _kohya_keys_in(data: Mapping[str, Any], lorastudio_keys: set[str]) -> list[str]:
    """kohya's keys of a file, sections flattened as sd-scripts reads them (lorastudio's own sections kept)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and key not in lorastudio_keys:
            flat.update(value)
        else:
            flat[key] = value
    from lorastudio.train.kohya_gui import GUI_KEYS

    known = set(KOHYA_KEYS) | SPECIAL_KEYS | set(GUI_ALIASES) | set(GUI_KEYS) | set(KOHYA_HINTS)
    return [key for key in flat if key in known and key not in lorastudio_keys]


def _hcp_translation(data: Mapping[str, Any]) -> str:
    """The HCP file's values lorastudio has keys for, as `key=value` words (interpolations left out)."""
    from lorastudio.config import flatten_keys

    words: dict[str, Any] = {}
    flat = flatten_keys(data)
    whole = {key: data[key] for key in ("lora_unet", "lora_text_encoder") if key in data}
    if isinstance(data.get("tokenizer_pt"), Mapping) and data["tokenizer_pt"].get("train"):
        whole["tokenizer_pt.train"] = data["tokenizer_pt"]["train"]
    for key, value in [*flat.items(), *whole.items()]:
        entry = HCP_KEYS.get(key)
        if entry is None or "${" in json.dumps(value, default=str):
            continue
        try:
            words.update(entry.settings(value))
        except (NoEffect, Unmapped, TypeError, ValueError, KeyError, IndexError):
            continue
    return " ".join(f"{key}={_scalar(value)}" for key, value in words.items() if "${" not in str(value))


def foreign_config_message(path: Path, lorastudio_keys: set[str]) -> str | None:
    """One line when `path` (given to --config) is a kohya, HCP-Diffusion or DiffSynth file, else None."""
    from lorastudio.config import read_config_file, read_text_file
    from lorastudio.errors import LorastudioError

    if not path.is_file():
        return None
    text = read_text_file(path, "config file")
    if _DIFFSYNTH_MARKS.search(text):
        return f"{path}: a DiffSynth-Studio command line, not a lorastudio config; import it with --diffsynth-args {path}."
    try:
        data = read_config_file(path)
    except LorastudioError:
        return None
    if isinstance(data.get("datasets"), list) or isinstance(data.get("general"), Mapping):
        return f"{path}: a kohya dataset config, not a lorastudio config; import it with --dataset-config {path}."
    if _is_hcp(data):
        words = _hcp_translation(data)
        said = f"; its settings here: {words}" if words else ""
        return (
            f"{path}: an HCP-Diffusion config, which --config does not read (lorastudio has no HCP import){said}"
            " (docs/TRAINING.md, Coming from HCP-Diffusion)."
        )
    found = _kohya_keys_in(data, lorastudio_keys)
    if found and (len(found) >= 3 or not any(key in lorastudio_keys for key in data)):
        return (
            f"{path}: a kohya training config ({', '.join(found[:3])}, ...), not a lorastudio config;"
            f" import it with --kohya-config {path}."
        )
    return None
