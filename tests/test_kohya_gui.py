"""kohya_ss GUI (bmaltais/kohya_ss) JSON configs: the GUI's own keys read as its Train button reads them."""

from __future__ import annotations

import json

import pytest

from lorastudio.errors import LorastudioError
from lorastudio.train.kohya_config import import_kohya_config, kohya_train_config


def gui_lora_json(**changes) -> dict:
    """A LoRA tab config as the GUI saves it: every field, most of them off (the GUI's own key set)."""
    config = {
        "LoRA_type": "Standard", "LyCORIS_preset": "full", "adaptive_noise_scale": 0, "additional_parameters": "",
        "ae": "", "apply_t5_attn_mask": False, "async_upload": False, "block_alphas": "", "block_dims": "",
        "block_lr_zero_threshold": "", "blocks_to_swap": 0, "bucket_no_upscale": True, "bucket_reso_steps": 64,
        "bypass_mode": False, "cache_latents": True, "cache_latents_to_disk": False,
        "caption_dropout_every_n_epochs": 0, "caption_dropout_rate": 0, "caption_extension": ".txt", "clip_l": "",
        "clip_skip": 1, "color_aug": False, "constrain": 0, "conv_alpha": 1, "conv_block_alphas": "",
        "conv_block_dims": "", "conv_dim": 8, "dataset_config": "", "debiased_estimation_loss": False,
        "decompose_both": False, "dim_from_weights": False, "dora_wd": False, "down_lr_weight": "",
        "dynamo_backend": "no", "dynamo_mode": "default", "dynamo_use_dynamic": False, "dynamo_use_fullgraph": False,
        "enable_bucket": True, "epoch": 10, "extra_accelerate_launch_args": "", "factor": -1, "flip_aug": False,
        "flux1_cache_text_encoder_outputs": False, "flux1_checkbox": False, "fp8_base": False, "full_bf16": False,
        "full_fp16": False, "gpu_ids": "", "gradient_accumulation_steps": 1, "gradient_checkpointing": True,
        "guidance_scale": 3.5, "highvram": False, "huber_c": 0.1, "huber_schedule": "snr",
        "huggingface_repo_id": "", "huggingface_token": "", "ip_noise_gamma": 0,
        "ip_noise_gamma_random_strength": False, "keep_tokens": "1", "learning_rate": 0.0001, "log_with": "",
        "logging_dir": "/home/me/kohya/log", "loraplus_lr_ratio": 0, "loraplus_text_encoder_lr_ratio": 0,
        "loraplus_unet_lr_ratio": 0, "loss_type": "l2", "lowvram": False, "lr_scheduler": "cosine",
        "lr_scheduler_args": "", "lr_scheduler_num_cycles": 1, "lr_scheduler_power": 1, "lr_scheduler_type": "",
        "lr_warmup": 10, "lr_warmup_steps": 0, "main_process_port": 0, "masked_loss": False,
        "max_bucket_reso": 2048, "max_data_loader_n_workers": 0, "max_grad_norm": 1, "max_resolution": "512,512",
        "max_timestep": 1000, "max_token_length": "75", "max_train_epochs": 0, "max_train_steps": 0,
        "mem_eff_attn": False, "metadata_author": "", "mid_lr_weight": "", "min_bucket_reso": 256,
        "min_snr_gamma": 5, "min_timestep": 0, "mixed_precision": "bf16", "model_list": "custom",
        "module_dropout": 0, "multi_gpu": False, "multires_noise_discount": 0.3, "multires_noise_iterations": 6,
        "network_alpha": 16, "network_dim": 32, "network_dropout": 0, "network_weights": "",
        "noise_offset": 0.05, "noise_offset_random_strength": False, "noise_offset_type": "Multires",
        "num_cpu_threads_per_process": 2, "num_machines": 1, "num_processes": 1, "optimizer": "AdamW8bit",
        "optimizer_args": "", "output_dir": "/home/me/kohya/out", "output_name": "redgirl",
        "persistent_data_loader_workers": False, "pretrained_model_name_or_path": "tiny-sd15",
        "prior_loss_weight": 1, "random_crop": False, "rank_dropout": 0, "rank_dropout_scale": False,
        "reg_data_dir": "", "rescaled": False, "resume": "", "sample_every_n_epochs": 0,
        "sample_every_n_steps": 0, "sample_prompts": "zq girl, smiling --w 512 --h 512 --d 1\nzq girl, red hair",
        "sample_sampler": "euler_a", "save_as_bool": False, "save_every_n_epochs": 1, "save_every_n_steps": 0,
        "save_last_n_epochs": 0, "save_last_n_epochs_state": 0, "save_last_n_steps": 0,
        "save_last_n_steps_state": 0, "save_model_as": "safetensors", "save_precision": "fp16",
        "save_state": False, "save_state_on_train_end": False, "scale_v_pred_loss_like_noise_pred": False,
        "scale_weight_norms": 0, "sd3_checkbox": False, "sd3_text_encoder_batch_size": 1, "sdxl": False,
        "sdxl_cache_text_encoder_outputs": False, "sdxl_no_half_vae": False, "seed": 1234,
        "shuffle_caption": True, "skip_cache_check": False, "split_mode": False,
        "stop_text_encoder_training": 20, "t5xxl": "", "text_encoder_lr": 5e-05, "train_batch_size": 2,
        "train_blocks": "all", "train_data_dir": "", "train_norm": False, "train_on_input": True,
        "training_comment": "", "unet_lr": 0.0001, "unit": 1, "up_lr_weight": "", "use_cp": False,
        "use_scalar": False, "use_tucker": False, "v2": False, "v_parameterization": False, "v_pred_like_loss": 0,
        "vae": "", "vae_batch_size": 0, "wandb_api_key": "", "wandb_run_name": "", "weighted_captions": False,
        "weighting_scheme": "logit_normal", "xformers": "sdpa",
    }  # fmt: skip
    config.update(changes)
    return config


def _import(tmp_path, **changes):
    path = tmp_path / "gui.json"
    path.write_text(json.dumps(gui_lora_json(**changes)), encoding="utf-8")
    return import_kohya_config(path)


def test_a_gui_lora_json_imports_every_key_as_the_gui_runs_it(tmp_path):
    imported = _import(tmp_path)
    assert imported.unmapped == []  # every key mapped, or needing nothing: nothing NOT MAPPED
    said = {line.split()[1].rstrip(":") for line in imported.lines()}
    assert set(gui_lora_json()) <= said  # nothing dropped silently
    quiet = dict(imported.no_effect)
    assert "ignores" in quiet["stop_text_encoder_training"]  # the LoRA tab's "not yet supported"
    assert "Kohya LoCon" in quiet["conv_dim"]  # Standard: the GUI passes no conv_dim
    assert "Multires" in quiet["noise_offset"]  # noise_offset_type picks the multires keys
    cfg = kohya_train_config(imported)
    assert (cfg.method, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets, cfg.lora.conv_rank) == (
        "lora", 32, 16.0, "kohya", None
    )
    train = cfg.train
    assert (train.lr_warmup_ratio, train.warmup_steps(1000)) == (0.1, 100)  # lr_warmup: 10 % of the run
    assert (train.max_epochs, train.steps, train.save_every_epochs) == (10, None, 1)  # epoch budgets the run
    assert (train.learning_rate, train.text_encoder_lr, cfg.lora.train_text_encoder) == (1e-4, 5e-5, True)
    assert (train.optimizer, train.attention, train.resolution, train.lr_scheduler) == (
        "adamw8bit", "sdpa", 512, "cosine"
    )
    assert (train.noise_offset, train.multires_noise_iterations, train.min_snr_gamma) == (0.0, 6, 5.0)
    assert (cfg.data.keep_tokens, cfg.data.max_token_length, cfg.data.shuffle_tags, cfg.seed) == (1, 75, True, 1234)
    assert cfg.samples.prompts == ["zq girl, smiling --w 512 --h 512 --d 1", "zq girl, red hair"]  # the text itself


def test_gui_learning_rates_warmup_and_budget_follow_the_gui_rules(tmp_path):
    steps_win = _import(tmp_path, lr_warmup_steps=50, max_train_steps=800).config["train"]
    assert (steps_win["lr_warmup_steps"], steps_win["steps"]) == (50, 800)
    assert "lr_warmup_ratio" not in steps_win and "max_epochs" not in steps_win
    unet_only = kohya_train_config(_import(tmp_path, text_encoder_lr=0))
    assert unet_only.lora.train_text_encoder is False and unet_only.train.learning_rate == 1e-4
    both_zero = kohya_train_config(_import(tmp_path, text_encoder_lr=0, unet_lr=0, learning_rate=0.0003))
    assert both_zero.lora.train_text_encoder is True and both_zero.train.learning_rate == 3e-4
    te_only = _import(tmp_path, unet_lr=0)
    assert "only the text encoder" in dict(te_only.unmapped)["unet_lr"]
    whole = _import(tmp_path, lr_warmup=100)
    assert "train.lr_warmup_ratio" in dict(whole.unmapped)["lr_warmup"]
    strings = kohya_train_config(_import(tmp_path, learning_rate="0.0002", unet_lr="", seed="77", epoch="3"))
    assert (strings.train.learning_rate, strings.seed, strings.train.max_epochs) == (2e-4, 77, 3)  # older GUIs


def test_gui_seed_0_is_a_random_seed_drawn_at_import_and_recorded(tmp_path):
    """The GUI passes no seed for 0 and sd-scripts draws one; before, lorastudio silently trained with its 42.
    The import draws the seed, writes it into the config (so the run's config.yaml keeps it) and says so."""
    import yaml

    seeds = set()
    for zero in (0, "0"):  # older GUIs saved numbers as strings
        imported = _import(tmp_path, seed=zero)
        seed = imported.config["seed"]
        assert isinstance(seed, int) and 0 < seed < 2**32
        assert f"kohya note: seed 0 (random in kohya_ss): seed {seed}" in imported.lines()
        assert kohya_train_config(imported).seed == seed != 42
        assert yaml.safe_load(imported.to_yaml())["seed"] == seed
        assert f"# note: seed 0 (random in kohya_ss): seed {seed}" in imported.to_yaml()
        seeds.add(seed)
    assert len(seeds) == 2  # drawn anew each import
    assert kohya_train_config(_import(tmp_path, seed=7)).seed == 7 and not _import(tmp_path, seed=7).notes


def test_a_gui_file_without_a_seed_gets_the_guis_random_seed_and_an_sd_scripts_toml_keeps_42(tmp_path):
    """The GUI's seed field defaults to 0 (random): a GUI file with no `seed` key at all is trained with a seed
    drawn at import, as seed 0, not lorastudio's 42. An sd-scripts TOML without `seed` is no GUI file: 42."""
    config = gui_lora_json()
    del config["seed"]
    path = tmp_path / "noseed.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    imported = import_kohya_config(path)
    seed = imported.config["seed"]
    assert isinstance(seed, int) and 0 < seed < 2**32
    assert f"kohya note: seed 0 (random in kohya_ss): seed {seed}" in imported.lines()
    assert kohya_train_config(imported).seed == seed
    toml = tmp_path / "plain.toml"
    toml.write_text('pretrained_model_name_or_path = "tiny-sd15"\nlearning_rate = 0.0001\n', encoding="utf-8")
    plain = import_kohya_config(toml)
    assert "seed" not in plain.config and not any("seed" in line for line in plain.lines())


def test_gui_warmup_percent_with_a_dataset_config_is_counted_in_steps(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    dataset = tmp_path / "dataset.toml"
    dataset.write_text(f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{images.as_posix()}"\n', encoding="utf-8")
    imported = _import(tmp_path, dataset_config=str(dataset), max_train_steps=300)
    assert imported.config["train"]["lr_warmup_steps"] == 30 and imported.config["train"]["steps"] == 300
    without_steps = _import(tmp_path, dataset_config=str(dataset))
    assert "dataset config" in dict(without_steps.no_effect)["epoch"]
    assert without_steps.config["train"]["steps"] == 1600  # sd-scripts' default, as the GUI warns


@pytest.mark.parametrize(
    ("lora_type", "expected"),
    [
        ("Kohya LoCon", {"targets": "locon", "conv_rank": 8, "conv_alpha": 1.0}),
        ("LyCORIS/LoKr", {"type": "lokr", "conv_rank": 8}),
        ("Kohya LoHa", {"type": "loha"}),
    ],
)
def test_gui_lora_types(tmp_path, lora_type, expected):
    imported = _import(tmp_path, LoRA_type=lora_type)
    lora = imported.config["lora"]
    assert {key: lora.get(key) for key in expected} == expected
    assert imported.config["method"] == "lora"


def test_gui_features_lorastudio_lacks_are_named(tmp_path):
    imported = _import(tmp_path, LoRA_type="LyCORIS/iA3", flux1_checkbox=True, loss_type="huber", masked_loss=True)
    unmapped = dict(imported.unmapped)
    assert "'LyCORIS/iA3' is not supported" in unmapped["LoRA_type"]
    assert "Flux.1" in unmapped["flux1_checkbox"] and "L2" in unmapped["loss_type"] and "masked_loss" in unmapped


def test_gui_keys_given_as_overrides_are_answered(tmp_path):
    from lorastudio.train.config import load_train_config

    with pytest.raises(LorastudioError, match=r"lr_warmup is train.lr_warmup_ratio here.*train.lr_warmup_ratio=0.1"):
        load_train_config(overrides=["lr_warmup=10"])
    with pytest.raises(LorastudioError, match=r"sdxl needs no setting here"):
        load_train_config(overrides=["sdxl=true"])
