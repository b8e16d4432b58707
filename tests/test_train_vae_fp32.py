"""`train.vae_fp32` (kohya's no_half_vae / sdxl_no_half_vae): on a GPU the model loads in bf16/fp16 and the
trainer encoded every latent with that half VAE, whatever mixed_precision said, with no NaN retry; the option
encodes in fp32, and kohya's keys map to it instead of being listed as not mapped."""

from __future__ import annotations

import json

import pytest
import torch

from lorastudio.train.kohya_config import import_kohya_config, kohya_train_config
from training_helpers import tiny_train_config, write_images


def test_kohya_no_half_vae_and_the_guis_sdxl_no_half_vae_set_vae_fp32(tmp_path):
    toml = tmp_path / "k.toml"
    for value in (True, False):
        toml.write_text(f'pretrained_model_name_or_path = "m"\nno_half_vae = {str(value).lower()}\n', encoding="utf-8")
        imported = import_kohya_config(toml)
        assert ("no_half_vae", "train.vae_fp32", value) in imported.mapped and not imported.unmapped
        assert kohya_train_config(imported, ["model=tiny-sd15"]).train.vae_fp32 is value
    gui = tmp_path / "gui.json"
    gui.write_text(json.dumps({"LoRA_type": "Standard", "pretrained_model_name_or_path": "m", "sdxl": True,
                               "sdxl_no_half_vae": True}), encoding="utf-8")  # fmt: skip
    imported = import_kohya_config(gui)
    assert ("sdxl_no_half_vae", "train.vae_fp32", True) in imported.mapped
    assert not [key for key, _ in imported.unmapped if "half_vae" in key]


@pytest.mark.slow
def test_vae_fp32_encodes_the_latents_in_fp32_when_the_model_loads_in_half(tiny_workspace, one_torch_thread, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    """A GPU's half-precision load stood in for on the CPU (the VAE cast to bf16 after loading): with
    `train.vae_fp32` every latent is encoded by an fp32 VAE (before, by the bf16 one)."""
    from lorastudio.service.training import run_training
    from lorastudio.train import latents as latents_module
    from lorastudio.train.trainer import Trainer

    load = Trainer._load_model

    def half_load(self):
        model = load(self)
        model.vae.to(torch.bfloat16)  # as a bf16 GPU loads it
        return model

    seen: list[torch.dtype] = []
    encode = latents_module.encode_image

    def recording_encode(vae, *args, **kwargs):
        seen.append(vae.dtype)
        return encode(vae, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_load_model", half_load)
    monkeypatch.setattr(latents_module, "encode_image", recording_encode)
    data = write_images(tmp_path / "red", [((220, 30, 30), "zqx, red") for _ in range(2)])
    cfg = tiny_train_config(data, "zqx", "train.steps=1", "lora.rank=2", "scoring.enabled=false",
                            "output.name=vae32", "train.vae_fp32=true")  # fmt: skip
    run_training(tiny_workspace, cfg, progress=False)
    assert seen and set(seen) == {torch.float32}
