"""Test ControlNets: a tiny one made from a tiny UNet, and lllyasviel's original layout to save it in.

The original names are written with the project's own diffusers <-> LDM UNet table
(`adapters.ldm`), so loading them back through diffusers' converter checks one against the other.
"""

from __future__ import annotations

import re

import torch


def make_controlnet(model, seed: int = 0):
    """A ControlNet copied from the tiny UNet whose zero-initialised layers and hint encoder get
    random weights (fixed seed): as built, a ControlNet adds exactly nothing."""
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(model.unet)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if name.startswith(("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return controlnet.eval().requires_grad_(False)


def diffusers_to_original(state_dict: dict, config: dict, prefix: str = "") -> dict:
    """diffusers `ControlNetModel` keys -> lllyasviel's layout (what the A1111 extension loads)."""
    from lorastudio.adapters.ldm import unet_diffusers_to_ldm_path

    down = list(config["down_block_types"])
    table = {
        "down_block_types": down,
        "up_block_types": [t.replace("Down", "Up") for t in reversed(down)],
        "layers_per_block": config.get("layers_per_block", 2),
        "mid_block_type": config.get("mid_block_type") or "UNetMidBlock2DCrossAttn",
    }
    blocks = len({m.group(1) for k in state_dict if (m := re.match(r"^controlnet_cond_embedding\.blocks\.(\d+)\.", k))})
    out = {}
    for key, value in state_dict.items():
        module, leaf = key.rsplit(".", 1)
        parts = module.split(".")
        if module == "controlnet_cond_embedding.conv_in":
            name = "input_hint_block.0"
        elif module == "controlnet_cond_embedding.conv_out":
            name = f"input_hint_block.{2 * (blocks + 1)}"
        elif parts[:2] == ["controlnet_cond_embedding", "blocks"]:
            name = f"input_hint_block.{2 * (int(parts[2]) + 1)}"
        elif parts[0] == "controlnet_down_blocks":
            name = f"zero_convs.{parts[1]}.0"
        elif module == "controlnet_mid_block":
            name = "middle_block_out.0"
        else:
            name = unet_diffusers_to_ldm_path(module, table)
        out[f"{prefix}{name}.{leaf}"] = value.contiguous()
    return out
