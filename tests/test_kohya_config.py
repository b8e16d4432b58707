"""`lorastudio train --kohya-config`: sd-scripts TOMLs mapped to lorastudio keys, nothing dropped silently."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.train.kohya_config import import_kohya_config, kohya_train_config

# The shape kohya_ss writes for sd-scripts (sections are flattened by sd-scripts), as in the
# guide's SD-Train/train_config/Lora_config/config_file.toml.
KOHYA_TOML = """
[model_arguments]
v2 = false
v_parameterization = false
pretrained_model_name_or_path = "{model}"

[additional_network_arguments]
no_metadata = false
unet_lr = 1e-4
text_encoder_lr = 5e-5
network_module = "networks.lora"
network_dim = 32
network_alpha = 16
network_args = ["conv_dim=8", "conv_alpha=4"]
network_train_unet_only = true

[optimizer_arguments]
optimizer_type = "Prodigy"
optimizer_args = ["d_coef=2", "betas=0.9,0.99", "weight_decay=0.05", "safeguard_warmup=True"]
learning_rate = 1.0
max_grad_norm = 1.0
lr_scheduler = "cosine_with_restarts"
lr_warmup_steps = 10
lr_scheduler_num_cycles = 3

[dataset_arguments]
cache_latents = true
shuffle_caption = true
keep_tokens = 1
caption_dropout_rate = 0.05
caption_tag_dropout_rate = 0.1
color_aug = false
flip_aug = true
enable_bucket = true
min_bucket_reso = 256
max_bucket_reso = 1024
bucket_reso_steps = 64
bucket_no_upscale = true
resolution = "512,512"
caption_extension = ".txt"
train_data_dir = "{data}"

[training_arguments]
output_dir = "./output"
output_name = "mira_v1"
save_precision = "fp16"
save_every_n_epochs = 2
save_last_n_epochs = 3
train_batch_size = 2
max_token_length = 225
xformers = true
max_train_epochs = 10
max_data_loader_n_workers = 8
persistent_data_loader_workers = true
seed = 1337
gradient_checkpointing = true
gradient_accumulation_steps = 1
mixed_precision = "bf16"
clip_skip = 2
noise_offset = 0.05
multires_noise_iterations = 6
multires_noise_discount = 0.3
min_snr_gamma = 5
logging_dir = "./logs"
lowram = true
random_crop = true
frobnicate_widgets = 3
"""


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _lines_for(imported, key: str) -> list[str]:
    return [line for line in imported.lines() if line.startswith(f"kohya {key}")]


def test_kohya_training_toml_maps_to_lorastudio_keys(tmp_path):
    data = tmp_path / "train"
    (data / "10_mira").mkdir(parents=True)
    toml = _write(tmp_path / "config.toml", KOHYA_TOML.format(model="tiny-sd15", data=data.as_posix()))
    imported = import_kohya_config(toml)
    cfg = imported.config
    assert (
        cfg["model"] == "tiny-sd15"
        and cfg["method"] == "lora"
        and cfg["seed"] == 1337
        and cfg["clip_skip"] == 2
    )
    assert cfg["data"] == {
        "shuffle_tags": True,
        "keep_tokens": 1,
        "caption_dropout": 0.05,
        "tag_dropout": 0.1,
        "color_aug": False,
        "flip": True,
        "min_bucket_reso": 256,
        "max_bucket_reso": 1024,
        "bucket_reso_steps": 64,
        "bucket_no_upscale": True,
        "caption_extension": ".txt",  # kohya reads only these caption files: so does lorastudio then
        "max_token_length": 225,  # long captions in 75-token chunks, as kohya reads them
        "dir": data.as_posix(),  # kohya DreamBooth folders: the NN_name sub-folders give the repeats
    }  # ... and an uncaptioned image trains on its folder's name: the data set reads that itself
    assert any(key.startswith("train_data_dir (NN_name") and "(mira)" in why for key, why in imported.no_effect)
    assert cfg["lora"] == {
        "rank": 32,
        "alpha": 16,
        "train_text_encoder": False,  # network_train_unet_only = true
        "conv_rank": 8,
        "targets": "locon",
        "conv_alpha": 4.0,  # network_args conv_alpha=4: the convs' own scale
    }
    train = cfg["train"]
    assert train["learning_rate"] == 1e-4  # unet_lr wins over learning_rate, as in kohya
    assert train["text_encoder_lr"] == 5e-5
    assert train["optimizer"] == "prodigy"
    assert train["optimizer_args"] == {"d_coef": 2, "betas": [0.9, 0.99], "safeguard_warmup": True}
    assert train["weight_decay"] == 0.05
    assert (train["lr_scheduler"], train["lr_warmup_steps"], train["lr_scheduler_num_cycles"]) == (
        "cosine_with_restarts",
        10,
        3,
    )
    assert (train["resolution"], train["batch_size"], train["grad_accum"]) == (512, 2, 1)
    assert (train["mixed_precision"], train["gradient_checkpointing"], train["max_grad_norm"]) == (
        "bf16",
        True,
        1.0,
    )
    assert (train["noise_offset"], train["multires_noise_iterations"], train["multires_noise_discount"]) == (
        0.05,
        6,
        0.3,
    )
    assert train["min_snr_gamma"] == 5 and train["attention"] == "auto"
    # kohya epochs are passes over images x repeats: lorastudio's max_epochs, saved every 2 epochs.
    assert (train["max_epochs"], train["save_every_epochs"]) == (10, 2) and "epochs_per_image" not in train
    assert cfg["output"]["name"] == "mira_v1" and cfg["output"]["save_precision"] == "fp16"

    unmapped = dict(imported.unmapped)
    assert set(unmapped) >= {
        "random_crop",
        "frobnicate_widgets",
    }
    assert "no equivalent" in unmapped["frobnicate_widgets"]
    # Keys that need no setting are listed too, each with its reason.
    quiet = dict(imported.no_effect)
    assert {
        "output_dir",
        "cache_latents",
        "max_data_loader_n_workers",
        "logging_dir",
    } <= set(quiet)
    # Every key of the file is accounted for, one line each.
    flat_keys = {line.split(" = ")[0].strip() for line in KOHYA_TOML.splitlines() if " = " in line}
    roots = {k.split(".")[0] for k, *_ in imported.mapped} | {k.split(".")[0] for k, _ in imported.unmapped}
    roots |= {k.split(".")[0] for k, _ in imported.no_effect}
    assert flat_keys <= roots | {"learning_rate"}
    assert _lines_for(imported, "frobnicate_widgets") == [
        "kohya frobnicate_widgets: NOT MAPPED (lorastudio has no equivalent setting)"
    ]

    resolved = kohya_train_config(imported, ["model=tiny-sd15"])
    assert resolved.train.optimizer == "prodigy" and resolved.data.tag_dropout == 0.1
    assert resolved.lora.conv_rank == 8


# sd-scripts' docs/config_README example (DreamBooth-style dataset with a regularisation subset).
DATASET_TOML = """
[general]
shuffle_caption = true
caption_extension = '.txt'
keep_tokens = 1

[[datasets]]
resolution = 512
batch_size = 4
keep_tokens = 2

  [[datasets.subsets]]
  image_dir = '{hoge}'
  class_tokens = 'hoge girl'
  num_repeats = 10

  [[datasets.subsets]]
  is_reg = true
  image_dir = '{reg}'
  class_tokens = 'human'
  keep_tokens = 1

[[datasets]]
resolution = [768, 768]
batch_size = 2

  [[datasets.subsets]]
  image_dir = '{piyo}'
  metadata_file = '{piyo}/piyo_md.json'
"""


def _images(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (64, 64), (i * 20, 0, 0)).save(folder / f"{i}.png")
    return folder


def test_dataset_toml_maps_subsets_to_data_dir_repeats_and_class_images(tmp_path):
    hoge, reg = _images(tmp_path / "hoge", 3), _images(tmp_path / "reg", 5)
    text = DATASET_TOML.format(hoge=hoge.as_posix(), reg=reg.as_posix(), piyo=(tmp_path / "piyo").as_posix())
    imported = import_kohya_config(None, _write(tmp_path / "dataset.toml", text))
    cfg = imported.config
    assert cfg["data"] == {
        "dir": hoge.as_posix(),
        "repeats": 10,
        "default_caption": "hoge girl",  # class_tokens: the caption of images without a caption file
        "keep_tokens": 2,  # the dataset's value beats [general]'s
        "shuffle_tags": True,
        "caption_extension": ".txt",
    }
    assert cfg["prior"] == {"class_dir": reg.as_posix(), "class_prompt": "human", "num_images": 5}
    assert (cfg["train"]["resolution"], cfg["train"]["batch_size"]) == (512, 4)
    assert dict(imported.unmapped)["datasets[1]"].startswith("lorastudio trains one data set per run")
    assert "method" not in cfg  # a dataset config alone does not choose the method

    resolved = kohya_train_config(imported, ["model=tiny-sd15"])
    assert resolved.uses_prior and resolved.data.repeats == 10


def test_several_subsets_in_kohya_folders_become_one_data_dir(tmp_path):
    a, b = _images(tmp_path / "set" / "10_alice", 2), _images(tmp_path / "set" / "3_bob", 2)
    text = f"""
[[datasets]]
  [[datasets.subsets]]
  image_dir = '{a.as_posix()}'
  num_repeats = 10
  [[datasets.subsets]]
  image_dir = '{b.as_posix()}'
  num_repeats = 3
"""
    imported = import_kohya_config(None, _write(tmp_path / "d.toml", text))
    assert imported.config["data"] == {"dir": (tmp_path / "set").as_posix()}
    assert imported.unmapped == []

    from lorastudio.data.dataset import Dataset

    repeats = sorted(item.repeats for item in Dataset.open(imported.config["data"]["dir"]))
    assert repeats == [3, 3, 10, 10]  # the same exposures kohya's num_repeats give

    # Folders that are not laid out that way: the first subset is used, the others are listed.
    c = _images(tmp_path / "elsewhere" / "carol", 1)
    text2 = (
        text
        + f"""
  [[datasets.subsets]]
  image_dir = '{c.as_posix()}'
  num_repeats = 2
"""
    )
    imported = import_kohya_config(None, _write(tmp_path / "d2.toml", text2))
    assert imported.config["data"] == {"dir": a.as_posix(), "repeats": 10}
    assert [k for k, _ in imported.unmapped] == ["subsets[1].image_dir", "subsets[2].image_dir"]


def test_optimizer_arguments_not_in_the_signature_are_listed(tmp_path):
    toml = _write(
        tmp_path / "c.toml",
        'optimizer_type = "AdaFactor"\noptimizer_args = ["relative_step=False", "scale_parameter=False", "warmup_init=False", "bogus=1"]\n'
        'lr_scheduler = "constant_with_warmup"\nnetwork_module = "networks.lora"\n',
    )
    imported = import_kohya_config(toml)
    assert imported.config["train"]["optimizer_args"] == {
        "relative_step": False,
        "scale_parameter": False,
        "warmup_init": False,
    }
    assert "bogus" in dict(imported.unmapped)["optimizer_args.bogus"]
    cfg = kohya_train_config(imported, ["model=tiny-sd15"])
    assert cfg.train.optimizer == "adafactor" and cfg.train.lr_scheduler == "constant_with_warmup"


def test_yaml_round_trips_to_the_same_config(tmp_path):
    data = tmp_path / "train"
    data.mkdir()
    toml = _write(tmp_path / "config.toml", KOHYA_TOML.format(model="tiny-sd15", data=data.as_posix()))
    imported = import_kohya_config(toml)
    text = imported.to_yaml()
    assert "# not mapped: frobnicate_widgets" in text
    from lorastudio.train.config import load_train_config

    path = _write(tmp_path / "out.yaml", text)
    assert load_train_config(path) == kohya_train_config(imported)
    assert yaml.safe_load(text) == json.loads(json.dumps(imported.config))


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(LorastudioError, match="not found"):
        import_kohya_config(tmp_path / "missing.toml")
    with pytest.raises(LorastudioError, match="not valid TOML"):
        import_kohya_config(_write(tmp_path / "bad.toml", "a = [\n"))
    with pytest.raises(LorastudioError, match=r"no \[\[datasets\]\]"):
        import_kohya_config(None, _write(tmp_path / "d.toml", "[general]\nkeep_tokens = 1\n"))


def test_cli_trains_from_a_kohya_toml_with_lion_multires_noise_and_color_aug(tiny_workspace, tmp_path, one_torch_thread):
    """End to end: the CLI imports, writes the YAML beside the run, trains, and names its kernels."""
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    data = tmp_path / "img"
    for i in range(3):
        folder = data / "2_red"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (220, 30 + i, 30)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("red, square", encoding="utf-8")
    toml = _write(
        tmp_path / "kohya.toml",
        f"""
[model_arguments]
pretrained_model_name_or_path = "tiny-sd15"
[additional_network_arguments]
network_module = "networks.lora"
network_dim = 2
network_alpha = 1
network_train_unet_only = true
[optimizer_arguments]
optimizer_type = "Lion"
optimizer_args = ["betas=0.9,0.99"]
learning_rate = 1e-4
lr_scheduler = "constant"
[training_arguments]
train_data_dir = "{data.as_posix()}"
output_name = "kohyarun"
resolution = 64
max_train_steps = 3
save_every_n_steps = 100
multires_noise_iterations = 4
multires_noise_discount = 0.3
mixed_precision = "no"
xformers = true
shuffle_caption = true
caption_tag_dropout_rate = 0.2
color_aug = true
cache_latents = true
""",
    )
    _register()
    runner = CliRunner()
    mine = tmp_path / "mine.yaml"
    dry = runner.invoke(
        app, ["train", "--kohya-config", str(toml), "--dry-run", "--write-yaml", str(mine), "lora.rank=3"]
    )
    assert dry.exit_code == 0, dry.output
    assert "optimizer: lion" in dry.stdout and not (tiny_workspace.runs / "kohyarun").exists()
    from lorastudio.train.config import load_train_config

    again = load_train_config(mine)  # the written YAML is a lorastudio config of its own
    assert again.lora.rank == 3 and again.train.optimizer == "lion" and again.data.color_aug

    result = runner.invoke(app, ["train", "--kohya-config", str(toml), "scoring.enabled=false", "--json"])
    assert result.exit_code == 0, result.output
    run = tiny_workspace.runs / "kohyarun"
    assert "kohya optimizer_type -> train.optimizer = \"lion\"" in result.output
    assert "attention: sdpa" in result.output  # no xformers here: auto picks SDPA and says so
    assert "optimizer: Lion" in result.output
    # color_aug: latents are encoded per exposure (as kohya, no latent cache), and the log says so.
    assert "latent cache off" in result.output
    assert not any((tiny_workspace.cache / "latents").rglob("*.safetensors"))
    written = yaml.safe_load((run / "kohya_import.yaml").read_text(encoding="utf-8"))
    assert written["train"]["multires_noise_iterations"] == 4 and written["scoring"] == {"enabled": False}
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["optimizer"] == "lion" and saved["train"]["optimizer_args"] == {"betas": [0.9, 0.99]}
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["loss"] == r["loss"] and r["lr"] == pytest.approx(1e-4) for r in records)
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(payload["library_lora"]).is_file()
    # The LoRA says how it was trained, in kohya's metadata keys.
    from lorastudio.models.checkpoint import read_safetensors_metadata

    meta = read_safetensors_metadata(Path(payload["library_lora"]))
    assert meta["ss_optimizer"] == "pytorch_optimizer.Lion(betas=(0.9, 0.99))"
    assert (meta["ss_multires_noise_iterations"], meta["ss_multires_noise_discount"]) == ("4", "0.3")
    assert (meta["ss_caption_tag_dropout_rate"], meta["ss_color_aug"]) == ("0.2", "True")


@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None, reason="xformers is installed here")
def test_explicit_xformers_without_the_package_is_one_clear_line():
    from lorastudio.train.attention import resolve_attention

    assert resolve_attention("auto", "cpu") == "sdpa" and resolve_attention("sdpa", "cuda") == "sdpa"
    with pytest.raises(LorastudioError, match=r"xformers.*not installed.*train.attention=sdpa"):
        resolve_attention("xformers", "cuda")


def test_kohya_ss_gui_json_spellings(tmp_path):
    gui = {
        "LoRA_type": "Kohya LoCon",
        "pretrained_model_name_or_path": "tiny-sd15",
        "epoch": 4,
        "max_train_steps": 1600,
        "optimizer": "AdamW8bit",
        "max_resolution": "768,768",
        "conv_dim": 4,
        "xformers": "sdpa",
        "reg_data_dir": "",
        "network_weights": "",
    }
    imported = import_kohya_config(_write(tmp_path / "gui.json", json.dumps(gui)))
    cfg = imported.config
    assert cfg["method"] == "lora" and cfg["train"]["optimizer"] == "adamw8bit"
    assert cfg["train"]["resolution"] == 768 and cfg["train"]["attention"] == "sdpa"
    # the GUI counts steps from `epoch` only when max_train_steps is 0
    assert cfg["lora"]["conv_rank"] == 4 and cfg["train"]["steps"] == 1600 and "max_epochs" not in cfg["train"]
    quiet = dict(imported.no_effect)
    assert quiet["network_weights"] == "empty in the file" and "max_train_steps" in quiet["epoch"]
    assert imported.unmapped == []


def test_an_imported_value_lorastudio_refuses_names_the_kohya_file(tmp_path):
    toml = _write(tmp_path / "c.toml", 'network_module = "networks.lora"\nresolution = 500\n')
    imported = import_kohya_config(toml)
    with pytest.raises(LorastudioError, match=r"imported from .*c\.toml: .*train.resolution 500 is not a multiple"):
        kohya_train_config(imported)


def _has_field(target: str) -> bool:
    """Whether TrainConfig has the dotted key."""
    from lorastudio.train.config import TrainConfig

    model = TrainConfig
    for part in target.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_every_kohya_key_maps_to_a_key_this_lorastudio_has():
    """The table and TrainConfig ship together: a target that is not a field would be a silent drop."""
    from lorastudio.train.kohya_keys import KOHYA_KEYS

    targets = {rule.target for rule in KOHYA_KEYS.values() if rule.target is not None}
    assert targets and [t for t in sorted(targets) if not _has_field(t)] == []
    assert _has_field("lora.type") and not _has_field("lora.no_such_key")


def test_kohya_defaults_a_zero_text_encoder_lr_and_features_left_off_read_as_kohya_runs_them(tmp_path):
    """sd-scripts: network_alpha defaults to 1 and network_dim to 4 (lorastudio's own are 8 and 16),
    a text_encoder_lr of 0 drops the text encoder's parameter group (the UNet alone trains), and a
    feature set to false or 0 (kohya_ss GUI files carry them all) is no setting at all."""
    toml = _write(
        tmp_path / "gui.toml",
        'network_module = "networks.lora"\nnetwork_dim = 32\nlearning_rate = 1e-4\nunet_lr = 1e-4\n'
        "text_encoder_lr = 0\nzero_terminal_snr = false\nadaptive_noise_scale = 0\n",
    )
    imported = import_kohya_config(toml)
    assert imported.config["lora"] == {"rank": 32, "alpha": 1.0, "train_text_encoder": False}
    assert imported.config["train"].get("text_encoder_lr") is None  # not learning_rate either
    assert {key for key, _ in imported.unmapped} & {"zero_terminal_snr", "adaptive_noise_scale"} == set()
    bare = import_kohya_config(_write(tmp_path / "bare.toml", 'network_module = "networks.lora"\n'))
    assert (bare.config["lora"]["rank"], bare.config["lora"]["alpha"]) == (4, 1.0)
    assert bare.config["lora"]["train_text_encoder"] is True


def test_keys_a_kohya_toml_leaves_out_take_sd_scripts_defaults(tmp_path):
    """sd-scripts' argparse defaults: keep_tokens 0 (lorastudio's 1 kept a shuffled first tag in place)
    and max_train_steps 1600 (lorastudio's 1000); a run in epochs, or a dataset TOML's keep_tokens, wins."""
    data = tmp_path / "img"
    data.mkdir()
    toml = _write(
        tmp_path / "min.toml",
        f'pretrained_model_name_or_path = "tiny-sd15"\ntrain_data_dir = "{data.as_posix()}"\n'
        'network_module = "networks.lora"\nshuffle_caption = true\n',
    )
    cfg = kohya_train_config(import_kohya_config(toml))
    assert (cfg.data.keep_tokens, cfg.train.steps, cfg.data.shuffle_tags) == (0, 1600, True)
    epochs = _write(tmp_path / "epochs.toml", toml.read_text() + "max_train_epochs = 3\n")
    cfg = kohya_train_config(import_kohya_config(epochs))
    assert (cfg.train.max_epochs, cfg.train.steps) == (3, None)
    dataset = _write(
        tmp_path / "d.toml", f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{data.as_posix()}"\nkeep_tokens = 2\n'
    )
    assert kohya_train_config(import_kohya_config(toml, dataset)).data.keep_tokens == 2


def test_in_json_apart_from_its_images_is_refused_with_the_fix(tmp_path):
    """sd-scripts finds in_json's image keys in train_data_dir; lorastudio beside the json. Apart, with
    relative keys, the run found no images at all: the import says so and how to fix it."""
    images, meta = tmp_path / "kj", tmp_path / "meta"
    for folder in (images, meta):
        folder.mkdir()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(images / "f0.png")
    record = json.dumps({"f0": {"caption": "a red girl", "tags": "1girl"}})
    (meta / "meta_lat.json").write_text(record, encoding="utf-8")
    (images / "meta_lat.json").write_text(record, encoding="utf-8")
    body = 'network_module = "networks.lora"\ntrain_data_dir = "{}"\nin_json = "{}"\n'
    apart = _write(tmp_path / "apart.toml", body.format(images.as_posix(), (meta / "meta_lat.json").as_posix()))
    with pytest.raises(LorastudioError, match=r"sd-scripts finds its images in train_data_dir .*kj, lorastudio beside") as info:
        import_kohya_config(apart)
    assert "put meta_lat.json in" in str(info.value) and "\n" not in str(info.value)
    together = _write(tmp_path / "ok.toml", body.format(images.as_posix(), (images / "meta_lat.json").as_posix()))
    assert import_kohya_config(together).config["data"]["dir"] == (images / "meta_lat.json").as_posix()
    (meta / "meta_lat.json").write_text(json.dumps({str(images / "f0"): {"caption": "x"}}), encoding="utf-8")
    assert import_kohya_config(apart).config["data"]["dir"] == (meta / "meta_lat.json").as_posix()  # absolute keys
    subset = _write(
        tmp_path / "d.toml",
        f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{images.as_posix()}"\n'
        f'metadata_file = "{(tmp_path / "m2.json").as_posix()}"\n',
    )
    (tmp_path / "m2.json").write_text(record, encoding="utf-8")
    with pytest.raises(LorastudioError, match="kohya metadata_file .*sd-scripts finds its images in image_dir"):
        import_kohya_config(None, subset)
