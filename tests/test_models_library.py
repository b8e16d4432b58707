"""Model library, offline loading, safe checkpoint handling, and the fast CLI start."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.errors import LorastudioError, UnsafeFileError

_register()
runner = CliRunner()


def test_help_is_fast_and_imports_no_torch():
    code = "import sys, lorastudio.cli as c; c._register(); print('torch' in sys.modules)"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    help_out = subprocess.run([sys.executable, "-m", "lorastudio", "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "generate" in help_out.stdout
    assert time.perf_counter() - start < 5  # two interpreter starts; each well under a second


def test_tokenizer_is_real_clip_vocabulary(tmp_path):
    from transformers import CLIPTokenizer

    from lorastudio.models.tokenizer import write_clip_tokenizer

    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path / "tok"))
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_models_list_info_json(tiny_workspace):
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["models"]}
    assert rows["tiny-sd15"]["family"] == "sd15" and rows["tiny-sdxl"]["family"] == "sdxl"
    assert len(rows["tiny-sd15"]["hash"]) == 10
    info = json.loads(runner.invoke(app, ["models", "info", "tiny-sd15", "--json"]).stdout)
    assert info["sha256"].startswith(info["hash"]) and info["size_bytes"] > 1_000_000


def test_import_single_file_and_family_detection(tiny_workspace, tmp_path):
    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.models.loading import load_model

    model = load_model("tiny-sd15", tiny_workspace.models, tiny_workspace.cache)
    single = tmp_path / "mini.safetensors"
    save_single_file(model.components, model.family, single, {"lorastudio.base_config": "tiny-sd15"})
    result = runner.invoke(app, ["models", "import", str(single), "--name", "mini", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["family"] == "sd15" and info["kind"] == "single_file"
    import hashlib

    assert info["hash"] == hashlib.sha256(single.read_bytes()).hexdigest()[:10]


def test_an_imported_ckpt_is_found_by_the_hash_a1111_wrote(tiny_workspace, tmp_path):
    """A1111's "Model hash" is the .ckpt's own; the import converts it, and images A1111 made with
    the .ckpt must still find the model (by PNG info and by a recipe)."""
    import hashlib

    from PIL import Image, PngImagePlugin
    from safetensors.torch import load_file

    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.models.loading import load_model
    from lorastudio.service.recipes import config_from_recipe

    model = load_model("tiny-sd15", tiny_workspace.models, tiny_workspace.cache)
    single = tmp_path / "mini.safetensors"
    save_single_file(model.components, model.family, single, {"lorastudio.base_config": "tiny-sd15"})
    ckpt = tmp_path / "old-mix.ckpt"
    torch.save({"state_dict": load_file(single), "global_step": 1}, ckpt)
    a1111_hash = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:10]
    result = runner.invoke(app, ["models", "import", str(ckpt), "--name", "mix"])
    assert result.exit_code == 0, result.output
    assert f"converted from a .ckpt with hash {a1111_hash}" in result.output
    info = json.loads(runner.invoke(app, ["models", "info", "mix", "--json"]).stdout)
    assert info["original_hash"] == a1111_hash != info["hash"]
    picture = tmp_path / "a1111.png"
    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", f"a cat\nSteps: 5, Sampler: Euler, Seed: 3, Model hash: {a1111_hash}, Model: old-mix")
    Image.new("RGB", (8, 8)).save(picture, pnginfo=text)
    assert config_from_recipe(picture, tiny_workspace).model == "mix"
    from lorastudio.models.loading import single_file_sha256

    stored = tiny_workspace.models / "mix.safetensors"  # what its images write as "Model hash", as A1111
    assert single_file_sha256(stored, tiny_workspace.cache)[:10] == a1111_hash


def test_a_file_name_with_spaces_imports_under_a_safe_name(tiny_workspace, tmp_path):
    """A1111 takes any file name; without --name the stem becomes a safe name (CJK kept) and is said."""
    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.models.loading import load_model
    from lorastudio.service.workspace import name_from_stem, safe_name

    model = load_model("tiny-sd15", tiny_workspace.models, tiny_workspace.cache)
    single = tmp_path / "国风_模型 v2.safetensors"
    save_single_file(model.components, model.family, single, {"lorastudio.base_config": "tiny-sd15"})
    result = runner.invoke(app, ["models", "import", str(single)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("imported 国风_模型 v2.safetensors as 国风_模型_v2 (sd15")
    assert (tiny_workspace.models / "国风_模型_v2.safetensors").is_file()
    again = runner.invoke(app, ["models", "import", str(single)])
    assert again.exit_code != 0 and "'国风_模型_v2' already exists" in again.output
    for stem in ("add_detail (v2)", "..hidden", "a..b", "  ", "x\ny", "国风" * 60):
        assert safe_name(name_from_stem(stem, "model"), "model name")  # a 360-byte stem is cut to fit


def test_a_ckpt_dropped_into_models_is_listed_described_and_deleted_as_a1111_lists_it(tiny_workspace, tmp_path):
    """`models list` skipped a .ckpt that `generate --model` used; `models info` called it a broken .safetensors."""
    from safetensors.torch import load_file

    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.models.loading import load_model

    model = load_model("tiny-sd15", tiny_workspace.models, tiny_workspace.cache)
    single = tmp_path / "mini.safetensors"
    save_single_file(model.components, model.family, single, {"lorastudio.base_config": "tiny-sd15"})
    torch.save({"state_dict": load_file(single)}, tiny_workspace.models / "dropped.ckpt")
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    rows = {row["name"]: row for row in (listed["models"] if isinstance(listed, dict) else listed)}
    assert rows["dropped"]["family"] == "sd15" and rows["dropped"]["hash"]
    info = runner.invoke(app, ["models", "info", "dropped", "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["family"] == "sd15"
    assert runner.invoke(app, ["models", "delete", "dropped"]).exit_code == 0
    assert not (tiny_workspace.models / "dropped.ckpt").exists()


def test_a_broken_checkpoint_is_read_once_not_at_every_listing(tiny_workspace, monkeypatch):
    from lorastudio.service import models as service_models

    (tiny_workspace.models / "broken.ckpt").write_bytes(b"not a pickle at all")
    calls = []
    real = service_models._describe

    def counting(ws, name, path):
        calls.append(name)
        return real(ws, name, path)

    monkeypatch.setattr(service_models, "_describe", counting)
    for _ in range(3):
        rows = {row["name"]: row for row in service_models.list_models(tiny_workspace)}
        assert rows["broken"]["error"]
    assert calls.count("broken") == 1


def test_pickled_checkpoint_with_code_is_refused(tmp_path):
    from lorastudio.models.checkpoint import load_pickled_state_dict

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    bad = tmp_path / "evil.ckpt"
    with open(bad, "wb") as f:
        pickle.dump({"state_dict": {"x": Evil()}}, f)
    with pytest.raises(UnsafeFileError, match="evil.ckpt: refused"):
        load_pickled_state_dict(bad)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, good)
    assert torch.equal(load_pickled_state_dict(good)["w"], torch.ones(2))


def _fake_lightning_callback(monkeypatch):
    """A class pickled under pytorch_lightning's ModelCheckpoint name, as old SD trainers saved it."""
    import types

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = "pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"
    module = types.ModuleType(ModelCheckpoint.__module__)
    module.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", ModelCheckpoint.__module__):
        monkeypatch.setitem(sys.modules, name, module)
    return ModelCheckpoint


def test_old_sd_checkpoints_load_weights_only(tmp_path, monkeypatch, capfd):
    """numpy `global_step`s and lightning callbacks load as A1111 loads them, with no code run."""
    import numpy as np

    from lorastudio.models.checkpoint import load_pickled_state_dict

    callback = _fake_lightning_callback(monkeypatch)
    weights = {"w": torch.ones(2)}
    saves = {
        "numpy_step.ckpt": {"state_dict": weights, "global_step": np.int64(470000), "epoch": 6},
        "callback_class.ckpt": {"state_dict": weights, "callbacks": {callback: {"best_model_score": None}}},
        "callback_object.ckpt": {"state_dict": weights, "callback": callback()},
    }
    for name, data in saves.items():
        torch.save(data, tmp_path / name)
    legacy = tmp_path / "legacy_numpy1.ckpt"  # the non-zip format, with numpy 1's module path
    torch.save(saves["numpy_step.ckpt"], legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes().replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    monkeypatch.undo()  # loading must not need the real pytorch_lightning
    capfd.readouterr()
    for path in [*(tmp_path / name for name in saves), legacy]:
        assert torch.equal(load_pickled_state_dict(path)["w"], torch.ones(2)), path.name
    assert capfd.readouterr().err == ""  # no warning about the legacy format's pickle protocol


def test_checkpoint_refusal_names_what_torch_refused(tmp_path):
    import os

    import numpy as np

    from lorastudio.models.checkpoint import load_pickled_state_dict

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {"w": torch.ones(2)}, "array": np.arange(3)}, tmp_path / "array.ckpt")
    torch.save({"state_dict": {"w": torch.ones(2)}, "evil": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeFileError) as info:
        load_pickled_state_dict(tmp_path / "array.ckpt")
    message = str(info.value)
    assert "Unsupported global: GLOBAL numpy._core.multiarray._reconstruct" in message
    assert "trust" not in message and "weights_only" not in message and len(message.splitlines()) == 1
    with pytest.raises(UnsafeFileError, match=r"evil.ckpt: refused .*GLOBAL \w+\.system"):
        load_pickled_state_dict(tmp_path / "evil.ckpt")
    assert not marker.exists()


class _ForgedVoidDtype:
    """A void dtype whose pickled state claims an object field (numpy's flags say it holds none)."""

    def __reduce__(self):
        import numpy as np

        return (np.dtype, ("V8", False, True), (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0))


class _ForgedScalar:
    """A scalar of that dtype from 8 chosen bytes: reading its field followed a forged pointer."""

    def __reduce__(self):
        from numpy._core.multiarray import scalar

        return (scalar, (_ForgedVoidDtype(), b"\x41" * 8))


def test_a_numpy_scalar_that_forges_a_pointer_is_refused_not_a_crash(tmp_path):
    """The numpy globals an old checkpoint may use take plain number types only: a forged void
    scalar read through OrderedDict segfaulted the reader (a crafted .ckpt crashed the worker)."""
    import collections

    from lorastudio.models.checkpoint import load_pickled_state_dict

    class Trigger:
        def __reduce__(self):
            return (collections.OrderedDict, (_ForgedScalar(),))

    torch.save({"state_dict": {"w": torch.ones(2)}, "bad": Trigger()}, tmp_path / "forged.ckpt")
    with pytest.raises(UnsafeFileError, match="forged.ckpt: refused .*'V8' is not a plain number type"):
        load_pickled_state_dict(tmp_path / "forged.ckpt")


def test_corrupt_checkpoint_is_one_clear_line(tiny_workspace, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    result = runner.invoke(app, ["generate", "--model", str(broken), "--prompt", "x", "--steps", "1"])
    assert result.exit_code == 2
    assert "broken.safetensors" in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_model_and_unknown_family_errors(tiny_workspace):
    from lorastudio.models.families import detect_family_from_keys, get_family

    result = runner.invoke(app, ["generate", "--model", "no-such-model", "--prompt", "x"])
    assert result.exit_code == 2 and "model 'no-such-model' not found" in result.output
    with pytest.raises(LorastudioError, match="not a Stable Diffusion checkpoint"):
        detect_family_from_keys(["foo.weight"])
    with pytest.raises(LorastudioError) as unet_only:  # no option to pass: say what the user can do
        detect_family_from_keys(["model.diffusion_model.input_blocks.0.0.weight"], "unet.safetensors")
    assert "--family" not in str(unet_only.value) and "full checkpoint" in str(unet_only.value)
    assert (
        detect_family_from_keys(
            [
                "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
                "model.diffusion_model.x",
            ]
        ).name
        == "sdxl"
    )
    assert get_family("sd_v1").name == "sd15"


def test_shipped_configs_load_offline_for_every_family(tmp_path):
    """The per-family config folders build real pipelines with no hub access (meta weights only)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    from lorastudio.models.families import FAMILIES
    from lorastudio.models.loading import config_folder

    # Families with A1111 single files; Kolors has none (its files are UNet-only, over a folder).
    for family in (f for f in FAMILIES.values() if f.single_file_markers):
        folder = config_folder(family, tmp_path)
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        assert unet.config.cross_attention_dim in (768, 1024, 2048)
        assert CLIPTextConfig.from_pretrained(folder / "text_encoder").vocab_size == 49408
        pad = CLIPTokenizer.from_pretrained(folder / "tokenizer").pad_token
        assert pad == family.tokenizer_pad_tokens[0]


def test_tiny_vae_passes_colours_and_is_built_reproducibly():
    from lorastudio.models.tiny_colours import make_colour_passthrough
    from lorastudio.models.tiny_layouts import make_vae

    built = []
    for _ in range(2):
        torch.manual_seed(0)
        vae = make_vae()
        scale = make_colour_passthrough(vae)
        built.append((scale, {k: v.clone() for k, v in vae.state_dict().items()}))
    assert built[0][0] == built[1][0]
    assert all(torch.equal(built[0][1][k], built[1][1][k]) for k in built[0][1])
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 64, 64)
    with torch.no_grad():
        out = vae.decode(vae.encode(red).latent_dist.mean).sample.mean((2, 3)).squeeze()
    assert torch.allclose(out, torch.tensor([1.0, -1.0, -1.0]), atol=0.15)


def test_model_cache_evicts_least_recently_used_over_budget(tiny_workspace):
    from lorastudio.service.model_cache import ModelCache, model_bytes

    cache = ModelCache(tiny_workspace, max_models=3)
    sd15 = cache.get("tiny-sd15")
    assert cache.get("tiny-sd15") is sd15  # loaded once
    budget = model_bytes(sd15) + 1000
    cache = ModelCache(tiny_workspace, max_models=3, memory_budget_bytes=budget)
    cache.get("tiny-sd15")
    cache.get("tiny-sdxl")  # both together exceed the budget: tiny-sd15 (least recent) goes
    assert cache.loaded_names() == {"tiny-sdxl"}


def test_models_list_columns_line_up_with_chinese_names(monkeypatch):
    """Names were padded by characters; a CJK letter takes two terminal columns."""
    from lorastudio.service import models as service_models

    row = {"family": "sd15", "hash": "0123456789", "size_bytes": 2048, "path": "/m"}
    rows = [dict(row, name="mix"), dict(row, name="国风_模型_v2")]  # 3 and 12 columns wide
    monkeypatch.setattr(service_models, "list_models", lambda ws: rows)
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    ascii_line, wide_line = result.output.splitlines()
    assert ascii_line.startswith("mix" + " " * 29 + " sd15")
    assert wide_line.startswith("国风_模型_v2" + " " * 20 + " sd15")
