"""Renaming what the library holds: LoRAs (their run, trigger and samples follow), embeddings, models."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from lorastudio.cli import _register, app
from lorastudio.errors import LorastudioError
from lorastudio.service.embeddings import list_embeddings, rename_embedding
from lorastudio.service.library import Library
from lorastudio.service.loras import list_loras, rename_lora
from lorastudio.service.models import list_models, rename_model

_register()  # the verbs register lazily (`lorastudio --help` stays fast)


def _lora(path):
    prefix = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{prefix}.lora_down.weight": torch.zeros(4, 32), f"{prefix}.lora_up.weight": torch.zeros(32, 4),
               f"{prefix}.alpha": torch.tensor(4.0)}, str(path))  # fmt: skip
    return path


def test_a_renamed_lora_keeps_its_trigger_and_run(workspace):
    path = _lora(workspace.loras / "draft.safetensors")
    Library(workspace).add_lora("draft", path, "sd15", "0" * 64, trigger="mira", info={"run": "r1", "step": 40})
    info = rename_lora(workspace, "draft", "小红")
    assert info == {"name": "小红", "renamed_from": "draft", "file": "小红.safetensors"}
    rows = {row["name"]: row for row in list_loras(workspace)}
    assert set(rows) == {"小红"} and rows["小红"]["trigger"] == "mira" and rows["小红"]["run"] == "r1"
    assert not path.exists()


def test_a_rename_never_replaces_another_entry_and_refuses_paths(workspace):
    _lora(workspace.loras / "a.safetensors")
    other = _lora(workspace.loras / "b.safetensors")
    before = other.read_bytes()
    with pytest.raises(LorastudioError, match="already exists"):
        rename_lora(workspace, "a", "b")
    assert other.read_bytes() == before and (workspace.loras / "a.safetensors").exists()
    for bad in ("../a", "x/y", ".hidden", ""):
        with pytest.raises(LorastudioError):
            rename_lora(workspace, "a", bad)
    with pytest.raises(LorastudioError, match="no-such"):
        rename_lora(workspace, "no-such", "c")


def test_renaming_an_embedding_changes_its_prompt_word(workspace):
    save_file({"emb_params": torch.zeros(2, 32)}, str(workspace.embeddings / "old-word.safetensors"))
    rename_embedding(workspace, "old-word", "new-word")
    assert [row["name"] for row in list_embeddings(workspace)] == ["new-word"]


def test_renaming_a_model_folder_and_the_cli_verbs(tiny_workspace, tiny_models_dir):
    import shutil

    shutil.copytree(tiny_models_dir / "tiny-sd15", tiny_workspace.models / "mine")
    assert rename_model(tiny_workspace, "mine", "mine-v2")["name"] == "mine-v2"
    names = {row["name"] for row in list_models(tiny_workspace)}
    assert "mine-v2" in names and "mine" not in names
    _lora(tiny_workspace.loras / "cli-a.safetensors")
    runner = CliRunner()
    result = runner.invoke(app, ["lora", "rename", "cli-a", "cli-b"])
    assert result.exit_code == 0 and "renamed LoRA cli-a -> cli-b" in result.output
    result = runner.invoke(app, ["lora", "rename", "cli-a", "cli-c"])
    assert result.exit_code == 2 and "cli-a" in result.output


def test_the_api_renames_with_patch(client, studio):
    _lora(studio.workspace.loras / "api-a.safetensors")
    response = client.patch("/api/v1/loras/api-a", json={"name": "api-b"})
    assert response.status_code == 200 and response.json()["name"] == "api-b"
    assert client.patch("/api/v1/loras/api-b", json={"name": "../x"}).status_code == 400
    assert client.patch("/api/v1/loras/missing", json={"name": "y"}).status_code == 404
