"""Settings as kohya, HCP-Diffusion and EasyPhoto spell them: a file given to the wrong flag, an override
under another tool's name, kohya's optimizer arguments, warm-up ratio, sample cadence, `train pick step-N`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.errors import LorastudioError
from lorastudio.train.config import load_train_config
from lorastudio.train.kohya_config import import_kohya_config, kohya_train_config
from training_helpers import tiny_train_config, write_images

_register()
runner = CliRunner()

KOHYA_TOML = """
[model_arguments]
pretrained_model_name_or_path = "runwayml/stable-diffusion-v1-5"
[additional_network_arguments]
network_module = "networks.lora"
network_dim = 32
network_alpha = 16
[optimizer_arguments]
optimizer_type = "AdamW8bit"
learning_rate = 1e-4
lr_warmup_steps = 0
[training_arguments]
max_train_steps = 1600
output_dir = "./output"
cache_latents = true
"""

# HCP-Diffusion's anime-character example (cfgs/train/examples/lora_anime_character.yaml, shortened).
HCP_YAML = """
_base_:
  - cfgs/train/examples/lora_conventional.yaml
model:
  pretrained_model_name_or_path: 'deepghs/animefull-latest'
  clip_skip: 1
character_name: surtr_arknights
dataset_dir: '/data/surtr_dataset'
unet_rank: 8
tokenizer_pt:
  train:
    - name: ${character_name}
      lr: 0.003
train:
  train_steps: 1000
  save_step: 100
"""


def _one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output, result.exception)
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def _error_lines(args: list[str]) -> list[str]:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output, result.exception)
    return [line for line in result.output.strip().splitlines() if line.strip()]


# -- 1. a foreign file given to --config --------------------------------------------------------
def test_a_kohya_toml_given_to_config_is_one_line_pointing_at_kohya_config(workspace, tmp_path):
    """It printed 8.5 KB of "unknown key 'pretrained_model_name_or_path' ... Valid keys here ..."."""
    toml = tmp_path / "config.toml"
    toml.write_text(KOHYA_TOML, encoding="utf-8")
    line = _one_line_error(["train", "--config", str(toml), "--explain"])
    assert f"--kohya-config {toml}" in line and "unknown key" not in line
    assert len(line) < 200 + 2 * len(str(toml))  # not 8.5 KB


def test_hcp_diffsynth_and_kohya_dataset_files_given_to_config_name_their_way(workspace, tmp_path):
    hcp = tmp_path / "lora_anime_character.yaml"
    hcp.write_text(HCP_YAML, encoding="utf-8")
    line = _one_line_error(["train", "-c", str(hcp), "--explain"])
    assert "HCP-Diffusion" in line and "Coming from HCP-Diffusion" in line
    # its values lorastudio has keys for, translated (the ${...} interpolations left out)
    for words in ("model=deepghs/animefull-latest", "clip_skip=2", "trigger=surtr_arknights", "lora.rank=8",
                  "train.steps=1000", "train.save_every_steps=100", "data.dir=/data/surtr_dataset"):  # fmt: skip
        assert words in line, (words, line)

    command = tmp_path / "train.sh"
    command.write_text("python train_kolors_lora.py \\\n  --lora_rank 16 --dataset_path data/lora\n", encoding="utf-8")
    assert f"--diffsynth-args {command}" in _one_line_error(["train", "-c", str(command), "--explain"])

    dataset = tmp_path / "dataset.toml"
    dataset.write_text('[general]\nshuffle_caption = true\n[[datasets]]\nresolution = 512\n', encoding="utf-8")
    assert f"--dataset-config {dataset}" in _one_line_error(["train", "-c", str(dataset), "--explain"])


def test_a_lorastudio_file_with_one_kohya_key_is_told_that_key(workspace, tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("trigger: mira\nnetwork_dim: 32\n", encoding="utf-8")
    line = _one_line_error(["train", "-c", str(mine), "--explain"])
    assert "kohya's network_dim is lora.rank here: lora: {rank: 32}" in line and "--kohya-config" not in line


# -- 2. overrides under another tool's name -------------------------------------------------------
def test_kohya_hcp_and_easyphoto_override_names_say_the_lorastudio_key_one_line_each(workspace):
    lines = _error_lines(
        ["train", "--explain", "network_dim=32", "unet_lr=5e-5", "max_train_steps=2000",
         "train.train_steps=1000", "train.save_step=100"]  # fmt: skip
    )
    assert len(lines) == 5 and not any("Valid keys here" in line for line in lines), lines
    text = "\n".join(lines)
    assert "override: unknown key 'network_dim': kohya's network_dim is lora.rank here: lora.rank=32." in text
    assert "kohya's unet_lr is train.learning_rate here: train.learning_rate=5e-05" in text
    assert "kohya's max_train_steps is train.steps here: train.steps=2000" in text
    assert "HCP-Diffusion's train.train_steps is train.steps here: train.steps=1000" in text
    assert "HCP-Diffusion's train.save_step is train.save_every_steps here: train.save_every_steps=100" in text
    # HCP's model.* under lorastudio's plain `model` key
    line = _one_line_error(["train", "--explain", "model.pretrained_model_name_or_path=animefull"])
    assert "is model here: model=animefull" in line
    assert "EasyPhoto's rank is lora.rank here" in _one_line_error(["train", "--explain", "rank=64"])
    # a kohya key under a section means the same (kohya's keys are flat); before, no hint
    assert "kohya's network_dim is lora.rank here: lora.rank=32" in _one_line_error(
        ["train", "--explain", "lora.network_dim=32"]
    )


def test_portrait_set_rank_answers_with_the_lora_key_not_did_you_mean_train(workspace):
    """`portrait train --set rank=64` said "Did you mean 'train'?" (difflib's nearest top-level key)."""
    from lorastudio.service.portraits import PortraitTrainConfig, portrait_train_config

    with pytest.raises(LorastudioError) as caught:
        portrait_train_config(workspace, PortraitTrainConfig(name="ann", base="tiny-sd15"), ["rank=64"])
    message = str(caught.value)
    assert "'train'" not in message
    assert "EasyPhoto's rank is lora.rank here" in message and "--set lora.rank=64 --set lora.alpha=32" in message
    cfg = portrait_train_config(workspace, PortraitTrainConfig(name="ann", base="tiny-sd15"), ["lora.rank=64"])
    assert cfg.lora.rank == 64  # what the hint says works


def test_a_plain_name_of_a_nested_key_suggests_the_dotted_key():
    with pytest.raises(LorastudioError, match="Did you mean 'train.steps'"):
        load_train_config(overrides=["steps=100"])


# -- 4. kohya optimizer_args ------------------------------------------------------------------------
def _imported(tmp_path, optimizer: str, args: list[str]):
    toml = tmp_path / "opt.toml"
    toml.write_text(
        f'pretrained_model_name_or_path = "m"\noptimizer_type = "{optimizer}"\noptimizer_args = {json.dumps(args)}\n',
        encoding="utf-8",
    )
    return import_kohya_config(toml)


def test_kohya_prodigy_arguments_take_pytorch_optimizer_names_and_build(tmp_path):
    """`decouple=True`, `use_bias_correction=True` were NOT MAPPED: prodigyopt's names, not pytorch-optimizer's."""
    import torch

    from lorastudio.train.optim import build_optimizer

    given = ["decouple=True", "use_bias_correction=True", "safeguard_warmup=True", "d_coef=2",
             "betas=0.9,0.99", "weight_decay=0.01"]  # fmt: skip
    imported = _imported(tmp_path, "Prodigy", given)
    assert imported.unmapped == []
    cfg = kohya_train_config(imported, ["model=tiny-sd15"])
    assert cfg.train.optimizer_args == {
        "weight_decouple": True, "bias_correction": True, "safeguard_warmup": True, "d_coef": 2, "betas": [0.9, 0.99],
    }  # fmt: skip
    assert cfg.train.weight_decay == 0.01
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer("prodigy", [{"params": [param]}], cfg.train.weight_decay, cfg.train.optimizer_args)
    group = optimizer.param_groups[0]
    assert (group["weight_decouple"], group["bias_correction"], group["d_coef"]) == (True, True, 2)


def test_kohya_dadapt_and_adamw8bit_arguments_map_without_their_packages(tmp_path):
    dadapt = _imported(tmp_path, "DAdaptAdam", ["decouple=True", "use_bias_correction=True", "betas=0.9,0.99"])
    assert dadapt.unmapped == []
    assert kohya_train_config(dadapt, ["model=tiny-sd15"]).train.optimizer_args["weight_decouple"] is True
    # bitsandbytes is CUDA-only: its AdamW8bit arguments are checked by name on any machine
    adam8 = _imported(tmp_path, "AdamW8bit", ["betas=0.9,0.99", "weight_decay=0.1"])
    assert adam8.unmapped == [] and adam8.config["train"]["optimizer_args"] == {"betas": [0.9, 0.99]}
    # an argument Prodigy lacks is still listed, with Prodigy's valid names
    unknown = _imported(tmp_path, "Prodigy", ["frobnicate=1"])
    assert [key for key, _ in unknown.unmapped] == ["optimizer_args.frobnicate"]


def test_a_prodigyopt_name_given_directly_is_told_pytorch_optimizers_name():
    from lorastudio.train.optim import check_optimizer_args

    with pytest.raises(LorastudioError, match="calls it weight_decouple; use train.optimizer_args.weight_decouple=true"):
        check_optimizer_args("prodigy", {"decouple": True})


# -- 6. warm-up ratio, sample cadence, a warm-up longer than the run -------------------------------
def test_kohya_warmup_below_one_is_a_ratio_of_the_run(tmp_path):
    toml = tmp_path / "w.toml"
    toml.write_text('pretrained_model_name_or_path = "m"\nlr_warmup_steps = 0.1\nmax_train_steps = 250\n', encoding="utf-8")
    imported = import_kohya_config(toml)
    assert not [key for key, _ in imported.unmapped if key == "lr_warmup_steps"]
    cfg = kohya_train_config(imported, ["model=tiny-sd15"])
    assert (cfg.train.lr_warmup_ratio, cfg.train.lr_warmup_steps) == (0.1, 0)
    assert cfg.train.warmup_steps(250) == 25  # int(0.1 x 250), as sd-scripts counts it
    # a user's ratio replaces a preset's step count (and one layer holding both is refused)
    preset = load_train_config(overrides=["trigger=zqx", "train.lr_warmup_ratio=0.2"], preset="character")
    assert preset.train.warmup_steps(100) == 20  # not the preset's 50 steps
    with pytest.raises(LorastudioError, match="both set the warm-up"):
        load_train_config(overrides=["train.lr_warmup_ratio=0.2", "train.lr_warmup_steps=5"])


def test_kohya_sample_every_n_epochs_follows_the_checkpoints(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text(
        'pretrained_model_name_or_path = "m"\nsave_every_n_epochs = 2\nsample_every_n_epochs = 2\n', encoding="utf-8"
    )
    imported = import_kohya_config(toml)
    assert "with each checkpoint" in dict(imported.no_effect)["sample_every_n_epochs"]
    toml.write_text('pretrained_model_name_or_path = "m"\nsample_every_n_epochs = 3\n', encoding="utf-8")
    reason = dict(import_kohya_config(toml).unmapped)["sample_every_n_epochs"]
    assert "train.save_every_epochs=3" in reason
    # sd-scripts ignores sample_every_n_steps beside sample_every_n_epochs: so does the import
    toml.write_text(
        'pretrained_model_name_or_path = "m"\nsave_every_n_epochs = 2\nsample_every_n_epochs = 2\n'
        "sample_every_n_steps = 50\n",
        encoding="utf-8",
    )
    both = import_kohya_config(toml)
    assert "every_steps" not in both.config.get("samples", {})
    assert "sample_every_n_epochs is set" in dict(both.no_effect)["sample_every_n_steps"]
    toml.write_text('pretrained_model_name_or_path = "m"\nsample_every_n_epochs = 0\n', encoding="utf-8")
    assert "sample_every_n_epochs" in dict(import_kohya_config(toml).no_effect)  # kohya_ss GUI's 0: off


def test_a_warmup_longer_than_the_run_is_said_in_one_line(workspace, tmp_path):
    from lorastudio.train.plan import prepare_plan

    data = write_images(tmp_path / "red", [((200, 20, 20), "zqx, red") for _ in range(2)])
    cfg = load_train_config(
        overrides=["model=tiny-sd15", f"data.dir={data}", "trigger=zqx", "train.steps=20", "train.resolution=64"],
        preset="character",
    )
    notes = prepare_plan(cfg, workspace.datasets).config_notes
    assert len(notes) == 1 and "train.lr_warmup_steps=50" in notes[0] and "20 steps" in notes[0]
    shorter = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr_warmup_steps": 5})})
    assert prepare_plan(shorter, workspace.datasets).config_notes == []
    result = runner.invoke(app, ["train", "--preset", "character", "model=tiny-sd15", f"data.dir={data}",
                                 "trigger=zqx", "train.steps=20", "train.resolution=64", "--explain"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sum("train.lr_warmup_steps=50 is not shorter" in line for line in result.stdout.splitlines()) == 1


# -- 6 and 7 on a real run: the ratio's warm-up, and `train pick RUN step-N` ----------------------------
@pytest.mark.slow
def test_a_ratio_warmup_run_and_picking_its_checkpoint_by_folder_name(tiny_workspace, one_torch_thread, tmp_path):
    from lorastudio.service.training import run_training

    data = write_images(tmp_path / "red", [((220, 30, 30), "zqx, red") for _ in range(2)])
    cfg = tiny_train_config(
        data, "zqx", "train.steps=4", "train.save_every_steps=2", "train.lr_warmup_ratio=0.75", "lora.rank=2",
        "train.lr_scheduler=constant_with_warmup", "train.learning_rate=1e-3", "scoring.enabled=false",
        "output.name=warm",
    )  # fmt: skip
    run_training(tiny_workspace, cfg, progress=False)
    rates = [json.loads(line)["lr"] for line in (tiny_workspace.runs / "warm" / "log.jsonl").read_text().splitlines()]
    assert rates == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])  # int(0.75 x 4) = 3 warm-up steps

    picked = runner.invoke(app, ["train", "pick", "warm", "step-2", "--json"])
    assert picked.exit_code == 0, picked.output
    assert json.loads(picked.stdout)["step"] == 2
    assert runner.invoke(app, ["train", "pick", "warm", "4"]).exit_code == 0
    line = _one_line_error(["train", "pick", "warm", "step-3"])
    assert "no checkpoint 'step-3'" in line and "saved steps: 2, 4 (give step-4 or 4)" in line
    assert "saved steps: 2, 4" in _one_line_error(["train", "pick", "warm", "best"])
