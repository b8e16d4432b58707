"""The Kolors walk-through's data pieces: metadata.csv in and out, the data-juicer size and aspect
filters, a fixed caption, and DiffSynth-Studio's training arguments as lorastudio keys."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.data.captions import fixed_caption
from lorastudio.errors import LorastudioError
from lorastudio.service.datasets import dataset_folder
from lorastudio.train.diffsynth_args import import_diffsynth_args, split_command_line

BOM = b"\xef\xbb\xbf"
# The training command of the walk-through, as pasted there (comments after the backslashes included).
SEED_COMMAND = """
python DiffSynth-Studio/examples/train/kolors/train_kolors_lora.py \\ # 指定要运行的 Python 脚本
  --pretrained_unet_path models/kolors/Kolors/unet/diffusion_pytorch_model.safetensors \\
  --pretrained_text_encoder_path models/kolors/Kolors/text_encoder \\
  --pretrained_fp16_vae_path models/sdxl-vae-fp16-fix/diffusion_pytorch_model.safetensors \\
  # 指定预训练模型的路径
  --lora_rank 16 \\
  # 设置 LoRA 的秩为 16
  --lora_alpha 4.0 \\
  --dataset_path data/lora_dataset_processed \\
  --output_path ./models \\
  --max_epochs 1 \\
  --center_crop \\
  --use_gradient_checkpointing \\
  --precision "16-mixed"
"""


@pytest.fixture
def runner():
    _register()
    return CliRunner()


def invoke(runner, *args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def write_images(folder, sizes: dict[str, tuple[int, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, (name, size) in enumerate(sizes.items()):
        Image.new("RGB", size, (40 * index % 256, 90, 200 - 30 * index % 200)).save(folder / name)


def captions_of(ws, name: str) -> dict[str, str | None]:
    folder = dataset_folder(ws, name)
    return {item.original.split("/")[-1]: folder.read_caption(item) for item in folder.items}


# -- metadata.csv ----------------------------------------------------------------------------
def test_metadata_csv_round_trip_with_bom_and_chinese_captions(workspace, runner, tmp_path):
    source = tmp_path / "lora_dataset_processed" / "train"
    write_images(source, {"0.jpg": (64, 48), "1.jpg": (48, 64), "2.png": (64, 64)})
    rows = [("0.jpg", "二次元"), ("1.jpg", "二次元，一个紫色短发小女孩, 粉色连衣裙"), ("2.png", 'say "hi", twice')]
    with open(source / "metadata.csv", "w", encoding="utf-8-sig", newline="") as handle:  # pandas' utf-8-sig
        csv.writer(handle).writerows([("file_name", "text"), *rows])
    assert (source / "metadata.csv").read_bytes().startswith(BOM)

    imported = json.loads(invoke(runner, "dataset", "import", str(source.parent), "--name", "anime", "--json").stdout)
    assert imported["imported"] == 3 and imported["skipped"] == 0
    assert captions_of(workspace, "anime") == dict(rows)

    out = tmp_path / "out"
    invoke(runner, "dataset", "export", "anime", str(out), "--format", "metadata-csv")
    data = (out / "metadata.csv").read_bytes()
    assert data.startswith(BOM) and data.count(BOM) == 1
    written = list(csv.DictReader(data.decode("utf-8-sig").splitlines()))
    stored = {item.file: item.original for item in dataset_folder(workspace, "anime").items}
    assert {stored[row["file_name"]]: row["text"] for row in written} == {f"train/{f}": t for f, t in rows}
    assert all((out / row["file_name"]).is_file() for row in written)

    invoke(runner, "dataset", "import", str(out), "--name", "again")
    assert sorted(c for c in captions_of(workspace, "again").values()) == sorted(t for _, t in rows)

    # `diffsynth`: the same file under DEST/train/, where DiffSynth's --dataset_path DEST reads it.
    ready = tmp_path / "ready"
    invoke(runner, "dataset", "export", "anime", str(ready), "--format", "diffsynth")
    assert (ready / "train" / "metadata.csv").read_bytes() == data
    # plain csv stays without a BOM, as before
    plain = tmp_path / "plain"
    invoke(runner, "dataset", "export", "anime", str(plain), "--format", "csv")
    assert not (plain / "metadata.csv").read_bytes().startswith(BOM)


def test_metadata_csv_without_bom_with_quoted_commas_and_newlines(workspace, runner, tmp_path):
    source = tmp_path / "hf"
    write_images(source, {"a.png": (32, 32), "b.png": (40, 32)})
    (source / "metadata.csv").write_text(
        'file_name,text\na.png,"1girl, solo, 紫色短发"\nb.png,"first line\nsecond, line"\n', encoding="utf-8"
    )
    invoke(runner, "dataset", "import", str(source), "--name", "hf")
    assert captions_of(workspace, "hf") == {"a.png": "1girl, solo, 紫色短发", "b.png": "first line second, line"}


def test_listed_but_missing_images_and_rows_without_a_file_are_reported(workspace, runner, tmp_path):
    source = tmp_path / "broken"
    write_images(source, {"here.png": (32, 32), "uncaptioned.png": (32, 40)})
    (source / "metadata.csv").write_text(
        "file_name,text\nhere.png,二次元\ngone.png,丢失的图片\n,没有文件名\n", encoding="utf-8"
    )
    result = invoke(runner, "dataset", "import", str(source), "--name", "broken")
    assert "gone.png" in result.stdout and "listed in metadata.csv but no such image" in result.stdout
    assert "row 3" in result.stdout and "row has no file_name" in result.stdout
    report = json.loads(invoke(runner, "dataset", "import", str(source), "--name", "other", "--json").stdout)
    assert report["imported"] == 2
    reasons = {row["source"].split(": ")[-1]: row["reason"] for row in report["skipped_files"]}
    assert reasons == {"gone.png": "listed in metadata.csv but no such image", "row 3": "row has no file_name"}
    assert captions_of(workspace, "other") == {"here.png": "二次元", "uncaptioned.png": None}


def test_data_juicer_jsonl_with_image_lists_imports(workspace, runner, tmp_path):
    """The walk-through's data-juicer files hold `{"text", "image": [absolute path]}` per line."""
    images = tmp_path / "lora_dataset" / "train"
    write_images(images, {"0.jpg": (32, 32), "1.jpg": (40, 32)})
    result = tmp_path / "data-juicer" / "output" / "result.jsonl"
    result.parent.mkdir(parents=True)
    lines = [json.dumps({"text": "二次元", "image": [str(images / f"{i}.jpg")]}, ensure_ascii=False) for i in (0, 1)]
    result.write_text("\n".join(lines) + "\n", encoding="utf-8")
    invoke(runner, "dataset", "import", str(result), "--name", "dj")
    assert captions_of(workspace, "dj") == {"0.jpg": "二次元", "1.jpg": "二次元"}


# -- size and aspect-ratio filters ---------------------------------------------------------------
SHAPES = {
    "square.png": (1024, 1024),
    "wide_ok.png": (2048, 1024),  # ratio 2.0 is kept, as data-juicer's max_ratio is inclusive
    "small.png": (800, 1200),
    "too_wide.png": (2100, 1024),
    "too_tall.png": (1024, 2100),
}


def _drops(runner, *options: str) -> dict[str, str]:
    result = invoke(runner, "dataset", "clean", "shapes", "--dedupe", "off", "--dry-run", "--json", *options)
    return {row["file"].split("-")[0]: row["reason"] for row in json.loads(result.stdout)["dropped"]}


def test_size_and_aspect_filters_name_each_file_and_reason(workspace, runner, tmp_path):
    write_images(tmp_path / "shapes", SHAPES)
    invoke(runner, "dataset", "import", str(tmp_path / "shapes"), "--name", "shapes")
    stems = {item.file.split("-")[0]: item.original for item in dataset_folder(workspace, "shapes").items}
    assert set(stems.values()) == set(SHAPES)

    kolors = {stems[k]: v for k, v in _drops(runner, "--kolors").items()}
    assert set(kolors) == {"small.png", "too_wide.png", "too_tall.png"}
    assert "800x1200" in kolors["small.png"] and "too small" in kolors["small.png"]
    assert "aspect ratio 2.05 above 2.0" in kolors["too_wide.png"]
    assert "aspect ratio 0.49 below 0.5" in kolors["too_tall.png"]

    explicit = {stems[k]: v for k, v in _drops(runner, "--min-side", "1024", "--max-aspect", "2").items()}
    assert set(explicit) == set(kolors)
    assert "has a side under 1024 px" in explicit["small.png"] and "2.05:1 above 2.0:1" in explicit["too_tall.png"]

    # docs/TRAINING.md quotes these reasons with the pictures' sizes: each quote is what is printed.
    training_md = " ".join((Path(__file__).resolve().parents[1] / "docs" / "TRAINING.md").read_text().split())
    quotes = {"small.png": "an 800x1200 picture is `{}`", "too_wide.png": "a 2100x1024 one `{}`",
              "too_tall.png": "a 1024x2100 one `{}`"}  # fmt: skip
    for file, quote in quotes.items():
        assert quote.format(kolors[file]) in training_md, kolors[file]
    assert f"`{explicit['too_wide.png']}` for both" in training_md

    # An option given beside --kolors replaces that part of the preset only.
    relaxed = {stems[k] for k in _drops(runner, "--kolors", "--min-side", "800")}
    assert relaxed == {"too_wide.png", "too_tall.png"}
    # ... and 0 switches that part off (it counted as "not given" and the preset came back).
    no_size = {stems[k] for k in _drops(runner, "--kolors", "--min-width", "0", "--min-height", "0")}
    assert no_size == {"too_wide.png", "too_tall.png"}
    no_shape = {stems[k] for k in _drops(runner, "--kolors", "--max-aspect", "0")}
    assert no_shape == {"small.png"}

    result = invoke(runner, "dataset", "clean", "shapes", "--kolors")  # data-juicer's filters: no dedupe
    assert "dropped 3, keeping 2" in result.stdout
    assert {item.original for item in dataset_folder(workspace, "shapes").items} == {"square.png", "wide_ok.png"}


# -- fixed caption -------------------------------------------------------------------------------
def test_fixed_caption_for_every_image(workspace, runner, tmp_path):
    source = tmp_path / "fixed"
    write_images(source, {"a.png": (32, 32), "b.png": (32, 40), "c.png": (40, 32)})
    (source / "b.txt").write_text("old caption", encoding="utf-8")
    invoke(runner, "dataset", "import", str(source), "--name", "fixed")

    result = invoke(runner, "dataset", "caption", "fixed", "--fixed", "二次元")
    assert "3 of 3 captions set to '二次元'" in result.stdout
    assert set(captions_of(workspace, "fixed").values()) == {"二次元"}

    invoke(runner, "dataset", "caption", "fixed", "--fixed", "anime style", "--mode", "prepend")
    assert set(captions_of(workspace, "fixed").values()) == {"anime style, 二次元"}

    refused = runner.invoke(app, ["dataset", "caption", "fixed", "--fixed", "x", "--template", "y"])
    assert refused.exit_code != 0 and "exactly one of --model, --template or --fixed" in refused.output


def test_fixed_caption_modes():
    assert fixed_caption("二次元", "old", "overwrite") == "二次元"
    assert fixed_caption("二次元", "old", "missing") == "old"
    assert fixed_caption("二次元", None, "missing") == "二次元"
    assert fixed_caption("二次元", "old", "append") == "old, 二次元"
    assert fixed_caption("二次元", "二次元, old", "prepend") == "二次元, old"  # never twice
    with pytest.raises(LorastudioError, match="--mode 'sideways'"):
        fixed_caption("二次元", "old", "sideways")


# -- DiffSynth-Studio arguments -----------------------------------------------------------------------
def test_seed_command_line_splits_past_comments_and_continuations():
    words = split_command_line(SEED_COMMAND)
    assert words[0] == "python" and "#" not in " ".join(words) and "\\" not in words
    assert words[words.index("--lora_rank") + 1] == "16" and words[-1] == "16-mixed"


def test_diffsynth_epochs_are_steps_per_epoch_steps():
    imported = import_diffsynth_args(
        "--steps_per_epoch 100 --max_epochs 3 --accumulate_grad_batches 2 --batch_size 2"
    )
    assert imported.get("train.steps") == 150 and imported.get("train.save_every_steps") == 50
    assert imported.get("train.grad_accum") == 2 and imported.get("train.batch_size") == 2
    defaults = import_diffsynth_args("--lora_rank 8")
    assert defaults.get("train.steps") == 500  # one DiffSynth epoch of 500 steps, whatever the data size
    assert defaults.get("lora.alpha") == 4.0 and defaults.get("train.resolution") == 1024
    assert any("not a pass over the data" in line for line in defaults.lines())


def test_diffsynth_targets_precision_and_what_cannot_be_mapped():
    imported = import_diffsynth_args(
        "--lora_target_modules to_q,to_k,to_v,to_out.0 --precision 32 --random_flip --height 768 --width 768"
    )
    assert imported.get("lora.targets") == "attn" and imported.get("train.mixed_precision") == "no"
    assert imported.get("data.flip") is True and imported.get("train.resolution") == 768
    odd = import_diffsynth_args(
        "--lora_target_modules to_q,proj_in --precision bf16 --height 1024 --width 768"
        " --training_strategy deepspeed_stage_2 --modelscope_access_token SECRET --no_such_arg 3"
    )
    unmapped = dict(odd.unmapped)
    assert odd.get("lora.targets") is None and "set lora.targets" in unmapped["lora_target_modules"]
    assert odd.get("train.mixed_precision") == "bf16"
    assert "non-square 768x1024" in unmapped["height"]
    assert "DeepSpeed" in unmapped["training_strategy"]
    assert "not an argument" in unmapped["no_such_arg"]
    assert "center_crop" in unmapped  # DiffSynth crops at random without it; lorastudio does not
    assert not any("SECRET" in line for line in odd.lines())
    with pytest.raises(LorastudioError, match="--lora_rank 'x' is not a int"):
        import_diffsynth_args("--lora_rank x")
    with pytest.raises(LorastudioError, match="'nothere.sh': no such file"):
        import_diffsynth_args("nothere.sh")
    with pytest.raises(LorastudioError, match="--dataset_path needs a value"):
        import_diffsynth_args("--lora_rank 4 --dataset_path")


def test_train_cli_explains_and_dry_runs_a_diffsynth_command(workspace, runner, tmp_path):
    explained = invoke(runner, "train", "--diffsynth-args", SEED_COMMAND, "--explain")
    lines = explained.stdout.splitlines()

    def value(key: str) -> str:
        line = next(line for line in lines if line.startswith(key + " "))
        assert "<- DiffSynth-Studio command line" in line, line
        return line.split("=", 1)[1].split("<-")[0].strip()

    assert value("train.steps") == "500" and value("train.save_every_steps") == "500"
    assert value("lora.rank") == "16" and value("lora.alpha") == "4.0" and value("lora.targets") == '"attn"'
    assert value("train.mixed_precision") == '"fp16"' and value("train.gradient_checkpointing") == "true"
    assert value("model") == '"models/kolors/Kolors"'
    assert value("data.dir") == '"data/lora_dataset_processed/train/metadata.csv"'
    assert "diffsynth --pretrained_fp16_vae_path: NOT MAPPED" in explained.output
    assert "diffsynth --center_crop: no setting needed" in explained.output

    command = tmp_path / "train.sh"
    command.write_text(SEED_COMMAND + "  --max_epochs 2 --steps_per_epoch 10 --unknown_flag\n", encoding="utf-8")
    mine = tmp_path / "mine.yaml"
    dry = invoke(runner, "train", "--diffsynth-args", str(command), "--dry-run", "--write-yaml", str(mine), "lora.rank=2")
    assert "diffsynth --unknown_flag: NOT MAPPED" in dry.output
    written = yaml.safe_load(mine.read_text(encoding="utf-8"))
    assert written["train"]["steps"] == 20 and written["lora"]["rank"] == 2
    from lorastudio.train.config import load_train_config

    again = load_train_config(mine)  # the YAML is a lorastudio config of its own
    assert again.train.steps == 20 and again.train.max_grad_norm is None and again.lora.targets == "attn"
    assert not workspace.runs.exists() or not any(workspace.runs.iterdir())

    clash = runner.invoke(app, ["train", "--diffsynth-args", "--lora_rank 4", "--kohya-config", str(command)])
    assert clash.exit_code != 0 and "not with --kohya-config" in clash.output
