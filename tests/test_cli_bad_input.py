"""Bad input on the command line is one line naming the file and the fix (exit 2), never a traceback:
text files in the encodings Windows tools save, hand-edited recipes, pictures over Pillow's limit,
an unusable workspace folder, a device this machine lacks, a mistyped path, a LoRA given as the VAE."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

from lorastudio.cli import _register, app

_register()
runner = CliRunner()


def _fails_in_one_line(args: list[str], *expected: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output, result.exception)
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.mark.parametrize("encoding", ["gb18030", "utf-16", "utf-8-sig"])
def test_a_config_saved_by_a_windows_tool_reads(tmp_path, workspace, encoding):
    config = tmp_path / "角色.yaml"
    config.write_bytes("trigger: 小红\nlora:\n  rank: 8\n".encode(encoding))
    result = runner.invoke(app, ["train", "-c", str(config), "--explain"])
    assert result.exit_code == 0, result.output
    assert "小红" in result.stdout and "lora.rank" in result.stdout


def test_a_story_file_in_gbk_reads(tiny_workspace, tmp_path):
    from lorastudio.generate.series import read_prompt_file

    story = tmp_path / "story.txt"
    story.write_bytes("一只红色的狐狸\n蓝色的海\n".encode("gb18030"))
    assert [entry["prompt"] for entry in read_prompt_file(story)] == ["一只红色的狐狸", "蓝色的海"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("request:\n  prompt: a fox\n  stpes: 3\n", "stpes"),
        ("request:\n  prompt: a fox\n  steps: three\n", "steps"),
        ("request: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "not a lorastudio recipe"),
        ("", "not a lorastudio recipe"),
    ],
)
def test_a_hand_edited_recipe_is_one_line(tiny_workspace, tmp_path, text, expected):
    recipe = tmp_path / "edited.yaml"
    recipe.write_text(text, encoding="utf-8")
    _fails_in_one_line(["generate", "--recipe", str(recipe)], "edited.yaml", expected)


def test_a_picture_over_pillows_limit_is_one_line(tiny_workspace, tmp_path, monkeypatch):
    picture = tmp_path / "huge.png"
    Image.new("RGB", (64, 64)).save(picture)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: over twice the limit, a "bomb"
    _fails_in_one_line(["pnginfo", str(picture)], "huge.png", "too large")
    _fails_in_one_line(
        ["generate", "--model", "tiny-sd15", "--prompt", "x", "--steps", "1", "--init-image", str(picture)],
        "huge.png", "too large",
    )  # fmt: skip
    _fails_in_one_line(["upscale", str(picture), "--upscaler", "Lanczos"], "huge.png", "too large")


def test_control_detect_on_an_unreadable_file_is_one_line(workspace, tmp_path):
    empty = tmp_path / "zero.png"
    empty.write_bytes(b"")
    _fails_in_one_line(["control", "detect", "--module", "canny", str(empty)], "zero.png")


def test_an_unusable_workspace_folder_is_one_line(tmp_path, monkeypatch):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    monkeypatch.setenv("LORASTUDIO_HOME", str(a_file))
    _fails_in_one_line(["models", "list"], "notes.txt", "LORASTUDIO_HOME")


def test_a_device_this_machine_lacks_is_refused_for_generation_and_training(tiny_workspace, tmp_path):
    import torch

    _fails_in_one_line(["generate", "--model", "tiny-sd15", "--prompt", "x", "--device", "tpu"], "'tpu'", "cpu, cuda")
    from lorastudio.models.loading import pick_device

    assert pick_device("cpu:0")[0] == "cpu:0"  # what accelerate gives a data-parallel rank
    if torch.cuda.is_available():
        return
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (200, 10 * i, 10)).save(data / f"{i}.png")
    _fails_in_one_line(
        ["train", "--device", "cuda", "model=tiny-sd15", f"data.dir={data}", "train.steps=1", "train.resolution=64"],
        "no CUDA GPU",
    )  # it trained on the CPU without a word


def test_a_mistyped_path_is_no_such_file_not_a_hub_lookup(tiny_workspace, tmp_path):
    (tmp_path / "single").mkdir()
    for name in (str(tmp_path / "single" / "typo.safetensors"), "./nope/", "single-typo.ckpt"):
        _fails_in_one_line(["generate", "--model", name, "--prompt", "x"], "no such file or folder")


def test_a_lora_given_as_the_vae_names_the_vae(tiny_workspace, tmp_path):
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "ink.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    line = _fails_in_one_line(["generate", "--model", "tiny-sd15", "--prompt", "x", "--steps", "1", "--vae", str(lora)])
    assert "VAE" in line and "ink.safetensors" in line and "tiny-sd15" not in line


def test_a_config_error_names_the_file_or_layer_that_set_the_key(workspace, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  stpes: 5\n", encoding="utf-8")
    fine = tmp_path / "fine.toml"
    fine.write_text("[lora]\nrank = 8\n", encoding="utf-8")
    _fails_in_one_line(["train", "-c", str(fine), "-c", str(typo), "--explain"], f"{typo}: unknown key 'train.stpes'")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[train]\nsteps = [1, 2]\n", encoding="utf-8")
    _fails_in_one_line(["train", "-c", str(wrong), "--explain"], f"{wrong}: train.steps = [1, 2]")
    _fails_in_one_line(["train", "-c", str(fine), "--explain", "lora.rnk=4"], "override: unknown key 'lora.rnk'")


def test_a_story_entry_with_a_typo_names_the_entry(tiny_workspace, tmp_path):
    story = tmp_path / "story.yaml"
    story.write_text("- prompt: a fox\n- prompt: a cat\n  stpes: 3\n", encoding="utf-8")
    _fails_in_one_line(
        ["generate", "--model", "tiny-sd15", "--prompts", str(story)], "story.yaml: entry 2: unknown key 'stpes'", "steps"
    )


def test_training_names_every_unreadable_file_at_once(tiny_workspace, tmp_path):
    data = tmp_path / "训练 数据"
    data.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (200, 20 * i, 10)).save(data / f"good{i}.png")
    (data / "zero.png").write_bytes(b"")
    (data / "text.png").write_text("not a picture")
    whole = data / "good0.png"
    (data / "cut.png").write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    line = _fails_in_one_line(
        ["train", "model=tiny-sd15", f"data.dir={data}", "train.steps=1", "train.resolution=64"],
        "3 files cannot be read as images",
    )
    assert all(name in line for name in ("zero.png", "text.png", "cut.png"))


def test_upscale_names_a_picture_too_small_and_still_does_the_others(workspace, tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "ok.png")
    line = _fails_in_one_line(
        ["upscale", str(tmp_path / "one.png"), str(tmp_path / "ok.png"), "--upscaler", "Lanczos", "--out", str(tmp_path / "up")],
        "one.png", "1x1",
    )  # fmt: skip
    assert "ok-upscaled-2x.png" in line and (tmp_path / "up" / "ok-upscaled-2x.png").is_file()


def test_ctrl_c_during_training_says_how_to_resume(tiny_workspace, tmp_path, monkeypatch):
    import lorastudio.service.training as training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "run_training", interrupted)
    data = tmp_path / "data"
    data.mkdir()
    result = runner.invoke(app, ["train", "model=tiny-sd15", f"data.dir={data}", "output.name=mira"])
    assert result.exit_code == 130 and "before the first checkpoint; run the same command again" in result.output
    monkeypatch.setattr(training, "has_checkpoint", lambda ws, run: True)
    result = runner.invoke(app, ["train", "model=tiny-sd15", f"data.dir={data}", "output.name=mira"])
    assert result.exit_code == 130 and "lorastudio train --resume mira" in result.output


def test_serve_refuses_a_bad_port_and_a_bad_auth_before_serving(workspace):
    result = runner.invoke(app, ["serve", "--port", "99999"])
    assert result.exit_code == 2 and "--port" in result.output
    line = _fails_in_one_line(["serve", "--auth", "nopassword"], "user:password")
    assert "serving" not in line


def test_a_resumable_state_is_read_weights_only_and_a_damaged_file_is_named(tmp_path):
    import os

    import torch

    from lorastudio.errors import LorastudioError
    from lorastudio.train.checkpoints import refuse_unsafe_state

    state = tmp_path / "state"
    state.mkdir()
    torch.save({"step": 3, "lora": {"w": torch.ones(2)}}, state / "custom_checkpoint_0.pkl")
    (state / "model.safetensors").write_bytes(b"not checked here")
    refuse_unsafe_state(state)  # tensors and plain values pass

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"x": Payload()}, state / "scaler.pt")  # any suffix accelerate may load
    with pytest.raises(LorastudioError, match="scaler.pt: holds more than tensors.*posix.system"):
        refuse_unsafe_state(state)
    (state / "scaler.pt").unlink()
    whole = (state / "custom_checkpoint_0.pkl").read_bytes()
    (state / "random_states_0.pkl").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(LorastudioError, match="random_states_0.pkl: damaged.*delete this checkpoint"):
        refuse_unsafe_state(state)
