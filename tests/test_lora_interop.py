"""LoRA files other tools write and A1111 / ComfyUI apply: each read with the strength they give it."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from lorastudio.adapters import applied_loras, load_lora_file

FF = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"


def module_tree(path: str, layer: torch.nn.Module) -> torch.nn.Module:
    """A module whose `get_submodule(path)` is `layer` (no model needed to patch one layer)."""
    *parents, leaf = path.split(".")
    node: torch.nn.Module = torch.nn.ModuleDict({leaf: layer})
    for name in reversed(parents):
        node = torch.nn.ModuleDict({name: node})
    return node


def patched_delta(lora, path: str, shape: tuple[int, int], component: str = "unet") -> torch.Tensor:
    """What the LoRA adds to a zero Linear weight at `path` (te and unet strength 1)."""
    layer = torch.nn.Linear(shape[1], shape[0], bias=False)
    torch.nn.init.zeros_(layer.weight)
    components = {component: module_tree(path, layer)}
    with applied_loras(components, [(lora, 1.0, 1.0)]):
        return layer.weight.detach().clone()


def _save(tmp_path, state, metadata: dict | None = None) -> object:
    save_file(state, str(tmp_path / "x.safetensors"), metadata=metadata)
    return load_lora_file(tmp_path / "x.safetensors")


def test_alpha_tensors_in_a_diffusers_lora_set_its_strength(tmp_path):
    down, up = torch.randn(8, 64), torch.randn(32, 8)
    state = {
        f"unet.{FF}.lora_A.weight": down,
        f"unet.{FF}.lora_B.weight": up,
        f"unet.{FF}.alpha": torch.tensor(1.0),
    }
    metadata = {"lora_adapter_metadata": '{"unet.r": 8, "unet.lora_alpha": 8}'}  # the tensor wins
    torch.testing.assert_close(patched_delta(_save(tmp_path, state, metadata), FF, (32, 64)), up @ down / 8)


Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
KOHYA_Q = "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def test_kohya_names_with_peft_lora_a_b_read_as_down_up(tmp_path):
    down, up = torch.randn(4, 16), torch.randn(8, 4)
    state = {
        f"lora_unet_{KOHYA_Q}.lora_A.weight": down,
        f"lora_unet_{KOHYA_Q}.lora_B.weight": up,
        f"lora_unet_{KOHYA_Q}.alpha": torch.tensor(2.0),
    }
    torch.testing.assert_close(patched_delta(_save(tmp_path, state), Q, (8, 16)), up @ down / 2)


def test_simpletuner_lycoris_prefix_names_unet_layers(tmp_path):
    down, up = torch.randn(4, 16), torch.randn(8, 4)
    state = {f"lycoris_{KOHYA_Q}.lora_down.weight": down, f"lycoris_{KOHYA_Q}.lora_up.weight": up}
    torch.testing.assert_close(patched_delta(_save(tmp_path, state), Q, (8, 16)), up @ down)


def test_old_diffusers_lora_linear_layer_on_the_text_encoder(tmp_path):
    path = "encoder.layers.0.self_attn.q_proj"
    down, up = torch.randn(4, 16), torch.randn(8, 4)
    state = {
        f"text_encoder.text_model.{path}.lora_linear_layer.down.weight": down,
        f"text_encoder.text_model.{path}.lora_linear_layer.up.weight": up,
    }
    lora = _save(tmp_path, state)
    torch.testing.assert_close(patched_delta(lora, path, (8, 16), "text_encoder"), up @ down)


def test_lycoris_train_norm_differences_move_the_norm_weight_and_bias(tmp_path):
    norm = "down_blocks.0.attentions.0.transformer_blocks.0.norm1"
    w_norm, b_norm = torch.randn(16), torch.randn(16)
    state = {
        f"lora_unet_{KOHYA_Q}.lora_down.weight": torch.randn(4, 16),
        f"lora_unet_{KOHYA_Q}.lora_up.weight": torch.randn(8, 4),
        f"lora_unet_{norm.replace('.', '_')}.w_norm": w_norm,
        f"lora_unet_{norm.replace('.', '_')}.b_norm": b_norm,
    }
    lora = _save(tmp_path, state)
    layer = torch.nn.LayerNorm(16)
    components = {"unet": module_tree(norm, layer)}
    with applied_loras(components, [(lora, 1.0, 0.5)]):
        torch.testing.assert_close(layer.weight.detach(), 1 + 0.5 * w_norm)
        torch.testing.assert_close(layer.bias.detach(), 0.5 * b_norm)
    assert torch.equal(layer.weight.detach(), torch.ones(16))  # restored
