"""The kohya key table: every sd-scripts / kohya_ss key lorastudio knows, as data.

`KOHYA_KEYS` maps one kohya key to one lorastudio key (dotted) with a converter, or says why it is
not mapped or needs no setting. Keys that need the whole file to decide (network module and args,
data folders, optimizer names: `SPECIAL_KEYS`) are mapped in `train.kohya_mapping` and
`train.kohya_datasets`; `train.kohya_config.import_kohya_config` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GUI_ALIASES",
    "GUI_LORA_TYPES",
    "KOHYA_KEYS",
    "OPTIMIZER_NAMES",
    "SPECIAL_KEYS",
    "MappedTo",
    "NoEffect",
    "Rule",
    "Unmapped",
]


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


@dataclass(frozen=True)
class MappedTo:
    """A converted value that goes to another lorastudio key than the rule's (kohya's one key, two meanings)."""

    target: str
    value: Any


def _warmup_steps(value: Any) -> Any:
    """sd-scripts' `int_or_float`: "10%" and a value below 1 are a ratio of the run's steps, the rest steps."""
    if isinstance(value, str) and value.strip().endswith("%"):
        value = float(value.strip()[:-1]) / 100
    value = float(value) if isinstance(value, str) else value
    if 0 < value < 1:
        return MappedTo("train.lr_warmup_ratio", float(value))
    return int(value)


def _caption_extension(value: Any) -> str:
    """kohya reads only this caption file beside each image; data.caption_extension does the same."""
    from lorastudio.data.sources import caption_extension_of
    from lorastudio.errors import LorastudioError

    try:
        return caption_extension_of(str(value)) or ".caption"  # kohya's default when given empty
    except LorastudioError as exc:
        raise Unmapped(str(exc)) from None


def _sampler(value: Any) -> str:
    names = {
        "ddim": "DDIM",
        "pndm": "PLMS",  # diffusers' PNDM; A1111's PLMS is it without the Runge-Kutta warm-up steps
        "lms": "LMS",
        "euler": "Euler",
        "k_euler": "Euler",
        "euler_a": "Euler a",
        "k_euler_a": "Euler a",
        "dpmsolver++": "DPM++ 2M",
        "dpm_2": "DPM2",
        "k_dpm_2": "DPM2",
        "dpm_2_a": "DPM2 a",
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
        raise NoEffect("lorastudio writes .safetensors")
    raise Unmapped(f"{value!r}: lorastudio writes .safetensors only")


def _when_false(reason_if_true: str, reason_if_false: str) -> Callable[[Any], Any]:
    """Flags lorastudio has no switch for: fine when off, unmapped when on."""

    def convert(value: Any) -> None:
        if value:
            raise Unmapped(reason_if_true)
        raise NoEffect(reason_if_false)

    return convert


def _when_true(reason_if_false: str, reason_if_true: str) -> Callable[[Any], Any]:
    """Behaviour lorastudio always has: fine when on, unmapped when off."""

    def convert(value: Any) -> None:
        if not value:
            raise Unmapped(reason_if_false)
        raise NoEffect(reason_if_true)

    return convert


class NoEffect(Exception):
    """A kohya key whose behaviour lorastudio already has (or that only tunes kohya's own machinery)."""


def _dynamo_backend(value: Any) -> str:
    """kohya_ss GUI configs carry "no" (accelerate's "no compile"); sd-scripts knows more backends."""
    from lorastudio.models.compiled import COMPILE_BACKENDS

    backend = str(value).lower()
    if backend in ("no", "none", ""):
        raise NoEffect("no compile backend: torch_compile decides whether the UNet is compiled")
    if backend not in COMPILE_BACKENDS:
        raise Unmapped(f"backend {value!r} is not available; choose one of {', '.join(COMPILE_BACKENDS)}")
    return backend


@dataclass(frozen=True)
class Rule:
    """kohya key -> lorastudio key (dotted), with a converter; `target=None` with a reason = not mapped."""

    target: str | None
    convert: Callable[[Any], Any] = _same
    reason: str = ""


def _not_mapped(reason: str) -> Rule:
    """A feature lorastudio lacks: reported when the file turns it on; false or 0 (off, what
    kohya_ss GUI files always carry) needs nothing."""

    def convert(value: Any) -> Any:
        if value is False or (isinstance(value, int | float) and value == 0):
            raise NoEffect("off, as lorastudio runs")
        return value

    return Rule(None, convert, reason)


def _no_effect(reason: str) -> Rule:
    def convert(_value: Any) -> None:
        raise NoEffect(reason)

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
    "no_half_vae": Rule("train.vae_fp32"),  # on a GPU the VAE encodes in bf16/fp16 otherwise
    "gradient_checkpointing": Rule("train.gradient_checkpointing"),
    "torch_compile": Rule("train.torch_compile"),
    "dynamo_backend": Rule("train.dynamo_backend", _dynamo_backend),
    "seed": Rule("seed"),
    "clip_skip": Rule("clip_skip"),
    "max_token_length": Rule("data.max_token_length"),
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
    "caption_extension": Rule("data.caption_extension", _caption_extension),
    "caption_extention": Rule("data.caption_extension", _caption_extension),  # kohya's old misspelling
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
    "sample_sampler": Rule("samples.sampler", _sampler),
}

# kohya_ss GUI (JSON) spellings of the same settings.
GUI_ALIASES = {
    "epoch": "max_train_epochs",
    "optimizer": "optimizer_type",
    "max_resolution": "resolution",
    "lora_network_weights": "network_weights",
}
# LoRA_type -> (sd-scripts network_module the GUI runs, LyCORIS algo, whether conv_dim/conv_alpha are passed)
GUI_LORA_TYPES: dict[str, tuple[str, str | None, bool]] = {
    "Standard": ("networks.lora", None, False),
    "Kohya LoCon": ("networks.lora", None, True),
    "LoCon": ("lycoris.kohya", "locon", True),
    "LyCORIS/LoCon": ("lycoris.kohya", "locon", True),
    "LyCORIS/LoHa": ("lycoris.kohya", "loha", True),
    "LyCORIS/LoKr": ("lycoris.kohya", "lokr", True),
    "Kohya LoHa": ("networks.loha", "loha", True),
    "Kohya LoKr": ("networks.lokr", "lokr", True),
}
# Keys mapped by their own functions in train.kohya_mapping and train.kohya_datasets (they depend on other keys).
SPECIAL_KEYS = {
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
    "sample_every_n_epochs",
}

# kohya optimizer_type (lower case, module path stripped) -> train.optimizer
OPTIMIZER_NAMES = {
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
