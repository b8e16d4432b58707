"""Separate VAEs in models/ are listed (A1111's SD VAE list) and a generation can name one."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from lorastudio.service.choices import model_names, vae_names
from lorastudio.service.models import list_vaes


def test_vae_files_and_folders_are_listed_and_checkpoints_are_not(tiny_workspace, tiny_models_dir):
    ws = tiny_workspace
    (ws.models / "tiny-vae").symlink_to(tiny_models_dir / "tiny-sd15" / "vae", target_is_directory=True)
    save_file({"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_out.weight": torch.zeros(1)},
              str(ws.models / "vae-ft-mse.safetensors"))  # fmt: skip
    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(ws.models / "not-a-vae.safetensors"))
    assert [row["name"] for row in list_vaes(ws)] == ["tiny-vae", "vae-ft-mse"]
    assert vae_names(ws) == ["tiny-vae", "vae-ft-mse"]
    assert "tiny-sd15" in model_names(ws) and "tiny-vae" not in model_names(ws)


def test_the_a1111_route_lists_them_and_a_generation_uses_one(client, studio, tiny_models_dir):
    ws = studio.workspace
    (ws.models / "tiny-vae").symlink_to(tiny_models_dir / "tiny-sd15" / "vae", target_is_directory=True)
    assert client.get("/sdapi/v1/sd-vae").json() == [{"model_name": "tiny-vae", "filename": "tiny-vae"}]
    body = {"prompt": "red", "steps": 1, "width": 64, "height": 64, "vae": "tiny-vae"}
    job = client.post("/api/v1/jobs/generate", json=body).json()
    job = studio.wait_job(job["id"], timeout=120)
    assert job.state == "succeeded", job.error
