"""`lorastudio generate` end to end: files, infotext, recipes, LoRAs per request, series."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lora_helpers import random_lora
from lorastudio.cli import _register, app

_register()
runner = CliRunner()


def gen(*args: str) -> dict:
    result = runner.invoke(app, ["generate", "--model", "tiny-sd15", "--steps", "6", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def arr(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_png_has_infotext_that_roundtrips_through_pnginfo(tiny_workspace):
    out = gen(
        "--prompt",
        "a (red:1.2) picture",
        "--negative",
        "blurry",
        "--seed",
        "123",
        "--sampler",
        "DPM++ 2M Karras",
        "--cfg",
        "5.5",
        "--clip-skip",
        "2",
    )
    png = out["images"][0]
    info = json.loads(runner.invoke(app, ["pnginfo", png, "--json"]).stdout)
    assert info["Prompt"] == "a (red:1.2) picture" and info["Negative prompt"] == "blurry"
    # values come back as A1111's parser gives them (strings)
    assert str(info["Seed"]) == "123" and str(info["Steps"]) == "6" and info["Sampler"] == "DPM++ 2M"
    assert (
        info["Schedule type"] == "Karras"
        and str(info["CFG scale"]) == "5.5"
        and str(info["Clip skip"]) == "2"
    )
    assert (
        str(info["Size-1"]) == "64"
        and str(info["Size-2"]) == "64"
        and info["Model hash"] == out["model_hash"]
    )
    assert out["recipes"][0].endswith(".yaml")


@pytest.mark.slow
def test_recipe_and_png_reproduce_the_image(tiny_workspace):
    out = gen("--prompt", "green", "--seed", "9", "--batch", "2")
    second_png, second_recipe = out["images"][1], out["recipes"][1]
    again = gen("--recipe", second_recipe)
    assert again["seeds"] == [10]
    # batched vs alone: float rounding only, far below the distance to the batch's other seed
    another_seed = np.abs(arr(out["images"][0]) - arr(second_png)).mean()
    assert np.abs(arr(again["images"][0]) - arr(second_png)).mean() < 0.1 * another_seed
    from_png = gen("--recipe", out["images"][0])
    assert np.array_equal(arr(from_png["images"][0]), arr(out["images"][0]))




@pytest.mark.slow
def test_lora_tag_changes_image_only_for_that_request(tiny_workspace):
    from lorastudio.adapters import save_kohya
    from lorastudio.models.loading import load_model

    model = load_model("tiny-sd15", tiny_workspace.models, tiny_workspace.cache)
    save_kohya(
        random_lora(model),
        tiny_workspace.loras / "wild.safetensors",
        family=model.family,
        unet_config=model.unet.config,
    )
    plain = gen("--prompt", "blue", "--seed", "4")
    with_lora = gen("--prompt", "blue <lora:wild:1>", "--seed", "4")
    half = gen("--prompt", "blue <lora:wild:0.3>", "--seed", "4")
    after = gen("--prompt", "blue", "--seed", "4")
    base, lora_img, half_img = arr(plain["images"][0]), arr(with_lora["images"][0]), arr(half["images"][0])
    assert np.abs(lora_img - base).mean() > np.abs(half_img - base).mean() > 0.1
    assert np.array_equal(arr(after["images"][0]), base)  # nothing leaked into the next request
    info = json.loads(runner.invoke(app, ["pnginfo", with_lora["images"][0], "--json"]).stdout)
    assert info["Lora hashes"].startswith("wild: ") and with_lora["loras"][0]["unet_weight"] == 1.0


def test_missing_lora_and_wrong_family_lora_are_clear_errors(tiny_workspace):
    from lorastudio.adapters import save_kohya
    from lorastudio.models.loading import load_model

    result = runner.invoke(app, ["generate", "--model", "tiny-sd15", "--prompt", "x <lora:nope:1>"])
    assert result.exit_code == 2 and "LoRA 'nope' not found" in result.output
    xl = load_model("tiny-sdxl", tiny_workspace.models, tiny_workspace.cache)
    save_kohya(
        random_lora(xl),
        tiny_workspace.loras / "xl.safetensors",
        family=xl.family,
        unet_config=xl.unet.config,
    )
    result = runner.invoke(
        app, ["generate", "--model", "tiny-sd15", "--prompt", "x <lora:xl:1>", "--steps", "2"]
    )
    assert result.exit_code == 2 and "SDXL" in result.output and len(result.output.strip().splitlines()) == 1


def test_embedding_is_used_by_name(tiny_workspace):
    from lorastudio.adapters import Embedding, save_embedding
    from lorastudio.models.families import get_family

    vec = torch.randn(2, 32, generator=torch.Generator().manual_seed(3)) * 3
    save_embedding(
        Embedding("zkstar", [vec]), tiny_workspace.embeddings / "zkstar.safetensors", get_family("sd15")
    )
    plain = gen("--prompt", "zkstaz picture", "--seed", "2")
    used = gen("--prompt", "zkstar picture", "--seed", "2")
    assert np.abs(arr(used["images"][0]) - arr(plain["images"][0])).mean() > 0.1
    info = json.loads(runner.invoke(app, ["pnginfo", used["images"][0], "--json"]).stdout)
    assert "zkstar" in info.get("TI hashes", "")


def test_hcp_sdxl_embedding_holding_both_encoders_side_by_side_is_split(tiny_workspace):
    """HCP-Diffusion's SDXL `.pt` holds CLIP-L then CLIP-G in one [n, L + G] matrix (2048 wide on SDXL;
    tiny-sdxl's encoders are 32 and 48 wide): it acts as the clip_l/clip_g pair A1111's files hold."""
    from lorastudio.adapters import Embedding, save_embedding

    def xl(*args: str) -> str:
        result = runner.invoke(
            app, ["generate", "--model", "tiny-sdxl", "--steps", "4", "--seed", "2", "--json", *args]
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout.strip().splitlines()[-1])["images"][0]

    clip_l = torch.randn(2, 32, generator=torch.Generator().manual_seed(3)) * 3
    clip_g = torch.randn(2, 48, generator=torch.Generator().manual_seed(4)) * 3
    joined = torch.cat([clip_l, clip_g], dim=-1)
    torch.save({"string_to_param": {"*": joined}, "name": "zkhcp"}, tiny_workspace.embeddings / "zkhcp.pt")
    save_embedding(Embedding("zkpair", [clip_l, clip_g]), tiny_workspace.embeddings / "zkpair.safetensors", "sdxl")
    hcp = xl("--prompt", "zkhcp picture")
    assert np.array_equal(arr(hcp), arr(xl("--prompt", "zkpair picture")))  # was: skipped, a plain word
    assert np.abs(arr(hcp) - arr(xl("--prompt", "zkhcx picture"))).mean() > 0.1
    info = json.loads(runner.invoke(app, ["pnginfo", hcp, "--json"]).stdout)
    assert "zkhcp" in info.get("TI hashes", "")


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_broken_or_refused_embedding_leaves_its_word_a_word(tiny_workspace, caplog):
    plain = gen("--prompt", "zkbad zkevil picture", "--seed", "2")
    (tiny_workspace.embeddings / "zkbad.safetensors").write_bytes(b"not a safetensors file")
    torch.save({"string_to_param": {"*": torch.zeros(1, 32)}, "x": _Payload()}, tiny_workspace.embeddings / "zkevil.pt")
    with caplog.at_level("WARNING", logger="lorastudio.service.generation"):
        kept = gen("--prompt", "zkbad zkevil picture", "--seed", "2")  # was: the whole request failed
    assert np.array_equal(arr(kept["images"][0]), arr(plain["images"][0]))
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "'zkbad' is read as a plain word" in warned and "'zkevil' is read as a plain word" in warned
    assert sorted(kept["skipped_embeddings"]) == ["zkbad", "zkevil"]  # the result says it too (the UI beside "Done")
    from lorastudio.service.generation import GenerationResult, generation_notes

    notes = generation_notes(GenerationResult([], "m", "h", missing_loras=["gone"], skipped_embeddings=["zkbad"]))
    assert notes == [
        "Lora not found: gone",
        "Textual inversion embeddings skipped(1): zkbad (another model family or unreadable: read as plain words)",
    ]


def test_embedding_bundled_in_a_lora_is_used_unless_a_file_has_that_name(tiny_workspace):
    from lorastudio.adapters import Embedding, LoraFile, save_embedding
    from lorastudio.adapters.kohya import save_kohya
    from lorastudio.models.families import get_family

    family = get_family("sd15")
    bundled = torch.randn(2, 32, generator=torch.Generator().manual_seed(5)) * 3
    lora = LoraFile(source_format="lorastudio")
    lora.embeddings["zkbund"] = [bundled]
    save_kohya(lora, tiny_workspace.loras / "bund.safetensors", family=family)

    plain = gen("--prompt", "zkbund picture <lora:bund:1>", "--seed", "2")
    saved = tiny_workspace.embeddings / "zkbund.safetensors"
    save_embedding(Embedding("zkbund", [bundled]), saved, family)
    standalone = gen("--prompt", "zkbund picture", "--seed", "2")
    assert np.array_equal(arr(plain["images"][0]), arr(standalone["images"][0]))  # A1111 loads the bundle
    save_embedding(Embedding("zkbund", [-bundled]), saved, family)
    override = gen("--prompt", "zkbund picture <lora:bund:1>", "--seed", "2")
    assert np.abs(arr(override["images"][0]) - arr(plain["images"][0])).mean() > 0.1  # the file wins


@pytest.mark.slow
def test_prompt_file_series_with_contact_sheet(tiny_workspace, tmp_path):
    prompts = tmp_path / "story.yaml"
    prompts.write_text("- red\n- prompt: blue\n  steps: 3\n- prompt: green\n  seed: 77\n", encoding="utf-8")
    out = gen("--prompts", str(prompts), "--seed", "5")
    assert out["seeds"] == [5, 5, 77]
    assert Image.open(out["contact_sheet"]).size[0] == 3 * 256
    text = tmp_path / "story.txt"
    text.write_text("red\n# a comment\n\nyellow\n", encoding="utf-8")
    out = gen("--prompts", str(text), "--seed", "5", "--seed-policy", "increment")
    assert out["seeds"] == [5, 6]


def test_bad_inputs_are_one_line_errors(tiny_workspace, tmp_path):
    not_image = tmp_path / "fake.png"
    not_image.write_text("hello")
    cases = [
        (["--init-image", str(not_image)], "fake.png"),
        (["--sampler", "Eulr"], "unknown sampler"),
        (["--width", "100"], "multiple of 8"),
        (["--mask", str(not_image)], "needs an init image"),
    ]
    for extra, needle in cases:
        result = runner.invoke(
            app, ["generate", "--model", "tiny-sd15", "--prompt", "x", "--steps", "2", *extra]
        )
        assert result.exit_code == 2, (extra, result.output)
        assert needle in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not list(tiny_workspace.outputs.rglob("*.png"))  # nothing written half-way


def test_single_file_roundtrip_gives_the_same_image(tiny_workspace, tmp_path):
    from lorastudio.adapters import save_single_file
    from lorastudio.models.loading import load_model

    model = load_model("tiny-sd15", tiny_workspace.models, tiny_workspace.cache)
    single = tmp_path / "tiny15.safetensors"
    save_single_file(model.components, model.family, single, {"lorastudio.base_config": "tiny-sd15"})
    folder = gen("--prompt", "yellow", "--seed", "8")
    result = runner.invoke(
        app,
        ["generate", "--model", str(single), "--prompt", "yellow", "--seed", "8", "--steps", "6", "--json"],
    )
    assert result.exit_code == 0, result.output
    single_out = json.loads(result.stdout.strip().splitlines()[-1])
    assert np.array_equal(arr(single_out["images"][0]), arr(folder["images"][0]))


def test_separate_vae_file_overrides_the_models_vae(tiny_workspace, tmp_path):
    from safetensors.torch import save_file

    from lorastudio.adapters.ldm import vae_to_ldm
    from lorastudio.models.loading import load_model

    model = load_model("tiny-sd15", tiny_workspace.models, tiny_workspace.cache)
    state = {k: v.clone() for k, v in model.vae.state_dict().items()}
    state["decoder.conv_out.bias"] += torch.tensor([0.5, -0.5, 0.0])  # a "warmer" VAE: more red, less green
    vae_file = tmp_path / "warm-vae.safetensors"
    save_file({k: v.contiguous() for k, v in vae_to_ldm(state, model.vae.config).items()}, str(vae_file))
    plain = gen("--prompt", "grey", "--seed", "1")
    warm = gen("--prompt", "grey", "--seed", "1", "--vae", str(vae_file))
    a, b = arr(plain["images"][0]), arr(warm["images"][0])
    assert (b[..., 0] - a[..., 0]).mean() > 20 and (a[..., 1] - b[..., 1]).mean() > 20
    info = json.loads(runner.invoke(app, ["pnginfo", warm["images"][0], "--json"]).stdout)
    assert info["VAE"] == "warm-vae" and len(info["VAE hash"]) == 10


def test_a_missing_lora_fails_before_the_model_is_loaded(tiny_workspace, monkeypatch):
    from lorastudio.errors import NotFoundError
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import run_generation
    from lorastudio.service.model_cache import ModelCache

    cache = ModelCache(tiny_workspace)
    monkeypatch.setattr(cache, "get", lambda *a, **k: pytest.fail("the model was loaded for a request that cannot run"))
    cfg = GenerateConfig(model="tiny-sd15", prompt="x <lora:nope:1>", steps=2, width=64, height=64)
    with pytest.raises(NotFoundError, match="LoRA 'nope' not found"):
        run_generation(tiny_workspace, cfg, cache)


@pytest.mark.slow
def test_lora_tag_dyn_keeps_the_first_ranks(tiny_workspace):
    from lorastudio.adapters import LoraFile, LoraModule, save_kohya
    from lorastudio.models.loading import load_model

    model = load_model("tiny-sd15", tiny_workspace.models, tiny_workspace.cache)
    full = random_lora(model, rank=8, alpha=4.0, scale=0.4)
    cut = LoraFile()  # the same file cut to 2 ranks by hand, at the whole file's alpha / rank
    for (component, path), module in full.modules.items():
        cut.add(component, path, LoraModule(module.down[:2].clone(), module.up[:, :2].clone(), 1.0))
    for name, lora in (("dyl", full), ("cut", cut)):
        save_kohya(lora, tiny_workspace.loras / f"{name}.safetensors", family=model.family)
    whole = arr(gen("--prompt", "blue <lora:dyl:1>", "--seed", "4")["images"][0])
    dyn = arr(gen("--prompt", "blue <lora:dyl:1:1:2>", "--seed", "4")["images"][0])
    by_hand = arr(gen("--prompt", "blue <lora:cut:1>", "--seed", "4")["images"][0])
    assert np.abs(dyn - by_hand).max() <= 1  # 8-bit rounding at most
    assert np.abs(dyn - whole).mean() > 1
