"""A1111 infotext: formatting, parsing, PNG/JPEG/WebP storage and `lorastudio pnginfo`."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from lorastudio.errors import LorastudioError
from lorastudio.generate.infotext import (
    decode_user_comment,
    encode_user_comment,
    format_infotext,
    parse_infotext,
    read_infotext,
    save_png,
    write_jpeg_with_infotext,
)

EXAMPLE = (
    "masterpiece, 1girl, <lora:mira_v2:0.8>\n"
    "Negative prompt: lowres, bad hands\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 2387465123, Size: 512x768, "
    "Model hash: 6ce0161689, Model: anything-v5, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, "
    'Hires steps: 12, Hires upscaler: Latent, Lora hashes: "mira_v2: 3f2a9c81b0de", Version: lorastudio 0.1.0'
)


def example_params() -> dict[str, object]:
    # Deliberately out of order: format_infotext must put them in A1111's order.
    return {
        "Version": "lorastudio 0.1.0",
        "Hires upscale": 2,
        "Seed": 2387465123,
        "Steps": 28,
        "Clip skip": 2,
        "Hires steps": 12,
        "Sampler": "DPM++ 2M",
        "Model": "anything-v5",
        "Schedule type": "Karras",
        "Hires upscaler": "Latent",
        "CFG scale": 6.5,
        "Size": "512x768",
        "Lora hashes": "mira_v2: 3f2a9c81b0de",
        "Model hash": "6ce0161689",
        "Denoising strength": 0.45,
        "VAE": None,
    }


def test_format_infotext_matches_a1111_layout():
    text = format_infotext("masterpiece, 1girl, <lora:mira_v2:0.8>", "lowres, bad hands", example_params())
    assert text == EXAMPLE


def test_format_infotext_rules():
    params = {
        "Steps": 20,
        "Clip skip": 1,
        "Seed": 5,
        "Tiling": "Tiling",
        "User": "me",
        "Version": "v1",
        "Note": "a,b",
    }
    text = format_infotext("cat", "", params)
    assert text == 'cat\nSteps: 20, Seed: 5, Tiling, Note: "a,b", Version: v1, User: me'
    assert "Negative prompt" not in text


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("a, b", '"a, b"'),
        ("k: v", '"k: v"'),
        ("two\nlines", '"two\\nlines"'),
        ('say "hi", ok', '"say \\"hi\\", ok"'),
        ("中文, 标签", '"中文, 标签"'),
        (1.5, "1.5"),
    ],
)
def test_values_are_quoted_like_a1111(value, written):
    assert format_infotext("p", "", {"Steps": 1, "X": value}) == f"p\nSteps: 1, X: {written}"


def test_parse_infotext_reads_every_key():
    params = parse_infotext(EXAMPLE)
    assert params["Prompt"] == "masterpiece, 1girl, <lora:mira_v2:0.8>"
    assert params["Negative prompt"] == "lowres, bad hands"
    assert params["Steps"] == "28"
    assert params["Size-1"] == "512" and params["Size-2"] == "768"
    assert "Size" not in params
    assert params["Lora hashes"] == "mira_v2: 3f2a9c81b0de"
    assert params["Clip skip"] == "2"
    assert params["Version"] == "lorastudio 0.1.0"
    assert params["Hires upscale"] == "2"


def test_parse_infotext_a1111_docstring_example_and_defaults():
    text = (
        "girl with an artist's beret, determined, blue eyes, ((eyeshadow)), (coquettish), detailed\n"
        "Negative prompt: ugly, fat, (((deformed))), [blurry], messy drawing\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b"
    )
    params = parse_infotext(text)
    assert params["Prompt"].startswith("girl with an artist's beret")
    assert params["Negative prompt"] == "ugly, fat, (((deformed))), [blurry], messy drawing"
    assert params["Sampler"] == "Euler a" and params["Model hash"] == "45dee52b"
    # Defaults A1111 fills in when a key is missing.
    assert params["Clip skip"] == "1"
    assert params["RNG"] == "GPU"
    assert params["Schedule type"] == "Automatic"
    assert params["Hires resize-1"] == 0 and params["Hires resize-2"] == 0
    assert params["Hires sampler"] == "Use same sampler"
    assert params["Hires schedule type"] == "Use same scheduler"
    assert params["Masked area padding"] == 32
    assert params["FP8 weight"] == "Disable" and "Cache FP16 weight for LoRA" not in params
    assert params["Emphasis"] == "Original"  # the prompt uses (brackets)
    assert params["Refiner switch by sampling steps"] is False


def test_parse_infotext_without_defaults_keeps_only_what_is_written():
    params = parse_infotext("cat\nSteps: 20, Seed: 1, Size: 64x32", fill_defaults=False)
    assert params == {
        "Steps": "20",
        "Seed": "1",
        "Size-1": "64",
        "Size-2": "32",
        "Prompt": "cat",
        "Negative prompt": "",
    }


def test_last_line_needs_three_pairs_to_count_as_parameters():
    params = parse_infotext("a cat\nstyle: anime, mood: calm")
    assert params["Prompt"] == "a cat\nstyle: anime, mood: calm"
    assert "style" not in params


def test_multiline_negative_and_prompt_only_text():
    params = parse_infotext("line 1\nline 2\nNegative prompt: bad\nworse\nSteps: 1, Seed: 2, Size: 8x8")
    assert params["Prompt"] == "line 1\nline 2"
    assert params["Negative prompt"] == "bad\nworse"
    assert parse_infotext("just a prompt")["Prompt"] == "just a prompt"


def test_parse_infotext_edge_values():
    text = 'p\nSteps: 20, Empty: , Quoted: "a \\"b\\", c", Hires resize: 1024x1536, Seed: 3'
    params = parse_infotext(text)
    assert "Empty" not in params  # A1111 skips keys with empty values
    assert params["Quoted"] == 'a "b", c'
    assert params["Hires resize-1"] == "1024" and params["Hires resize-2"] == "1536"


def test_old_first_pass_size_is_converted():
    params = parse_infotext("p\nSteps: 20, Size: 1024x1024, First pass size: 0x0, Seed: 1")
    assert (params["Size-1"], params["Size-2"]) == (512, 512)
    assert (params["Hires resize-1"], params["Hires resize-2"]) == (1024, 1024)


@pytest.mark.parametrize(
    "sizes",
    ["Size: 0x0, First pass size: 0x0", "Size-1: -5, Size-2: 10, First pass size: 0x0", "Size: 64x64, First pass size-1: -8, First pass size-2: 8"],
)
def test_an_old_hires_size_with_no_area_is_left_unconverted(sizes):
    params = parse_infotext(f"p\nSteps: 20, {sizes}, Seed: 1")
    stated = parse_infotext(f"p\nSteps: 20, {sizes}, Seed: 1", fill_defaults=False)
    assert (params["Hires resize-1"], params["Hires resize-2"], params["Seed"]) == (0, 0, "1")  # no hires stated
    assert {key: params[key] for key in stated} == stated


def test_pnginfo_cli_reads_an_old_hires_size_of_zero(tmp_path):
    path = save_png(Image.new("RGB", (8, 8)), tmp_path / "zero.png", "p\nSteps: 20, Size: 0x0, First pass size: 0x0")
    runner, app = _cli()
    result = runner.invoke(app, ["pnginfo", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["Size-1"] == "0"


def test_hypernet_and_version_backcompat():
    params = parse_infotext("a [b:c:3]\nSteps: 20, Sampler: DDIM, Hypernet: anime, Version: v1.5.1, Seed: 1")
    assert params["Prompt"] == "a [b:c:3]<hypernet:anime:1.0>"
    assert params["Old prompt editing timelines"] is True
    assert params["Pad conds v0"] is True
    assert params["Downcast alphas_cumprod"] is True
    new = parse_infotext("a [b:c:3]\nSteps: 20, Sampler: DDIM, Version: v1.10.1, Seed: 1")
    assert "Old prompt editing timelines" not in new and "Downcast alphas_cumprod" not in new


def test_format_then_parse_round_trip():
    prompt = "一个女孩, (masterpiece:1.2), [smile|frown]\nsecond line"
    text = format_infotext(prompt, "blurry, 低质量", example_params())
    params = parse_infotext(text)
    assert params["Prompt"] == prompt
    assert params["Negative prompt"] == "blurry, 低质量"
    assert params["Seed"] == "2387465123" and params["CFG scale"] == "6.5"
    assert params["Lora hashes"] == "mira_v2: 3f2a9c81b0de"


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_image_round_trip(tmp_path, suffix):
    prompt = "一个女孩, <lora:mira:0.8>, (red dress:1.1)"
    text = format_infotext(prompt, "lowres", example_params())
    image = Image.new("RGB", (16, 16), "teal")
    path = tmp_path / f"out{suffix}"
    if suffix == ".png":
        save_png(image, path, text, extra_text={"software": "lorastudio"})
    else:
        write_jpeg_with_infotext(image, path, text)
    stored = read_infotext(path)
    assert stored == text
    params = parse_infotext(stored)
    assert params["Prompt"] == prompt and params["Steps"] == "28" and params["Size-1"] == "512"


def test_png_chunk_type_depends_on_text(tmp_path):
    image = Image.new("RGB", (4, 4))
    latin = save_png(image, tmp_path / "latin.png", "café\nSteps: 1, Seed: 1, Size: 4x4", {"note": "x"})
    chinese = save_png(image, tmp_path / "zh.png", "猫\nSteps: 1, Seed: 1, Size: 4x4")
    assert b"tEXtparameters" in latin.read_bytes() and b"tEXtnote" in latin.read_bytes()
    assert b"iTXtparameters" in chinese.read_bytes()
    with Image.open(latin) as reopened:
        assert reopened.info["note"] == "x"


def test_read_infotext_without_parameters_and_with_bad_files(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    assert read_infotext(plain) is None
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    with pytest.raises(LorastudioError, match="notes.png"):
        read_infotext(not_image)
    with pytest.raises(LorastudioError, match="missing.png"):
        read_infotext(tmp_path / "missing.png")


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (encode_user_comment("猫, cat"), "猫, cat"),
        (b"UNICODE\x00" + "cat, dog".encode("utf-16-le"), "cat, dog"),
        (b"ASCII\x00\x00\x00cat", "cat"),
        (b"\x00" * 8 + b"cat", "\x00" * 8 + "cat"),  # unknown code: A1111 decodes the bytes as UTF-8
    ],
)
def test_decode_user_comment(raw, text):
    assert decode_user_comment(raw) == text


def _cli():
    from lorastudio.cli import _register, app

    _register()
    return CliRunner(), app


def test_pnginfo_cli_json_and_text(tmp_path):
    path = save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png", EXAMPLE)
    runner, app = _cli()
    result = runner.invoke(app, ["pnginfo", str(path), "--json"])
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)
    assert params["Seed"] == "2387465123" and params["Clip skip"] == "2"

    result = runner.invoke(app, ["pnginfo", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Prompt: masterpiece, 1girl, <lora:mira_v2:0.8>"
    assert lines[1] == "Negative prompt: lowres, bad hands"
    assert "Sampler: DPM++ 2M" in lines and "RNG: GPU" not in lines


def test_pnginfo_cli_errors_name_the_file(tmp_path):
    runner, app = _cli()
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    result = runner.invoke(app, ["pnginfo", str(plain)])
    assert result.exit_code != 0
    assert result.exit_code == 2 and "plain.png" in result.output  # one line, no traceback

    text_file = tmp_path / "readme.txt"
    text_file.write_text("not an image")
    result = runner.invoke(app, ["pnginfo", str(text_file)])
    assert result.exit_code == 2 and "readme.txt" in result.output


def test_png_info_service_gives_the_fronts_seeds_and_parameters(tmp_path):
    from lorastudio.service.png_info import image_seeds, infotext_parameters, variation_seeds

    text = "a cat\nSteps: 2, Seed: 42, Variation seed: 7, Variation seed strength: 0.5"
    made = save_png(Image.new("RGB", (8, 8)), tmp_path / "made.png", text)
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)

    assert image_seeds([made, plain]) == ([text, ""], [42, -1])
    assert variation_seeds([text, "b\nSteps: 2, Seed: 1, Sampler: Euler"]) == [7]
    # a seed that is not a whole number counts as not stated (never a 500 on a crafted image)
    odd = save_png(Image.new("RGB", (8, 8)), tmp_path / "odd.png", "c\nSteps: 2, Seed: abc, Sampler: Euler")
    assert image_seeds([odd])[1] == [-1]
    assert variation_seeds(["c\nSteps: 2, Seed: abc, Sampler: Euler, Variation seed: x1"]) == []
    stated = infotext_parameters(text, fill_defaults=False)
    assert stated["Seed"] == "42" and "Clip skip" not in stated
    assert infotext_parameters(text)["Clip skip"] == "1"
