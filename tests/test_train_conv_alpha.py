"""`lora.conv_alpha` (kohya conv_alpha): the 3x3 convs of a LoCon run are scaled by conv_alpha / conv_rank,
in training, in the saved file and when A1111-style loading patches a model with it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from lorastudio.train.config import load_train_config

SETTINGS = ["lora.targets=locon", "lora.rank=8", "lora.alpha=8", "lora.conv_rank=4", "lora.conv_alpha=1"]


def _fresh_model(tiny_models_dir):
    from lorastudio.models.loading import load_model

    return load_model("tiny-sd15", tiny_models_dir, tiny_models_dir / ".cache")


def _kohya_delta(layer) -> torch.Tensor:
    """sd-scripts' networks.lora: up @ down x conv_alpha / conv_dim (1 / 4 here), shaped as the conv weight."""
    down, up = layer.lora_down.weight.detach(), layer.lora_up.weight.detach()
    return (up.flatten(1) @ down.flatten(1)).reshape(layer.base.weight.shape) * (1.0 / 4)


@pytest.mark.slow  # two tiny models loaded (~15 s on a busy CPU)
def test_conv_alpha_scales_the_convs_in_the_file_and_in_a1111_style_loading(tiny_models_dir, one_torch_thread, tmp_path):
    """kohya conv_dim=4 conv_alpha=1 trained its convs at 4x kohya's scale: they used lora.alpha (8 / 4 = 2)."""
    from lorastudio.adapters import applied_loras, load_lora_file
    from lorastudio.train.data import TrainImage
    from lorastudio.train.export import save_lora, training_facts
    from lorastudio.train.trainables import setup_trainables

    cfg = load_train_config(overrides=["model=tiny-sd15", "data.dir=./red", "trigger=zqx", *SETTINGS])
    model = _fresh_model(tiny_models_dir)
    lora_set, _ = setup_trainables(cfg, model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # past the zero init: every update non-zero
        for _, layer in lora_set.items():
            layer.lora_up.weight.copy_(torch.randn(layer.lora_up.weight.shape, generator=generator) * 0.1)
    (component, path), conv = next(
        (key, layer) for key, layer in lora_set.items() if layer.kind == "conv" and layer.base.kernel_size == (3, 3)
    )
    linear = next(layer for _, layer in lora_set.items() if layer.kind == "linear")
    assert (conv.scale, linear.scale) == (0.25, 1.0)  # the convs train at conv_alpha / conv_rank

    image = TrainImage(Path("red/0.png"), "zqx, red", 1, (64, 64), (64, 64), (0, 0), "red/0.png", "")
    described = SimpleNamespace(family=SimpleNamespace(name="sd15"), name="base", short_hash="abcd1234", sha256="0" * 64)
    facts = training_facts(cfg, "run", described, [image], 3, 1, "no", "epsilon")
    file = save_lora(lora_set, None, tmp_path / "locon.safetensors", model.family, model.unet.config, facts, "fp32")

    with safe_open(str(file), framework="pt") as handle:
        network_args = json.loads(handle.metadata()["ss_network_args"])
    assert (network_args["conv_dim"], network_args["conv_alpha"]) == ("4", "1")  # as kohya writes its network_args
    saved = load_lora_file(file)
    conv_module = saved.modules[(component, path)]
    assert (conv_module.rank, conv_module.alpha, conv_module.scale) == (4, 1.0, 0.25)

    fresh = _fresh_model(tiny_models_dir)
    base = fresh.unet.get_submodule(path).weight.detach().clone()
    with applied_loras(fresh.components, [(saved, 1.0, 1.0)]):
        patched = fresh.unet.get_submodule(path).weight.detach().clone()
    assert torch.allclose(patched - base, _kohya_delta(conv), atol=1e-6)
    # ... which is what the training layer added to the conv's output
    x = torch.randn(1, conv.base.in_channels, 8, 8, generator=generator)
    with torch.no_grad():
        trained = conv(x)
        loaded = torch.nn.functional.conv2d(x, patched, conv.base.bias, conv.base.stride, conv.base.padding)
    assert torch.allclose(trained, loaded, atol=1e-5)


def test_a_kohya_conv_dim_without_conv_alpha_takes_kohyas_default_of_one(tmp_path):
    from lorastudio.train.kohya_config import import_kohya_config, kohya_train_config

    toml = tmp_path / "locon.toml"
    toml.write_text(
        'pretrained_model_name_or_path = "m"\nnetwork_module = "networks.lora"\nnetwork_dim = 16\nnetwork_alpha = 8\n'
        'network_args = ["conv_dim=4"]\n',
        encoding="utf-8",
    )
    lora = kohya_train_config(import_kohya_config(toml), ["model=tiny-sd15"]).lora
    assert (lora.targets, lora.conv_rank, lora.conv_alpha, lora.alpha) == ("locon", 4, 1.0, 8.0)
    # lorastudio's own LoCon runs keep lora.alpha for the convs unless conv_alpha is set
    assert load_train_config(overrides=["lora.targets=locon"]).lora.conv_alpha is None
