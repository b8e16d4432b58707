"""kohya_ss GUI (bmaltais/kohya_ss) JSON configs: the GUI's own keys, read as its Train button reads them.

The GUI saves every field of its LoRA tab to JSON (`LoRA_type`, `epoch`, `max_resolution`, `lr_warmup`
as a percent, ...). Before sd-scripts runs, the GUI turns them into sd-scripts keys; `translate_gui`
does the same in lorastudio terms, so the rest of the import (`train.kohya_config`) reads an sd-scripts
config:

- a value of 0 (or "", false) is left out of the sd-scripts config, so sd-scripts' default applies;
  numbers older GUI versions saved as strings ("0.0001") are numbers;
- `lr_warmup` is a percent of the run; `lr_warmup_steps` > 0 wins over it;
- `epoch` budgets the run when `max_train_steps` and `max_train_epochs` are 0 (without a dataset config);
- `text_encoder_lr` 0 with `unet_lr` set trains the UNet alone; `unet_lr` 0 with `text_encoder_lr` set
  trains the text encoder alone (not supported here); both 0: `learning_rate` serves both;
- `noise_offset_type` picks the offset-noise keys (Original) or the multires ones (Multires);
- `sample_prompts` is the prompt text itself (the GUI writes it to a prompt file);
- `stop_text_encoder_training` is ignored by the LoRA tab ("not yet supported");
- `seed` 0 means random (sd-scripts draws one), and so does a GUI file without `seed` (the GUI's default is 0):
  the import draws it and records it in the config and its notes.

`GUI_KEYS` lists the GUI keys sd-scripts has no key for: each maps to a lorastudio key or says why not,
as `train.kohya_keys.KOHYA_KEYS` does for sd-scripts' keys; keys of other model families (Flux.1, SD3,
HunyuanImage, Anima, Lumina) are found by `gui_rule`.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from lorastudio.train.kohya_keys import GUI_LORA_TYPES, KOHYA_KEYS, NoEffect, Rule, Unmapped
from lorastudio.train.kohya_mapping import KohyaImport

__all__ = ["GUI_KEYS", "gui_rule", "is_gui_config", "translate_gui"]

# Keys only the GUI writes: one of them (or a .json file) makes a config a GUI config.
GUI_MARKERS = ("LoRA_type", "epoch", "max_resolution", "lr_warmup", "optimizer", "stop_text_encoder_training")

def is_gui_config(path: Path, flat: dict[str, Any]) -> bool:
    """sd-scripts reads TOML; a JSON config (or one with the GUI's own keys) is the GUI's."""
    return path.suffix.lower() == ".json" or any(key in flat for key in GUI_MARKERS)


# -- the GUI keys sd-scripts has no key for -------------------------------------------------
def _off_or(reason: str) -> Rule:
    """A feature lorastudio lacks: nothing when false/0/off, NOT MAPPED with `reason` when on."""

    def convert(value: Any) -> Any:
        if value is False or (isinstance(value, int | float) and value == 0):
            raise NoEffect("off, as lorastudio runs")
        raise Unmapped(reason)

    return Rule(None, convert)


def _default_or(default: Any, reason: str, why_default: str) -> Rule:
    """A setting whose GUI default is what lorastudio does; another value is NOT MAPPED."""

    def convert(value: Any) -> Any:
        if value == default:
            raise NoEffect(why_default)
        raise Unmapped(f"{value!r}: {reason}")

    return Rule(None, convert)


def _quiet(reason: str) -> Rule:
    def convert(_value: Any) -> Any:
        raise NoEffect(reason)

    return Rule(None, convert)


_LAUNCH = "an accelerate launch setting; lorastudio starts its own process"
_TRACKERS = "lorastudio logs to log.jsonl and TensorBoard"
_HUB = "uploading to the Hugging Face Hub is not supported"
_LYCORIS = "a LyCORIS option lorastudio has no setting for"
_BLOCKS = "block-wise ranks and learning rates are not supported"
_DREAMBOOTH_TE = "read by the GUI's DreamBooth and Fine-tune tabs only (a LoRA's is text_encoder_lr)"

GUI_KEYS: dict[str, Rule] = {
    # the GUI's own machinery
    "file_path": _quiet("the GUI's own"),
    "save_as_bool": _quiet("the GUI's own"),
    "model_list": _quiet("the GUI's model picker; pretrained_model_name_or_path is the model"),
    "sdxl": _quiet("lorastudio reads SDXL from the model itself"),
    "sdxl_cache_text_encoder_outputs": Rule("train.cache_text_encoder_outputs"),
    "sdxl_no_half_vae": Rule("train.vae_fp32"),  # the GUI passes it as sd-scripts' no_half_vae
    "noise_offset_type": _quiet("picks the noise keys the GUI passes (noise_offset, or multires_noise_*)"),
    "additional_parameters": _off_or("extra sd-scripts arguments: give each as a lorastudio key=value"),
    "num_cpu_threads_per_process": _quiet(_LAUNCH),
    "num_processes": _quiet(_LAUNCH),
    "num_machines": _quiet(_LAUNCH),
    "gpu_ids": _quiet(_LAUNCH),
    "main_process_port": _quiet(_LAUNCH),
    "extra_accelerate_launch_args": _off_or(_LAUNCH),
    "multi_gpu": _off_or("several GPUs: start lorastudio under `accelerate launch`"),
    "dynamo_mode": _quiet("train.torch_compile compiles with static shapes"),
    "dynamo_use_fullgraph": _quiet("train.torch_compile compiles with static shapes"),
    "dynamo_use_dynamic": _quiet("train.torch_compile compiles with static shapes"),
    "lowvram": _quiet("not needed"),
    "skip_cache_check": _quiet("lorastudio checks its latent cache by content"),
    "save_state_on_train_end": _quiet("every checkpoint keeps a resumable state (train.keep_states)"),
    "save_last_n_epochs_state": Rule("train.keep_states"),
    "save_last_n_steps_state": _off_or("keeps states by step distance; use train.keep_states (a number)"),
    "use_wandb": _quiet(_TRACKERS),
    "wandb_api_key": _quiet(_TRACKERS),
    "wandb_run_name": _quiet(_TRACKERS),
    "log_tracker_name": _quiet(_TRACKERS),
    "log_tracker_config": _quiet(_TRACKERS),
    "log_config": _quiet(_TRACKERS),
    "huggingface_repo_id": _off_or(_HUB),
    "huggingface_token": _quiet(_HUB),
    "huggingface_repo_type": _quiet(_HUB),
    "huggingface_repo_visibility": _quiet(_HUB),
    "huggingface_path_in_repo": _quiet(_HUB),
    "save_state_to_huggingface": _off_or(_HUB),
    "resume_from_huggingface": _off_or(_HUB),
    "async_upload": _off_or(_HUB),
    "metadata_author": _off_or("lorastudio writes its own ss_* metadata"),
    "metadata_description": _off_or("lorastudio writes its own ss_* metadata"),
    "metadata_license": _off_or("lorastudio writes its own ss_* metadata"),
    "metadata_tags": _off_or("lorastudio writes its own ss_* metadata"),
    "metadata_title": _off_or("lorastudio writes its own ss_* metadata"),
    # learning rates of other tabs and models
    "learning_rate_te": _quiet(_DREAMBOOTH_TE),
    "learning_rate_te1": _quiet(_DREAMBOOTH_TE),
    "learning_rate_te2": _quiet(_DREAMBOOTH_TE),
    "no_token_padding": _off_or("not supported (captions are padded, as sd-scripts' LoRA training does)"),
    # loss and noise
    "loss_type": _default_or("l2", "only the L2 (MSE) loss is supported", "l2, lorastudio's loss"),
    "huber_c": _quiet("only used with loss_type huber or smooth_l1"),
    "huber_scale": _quiet("only used with loss_type huber or smooth_l1"),
    "huber_schedule": _quiet("only used with loss_type huber or smooth_l1"),
    "masked_loss": _off_or("masked loss is not supported"),
    "min_timestep": _off_or("a narrower timestep range is not supported"),
    "max_timestep": _default_or(1000, "a narrower timestep range is not supported", "every timestep, as lorastudio"),
    "v_pred_like_loss": _off_or("not supported"),
    "weighted_captions": _off_or("weighted captions are not supported"),
    "noise_offset_random_strength": _off_or("random offset-noise strength is not supported"),
    "ip_noise_gamma_random_strength": _off_or("input perturbation noise is not supported"),
    "train_inpainting": _off_or("inpainting models are not trained"),
    "fp8_base": _off_or("fp8 base weights are not supported"),
    "fused_backward_pass": _off_or("fused backward pass is not supported"),
    "blockwise_fused_optimizers": _off_or("fused backward pass is not supported"),
    "fused_optimizer_groups": _off_or("fused backward pass is not supported"),
    # network options of other LoRA types
    "LyCORIS_preset": _default_or(
        "full", "LyCORIS presets are not supported; lora.targets picks the layers", "LyCORIS' default preset"
    ),
    "rank_dropout": _off_or("rank dropout is not supported; lora.dropout is network_dropout"),
    "module_dropout": _off_or("module dropout is not supported; lora.dropout is network_dropout"),
    "rank_dropout_scale": _off_or(_LYCORIS),
    "factor": _default_or(-1, f"{_LYCORIS} (LoKr factor)", "LyCORIS' automatic LoKr factor"),
    "use_cp": _off_or(_LYCORIS),
    "use_tucker": _off_or(_LYCORIS),
    "use_scalar": _off_or(_LYCORIS),
    "constrain": _off_or(_LYCORIS),
    "rescaled": _off_or(_LYCORIS),
    "train_norm": _off_or(_LYCORIS),
    "decompose_both": _off_or(_LYCORIS),
    "train_on_input": _off_or(_LYCORIS),
    "bypass_mode": _off_or(_LYCORIS),
    "dora_wd": _off_or("DoRA is not supported"),
    "unit": _quiet("DyLoRA's block size; DyLoRA is not supported"),
    "down_lr_weight": _off_or(_BLOCKS),
    "mid_lr_weight": _off_or(_BLOCKS),
    "up_lr_weight": _off_or(_BLOCKS),
    "block_lr_zero_threshold": _off_or(_BLOCKS),
    "block_dims": _off_or(_BLOCKS),
    "block_alphas": _off_or(_BLOCKS),
    "conv_block_dims": _off_or(_BLOCKS),
    "conv_block_alphas": _off_or(_BLOCKS),
    "conv_dims": _off_or(_BLOCKS),
    "conv_alphas": _off_or(_BLOCKS),
    "loraplus_lr_ratio": _off_or("LoRA+ is not supported"),
    "loraplus_unet_lr_ratio": _off_or("LoRA+ is not supported"),
    "loraplus_text_encoder_lr_ratio": _off_or("LoRA+ is not supported"),
    "train_lora_ggpo": _off_or("GGPO is not supported"),
    "ggpo_sigma": _quiet("only used with train_lora_ggpo"),
    "ggpo_beta": _quiet("only used with train_lora_ggpo"),
}

# Other model families: their checkbox says the GUI trains such a model; their keys are read only then.
_FAMILIES = {
    "flux1": "Flux.1",
    "sd3": "SD3",
    "hunyuan_image": "HunyuanImage",
    "hunyuan": "HunyuanImage",
    "anima": "Anima",
    "lumina": "Lumina",
}
_FAMILY_KEYS = {
    "Flux.1": (
        "ae clip_l t5xxl model_type discrete_flow_shift model_prediction_type timestep_sampling split_mode"
        " train_blocks t5xxl_max_token_length enable_all_linear guidance_scale mem_eff_save apply_t5_attn_mask"
        " split_qkv train_t5xxl cpu_offload_checkpointing blocks_to_swap single_blocks_to_swap"
        " double_blocks_to_swap show_timesteps show_timesteps_resolution img_attn_dim img_mlp_dim img_mod_dim"
        " single_dim txt_attn_dim txt_mlp_dim txt_mod_dim single_mod_dim in_dims train_double_block_indices"
        " train_single_block_indices t5xxl_lr flux_fused_backward_pass fp8_base_unet"
    ).split(),
    "SD3": (
        "clip_g clip_g_dropout_rate logit_mean logit_std mode_scale pos_emb_random_crop_rate save_clip save_t5xxl"
        " t5xxl_device t5xxl_dtype weighting_scheme disable_mmap_load_safetensors"
    ).split(),
}
_SUPPORTED_MODELS = "lorastudio trains SD 1.x, SD 2.x and SDXL"


def gui_rule(key: str) -> Rule | None:
    """The rule for one key of a GUI config: sd-scripts' table, the GUI's own keys, other model families."""
    if key in KOHYA_KEYS:
        return KOHYA_KEYS[key]
    if key in GUI_KEYS:
        return GUI_KEYS[key]
    for prefix, family in _FAMILIES.items():
        if key == f"{prefix}_checkbox":
            return _off_or(f"the GUI trains a {family} model here; {_SUPPORTED_MODELS}")
        if key.startswith(f"{prefix}_"):
            return _quiet(f"a {family} setting, read only with {prefix}_checkbox")
    for family, keys in _FAMILY_KEYS.items():
        if key in keys:
            return _quiet(f"a {family} setting, not read for SD 1.x, SD 2.x or SDXL")
    return None


# -- what the Train button passes to sd-scripts ---------------------------------------------
# Values that stay text even when they look like a number.
_TEXT_KEYS = {"output_name", "training_comment", "sample_prompts", "caption_extension", "vae", "resume"}
_TEXT_PARTS = ("dir", "path", "name", "metadata_", "args", "parameters", "model", "weights")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# Zeros the translation reads itself before the GUI's "0 is left out" applies to the rest.
_KEEP_ZERO = {
    "lr_warmup",
    "lr_warmup_steps",
    "learning_rate",
    "unet_lr",
    "text_encoder_lr",
    "stop_text_encoder_training",
    "epoch",
    "max_train_steps",
    "max_train_epochs",
    "keep_tokens",
}


def _number(key: str, value: Any) -> Any:
    """Older GUI versions saved numbers as strings ("0.0001", "1234")."""
    if not isinstance(value, str) or key in _TEXT_KEYS or any(part in key for part in _TEXT_PARTS):
        return value
    text = value.strip()
    if not _NUMBER.fullmatch(text):
        return value
    number = float(text)
    return int(number) if number.is_integer() and not re.search(r"[.eE]", text) else number


def _num(value: Any) -> float:
    try:
        return float(value) if value not in (None, "", False) else 0.0
    except (TypeError, ValueError):
        return 0.0


def translate_gui(flat: dict[str, Any], out: KohyaImport, has_dataset_config: bool) -> dict[str, Any]:
    """The GUI config as the sd-scripts keys its Train button passes; what each GUI-only key did is in `out`."""
    flat = {key: _number(key, value) for key, value in flat.items()}
    is_lora = "LoRA_type" in flat or "network_dim" in flat
    _learning_rates(flat, out)
    _warmup(flat, out, has_dataset_config)
    _epochs(flat, out, has_dataset_config)
    _noise(flat, out)
    _network_options(flat, out)
    _seed(flat, out)
    stop = flat.pop("stop_text_encoder_training", None)
    if _num(stop) and is_lora:
        out.no_effect.append(("stop_text_encoder_training", "the GUI's LoRA tab ignores it (\"not yet supported\")"))
    elif _num(stop):
        out.skip("stop_text_encoder_training", "training the text encoder for part of the run is not supported")
    elif stop is not None:
        out.no_effect.append(("stop_text_encoder_training", "off, as lorastudio runs"))
    if isinstance(flat.get("sample_prompts"), str) and flat["sample_prompts"].strip():
        flat["sample_prompts"] = [line for line in flat["sample_prompts"].splitlines() if line.strip()]
    for key in [k for k, v in flat.items() if k not in _KEEP_ZERO and _is_zero(v)]:
        if gui_rule(key) is None:
            continue  # an unknown key is listed as such
        flat.pop(key)
        out.no_effect.append((key, "0: the GUI leaves it out, so sd-scripts' default applies"))
    return flat


# LyCORIS' options: the GUI passes them for LyCORIS types (sd-scripts' own LoHa/LoKr take two of them).
_LYCORIS_OPTIONS = (
    "LyCORIS_preset rank_dropout_scale factor use_cp use_tucker use_scalar constrain rescaled train_norm"
    " decompose_both train_on_input bypass_mode dora_wd"
).split()


def _network_options(flat: dict[str, Any], out: KohyaImport) -> None:
    kind = str(flat.get("LoRA_type", ""))
    if kind.startswith("LyCORIS/") or kind == "LoCon" or kind not in GUI_LORA_TYPES:
        return  # used, or a type the import refuses anyway
    used = {"factor", "use_tucker"} if kind in ("Kohya LoHa", "Kohya LoKr") else set()
    for key in _LYCORIS_OPTIONS:
        if key in flat and key not in used:
            flat.pop(key)
            out.no_effect.append((key, f"a LyCORIS option; the GUI does not pass it for LoRA_type {kind}"))


def _seed(flat: dict[str, Any], out: KohyaImport) -> None:
    """`seed` 0 is the GUI's "random": it passes no seed and sd-scripts draws one. lorastudio's training has no
    random seed (its default is 42), so the import draws it here and the config, and so the run, records it."""
    if _is_zero(flat.get("seed", 0)):  # a GUI file without the key: the GUI's default, 0 (only GUI files come here)
        flat.pop("seed", None)
        seed = random.randrange(1, 2**32)
        out.set("seed", "seed", seed)
        out.notes.append(f"seed 0 (random in kohya_ss): seed {seed}")


def _is_zero(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value == 0


def _learning_rates(flat: dict[str, Any], out: KohyaImport) -> None:
    """0 is "not set"; text_encoder_lr 0 with unet_lr set trains the UNet alone (and the reverse)."""
    te, unet = _num(flat.get("text_encoder_lr")), _num(flat.get("unet_lr"))
    if "text_encoder_lr" in flat and not te:
        flat.pop("text_encoder_lr")
        if unet:
            flat["network_train_unet_only"] = True
            out.no_effect.append(("text_encoder_lr", "0 with unet_lr set: the UNet alone trains, as in the GUI"))
            if "learning_rate" in flat:
                flat.pop("learning_rate")
                out.no_effect.append(("learning_rate", "unet_lr is set and wins; the text encoder is not trained"))
        else:
            out.no_effect.append(("text_encoder_lr", "0: learning_rate serves the text encoder, as in the GUI"))
    if "unet_lr" in flat and not unet:
        flat.pop("unet_lr")
        if te:
            out.skip("unet_lr", "0 with text_encoder_lr set: the GUI trains only the text encoder; lorastudio cannot")
        else:
            out.no_effect.append(("unet_lr", "0: learning_rate serves the UNet, as in the GUI"))
    if "learning_rate" in flat and not _num(flat["learning_rate"]):
        flat.pop("learning_rate")
        out.no_effect.append(("learning_rate", "0: unet_lr and text_encoder_lr set the rates"))


def _warmup(flat: dict[str, Any], out: KohyaImport, has_dataset_config: bool) -> None:
    """`lr_warmup` is a percent of the run's steps; `lr_warmup_steps` > 0 wins (the GUI's rule)."""
    if "lr_warmup" not in flat:
        return
    percent, steps = _num(flat.pop("lr_warmup")), _num(flat.get("lr_warmup_steps"))
    if steps > 0:
        flat["lr_warmup_steps"] = int(steps)
        if percent:
            out.no_effect.append(("lr_warmup", "lr_warmup_steps is set and wins, as in the GUI"))
        else:
            out.no_effect.append(("lr_warmup", "0: lr_warmup_steps sets the warm-up"))
        return
    if flat.pop("lr_warmup_steps", None) is not None:
        out.no_effect.append(("lr_warmup_steps", "0: lr_warmup (a percent of the run) sets the warm-up"))
    total = _num(flat.get("max_train_steps"))
    if not percent:
        out.no_effect.append(("lr_warmup", "0: no warm-up"))
    elif has_dataset_config and total > 0:  # the GUI counts the steps itself then
        out.set("lr_warmup", "train.lr_warmup_steps", round(percent * total / 100))
    elif 0 < percent < 100:
        out.set("lr_warmup", "train.lr_warmup_ratio", percent / 100)
    else:
        out.skip("lr_warmup", f"{percent:g} % is not a share of the run: set train.lr_warmup_ratio (below 1)")


def _epochs(flat: dict[str, Any], out: KohyaImport, has_dataset_config: bool) -> None:
    """`epoch` is the run's length when max_train_steps and max_train_epochs are 0: the GUI counts
    images × repeats / batch / accumulation × epoch steps, as train.max_epochs does."""
    for key in ("max_train_epochs", "max_train_steps"):
        if key in flat and not _num(flat[key]):
            flat.pop(key)
            out.no_effect.append((key, "0: not set, as in the GUI"))
    if "epoch" not in flat:
        return
    epoch = int(_num(flat.pop("epoch")))
    if flat.get("lr_scheduler_num_cycles") == "" and epoch:
        flat["lr_scheduler_num_cycles"] = epoch  # the GUI's default: one cycle per epoch
    if _num(flat.get("max_train_epochs")):
        out.no_effect.append(("epoch", "max_train_epochs is set and wins, as in sd-scripts"))
    elif _num(flat.get("max_train_steps")):
        out.no_effect.append(("epoch", "max_train_steps is set and wins, as in the GUI"))
    elif has_dataset_config:
        out.no_effect.append(("epoch", "with a dataset config the GUI does not count steps from it"))
    elif epoch:
        out.set("epoch", "train.max_epochs", epoch)


def _noise(flat: dict[str, Any], out: KohyaImport) -> None:
    kind = flat.get("noise_offset_type")
    dropped = {
        "Original": ("multires_noise_iterations", "multires_noise_discount"),
        "Multires": ("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength"),
    }.get(str(kind), ())
    for key in dropped:
        if key in flat:
            flat.pop(key)
            out.no_effect.append((key, f"noise_offset_type is {kind}: the GUI does not pass it"))
