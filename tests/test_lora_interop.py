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


def test_alpha_tensors_in_a_diffusers_lora_set_its_strength(tmp_path):
    down, up = torch.randn(8, 64), torch.randn(32, 8)
    state = {
        f"unet.{FF}.lora_A.weight": down,
        f"unet.{FF}.lora_B.weight": up,
        f"unet.{FF}.alpha": torch.tensor(1.0),
    }
    metadata = {"lora_adapter_metadata": '{"unet.r": 8, "unet.lora_alpha": 8}'}  # the tensor wins
    save_file(state, str(tmp_path / "alpha.safetensors"), metadata=metadata)
    lora = load_lora_file(tmp_path / "alpha.safetensors")
    torch.testing.assert_close(patched_delta(lora, FF, (32, 64)), up @ down / 8)
