"""What a library card shows about a LoRA: its training settings and the run's checkpoint scores."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from lorastudio.service.library import Library
from lorastudio.service.loras import list_loras


def _lora(path, metadata=None):
    prefix = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{prefix}.lora_down.weight": torch.zeros(4, 32), f"{prefix}.lora_up.weight": torch.zeros(32, 4)},
              str(path), metadata=metadata)  # fmt: skip
    return path


def test_a_trained_lora_shows_its_settings_and_best_checkpoint(workspace):
    path = _lora(workspace.loras / "mira.safetensors")
    settings = {"train": {"steps": 400, "learning_rate": 1e-4, "resolution": 512, "optimizer": "adamw"},
                "lora": {"rank": 8, "alpha": 4}}  # fmt: skip
    Library(workspace).add_lora("mira", path, "sd15", "0" * 64, "mira", "tiny-sd15", {"run": "r1", "settings": settings})
    (workspace.runs / "r1").mkdir(parents=True)
    table = {"rows": [{"step": 200, "clip": 0.21, "best": False}, {"step": 400, "clip": 0.27, "best": True}],
             "best_step": 400, "result_step": 400}  # fmt: skip
    (workspace.runs / "r1" / "scores.json").write_text(json.dumps(table))
    row = list_loras(workspace)[0]
    assert row["training"] == {"steps": 400, "rank": 8, "alpha": 4, "learning_rate": 1e-4, "resolution": 512,
                               "optimizer": "adamw"}  # fmt: skip
    assert row["scores"] == {"best_step": 400, "result_step": 400, "best": {"clip": 0.27}}


def test_a_lora_from_elsewhere_shows_its_kohya_metadata(workspace):
    _lora(workspace.loras / "found.safetensors", {"ss_network_dim": "16", "ss_max_train_steps": "1200", "ss_optimizer": "None"})
    row = list_loras(workspace)[0]
    assert row["training"] == {"rank": "16", "steps": "1200"} and row["scores"] is None


def test_a1111_card_notes_beside_a_lora_give_its_preferred_weight_and_activation_text(workspace):
    _lora(workspace.loras / "style.safetensors")
    (workspace.loras / "style.json").write_text(
        json.dumps({"preferred weight": 0.7, "activation text": "ink wash", "notes": "from civitai"}), encoding="utf-8"
    )
    _lora(workspace.loras / "plain.safetensors")
    (workspace.loras / "plain.json").write_text("{broken", encoding="utf-8")
    rows = {row["name"]: row for row in list_loras(workspace)}
    assert (rows["style"]["preferred_weight"], rows["style"]["trigger"], rows["style"]["notes"]) == (
        0.7, "ink wash", "from civitai"
    )
    assert rows["plain"]["preferred_weight"] is None and rows["plain"]["trigger"] is None
