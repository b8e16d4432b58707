"""Bring a kohya config: sd-scripts' `--config_file` TOML (as kohya_ss saves it) and its dataset TOML.

`import_kohya_config(config, dataset)` maps every kohya key to lorastudio's typed keys
through one table (`KOHYA_KEYS` in train.kohya_keys: kohya key -> lorastudio key + converter)
and returns the lorastudio config as a nested dict, what each key became, and every key it
could not map with the reason -- nothing is dropped silently. Keys that need the whole file to
decide (network module and args, optimizer names, sample prompts) are mapped in
train.kohya_mapping; data folders and dataset subsets in train.kohya_datasets.

sd-scripts reads a config TOML by flattening one level of `[sections]`; so does this import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError
from lorastudio.train.kohya_datasets import apply_dataset_config, apply_folders
from lorastudio.train.kohya_gui import gui_rule, is_gui_config, translate_gui
from lorastudio.train.kohya_keys import GUI_ALIASES, KOHYA_KEYS
from lorastudio.train.kohya_mapping import (
    KohyaImport,
    apply_defaults,
    apply_network,
    apply_optimizer,
    apply_sample_cadence,
    apply_sample_prompts,
    apply_table,
    flatten_sections,
    read_kohya_file,
)

if TYPE_CHECKING:
    from lorastudio.config import ResolvedConfig
    from lorastudio.train.config import TrainConfig

__all__ = ["KOHYA_KEYS", "KohyaImport", "import_kohya_config", "kohya_train_config", "kohya_training_facts"]


# -- entry points ---------------------------------------------------------------------------
def import_kohya_config(config: str | Path | None, dataset_config: str | Path | None = None) -> KohyaImport:
    """Map a kohya training TOML (and dataset TOML) to lorastudio keys; see the module docstring."""
    out = KohyaImport()
    flat: dict[str, Any] = {}
    rules = KOHYA_KEYS.get
    renamed: dict[str, str] = {}  # sd-scripts key -> the GUI's spelling in the file
    if config is not None:
        path = Path(config).expanduser()
        flat = flatten_sections(read_kohya_file(path))
        if is_gui_config(path, flat):  # the kohya_ss GUI's JSON: its keys as its Train button reads them
            rules = gui_rule
            given = dataset_config is not None or bool(flat.get("dataset_config"))
            flat = translate_gui(flat, out, given)
        for gui, kohya in GUI_ALIASES.items():
            if gui in flat and kohya not in flat:
                flat[kohya] = flat.pop(gui)
                renamed[kohya] = gui
        out.sources.append(str(path))
    if dataset_config is None and flat.get("dataset_config"):
        dataset_config = flat["dataset_config"]
    base_lr = flat.pop("learning_rate", None) if flat.get("unet_lr") else None
    if flat.get("max_train_epochs") and flat.get("max_train_steps"):
        flat.pop("max_train_steps")
        out.no_effect.append(("max_train_steps", "max_train_epochs is set and wins, as in kohya"))
    apply_table(flat, out, rules)
    if base_lr is not None:  # kohya: unet_lr wins for the UNet; learning_rate still serves the text encoder
        if flat.get("text_encoder_lr") is not None:  # 0 included: the text encoder is not trained
            out.no_effect.append(
                ("learning_rate", "unet_lr and text_encoder_lr are both set and win, as in kohya")
            )
        else:
            out.set("learning_rate", "train.text_encoder_lr", base_lr)
    if dataset_config is not None:
        dpath = Path(dataset_config).expanduser()
        out.sources.append(str(dpath))
        apply_dataset_config(dpath, out)
    apply_folders(flat, out, dataset_config is not None)
    if config is not None:
        apply_network(flat, out)
        apply_defaults(out)
    apply_optimizer(flat, out)
    apply_sample_prompts(flat, out)
    apply_sample_cadence(flat, out)
    if "dataset_config" in flat:
        out.no_effect.append(("dataset_config", f"read as the dataset config ({dataset_config})"))
    _account_for_every_key(flat, out)
    _say_the_files_names(out, renamed)
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


def _say_the_files_names(out: KohyaImport, renamed: dict[str, str]) -> None:
    """Lines name a key as the file spells it (the GUI's `max_resolution`, not sd-scripts' `resolution`)."""

    def label(key: str) -> str:
        for kohya, gui in renamed.items():
            if key == kohya or key.startswith((f"{kohya} ", f"{kohya}.")):
                return gui + key[len(kohya) :]
        return key

    out.mapped = [(label(k), t, v) for k, t, v in out.mapped]
    out.no_effect = [(label(k), why) for k, why in out.no_effect]
    out.unmapped = [(label(k), why) for k, why in out.unmapped]


def kohya_layer(imported: KohyaImport) -> Any:
    """The imported keys as one config layer, named after the kohya files (for `--explain`)."""
    from lorastudio.config import ConfigLayer

    return ConfigLayer(f"kohya {' + '.join(imported.sources)}", imported.config)


def kohya_resolved_config(
    imported: KohyaImport, overrides: Any = (), preset: str | None = None
) -> ResolvedConfig[TrainConfig]:
    """preset < imported kohya keys < `key=value` overrides, with every value's source."""
    from lorastudio.train.config import resolve_train_config

    try:
        return resolve_train_config(None, overrides, preset, imported=[kohya_layer(imported)])
    except LorastudioError as exc:
        sources = " + ".join(imported.sources)
        raise LorastudioError.wrap(f"imported from {sources}: {exc}", exc) from None


def kohya_train_config(imported: KohyaImport, overrides: Any = (), preset: str | None = None) -> TrainConfig:
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


def kohya_training_facts(cfg: TrainConfig) -> dict[str, Any]:
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
        "lr_warmup_steps": train.lr_warmup_ratio if train.lr_warmup_ratio is not None else train.lr_warmup_steps,
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
