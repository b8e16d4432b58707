"""Mapping a flat kohya config onto lorastudio keys: the table, then the keys that depend on others.

`KohyaImport` collects what each key became (or why not); `apply_table` runs `KOHYA_KEYS`
(train.kohya_keys) and the `apply_*` functions below take the keys that need the whole file:
network module and args, optimizer, sample prompts. Folders and dataset TOMLs: train.kohya_datasets.
"""

from __future__ import annotations

import ast
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lorastudio.config import read_text_file
from lorastudio.errors import LorastudioError
from lorastudio.train.kohya_keys import (
    GUI_LORA_TYPES,
    KOHYA_KEYS,
    OPTIMIZER_NAMES,
    SPECIAL_KEYS,
    MappedTo,
    NoEffect,
    Rule,
    Unmapped,
)

__all__ = [
    "KohyaImport",
    "apply_defaults",
    "apply_network",
    "apply_optimizer",
    "apply_sample_cadence",
    "apply_sample_prompts",
    "apply_table",
    "flatten_sections",
    "key_values",
    "read_kohya_file",
]


@dataclass
class KohyaImport:
    """A kohya config turned into lorastudio keys, with a line for everything not mapped."""

    config: dict[str, Any] = field(default_factory=dict)  # nested lorastudio keys
    mapped: list[tuple[str, str, Any]] = field(default_factory=list)  # (kohya key, lorastudio key, value)
    unmapped: list[tuple[str, str]] = field(default_factory=list)  # (kohya key, reason)
    no_effect: list[tuple[str, str]] = field(default_factory=list)  # (kohya key, why nothing is needed)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the import chose where the tool decides at run time

    def set(self, kohya_key: str, target: str, value: Any) -> None:
        node = self.config
        parts = target.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        self.mapped.append((kohya_key, target, value))

    def get(self, target: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in target.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def skip(self, kohya_key: str, reason: str) -> None:
        self.unmapped.append((kohya_key, reason))

    def lines(self) -> list[str]:
        """What the import did, one line each: mapped keys, keys with nothing to do, keys not mapped."""
        out = [f"kohya {k} -> {t} = {json.dumps(v, ensure_ascii=False)}" for k, t, v in self.mapped]
        out += [f"kohya {k}: no setting needed ({why})" for k, why in self.no_effect]
        out += [f"kohya {k}: NOT MAPPED ({why})" for k, why in self.unmapped]
        return out + [f"kohya note: {note}" for note in self.notes]

    def to_yaml(self) -> str:
        header = [f"# lorastudio config imported from {', '.join(self.sources)}"]
        header += [f"# note: {note}" for note in self.notes]
        header += [f"# not mapped: {k} ({why})" for k, why in self.unmapped]
        body = yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True)
        return "\n".join(header) + "\n" + body


# -- reading --------------------------------------------------------------------------------
def read_kohya_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LorastudioError(f"{path}: kohya config not found; check the path.")
    text = read_text_file(path, "kohya config")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise LorastudioError(
            f"{path}: not valid {path.suffix[1:].upper()} ({exc}); fix the syntax."
        ) from None
    return data


def flatten_sections(data: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts' reading: `[section]` tables are merged into one flat set of keys."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _literal(text: str) -> Any:
    """kohya parses `key=value` arguments with ast.literal_eval: '0.9,0.99' -> (0.9, 0.99)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()
    return list(value) if isinstance(value, tuple) else value


def key_values(value: Any) -> list[tuple[str, Any]]:
    """`["a=1", "b=0.9,0.99"]` or the GUI's `"a=1 b=0.9,0.99"` -> [(a, 1), (b, [0.9, 0.99])]."""
    items = value.split() if isinstance(value, str) else list(value or [])
    out = []
    for item in items:
        key, sep, raw = str(item).partition("=")
        out.append((key.strip(), _literal(raw) if sep else True))
    return out


# -- keys that depend on others -------------------------------------------------------------
def apply_table(
    flat: dict[str, Any], out: KohyaImport, rules: Callable[[str], Rule | None] = KOHYA_KEYS.get
) -> None:
    """Each key through its rule (`rules`: sd-scripts' table, or train.kohya_gui's for a GUI config)."""
    for key, value in flat.items():
        if value is None or value == "":
            out.no_effect.append((key, "empty in the file"))
            continue
        if key in SPECIAL_KEYS:
            continue
        rule = rules(key)
        if rule is None:
            out.skip(key, "lorastudio has no equivalent setting")
            continue
        try:
            converted = rule.convert(value)
        except NoEffect as why:
            out.no_effect.append((key, str(why)))
            continue
        except Unmapped as why:
            out.skip(key, str(why))
            continue
        if isinstance(converted, MappedTo):
            out.set(key, converted.target, converted.value)
        elif rule.target is None:
            out.skip(key, rule.reason)
        else:
            out.set(key, rule.target, converted)


def _is_zero(value: Any) -> bool:
    try:
        return float(value) == 0
    except (TypeError, ValueError):
        return False


def apply_network(flat: dict[str, Any], out: KohyaImport) -> None:
    module, label = flat.get("network_module") or None, "network_module"
    args = dict(key_values(flat.get("network_args")))
    from_gui = {key for key in ("conv_dim", "conv_alpha") if key in flat and key not in args}
    args.update({key: flat[key] for key in from_gui})
    gui_type = flat.get("LoRA_type") or None  # kohya_ss GUI: "Standard", "Kohya LoCon", "LyCORIS/LoHa", ...
    if gui_type is not None and module is not None:
        out.no_effect.append(("LoRA_type", "network_module is set and wins"))
    elif gui_type is not None:
        label = "LoRA_type"
        if gui_type not in GUI_LORA_TYPES:
            supported = ", ".join(GUI_LORA_TYPES)
            out.skip("LoRA_type", f"{gui_type!r} is not supported ({supported} are)")
            return
        module, algo, with_conv = GUI_LORA_TYPES[gui_type]
        if module != "networks.lora":  # LyCORIS, or sd-scripts' own LoHa/LoKr: the same files
            module = "lycoris.kohya"
            args.setdefault("algo", algo)
        if not with_conv:  # the GUI passes conv_dim/conv_alpha only for LoCon and LyCORIS types
            for key in sorted(from_gui):
                args.pop(key)
                out.no_effect.append((key, f"LoRA_type {gui_type}: the GUI does not pass it (Kohya LoCon does)"))
            from_gui = set()
    if module is None:
        if args:
            out.skip("network_args", "no network_module: a whole-model fine-tune has no network arguments")
        method = "dreambooth" if out.get("prior.class_prompt") else "finetune"
        out.set("(no network_module)", "method", method)
        return
    if module == "networks.lora":
        out.set(label, "method", "lora")
    elif module == "lycoris.kohya":
        out.set(label, "method", "lora")
        algo = str(args.pop("algo", "lora")).lower()
        if algo in ("lora", "locon"):
            out.set("network_args.algo", "lora.targets", "locon")
        else:
            out.set("network_args.algo", "lora.type", algo)
    else:
        out.skip(label, f"{module!r} is not supported (networks.lora, lycoris.kohya are)")
        return
    unet_only = flat.get("network_train_unet_only", False)
    te_lr = flat.get("text_encoder_lr")
    if not unet_only and te_lr is not None and _is_zero(te_lr):
        # sd-scripts drops a parameter group whose lr is 0 ("NO LR skipping"): the UNet alone trains
        out.set("text_encoder_lr = 0", "lora.train_text_encoder", False)
    else:
        out.set(
            "network_train_unet_only", "lora.train_text_encoder", not unet_only
        )  # kohya trains both by default
    # sd-scripts' own defaults where the file is silent (lorastudio's differ: rank 16, alpha 8)
    if "network_dim" not in flat:
        out.set("network_dim (kohya default)", "lora.rank", 4)
    if "network_alpha" not in flat:
        out.set("network_alpha (kohya default)", "lora.alpha", 1.0)
    for key, value in args.items():
        name = key if key in from_gui else f"network_args.{key}"
        if key == "conv_dim" and not value:
            out.no_effect.append((name, "0: no conv layers, as without it"))
        elif key == "conv_dim":
            out.set(name, "lora.conv_rank", int(value))
            out.set(name, "lora.targets", "locon")
            if "conv_alpha" not in args:  # sd-scripts' networks.lora: conv_alpha defaults to 1
                out.set("conv_alpha (kohya default)", "lora.conv_alpha", 1.0)
        elif key == "conv_alpha" and not args.get("conv_dim"):
            out.no_effect.append((name, "no conv_dim: no conv layers to scale"))
        elif key == "conv_alpha":
            out.set(name, "lora.conv_alpha", float(value))
        elif key == "dropout":
            out.set(name, "lora.dropout", float(value))
        else:
            out.skip(name, "lorastudio has no such network argument")


# sd-scripts' argparse defaults (library/train_util.py) that change a run where lorastudio's differ:
# keep_tokens 0 (lorastudio keeps the trigger: 1), max_train_steps 1600 (lorastudio: 1000).
KOHYA_DEFAULTS = {"keep_tokens": ("data.keep_tokens", 0), "max_train_steps": ("train.steps", 1600)}


def apply_defaults(out: KohyaImport) -> None:
    """What a training TOML leaves out is sd-scripts' default, not lorastudio's (after the dataset
    TOML, whose subsets may set keep_tokens; a run budgeted in epochs keeps its epochs)."""
    for kohya_key, (target, value) in KOHYA_DEFAULTS.items():
        budgeted = target == "train.steps" and out.get("train.max_epochs") is not None
        if out.get(target) is None and not budgeted:
            out.set(f"{kohya_key} (kohya default)", target, value)


def apply_optimizer(flat: dict[str, Any], out: KohyaImport) -> None:
    raw = flat.get("optimizer_type") or None
    if raw is None and flat.get("use_8bit_adam"):
        raw, key = "AdamW8bit", "use_8bit_adam"
    elif raw is None and flat.get("use_lion_optimizer"):
        raw, key = "Lion", "use_lion_optimizer"
    else:
        key = "optimizer_type"
    name = None
    if raw is not None:
        name = OPTIMIZER_NAMES.get(str(raw).split(".")[-1].lower())
        if name is None:
            out.skip(
                key,
                f"optimizer {raw!r} is not available; choose one of {', '.join(sorted(set(OPTIMIZER_NAMES)))}",
            )
        else:
            out.set(key, "train.optimizer", name)
    args = key_values(flat.get("optimizer_args"))
    if not args:
        return
    from lorastudio.train.optim import OPTIMIZER_ARG_ALIASES, check_optimizer_args

    kept: dict[str, Any] = {}
    for given, value in args:
        label = f"optimizer_args.{given}"
        if given == "weight_decay":
            out.set(label, "train.weight_decay", float(value))
            continue
        arg = OPTIMIZER_ARG_ALIASES.get(given, given)  # prodigyopt's `decouple` is pytorch-optimizer's `weight_decouple`
        try:
            check_optimizer_args(name or "adamw", {arg: value})
        except LorastudioError as exc:
            out.skip(label, str(exc).rstrip("."))
            continue
        kept[arg] = value
        out.mapped.append((label, f"train.optimizer_args.{arg}", value))
    if kept:
        out.config.setdefault("train", {})["optimizer_args"] = kept


def apply_sample_cadence(flat: dict[str, Any], out: KohyaImport) -> None:
    """kohya's `sample_every_n_epochs` (which makes sd-scripts ignore `sample_every_n_steps`): lorastudio
    draws samples with each checkpoint (or every samples.every_steps steps), so samples every N epochs
    are checkpoints every N epochs."""
    if "sample_every_n_epochs" not in flat or flat["sample_every_n_epochs"] in (None, ""):
        return  # absent, or listed as empty by apply_table
    every = flat["sample_every_n_epochs"]
    if not every:
        out.no_effect.append(("sample_every_n_epochs", "off, as lorastudio runs"))
        return
    if out.get("samples.every_steps") is not None:  # sd-scripts ignores sample_every_n_steps then
        out.config["samples"].pop("every_steps")
        if not out.config["samples"]:
            del out.config["samples"]
        out.mapped = [entry for entry in out.mapped if entry[0] != "sample_every_n_steps"]
        out.no_effect.append(("sample_every_n_steps", "sample_every_n_epochs is set and wins, as in kohya"))
    saves = out.get("train.save_every_epochs")
    if saves == every:
        out.no_effect.append(
            ("sample_every_n_epochs", f"samples are drawn with each checkpoint: every {every} epochs")
        )
    elif saves is None:
        out.skip(
            "sample_every_n_epochs",
            "samples are drawn with each checkpoint (every train.save_every_steps steps);"
            f" train.save_every_epochs={every} draws them every {every} epochs",
        )
    else:
        out.skip(
            "sample_every_n_epochs",
            f"samples are drawn with each checkpoint (every {saves} epochs, save_every_n_epochs)"
            " or every samples.every_steps steps",
        )


def apply_sample_prompts(flat: dict[str, Any], out: KohyaImport) -> None:
    """kohya's prompt file (.txt lines, .toml or .json tables) with each line's options kept
    (`--n`, `--w`, `--h`, `--d`, `--l`, `--s`, `--ss`); options for other model kinds are named."""
    from lorastudio.train.sample_prompts import parse_sample_prompt, read_kohya_prompt_file

    value = flat.get("sample_prompts")
    if not value:
        return
    if isinstance(value, list):  # the kohya_ss GUI's prompt text, one prompt a line
        lines = [str(line).strip() for line in value if str(line).strip() and not str(line).startswith("#")]
    else:
        path = Path(str(value)).expanduser()
        if not path.is_file():
            out.skip("sample_prompts", f"{value}: no such prompt file")
            return
        try:
            lines = read_kohya_prompt_file(path)
        except ValueError as exc:
            out.skip("sample_prompts", str(exc))
            return
    prompts = []
    for number, line in enumerate(lines, 1):
        foreign: list[str] = []
        try:
            prompts.append(parse_sample_prompt(line, foreign).line())
        except ValueError as exc:
            out.skip("sample_prompts", f"prompt {number} left out: {exc}")
            continue
        if foreign:
            out.skip("sample_prompts", f"prompt {number}: {', '.join(foreign)} left out (no lorastudio sample option)")
    out.set("sample_prompts", "samples.prompts", prompts)
