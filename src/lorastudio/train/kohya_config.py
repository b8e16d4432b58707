"""Bring a kohya config: sd-scripts' `--config_file` TOML (as kohya_ss saves it) and its dataset TOML.

`import_kohya_config(config, dataset)` maps every kohya key to lorastudio's typed keys
through one table (`KOHYA_KEYS`: kohya key -> lorastudio key + converter) and returns the
lorastudio config as a nested dict, what each key became, and every key it could not map
with the reason -- nothing is dropped silently. Keys that need the whole file to decide
(network module and args, data folders, dataset subsets, optimizer names) have their own
small functions below the table.

sd-scripts reads a config TOML by flattening one level of `[sections]`; so does this module.
A dataset config (`[general]`, `[[datasets]]`, `[[datasets.subsets]]`) resolves each subset's
values as general < dataset < subset. lorastudio trains one `data.dir` (kohya `NN_name`
sub-folders give per-folder repeats) plus one `prior.class_dir`, so subsets map onto that.
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

from lorastudio.errors import LorastudioError

__all__ = ["KOHYA_KEYS", "KohyaImport", "import_kohya_config", "kohya_train_config", "kohya_training_facts"]


class Unmapped(Exception):
    """A kohya value lorastudio cannot express; the message is the reason."""


# -- converters ----------------------------------------------------------------------------
def _same(value: Any) -> Any:
    return value


def _positive_or_none(value: Any) -> Any:
    return value if value else None  # kohya: 0 / None = off


def _square_resolution(value: Any) -> int:
    """'512', '512,512', 512 or [512, 512] -> 512; lorastudio's buckets are sized by one side."""
    if isinstance(value, str):
        parts = [int(p) for p in value.replace("x", ",").split(",") if p.strip()]
    elif isinstance(value, list | tuple):
        parts = [int(p) for p in value]
    else:
        parts = [int(value)]
    if len(set(parts)) != 1:
        raise Unmapped(f"non-square {value!r}; lorastudio buckets by one side: set train.resolution=N")
    return parts[0]


def _mixed_precision(value: Any) -> str:
    if value in ("no", "fp16", "bf16"):
        return value
    raise Unmapped(f"{value!r} is not one of no, fp16, bf16")


def _save_precision(value: Any) -> str:
    mapping = {"float": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}
    if value in mapping:
        return mapping[value]
    raise Unmapped(f"{value!r} is not one of float, fp16, bf16")


def _scheduler(value: Any) -> str:
    from lorastudio.train.optim import LR_SCHEDULERS

    name = str(value).split(":")[0].lower()  # kohya writes `adafactor:<initial lr>`
    if name in LR_SCHEDULERS:
        return name
    raise Unmapped(f"scheduler {value!r} is not available; choose one of {', '.join(LR_SCHEDULERS)}")


def _warmup_steps(value: Any) -> int:
    if isinstance(value, float) and 0 < value < 1:
        raise Unmapped(f"a ratio of the run ({value}); set train.lr_warmup_steps to a step count")
    return int(value)


def _caption_extension(value: Any) -> None:
    if value in (".txt", ".caption"):
        raise _NoEffect("lorastudio reads both .txt and .caption captions")
    raise Unmapped(f"captions in {value!r} files; lorastudio reads .txt and .caption")


def _sampler(value: Any) -> str:
    names = {
        "ddim": "DDIM",
        "pndm": "PNDM",
        "lms": "LMS",
        "euler": "Euler",
        "k_euler": "Euler",
        "euler_a": "Euler a",
        "k_euler_a": "Euler a",
        "dpmsolver++": "DPM++ 2M",
        "k_dpm_2": "DPM2",
        "k_dpm_2_a": "DPM2 a",
        "heun": "Heun",
        "dpmsingle": "DPM++ 2M",
    }
    if str(value).lower() in names:
        return names[str(value).lower()]
    raise Unmapped(f"sampler {value!r} has no lorastudio equivalent")


def _xformers(value: Any) -> str:
    """`xformers = true` (or the GUI's "xformers" / "sdpa" / "none") -> train.attention.

    `true` becomes `auto`: xformers where it is installed, SDPA elsewhere, so the same file
    trains on machines without xformers.
    """
    if isinstance(value, str):
        return "auto" if value.lower() == "xformers" else "sdpa"
    return "auto" if value else "sdpa"


def _save_model_as(value: Any) -> None:
    if value == "safetensors":
        raise _NoEffect("lorastudio writes .safetensors")
    raise Unmapped(f"{value!r}: lorastudio writes .safetensors only")


def _when_false(reason_if_true: str, reason_if_false: str) -> Callable[[Any], Any]:
    """Flags lorastudio has no switch for: fine when off, unmapped when on."""

    def convert(value: Any) -> None:
        if value:
            raise Unmapped(reason_if_true)
        raise _NoEffect(reason_if_false)

    return convert


def _when_true(reason_if_false: str, reason_if_true: str) -> Callable[[Any], Any]:
    """Behaviour lorastudio always has: fine when on, unmapped when off."""

    def convert(value: Any) -> None:
        if not value:
            raise Unmapped(reason_if_false)
        raise _NoEffect(reason_if_true)

    return convert


class _NoEffect(Exception):
    """A kohya key whose behaviour lorastudio already has (or that only tunes kohya's own machinery)."""


@dataclass(frozen=True)
class Rule:
    """kohya key -> lorastudio key (dotted), with a converter; `target=None` with a reason = not mapped."""

    target: str | None
    convert: Callable[[Any], Any] = _same
    reason: str = ""


def _not_mapped(reason: str) -> Rule:
    return Rule(None, reason=reason)


def _no_effect(reason: str) -> Rule:
    def convert(_value: Any) -> None:
        raise _NoEffect(reason)

    return Rule(None, convert)


# One table: every sd-scripts / kohya_ss key lorastudio knows, in the order of kohya's argument groups.
KOHYA_KEYS: dict[str, Rule] = {
    # model
    "pretrained_model_name_or_path": Rule("model"),
    "v2": _no_effect("lorastudio reads SD 2 from the model itself"),
    "v_parameterization": _no_effect("lorastudio reads v-prediction from the model's scheduler config"),
    "vae": _not_mapped("no separate VAE for training; use a model with the VAE you want baked in"),
    # output
    "output_name": Rule("output.name"),
    "output_dir": _no_effect(
        "runs are written to studio/runs/<output.name>/ and the LoRA copied to studio/loras/"
    ),
    "save_model_as": Rule(None, _save_model_as),
    "save_precision": Rule("output.save_precision", _save_precision),
    "save_every_n_steps": Rule("train.save_every_steps"),
    "save_every_n_epochs": Rule("train.save_every_epochs"),
    "save_last_n_epochs": Rule("output.keep_last"),
    "save_last_n_steps": _not_mapped(
        "keeps by step distance; use output.keep_last (a number of checkpoints)"
    ),
    "save_state": _no_effect("every checkpoint keeps a resumable state (train.keep_states)"),
    "resume": _not_mapped("resume a lorastudio run with `lorastudio train --resume RUN`"),
    "no_metadata": Rule(None, _when_false("lorastudio always writes ss_* metadata", "metadata is written")),
    "training_comment": _no_effect("lorastudio writes its own ss_training_comment"),
    # network
    "network_dim": Rule("lora.rank"),
    "network_alpha": Rule("lora.alpha"),
    "network_dropout": Rule("lora.dropout"),
    "network_weights": _not_mapped("starting from an existing LoRA file is not supported"),
    "dim_from_weights": _not_mapped("starting from an existing LoRA file is not supported"),
    "scale_weight_norms": _not_mapped("max-norm regularisation is not supported"),
    "network_train_text_encoder_only": Rule(
        None, _when_false("training only the text encoder is not supported", "the UNet is trained")
    ),
    # optimisation
    "learning_rate": Rule("train.learning_rate"),
    "unet_lr": Rule("train.learning_rate"),
    "text_encoder_lr": Rule("train.text_encoder_lr", _positive_or_none),
    "lr_scheduler": Rule("train.lr_scheduler", _scheduler),
    "lr_warmup_steps": Rule("train.lr_warmup_steps", _warmup_steps),
    "lr_scheduler_num_cycles": Rule("train.lr_scheduler_num_cycles"),
    "lr_scheduler_power": Rule("train.lr_scheduler_power"),
    "lr_scheduler_args": _not_mapped("extra scheduler arguments are not supported"),
    "lr_scheduler_type": _not_mapped("custom scheduler classes are not supported"),
    "max_grad_norm": Rule("train.max_grad_norm", _positive_or_none),
    "max_train_steps": Rule("train.steps"),
    "max_train_epochs": Rule("train.max_epochs"),
    "train_batch_size": Rule("train.batch_size"),
    "gradient_accumulation_steps": Rule("train.grad_accum"),
    "mixed_precision": Rule("train.mixed_precision", _mixed_precision),
    "full_fp16": Rule(None, _when_false("pure fp16 weights are not supported; use mixed_precision", "off")),
    "full_bf16": Rule(None, _when_false("pure bf16 weights are not supported; use mixed_precision", "off")),
    "gradient_checkpointing": Rule("train.gradient_checkpointing"),
    "seed": Rule("seed"),
    "clip_skip": Rule("clip_skip"),
    "max_token_length": _not_mapped("captions are encoded in one 77-token chunk"),
    "prior_loss_weight": Rule("prior.loss_weight"),
    # noise and loss
    "noise_offset": Rule("train.noise_offset"),
    "multires_noise_iterations": Rule("train.multires_noise_iterations"),
    "multires_noise_discount": Rule("train.multires_noise_discount"),
    "min_snr_gamma": Rule("train.min_snr_gamma", _positive_or_none),
    "adaptive_noise_scale": _not_mapped("adaptive noise scale is not supported"),
    "ip_noise_gamma": _not_mapped("input perturbation noise is not supported"),
    "zero_terminal_snr": _not_mapped("zero terminal SNR is not supported"),
    "debiased_estimation_loss": _not_mapped("debiased estimation loss is not supported; min_snr_gamma is"),
    "scale_v_pred_loss_like_noise_pred": _not_mapped("not supported"),
    # data and captions
    "resolution": Rule("train.resolution", _square_resolution),
    "enable_bucket": Rule(None, _when_true("lorastudio always uses aspect-ratio buckets", "always on")),
    "min_bucket_reso": Rule("data.min_bucket_reso"),
    "max_bucket_reso": Rule("data.max_bucket_reso"),
    "bucket_reso_steps": Rule("data.bucket_reso_steps"),
    "bucket_no_upscale": Rule("data.bucket_no_upscale"),
    "cache_latents": _no_effect("latents are always cached on disk (off by itself with color_aug)"),
    "cache_latents_to_disk": _no_effect("latents are always cached on disk"),
    "cache_text_encoder_outputs": Rule("train.cache_text_encoder_outputs"),
    "shuffle_caption": Rule("data.shuffle_tags"),
    "keep_tokens": Rule("data.keep_tokens"),
    "caption_dropout_rate": Rule("data.caption_dropout"),
    "caption_tag_dropout_rate": Rule("data.tag_dropout"),
    "caption_dropout_every_n_epochs": _not_mapped("epoch-wise caption dropout is not supported"),
    "caption_extension": Rule(None, _caption_extension),
    "caption_extention": Rule(None, _caption_extension),  # kohya's old misspelling
    "color_aug": Rule("data.color_aug"),
    "flip_aug": Rule("data.flip"),
    "random_crop": Rule(
        None, _when_false("random crops are not supported (images are centre-cropped)", "off")
    ),
    "face_crop_aug_range": _not_mapped("face crop augmentation is not supported"),
    "dataset_repeats": Rule("data.repeats"),
    # attention and machinery
    "xformers": Rule("train.attention", _xformers),
    "sdpa": Rule("train.attention", lambda v: "sdpa" if v else "auto"),
    "mem_eff_attn": Rule("train.attention", lambda v: "auto" if v else "sdpa"),
    "max_data_loader_n_workers": _no_effect("lorastudio trains from cached latents in memory"),
    "persistent_data_loader_workers": _no_effect("lorastudio trains from cached latents in memory"),
    "vae_batch_size": _no_effect("latents are encoded one image at a time, once"),
    "lowram": _no_effect("not needed"),
    "highvram": _no_effect("not needed"),
    "logging_dir": _no_effect("TensorBoard events go to studio/runs/<name>/tensorboard/"),
    "log_prefix": _no_effect("TensorBoard events go to studio/runs/<name>/tensorboard/"),
    "log_with": _no_effect("lorastudio logs to log.jsonl and TensorBoard"),
    "debug_dataset": _no_effect("use `lorastudio dataset info`"),
    "ddp_timeout": _no_effect("set by accelerate"),
    # samples
    "sample_every_n_steps": Rule("samples.every_steps"),
    "sample_every_n_epochs": _not_mapped("samples are drawn every samples.every_steps steps"),
    "sample_sampler": Rule("samples.sampler", _sampler),
}

# kohya_ss GUI (JSON) spellings of the same settings.
GUI_ALIASES = {
    "epoch": "max_train_epochs",
    "optimizer": "optimizer_type",
    "max_resolution": "resolution",
}
# Keys handled by their own functions below (they depend on other keys).
_SPECIAL = {
    "network_module",
    "network_args",
    "network_train_unet_only",
    "optimizer_type",
    "optimizer_args",
    "use_8bit_adam",
    "use_lion_optimizer",
    "train_data_dir",
    "reg_data_dir",
    "in_json",
    "dataset_config",
    "sample_prompts",
    "LoRA_type",
    "conv_dim",
    "conv_alpha",
}

# kohya optimizer_type (lower case, module path stripped) -> train.optimizer
_OPTIMIZER_NAMES = {
    "adamw": "adamw",
    "adamw8bit": "adamw8bit",
    "lion": "lion",
    "prodigy": "prodigy",
    "dadaptation": "dadapt_adam",
    "dadaptadam": "dadapt_adam",
    "dadaptlion": "dadapt_lion",
    "adafactor": "adafactor",
    "came": "came",
}


@dataclass
class KohyaImport:
    """A kohya config turned into lorastudio keys, with a line for everything not mapped."""

    config: dict[str, Any] = field(default_factory=dict)  # nested lorastudio keys
    mapped: list[tuple[str, str, Any]] = field(default_factory=list)  # (kohya key, lorastudio key, value)
    unmapped: list[tuple[str, str]] = field(default_factory=list)  # (kohya key, reason)
    no_effect: list[tuple[str, str]] = field(default_factory=list)  # (kohya key, why nothing is needed)
    sources: list[str] = field(default_factory=list)

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
        return out

    def to_yaml(self) -> str:
        header = [f"# lorastudio config imported from {', '.join(self.sources)}"]
        header += [f"# not mapped: {k} ({why})" for k, why in self.unmapped]
        body = yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True)
        return "\n".join(header) + "\n" + body


# -- reading --------------------------------------------------------------------------------
def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LorastudioError(f"{path}: kohya config not found; check the path.")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise LorastudioError(
            f"{path}: not valid {path.suffix[1:].upper()} ({exc}); fix the syntax."
        ) from None
    return data


def _flatten_sections(data: dict[str, Any]) -> dict[str, Any]:
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


def _key_values(value: Any) -> list[tuple[str, Any]]:
    """`["a=1", "b=0.9,0.99"]` or the GUI's `"a=1 b=0.9,0.99"` -> [(a, 1), (b, [0.9, 0.99])]."""
    items = value.split() if isinstance(value, str) else list(value or [])
    out = []
    for item in items:
        key, sep, raw = str(item).partition("=")
        out.append((key.strip(), _literal(raw) if sep else True))
    return out


def _has_field(target: str) -> bool:
    """Whether TrainConfig has the dotted key (a test holds every KOHYA_KEYS target to it)."""
    from lorastudio.train.config import TrainConfig

    model: Any = TrainConfig
    for part in target.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        model = fields[part].annotation
    return True


# -- keys that depend on others -------------------------------------------------------------
def _apply_table(flat: dict[str, Any], out: KohyaImport) -> None:
    for key, value in flat.items():
        if value is None or value == "":
            out.no_effect.append((key, "empty in the file"))
            continue
        if key in _SPECIAL:
            continue
        rule = KOHYA_KEYS.get(key)
        if rule is None:
            out.skip(key, "lorastudio has no equivalent setting")
            continue
        try:
            converted = rule.convert(value)
        except _NoEffect as why:
            out.no_effect.append((key, str(why)))
            continue
        except Unmapped as why:
            out.skip(key, str(why))
            continue
        if rule.target is None:
            out.skip(key, rule.reason)
        else:
            out.set(key, rule.target, converted)


def _apply_network(flat: dict[str, Any], out: KohyaImport) -> None:
    module, label = flat.get("network_module") or None, "network_module"
    args = dict(_key_values(flat.get("network_args")))
    from_gui = {key for key in ("conv_dim", "conv_alpha") if key in flat and key not in args}
    args.update({key: flat[key] for key in from_gui})
    gui_type = flat.get("LoRA_type") or None  # kohya_ss GUI: "Standard", "LoCon", "LyCORIS/LoHa", ...
    if gui_type is not None and module is not None:
        out.no_effect.append(("LoRA_type", "network_module is set and wins"))
    elif gui_type is not None:
        label = "LoRA_type"
        if gui_type in ("Standard", "LoCon", "Kohya LoCon"):
            module = "networks.lora"
        elif str(gui_type).startswith("LyCORIS/"):
            module = "lycoris.kohya"
            args.setdefault("algo", str(gui_type).split("/", 1)[1].lower())
        else:
            out.skip("LoRA_type", f"{gui_type!r} is not supported (Standard, LoCon, LyCORIS/* are)")
            return
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
    out.set(
        "network_train_unet_only", "lora.train_text_encoder", not unet_only
    )  # kohya trains both by default
    for key, value in args.items():
        name = key if key in from_gui else f"network_args.{key}"
        if key == "conv_dim" and not value:
            out.no_effect.append((name, "0: no conv layers, as without it"))
        elif key == "conv_dim":
            out.set(name, "lora.conv_rank", int(value))
            out.set(name, "lora.targets", "locon")
        elif key == "dropout":
            out.set(name, "lora.dropout", float(value))
        else:
            out.skip(
                name,
                "lorastudio has no such network argument"
                + (" (convs use lora.alpha)" if key == "conv_alpha" else ""),
            )


def _apply_optimizer(flat: dict[str, Any], out: KohyaImport) -> None:
    raw = flat.get("optimizer_type") or None
    if raw is None and flat.get("use_8bit_adam"):
        raw, key = "AdamW8bit", "use_8bit_adam"
    elif raw is None and flat.get("use_lion_optimizer"):
        raw, key = "Lion", "use_lion_optimizer"
    else:
        key = "optimizer_type"
    name = None
    if raw is not None:
        name = _OPTIMIZER_NAMES.get(str(raw).split(".")[-1].lower())
        if name is None:
            out.skip(
                key,
                f"optimizer {raw!r} is not available; choose one of {', '.join(sorted(set(_OPTIMIZER_NAMES)))}",
            )
        else:
            out.set(key, "train.optimizer", name)
    args = _key_values(flat.get("optimizer_args"))
    if not args:
        return
    from lorastudio.train.optim import check_optimizer_args

    kept: dict[str, Any] = {}
    for arg, value in args:
        label = f"optimizer_args.{arg}"
        if arg == "weight_decay":
            out.set(label, "train.weight_decay", float(value))
            continue
        try:
            check_optimizer_args(name or "adamw", {arg: value})
        except LorastudioError as exc:
            out.skip(label, str(exc).rstrip("."))
            continue
        kept[arg] = value
        out.mapped.append((label, f"train.optimizer_args.{arg}", value))
    if kept:
        out.config.setdefault("train", {})["optimizer_args"] = kept


def _class_prompt_from_folders(folder: Path) -> str | None:
    """kohya DreamBooth folders: `reg/1_dog/` -> 'dog' (the class of the regularisation images)."""
    from lorastudio.data.sources import kohya_repeats

    names = {
        found[1] for child in folder.glob("*") if child.is_dir() and (found := kohya_repeats(child.name))
    }
    return names.pop() if len(names) == 1 else None


def _count_images(folder: Path) -> int:
    from lorastudio.data.images import is_image_name

    return (
        sum(1 for p in folder.rglob("*") if p.is_file() and is_image_name(p.name)) if folder.is_dir() else 0
    )


def _apply_folders(flat: dict[str, Any], out: KohyaImport, has_dataset_config: bool) -> None:
    for key in ("train_data_dir", "reg_data_dir", "in_json"):
        if key in flat and has_dataset_config:
            out.skip(key, "ignored because a dataset config is given (as sd-scripts does)")
    if has_dataset_config:
        return
    if flat.get("in_json"):
        out.set("in_json", "data.dir", str(flat["in_json"]))
        if flat.get("train_data_dir"):
            out.no_effect.append(("train_data_dir", "images are found next to the in_json metadata"))
    elif flat.get("train_data_dir"):
        out.set("train_data_dir", "data.dir", str(flat["train_data_dir"]))  # NN_name folders give repeats
        _folder_class_caption(Path(str(flat["train_data_dir"])).expanduser(), out)
    if flat.get("reg_data_dir"):
        folder = Path(str(flat["reg_data_dir"])).expanduser()
        out.set("reg_data_dir", "prior.class_dir", str(flat["reg_data_dir"]))
        prompt = _class_prompt_from_folders(folder)
        if prompt:
            out.set("reg_data_dir (NN_class folder)", "prior.class_prompt", prompt)
        else:
            out.skip(
                "reg_data_dir", "class prompt unknown (no single NN_class sub-folder); set prior.class_prompt"
            )
        if count := _count_images(folder):
            out.set("reg_data_dir (images)", "prior.num_images", count)


def _folder_class_caption(folder: Path, out: KohyaImport) -> None:
    """kohya DreamBooth: an image without a caption file is captioned with its `NN_<name>` folder's name."""
    from lorastudio.data.sources import kohya_repeats

    names = sorted({found[1] for c in folder.glob("*") if c.is_dir() and (found := kohya_repeats(c.name))})
    if len(names) == 1:
        out.set("train_data_dir (NN_name folder)", "data.default_caption", names[0])
    elif names:
        out.skip(
            "train_data_dir (NN_name folders)",
            f"uncaptioned images take their folder's name ({', '.join(names)}) in kohya;"
            " lorastudio has one data.default_caption: add caption files",
        )


def _apply_sample_prompts(flat: dict[str, Any], out: KohyaImport) -> None:
    value = flat.get("sample_prompts")
    if not value:
        return
    path = Path(str(value)).expanduser()
    if not path.is_file() or path.suffix.lower() != ".txt":
        out.skip("sample_prompts", f"{value}: only a readable .txt prompt file is imported")
        return
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(line.split(" --", 1)[0].strip())  # kohya's per-line --n/--w options are dropped
    out.set("sample_prompts", "samples.prompts", prompts)


# -- dataset config -------------------------------------------------------------------------
_DATASET_LEVEL = {
    "resolution": "resolution",
    "batch_size": "train_batch_size",
    "enable_bucket": "enable_bucket",
    "min_bucket_reso": "min_bucket_reso",
    "max_bucket_reso": "max_bucket_reso",
    "bucket_reso_steps": "bucket_reso_steps",
    "bucket_no_upscale": "bucket_no_upscale",
}
_SUBSET_STRUCTURE = {"image_dir", "num_repeats", "class_tokens", "is_reg", "metadata_file"}
# kohya subset options that only shape captions in ways lorastudio has no key for.
_NO_CAPTION_EQUIVALENT = (
    "caption_prefix",
    "caption_suffix",
    "caption_separator",
    "keep_tokens_separator",
    "secondary_separator",
    "enable_wildcard",
    "cache_info",
    "resize_interpolation",
)

_SUBSET_OPTIONS = (
    "keep_tokens",
    "shuffle_caption",
    "flip_aug",
    "color_aug",
    "caption_dropout_rate",
    "caption_tag_dropout_rate",
    "caption_extension",
    "random_crop",
    "face_crop_aug_range",
    "caption_dropout_every_n_epochs",
    *_NO_CAPTION_EQUIVALENT,
)


def _apply_dataset_config(path: Path, out: KohyaImport) -> None:
    data = _read(path)
    general = dict(data.get("general", {}))
    datasets = list(data.get("datasets", []))
    for key in data:
        if key not in ("general", "datasets"):
            out.skip(f"dataset:{key}", "not a sd-scripts dataset config table")
    if not datasets:
        raise LorastudioError(
            f"{path}: no [[datasets]] table; add one with [[datasets.subsets]] image_dir=..."
        )
    for index in range(1, len(datasets)):
        out.skip(f"datasets[{index}]", "lorastudio trains one data set per run; only datasets[0] is imported")
    dataset = datasets[0]
    base = {**general, **{k: v for k, v in dataset.items() if k != "subsets"}}
    flat_dataset = {}
    for key, value in base.items():
        if key in _DATASET_LEVEL:
            flat_dataset[_DATASET_LEVEL[key]] = value
        elif key not in _SUBSET_OPTIONS and key not in _SUBSET_STRUCTURE:
            out.skip(f"dataset:{key}", "lorastudio has no equivalent setting")
    _apply_table(flat_dataset, out)
    subsets = [
        {**{k: v for k, v in base.items() if k in _SUBSET_OPTIONS}, **s} for s in dataset.get("subsets", [])
    ]
    known = _SUBSET_STRUCTURE | set(_SUBSET_OPTIONS)
    for index, subset in enumerate(dataset.get("subsets", [])):
        for key in subset:
            if key not in known:
                out.skip(f"subsets[{index}].{key}", "lorastudio has no equivalent setting")
    train = [s for s in subsets if not s.get("is_reg")]
    reg = [s for s in subsets if s.get("is_reg")]
    if not train:
        raise LorastudioError(f"{path}: datasets[0] has no training subset (is_reg = false); add one.")
    _apply_train_subsets(train, out)
    if reg:
        _apply_reg_subset(reg, out)
    _apply_subset_options(train, out)


def _subset_dir(subset: dict[str, Any]) -> str:
    return str(subset.get("metadata_file") or subset.get("image_dir") or "")


def _apply_train_subsets(subsets: list[dict[str, Any]], out: KohyaImport) -> None:
    from lorastudio.data.sources import kohya_repeats

    first = subsets[0]
    if len(subsets) == 1:
        out.set("subsets[0].image_dir", "data.dir", _subset_dir(first))
        if "num_repeats" in first:
            out.set("subsets[0].num_repeats", "data.repeats", int(first["num_repeats"]))
    else:
        # Several folders with their own repeats = kohya's NN_name layout, if they already sit that way.
        dirs = [Path(_subset_dir(s)).expanduser() for s in subsets]
        parent = dirs[0].parent
        matches = all(
            d.parent == parent
            and not s.get("metadata_file")
            and (found := kohya_repeats(d.name)) is not None
            and found[0] == int(s.get("num_repeats", 1))
            for d, s in zip(dirs, subsets, strict=True)
        )
        siblings = {p for p in parent.iterdir() if p.is_dir()} if parent.is_dir() else set()
        if matches and siblings == set(dirs):
            out.set("subsets[*].image_dir", "data.dir", str(parent))
            out.no_effect.append(
                ("subsets[*].num_repeats", "the NN_ folder prefixes already give these repeats")
            )
        else:
            out.set("subsets[0].image_dir", "data.dir", _subset_dir(first))
            if "num_repeats" in first:
                out.set("subsets[0].num_repeats", "data.repeats", int(first["num_repeats"]))
            for index, subset in enumerate(subsets[1:], 1):
                out.skip(
                    f"subsets[{index}].image_dir",
                    f"lorastudio trains one data.dir; to add {_subset_dir(subset)!r}, put the subsets as"
                    " NN_name folders (NN = num_repeats) under one folder and use it as data.dir",
                )
    tokens = {s.get("class_tokens") for s in subsets if s.get("class_tokens")}
    if len(tokens) == 1:
        out.set("subsets.class_tokens", "data.default_caption", tokens.pop())
    elif tokens:
        out.skip("subsets.class_tokens", "differs between subsets; set data.default_caption")


def _apply_reg_subset(subsets: list[dict[str, Any]], out: KohyaImport) -> None:
    subset = subsets[0]
    folder = _subset_dir(subset)
    out.set("subsets[is_reg].image_dir", "prior.class_dir", folder)
    if subset.get("class_tokens"):
        out.set("subsets[is_reg].class_tokens", "prior.class_prompt", subset["class_tokens"])
    else:
        out.skip(
            "subsets[is_reg].class_tokens", "not set; set prior.class_prompt to the class of these images"
        )
    if count := _count_images(Path(folder).expanduser()):
        out.set("subsets[is_reg] (images)", "prior.num_images", count)
    if "num_repeats" in subset:
        out.no_effect.append(
            (
                "subsets[is_reg].num_repeats",
                "class images are drawn one per training image, on their own schedule",
            )
        )
    for index in range(1, len(subsets)):
        out.skip(f"subsets[is_reg #{index}]", "lorastudio uses one prior.class_dir; merge the folders")
    options = sorted({k for s in subsets for k in s if k in _SUBSET_OPTIONS})
    if options:
        out.no_effect.append(
            (
                f"subsets[is_reg].{{{','.join(options)}}}",
                "class images are used with their own captions as they are",
            )
        )


def _apply_subset_options(subsets: list[dict[str, Any]], out: KohyaImport) -> None:
    """Per-subset caption/augmentation options: one lorastudio value when every subset agrees."""
    for key in _SUBSET_OPTIONS:
        values = [s[key] for s in subsets if key in s]
        if not values:
            continue
        distinct = {json.dumps(v, sort_keys=True) for v in values}
        if len(distinct) > 1:
            out.skip(
                f"subsets.{key}",
                f"differs between subsets ({', '.join(sorted(distinct))}); one value per run",
            )
            continue
        if key in _NO_CAPTION_EQUIVALENT:
            out.skip(f"subsets.{key}", "lorastudio has no equivalent caption option")
            continue
        _apply_table({key: values[0]}, out)


# -- entry points ---------------------------------------------------------------------------
def import_kohya_config(config: str | Path | None, dataset_config: str | Path | None = None) -> KohyaImport:
    """Map a kohya training TOML (and dataset TOML) to lorastudio keys; see the module docstring."""
    out = KohyaImport()
    flat: dict[str, Any] = {}
    if config is not None:
        path = Path(config).expanduser()
        flat = _flatten_sections(_read(path))
        for gui, kohya in GUI_ALIASES.items():
            if gui in flat and kohya not in flat:
                flat[kohya] = flat.pop(gui)
        out.sources.append(str(path))
    if dataset_config is None and flat.get("dataset_config"):
        dataset_config = flat["dataset_config"]
    base_lr = flat.pop("learning_rate", None) if flat.get("unet_lr") else None
    if flat.get("max_train_epochs") and flat.get("max_train_steps"):
        flat.pop("max_train_steps")
        out.no_effect.append(("max_train_steps", "max_train_epochs is set and wins, as in kohya"))
    _apply_table(flat, out)
    if base_lr is not None:  # kohya: unet_lr wins for the UNet; learning_rate still serves the text encoder
        if flat.get("text_encoder_lr"):
            out.no_effect.append(
                ("learning_rate", "unet_lr and text_encoder_lr are both set and win, as in kohya")
            )
        else:
            out.set("learning_rate", "train.text_encoder_lr", base_lr)
    if dataset_config is not None:
        dpath = Path(dataset_config).expanduser()
        out.sources.append(str(dpath))
        _apply_dataset_config(dpath, out)
    _apply_folders(flat, out, dataset_config is not None)
    if config is not None:
        _apply_network(flat, out)
    _apply_optimizer(flat, out)
    _apply_sample_prompts(flat, out)
    if "dataset_config" in flat:
        out.no_effect.append(("dataset_config", f"read as the dataset config ({dataset_config})"))
    _account_for_every_key(flat, out)
    if not out.sources:
        raise LorastudioError("kohya import: give --kohya-config FILE and/or --dataset-config FILE.")
    return out


def _account_for_every_key(flat: dict[str, Any], out: KohyaImport) -> None:
    """The promise of this module: every key of the file ends up in one of the three lists."""

    def root(label: str) -> str:
        return label.split(".")[0].split(" ")[0].split("[")[0]

    seen = {root(k) for k, _, _ in out.mapped} | {root(k) for k, _ in out.unmapped + out.no_effect}
    for key in flat:
        if key not in seen:
            out.skip(key, "not used: it only matters together with keys this file does not set")


def kohya_layer(imported: KohyaImport) -> Any:
    """The imported keys as one config layer, named after the kohya files (for `--explain`)."""
    from lorastudio.config import ConfigLayer

    return ConfigLayer(f"kohya {' + '.join(imported.sources)}", imported.config)


def kohya_resolved_config(imported: KohyaImport, overrides: Any = (), preset: str | None = None):
    """preset < imported kohya keys < `key=value` overrides, with every value's source."""
    from lorastudio.train.config import resolve_train_config

    try:
        return resolve_train_config(None, overrides, preset, imported=[kohya_layer(imported)])
    except LorastudioError as exc:
        sources = " + ".join(imported.sources)
        raise LorastudioError(f"imported from {sources}: {exc}") from None


def kohya_train_config(imported: KohyaImport, overrides: Any = (), preset: str | None = None):
    """The TrainConfig: preset < imported kohya keys < `key=value` overrides."""
    return kohya_resolved_config(imported, overrides, preset).config


def kohya_yaml_config(imported: KohyaImport, overrides: Any = ()) -> dict[str, Any]:
    """The imported keys with the command line's over them, as one config file would hold them.

    Budget keys replace each other as between layers, so the file loads without a conflict.
    """
    from lorastudio.config import merge_layers, override_layer
    from lorastudio.train.config import TRAIN_KEY_GROUPS

    data, _, _ = merge_layers([kohya_layer(imported), override_layer(overrides)], TRAIN_KEY_GROUPS)
    return data


def kohya_training_facts(cfg) -> dict[str, Any]:
    """The kohya metadata keys of the settings above, so a LoRA says how it was trained as kohya's do.

    `optimizer` is kohya's `module.Class(arg=value,...)` form (`ss_optimizer`).
    """
    from lorastudio.train.optim import OPTIMIZERS

    train, data = cfg.train, cfg.data
    try:
        cls = OPTIMIZERS[train.optimizer].load()
        name = f"{cls.__module__.split('.')[0]}.{cls.__name__}"
    except LorastudioError:
        name = train.optimizer
    args = ",".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in train.optimizer_args.items())
    return {
        "optimizer": f"{name}({args})" if args else name,
        "lr_warmup_steps": train.lr_warmup_steps,
        "lr_scheduler_num_cycles": train.lr_scheduler_num_cycles
        if train.lr_scheduler == "cosine_with_restarts"
        else None,
        "lr_scheduler_power": train.lr_scheduler_power if train.lr_scheduler == "polynomial" else None,
        "multires_noise_iterations": train.multires_noise_iterations or None,
        "multires_noise_discount": train.multires_noise_discount if train.multires_noise_iterations else None,
        "caption_tag_dropout_rate": data.tag_dropout,
        "caption_dropout_rate": data.caption_dropout,
        "keep_tokens": data.keep_tokens,
        "shuffle_caption": data.shuffle_tags,
        "color_aug": data.color_aug,
        "flip_aug": data.flip,
        "enable_bucket": True,
        "min_bucket_reso": data.min_bucket_reso,
        "max_bucket_reso": data.max_bucket_reso,
        "bucket_no_upscale": data.bucket_no_upscale,
        "gradient_accumulation_steps": train.grad_accum,
        "max_grad_norm": train.max_grad_norm,
    }
