"""Generation fields from one source: CLI options from GenerateConfig, one A1111 field table,
one infotext reader, and `eta` as the field added in one place."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import typer
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.generate.a1111_fields import A1111_FIELDS, a1111_request_names
from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.infotext import encode_user_comment, parse_infotext, read_infotext, save_png
from lorastudio.generate.samplers import parse_sampler

_register()
runner = CliRunner()
GRID_EXCLUDED = {"batch_size", "count"}
UNIT_FIELDS = {"controlnet"}  # a list of units: its own repeatable flag (--control)


def _command(name: str):
    return typer.main.get_command(app).commands[name]


def _png_with(tmp_path, text: str, name: str = "a1111.png"):
    return save_png(Image.new("RGB", (8, 8)), tmp_path / name, text)


# --- CLI options from the model ----------------------------------------------------------------


@pytest.mark.parametrize("command", ["generate", "grid"])
def test_every_config_field_is_an_option_with_its_description(command):
    params = {p.name: p for p in _command(command).params}
    expected = set(GenerateConfig.model_fields) - UNIT_FIELDS - (GRID_EXCLUDED if command == "grid" else set())
    assert expected <= set(params)
    for name in expected:
        description = GenerateConfig.model_fields[name].description
        assert description.replace("[", "\\[") in params[name].help, name
    if command == "grid":
        assert not GRID_EXCLUDED & set(params)


def _captured_config(monkeypatch, args: list[str]) -> GenerateConfig:
    import lorastudio.service.generation as generation

    seen = {}

    class Result:
        images: list = []

        def as_json(self):
            return {"notes": []}

    def fake_run(ws, cfg, **kwargs):
        seen["cfg"] = cfg
        return Result()

    monkeypatch.setattr(generation, "run_generation", fake_run)
    result = runner.invoke(app, ["generate", *args])
    assert result.exit_code == 0, result.output
    return seen["cfg"]


def test_old_and_new_flags_give_the_same_config(workspace, monkeypatch):
    old = [
        "-p", "a cat", "--negative", "dog", "--cfg", "5.5", "--batch", "2",
        "--init-image", "x.png", "--mask", "m.png", "--padding", "12", "--only-masked",
    ]  # fmt: skip
    new = [
        "--prompt", "a cat", "--negative-prompt", "dog", "--cfg-scale", "5.5", "--batch-size", "2",
        "--init-image", "x.png", "--mask", "m.png", "--inpaint-padding", "12", "--inpaint-only-masked",
    ]  # fmt: skip
    first = _captured_config(monkeypatch, old)
    assert first == _captured_config(monkeypatch, new)
    assert (first.negative_prompt, first.cfg_scale, first.batch_size, first.inpaint_padding) == ("dog", 5.5, 2, 12)
    assert first.inpaint_only_masked is True
    assert _captured_config(monkeypatch, ["-n", "dog", "--whole-picture"]).inpaint_only_masked is False
    assert _captured_config(monkeypatch, ["--eta", "0.5", "--sampler", "DDIM"]).eta == 0.5


# --- the A1111 field table: the disagreements it settles ----------------------------------------


def _recipe(tmp_path, workspace, params: str, prompt: str = "a cat"):
    from lorastudio.service.generation import config_from_recipe

    path = _png_with(tmp_path, f"{prompt}\nSteps: 5, {params}, Model: tiny-sd15")
    return config_from_recipe(path, workspace)


@pytest.mark.parametrize(
    ("upscaler", "expected"),
    [("Latent (nearest-exact)", "Latent (nearest-exact)"), ("R-ESRGAN 4x+", "R-ESRGAN 4x+"), ("latent", "Latent")],
)
def test_1_any_hires_upscaler_in_a_recipe_reads(tmp_path, workspace, upscaler, expected):
    cfg = _recipe(
        tmp_path, workspace, f"Sampler: Euler, Seed: 1, Size: 64x64, Denoising strength: 0.4, "
        f"Hires upscale: 2, Hires upscaler: {upscaler}",
    )  # fmt: skip
    assert cfg.hires_upscaler == expected and cfg.hires_scale == 2.0 and cfg.hires_strength == 0.4
    assert cfg.strength == GenerateConfig().strength  # 6: the key went to the hires pass only


def test_2_old_karras_suffix_survives_a_recipe_and_wins_as_in_a1111(tmp_path, workspace):
    cfg = _recipe(tmp_path, workspace, "Sampler: DPM++ 2M Karras, Seed: 1, Size: 64x64")
    assert parse_sampler(cfg.sampler, cfg.schedule).schedule == "Karras"
    # A1111's get_sampler_and_scheduler: a schedule in the sampler's name replaces the one given
    cfg = _recipe(tmp_path, workspace, "Sampler: DPM++ 2M Karras, Schedule type: Exponential, Seed: 1")
    assert parse_sampler(cfg.sampler, cfg.schedule).schedule == "Karras"
    assert parse_sampler("DPM++ 2M", "Exponential").schedule == "Exponential"


def test_3_a1111_schedule_spellings_work_everywhere(tmp_path, workspace, monkeypatch):
    for spelling, label in (("sgm_uniform", "SGM Uniform"), ("karras", "Karras"), ("SGM Uniform", "SGM Uniform")):
        cfg = GenerateConfig(sampler="Euler", schedule=spelling)
        assert cfg.schedule == spelling  # the recipe keeps what the user wrote
        assert parse_sampler(cfg.sampler, cfg.schedule).schedule == label
    cfg = _captured_config(monkeypatch, ["--sampler", "Euler", "--schedule", "sgm_uniform"])
    assert parse_sampler(cfg.sampler, cfg.schedule).schedule == "SGM Uniform"
    cfg = _recipe(tmp_path, workspace, "Sampler: Euler, Schedule type: sgm_uniform, Seed: 1")
    assert cfg.schedule == "SGM Uniform"
    with pytest.raises(ValueError, match="schedule"):
        GenerateConfig(schedule="wobbly")


def test_4_vae_is_read_back_by_name(tmp_path, workspace):
    (workspace.models / "myvae.safetensors").write_bytes(b"0")  # found by name; not loaded here
    cfg = _recipe(tmp_path, workspace, "Sampler: Euler, Seed: 1, VAE hash: 0123456789, VAE: myvae")
    assert cfg.vae == "myvae"
    with pytest.raises(NotFoundError, match="VAE 'othervae'"):
        _recipe(tmp_path, workspace, "Sampler: Euler, Seed: 1, VAE: othervae")


def test_4_a_missing_recipe_vae_is_replaced_by_the_one_the_user_passes(tmp_path, workspace, monkeypatch):
    """The refusal says "pass --vae": passing it works (the image's VAE is never looked up)."""
    (workspace.models / "myvae.safetensors").write_bytes(b"0")
    path = _png_with(tmp_path, "a cat\nSteps: 5, Sampler: Euler, Seed: 1, VAE: othervae, Model: tiny-sd15")
    cfg = _captured_config(monkeypatch, ["--recipe", str(path), "--vae", "myvae"])
    assert (cfg.vae, cfg.seed, cfg.prompt) == ("myvae", 1, "a cat")


def test_a_missing_recipe_model_is_replaced_by_the_one_the_user_passes(tmp_path, workspace, monkeypatch):
    """The refusal says "pass --model": passing it works, for an image whose model this workspace lacks
    and for one that names none (A1111 texts without `Model:`); the Generate form keeps its model."""
    from lorastudio.service.recipes import config_from_recipe, read_recipe

    def missing_model_of(image, ws):
        notes = [n for n in read_recipe(image, ws, model="tiny-sd15").notes if n.key == "model_kept"]
        return notes[0].params["named"] if notes else None

    elsewhere = _png_with(tmp_path, "a cat\nSteps: 5, Sampler: Euler, Seed: 3, Model hash: 0123abcd, Model: my-mix", "a.png")
    with pytest.raises(NotFoundError, match="my-mix.*--model NAME"):
        config_from_recipe(elsewhere, workspace)
    cfg = _captured_config(monkeypatch, ["--recipe", str(elsewhere), "--model", "tiny-sd15"])
    assert (cfg.model, cfg.seed, cfg.prompt) == ("tiny-sd15", 3, "a cat")
    assert missing_model_of(elsewhere, workspace) == "my-mix"
    unnamed = _png_with(tmp_path, "a dog\nSteps: 5, Sampler: Euler, Seed: 4", "b.png")
    with pytest.raises(NotFoundError, match="does not say which model"):
        config_from_recipe(unnamed, workspace)
    assert config_from_recipe(unnamed, workspace, model="tiny-sd15").model == "tiny-sd15"
    assert missing_model_of(unnamed, workspace) is None  # nothing named: nothing to warn about
    here = _png_with(tmp_path, "a cow\nSteps: 5, Sampler: Euler, Seed: 5, Model: tiny-sd15", "c.png")
    assert config_from_recipe(here, workspace, model="other").model == "tiny-sd15"  # the image's own wins
    assert missing_model_of(here, workspace) is None


def test_a_recipe_draws_the_images_noise_source_and_notes_what_can_still_differ(tmp_path, workspace):
    """The image's `RNG` comes back as `rng` (none: A1111's GPU, or CPU for lorastudio's older images);
    notes say where the noise can still differ: a large latent on a smaller NVIDIA card, a sampler lorastudio
    ran otherwise before its images wrote `RNG`. A1111's per-step noise (its CPU generator continued, an ENSD,
    the SDE samplers' Brownian trees) is drawn as A1111 draws it: no note."""
    from lorastudio.service.recipes import read_recipe
    from lorastudio.ui.i18n import translator

    common = "a cat\nSteps: 5, Seed: 3, Model: tiny-sd15"
    a1111 = ", Version: v1.10.1"
    cases = {
        "gpu-small.png": (", Sampler: Euler a, Size: 512x512" + a1111, "GPU", []),
        "gpu-large.png": (", Sampler: Euler, Size: 1024x1024" + a1111, "GPU", [("noise_gpu_layout", "65536")]),
        "gpu-hires.png": (", Sampler: Euler, Size: 512x512, Hires upscale: 2" + a1111, "GPU", [("noise_gpu_layout", "65536")]),
        "nv.png": (", Sampler: Euler a, Size: 1024x1024, RNG: NV" + a1111, "NV", []),
        "cpu-euler-a.png": (", Sampler: Euler a, RNG: CPU" + a1111, "CPU", []),
        "cpu-euler.png": (", Sampler: Euler, RNG: CPU" + a1111, "CPU", []),
        "ddim-eta-0.png": (", Sampler: DDIM, RNG: CPU" + a1111, "CPU", []),
        "ddim-eta.png": (", Sampler: DDIM, Eta DDIM: 0.5, RNG: CPU" + a1111, "CPU", []),
        "ensd.png": (", Sampler: Euler a, RNG: NV, ENSD: 31337" + a1111, "NV", []),
        "sde.png": (", Sampler: DPM++ 2M SDE Karras, RNG: NV" + a1111, "NV", []),
        "ours-before.png": (", Sampler: Euler a, Version: lorastudio 0.1.0", "CPU", []),  # made before RNG was written
        "ours-2s-a.png": (", Sampler: DPM++ 2S a, Version: lorastudio 0.1.0", "CPU", [("noise_old_sampler", "DPM++ 2S a")]),
        "ours-karras.png": (", Sampler: Euler a, Schedule type: Karras, Version: lorastudio 0.1.0", "CPU",
                            [("noise_old_sampler", "Euler a")]),
        "ours-sde.png": (", Sampler: DPM++ SDE, RNG: CPU, Version: lorastudio 0.1.0", "CPU", []),
        # the hires pass's own sampler was run otherwise too: its own, or the first's on the hires schedule type
        "ours-hires-2s-a.png": (", Sampler: Euler, Hires upscale: 2, Hires sampler: DPM++ 2S a, Version: lorastudio 0.1.0",
                                "CPU", [("noise_old_sampler", "DPM++ 2S a")]),
        "ours-hires-karras.png": (", Sampler: Euler a, Hires upscale: 2, Hires schedule type: Karras, Version: lorastudio"
                                  " 0.1.0", "CPU", [("noise_old_sampler", "Euler a")]),
        "ours-hires-inherits.png": (", Sampler: DPM++ 2M, Schedule type: Karras, Hires upscale: 2, Hires sampler: Euler a,"
                                    " Version: lorastudio 0.1.0", "CPU", [("noise_old_sampler", "Euler a")]),
        "ours-both.png": (", Sampler: DPM++ 2S a, Hires upscale: 2, Hires sampler: DPM++ SDE, Version: lorastudio 0.1.0",
                          "CPU", [("noise_old_sampler", "DPM++ 2S a"), ("noise_old_sampler", "DPM++ SDE")]),
        "ours-hires-same.png": (", Sampler: Euler, Hires upscale: 2, Hires sampler: Use same sampler, Version: lorastudio"
                                " 0.1.0", "CPU", []),
        "a1111-hires-2s-a.png": (", Sampler: Euler, Hires upscale: 2, Hires sampler: DPM++ 2S a, RNG: CPU" + a1111, "CPU",
                                 []),
    }  # fmt: skip
    for name, (keys, source, expected) in cases.items():
        recipe = read_recipe(_png_with(tmp_path, common + keys, name), workspace)
        assert recipe.config.rng == source, name
        assert [(n.key, next(iter(n.params.values()))) for n in recipe.notes] == expected, name
        for note in recipe.notes:  # the web page words each note in both languages
            assert note.text and "\n" not in note.text
            for lang in ("en", "zh"):
                worded = translator(lang)(f"png.{note.key}", **note.params)
                assert all(value in worded for value in note.params.values())


def test_5_and_6_inpaint_fields_and_img2img_strength_are_read_back(tmp_path, workspace):
    cfg = _recipe(
        tmp_path, workspace, "Sampler: Euler, Seed: 1, Size: 64x64, Denoising strength: 0.35, "
        "Mask blur: 9, Inpaint area: Only masked, Masked area padding: 20, Masked content: latent noise",
    )  # fmt: skip
    assert (cfg.mask_blur, cfg.inpaint_only_masked, cfg.inpaint_padding) == (9, True, 20)
    assert cfg.inpainting_fill == 2 and cfg.strength == 0.35
    assert cfg.hires_strength == GenerateConfig().hires_strength


def test_a_broken_number_in_an_infotext_is_one_line(tmp_path, workspace):
    with pytest.raises(LorastudioError, match="'Steps'"):
        _recipe(tmp_path, workspace, "Sampler: Euler, Seed: 1, Steps: many")


def test_dialect_defaults_are_pinned_and_errors_use_a1111_names():
    from lorastudio.api.a1111_requests import Img2ImgRequest

    api = {row.field: row.api_default for row in A1111_FIELDS if row.api_default is not None}
    assert (api["hires_strength"], api["inpaint_padding"], api["inpaint_only_masked"]) == (0.75, 0, True)  # processing.py: Txt2Img denoising_strength = 0.75
    config = GenerateConfig()
    assert (config.hires_strength, config.inpaint_padding, config.inpaint_only_masked) == (0.5, 32, False)
    request = Img2ImgRequest()
    assert (request.inpaint_full_res_padding, request.inpaint_full_res, request.denoising_strength) == (
        0, True, 0.75,
    )  # fmt: skip
    names = a1111_request_names()
    for field, name in {
        "hires_upscaler": "hr_upscaler", "inpaint_only_masked": "inpaint_full_res",
        "init_image": "init_images", "seed_resize_from_w": "seed_resize_from_w", "eta": "eta",
        "count": "n_iter", "cfg_scale": "cfg_scale",
    }.items():  # fmt: skip
        assert names[field] == name


def _infotext_fields() -> list[str]:
    return [row.field for row in A1111_FIELDS if row.field and row.infotext_key and row.read]


@pytest.mark.parametrize(
    "request_fields",
    [
        dict(sampler="DPM++ 2M", schedule="Karras", steps=9, cfg_scale=5.5, seed=3, subseed=8,
             subseed_strength=0.25, seed_resize_from_w=72, seed_resize_from_h=80, clip_skip=2,
             hires_scale=1.5, hires_steps=4, hires_strength=0.3, hires_upscaler="Lanczos"),
        dict(sampler="DDIM", eta=0.5),
        dict(sampler="Euler", schedule="SGM Uniform", init_image="x.png", mask="m.png", strength=0.6,
             mask_blur=6, inpaint_only_masked=True, inpaint_padding=16, inpainting_fill=2, vae="myvae"),
    ],
)  # fmt: skip
def test_every_infotext_row_reads_back_what_it_writes(request_fields):
    from lorastudio.generate.a1111_fields import InfotextFacts, config_fields_from_infotext, infotext_params
    from lorastudio.generate.infotext import format_infotext

    cfg = GenerateConfig(model="tiny-sd15", prompt="a, b: c", width=64, height=64, **request_fields)
    facts = InfotextFacts(
        sampler=cfg.sampler, schedule=cfg.schedule, width=64, height=64, seed=cfg.seed, subseed=cfg.subseed,
        model_hash="0123456789", model_name="tiny-sd15", vae_name=cfg.vae,
    )  # fmt: skip
    text = format_infotext(cfg.prompt, cfg.negative_prompt, infotext_params(cfg, facts))
    back = GenerateConfig.model_validate(config_fields_from_infotext(parse_infotext(text, fill_defaults=False)))
    for name in _infotext_fields():
        assert getattr(back, name) == getattr(cfg, name), (name, text)


def test_a_lorastudio_inpaint_png_reproduces_through_recipe(tiny_workspace, one_torch_thread):
    from lorastudio.service.generation import config_from_recipe, run_generation

    init, mask = tiny_workspace.root / "init.png", tiny_workspace.root / "mask.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(init)
    hole = Image.new("L", (64, 64), 0)
    hole.paste(255, (16, 16, 48, 48))
    hole.save(mask)
    cfg = GenerateConfig(
        model="tiny-sd15", prompt="a cat", steps=3, width=64, height=64, seed=4, init_image=str(init),
        mask=str(mask), strength=0.6, mask_blur=6, inpaint_only_masked=True, inpaint_padding=16,
        inpainting_fill=2,
    )  # fmt: skip
    image = run_generation(tiny_workspace, cfg).images[0]
    back = config_from_recipe(image.path, tiny_workspace)
    for name in _infotext_fields():
        if name != "vae":
            assert getattr(back, name) == getattr(cfg, name), name


# --- one infotext reader -------------------------------------------------------------------------


def _png_bytes(chunk: str | None = None, exif: bytes | None = None) -> bytes:
    image = Image.new("RGB", (8, 8))
    info = PngImagePlugin.PngInfo()
    if chunk is not None:
        info.add_text("parameters", chunk)
    info.add_text("Software", "test")
    buffer = io.BytesIO()
    kwargs = {"exif": exif} if exif is not None else {}
    image.save(buffer, format="PNG", pnginfo=info, **kwargs)
    return buffer.getvalue()


def _exif_with_comment(text: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = encode_user_comment(text)
    return exif.tobytes()


CHUNK = "from the chunk\nSteps: 3, Sampler: Euler, Seed: 1, Size: 64x64"
EXIF = "from exif\nSteps: 7, Sampler: DDIM, Seed: 2, Size: 64x64"


def test_png_info_route_and_cli_agree_and_exif_wins(tmp_path, client):
    data = _png_bytes(CHUNK, _exif_with_comment(EXIF))
    path = tmp_path / "both.png"
    path.write_bytes(data)
    answer = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(data).decode()})
    assert answer.status_code == 200, answer.text
    cli = runner.invoke(app, ["pnginfo", str(path), "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == answer.json()["parameters"] == parse_infotext(EXIF)
    assert answer.json()["info"] == EXIF == read_infotext(path) == read_infotext(data)
    assert answer.json()["items"] == {"Software": "test"}


def test_broken_exif_is_ignored(tmp_path, client):
    broken = b"garbage"  # Pillow raises SyntaxError reading it
    data = _png_bytes(CHUNK, broken)
    answer = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(data).decode()})
    assert answer.status_code == 200 and answer.json()["info"] == CHUNK


def test_gif_comment_is_read(tmp_path):
    path = tmp_path / "a.gif"
    Image.new("P", (8, 8)).save(path, comment=CHUNK.encode())
    assert read_infotext(path) == CHUNK


# --- eta: a new field in one place ---------------------------------------------------------------


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.mark.slow
def test_eta_changes_ddim_and_travels_through_infotext_recipe_and_api(tiny_workspace, client, one_torch_thread):
    from lorastudio.service.generation import config_from_recipe, run_generation

    base = dict(model="tiny-sd15", prompt="a cat", steps=4, width=64, height=64, seed=5, sampler="DDIM")
    plain = run_generation(tiny_workspace, GenerateConfig(**base)).images[0]
    with_eta = run_generation(tiny_workspace, GenerateConfig(**base, eta=0.5)).images[0]
    assert np.abs(_pixels(plain.path) - _pixels(with_eta.path)).max() > 0
    assert "Eta DDIM" not in plain.infotext
    assert "Eta DDIM: 0.5" in with_eta.infotext
    again = run_generation(tiny_workspace, config_from_recipe(with_eta.path, tiny_workspace)).images[0]
    assert again.infotext == with_eta.infotext
    assert np.array_equal(_pixels(again.path), _pixels(with_eta.path))
    request = {"prompt": "a cat", "steps": 4, "width": 64, "height": 64, "seed": 5, "sampler_name": "DDIM"}
    answer = client.post("/sdapi/v1/txt2img", json={**request, "eta": 0.5})
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["info"])["infotexts"][0] == with_eta.infotext
    # webuiapi sends eta=1.0 with every request; Euler a ignores it, so its infotext says nothing
    euler = client.post("/sdapi/v1/txt2img", json={**request, "sampler_name": "Euler a", "eta": 1.0})
    assert "Eta" not in json.loads(euler.json()["info"])["infotexts"][0]


def test_the_web_forms_recipe_splits_the_sampler_and_leaves_out_what_this_studio_lacks(tmp_path, workspace):
    """A1111's paste into txt2img: a pre-1.9 `DPM++ 2M Karras` fills both pickers; a VAE, schedule or
    hires upscaler this studio lacks is left out with a note (the CLI's --recipe refuses the VAE)."""
    from lorastudio.errors import LorastudioError
    from lorastudio.service.recipes import read_recipe

    text = (
        "a cat\nSteps: 5, Sampler: DPM++ 2M Karras, Seed: 1, Size: 64x64, Model: tiny-sd15, "
        "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.4, Hires upscale: 2, "
        "Hires upscaler: R-ESRGAN 4x+"
    )
    image = _png_with(tmp_path, text)
    with pytest.raises(LorastudioError, match="VAE"):
        read_recipe(image, workspace)
    recipe = read_recipe(image, workspace, form=True)
    assert (recipe.config.sampler, recipe.config.schedule) == ("DPM++ 2M", "Karras")
    assert recipe.config.vae is None and recipe.config.hires_upscaler == GenerateConfig().hires_upscaler
    assert {n.key for n in recipe.notes} >= {"vae_missing", "hires_upscaler_missing"}
    aligned = read_recipe(_png_with(tmp_path, "a cat\nSteps: 5, Sampler: Euler, Schedule type: Align Your Steps, Seed: 1",
                                    "ays.png"), workspace, model="tiny-sd15", form=True)  # fmt: skip
    assert (aligned.config.sampler, aligned.config.schedule) == ("Euler", None)
    assert [n.key for n in aligned.notes if n.key.endswith("unknown")] == ["schedule_unknown"]
    restart = read_recipe(_png_with(tmp_path, "a cat\nSteps: 5, Sampler: Restart, Seed: 1", "restart.png"),
                          workspace, model="tiny-sd15", form=True)  # fmt: skip
    assert "sampler_unknown" in {n.key for n in restart.notes} and restart.config.sampler == GenerateConfig().sampler
