"""An SD 2.x single file predicts v (768-v and its fine-tunes) or the noise (512-base, the 512
inpainting model): the file's own spec, an LDM yaml beside it, a 9-channel UNet, else the UNet
itself says which. Every SD 2.x file was read as v before, so 512-base fine-tunes sampled wrongly.

The files here carry no `lorastudio.base_config`, so they load as a civitai file does; only the
family's shipped full-size config folder is swapped for tiny-sd2's configs (same overrides)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lorastudio.models import loading


@pytest.fixture
def tiny_configs(tiny_workspace, monkeypatch):
    """`config_folder` answering with tiny-sd2's configs, overrides applied as the real one does."""
    tiny = tiny_workspace.models / "tiny-sd2"

    def fake(family, cache_dir, unet_overrides=None, scheduler_overrides=None):
        tag = json.dumps([unet_overrides or {}, scheduler_overrides or {}], sort_keys=True)
        folder = cache_dir / "fake-configs" / str(abs(hash(tag)))
        if not folder.is_dir():
            shutil.copytree(tiny, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "lorastudio.json"))
            for part, name, changes in (("unet", "config.json", unet_overrides), ("scheduler", "scheduler_config.json", scheduler_overrides)):  # fmt: skip
                config = json.loads((folder / part / name).read_text())
                config.update(changes or {})
                (folder / part / name).write_text(json.dumps(config))
        return folder

    monkeypatch.setattr(loading, "config_folder", fake)
    return tiny_workspace


@pytest.fixture(scope="module")
def tiny_sd2(tiny_models_dir):
    return loading.load_model("tiny-sd2", tiny_models_dir, tiny_models_dir / ".cache", device="cpu")


def _sd2_file(model, path, out_bias: float, metadata: dict | None = None, nine_channels: bool = False):
    """tiny-sd2 as a plain SD 2.x file whose UNet answers a constant `out_bias` (zeroed output conv)."""
    from lorastudio.adapters.ldm import save_single_file

    unet = model.unet
    kept = unet.conv_in, unet.conv_out.weight.clone(), unet.conv_out.bias.clone()
    with torch.no_grad():
        unet.conv_out.weight.zero_()
        unet.conv_out.bias.fill_(out_bias)
        if nine_channels:
            plain = unet.conv_in
            unet.conv_in = torch.nn.Conv2d(9, plain.out_channels, plain.kernel_size, padding=plain.padding)
            unet.conv_in.weight.zero_()
            unet.conv_in.weight[:, :4] = plain.weight
            unet.conv_in.bias.copy_(plain.bias)
    try:
        save_single_file(model.components, model.family, path, metadata or {})
    finally:
        with torch.no_grad():
            unet.conv_in = kept[0]
            unet.conv_out.weight.copy_(kept[1])
            unet.conv_out.bias.copy_(kept[2])
    return path


def _prediction(ws, path) -> str:
    return loading.load_model(str(path), ws.models, ws.cache, device="cpu").scheduler_config["prediction_type"]


def test_the_unet_says_v_or_noise_when_nothing_else_does(tiny_configs, tiny_sd2, tmp_path):
    ws = tiny_configs
    assert _prediction(ws, _sd2_file(tiny_sd2, tmp_path / "v768.safetensors", out_bias=-3.0)) == "v_prediction"
    assert _prediction(ws, _sd2_file(tiny_sd2, tmp_path / "base512.safetensors", out_bias=0.0)) == "epsilon"


def test_a_yaml_beside_the_file_the_spec_and_a_9_channel_unet_decide_first(tiny_configs, tiny_sd2, tmp_path):
    ws = tiny_configs
    v_file = _sd2_file(tiny_sd2, tmp_path / "v768.safetensors", out_bias=-3.0)
    v_file.with_suffix(".yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n", encoding="utf-8")
    assert _prediction(ws, v_file) == "epsilon"  # LDM's default parameterisation: the yaml wins
    eps_file = _sd2_file(tiny_sd2, tmp_path / "base512.safetensors", out_bias=0.0)
    eps_file.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n', encoding="utf-8")
    assert _prediction(ws, eps_file) == "v_prediction"
    spec = _sd2_file(tiny_sd2, tmp_path / "spec.safetensors", out_bias=-3.0, metadata={"modelspec.prediction_type": "epsilon"})
    assert _prediction(ws, spec) == "epsilon"
    inpainting = _sd2_file(tiny_sd2, tmp_path / "inpainting.safetensors", out_bias=-3.0, nine_channels=True)
    assert _prediction(ws, inpainting) == "epsilon"


def test_the_yaml_beside_a_ckpt_counts_and_an_import_brings_it_along(tiny_configs, tiny_sd2, tmp_path):
    """A1111 users keep `v2-inference-v.yaml` beside their `.ckpt`: it is read beside the file they have
    (not its converted copy in the cache), and `models import` copies it beside the library's file,
    renames and deletes it with the model."""
    from safetensors.torch import load_file

    from lorastudio.service.models import delete_model, import_model, rename_model

    ws = tiny_configs
    plain = _sd2_file(tiny_sd2, tmp_path / "v768.safetensors", out_bias=-3.0)  # the UNet alone says v
    ckpt = tmp_path / "base512.ckpt"
    torch.save({"state_dict": load_file(str(plain))}, ckpt)
    ckpt.with_suffix(".yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n", encoding="utf-8")
    assert _prediction(ws, ckpt) == "epsilon"
    plain.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "eps"\n', encoding="utf-8")
    import_model(ws, plain, name="sd2base")
    assert (ws.models / "sd2base.yaml").is_file() and _prediction(ws, "sd2base") == "epsilon"
    rename_model(ws, "sd2base", "sd2b")
    assert (ws.models / "sd2b.yaml").is_file() and not (ws.models / "sd2base.yaml").exists()
    delete_model(ws, "sd2b")
    assert not (ws.models / "sd2b.yaml").exists()
