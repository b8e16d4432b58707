"""The kohya `ss_*` facts a trained file carries, read as kohya's loaders and A1111's info dialog read them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from lorastudio.train.config import load_train_config
from lorastudio.train.data import TrainImage
from lorastudio.train.export import training_facts

MODEL = SimpleNamespace(family=SimpleNamespace(name="sd15"), name="base", short_hash="abcd1234", sha256="0" * 64)


def _image(path: str, subset: str = "", repeats: int = 1) -> TrainImage:
    return TrainImage(Path(path), "zqx, red", repeats, (64, 64), (64, 64), (0, 0), path, subset)


def _facts(*overrides: str, class_images=None) -> dict:
    cfg = load_train_config(overrides=["model=tiny-sd15", "data.dir=./red", "trigger=zqx", *overrides])
    return training_facts(cfg, "run", MODEL, [_image("red/0.png")], 3, 1, "no", "epsilon", class_images=class_images)


def _network_args(*overrides: str) -> dict:
    return _facts(*overrides)["network_args"]


def test_conv_dim_is_written_only_where_the_convs_are_trained():
    """kohya's networks.lora (and LyCORIS) read `conv_dim` as "add LoRA to the 3x3 convs": a plain LoRA
    that named its rank there loaded as a LoCon with conv layers it never had."""
    assert "conv_dim" not in _network_args("lora.targets=kohya", "lora.rank=8")
    assert "conv_dim" not in _network_args("lora.targets=attn", "lora.type=loha")
    locon = _network_args("lora.targets=locon", "lora.rank=8", "lora.alpha=4")
    assert (locon["conv_dim"], locon["conv_alpha"]) == ("8", "4")  # kohya's strings, as its network_args
    lokr = _network_args("lora.targets=locon", "lora.type=lokr", "lora.conv_rank=2")
    assert (lokr["algo"], lokr["conv_dim"]) == ("lokr", "2")


def test_a_prior_preservation_run_writes_kohyas_regularisation_keys():
    """sd-scripts' ss_num_reg_images (with repeats), ss_reg_dataset_dirs (per folder), ss_prior_loss_weight."""
    classes = [_image(f"reg/1_dog/{i}.png", "1_dog") for i in range(3)] + [_image("gen/class-x/0.png")]
    facts = _facts("prior.class_prompt=a dog", "prior.loss_weight=0.5", class_images=classes)
    assert facts["num_reg_images"] == 4 and facts["prior_loss_weight"] == 0.5
    assert facts["reg_dataset_dirs"] == {
        "1_dog": {"n_repeats": 1, "img_count": 3},
        "class-x": {"n_repeats": 1, "img_count": 1},
    }
    assert "num_reg_images" not in _facts() and "prior_loss_weight" not in _facts()


def test_a_data_set_given_by_its_metadata_file_is_keyed_by_its_folder():
    """DiffSynth's `train/metadata.csv` (the Kolors walk-through) and a kohya in_json name their folder,
    as kohya keys ss_dataset_dirs and ss_tag_frequency; the file name was written."""
    assert list(_facts("data.dir=./anime/train/metadata.csv")["dataset_dirs"]) == ["train"]
    assert list(_facts("data.dir=./anime/train")["dataset_dirs"]) == ["train"]
    assert list(_facts("data.dir=anime")["tag_frequency"]) == ["anime"]
