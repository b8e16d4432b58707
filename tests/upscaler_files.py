"""Tiny ESRGAN-family files with random weights under the real key names (tests only)."""

from __future__ import annotations

from pathlib import Path


def rrdbnet_state(scale: int = 4, num_feat: int = 8, num_grow_ch: int = 4, num_block: int = 1, seed: int = 0) -> dict:
    """A Real-ESRGAN-layout RRDBNet state dict (x4plus / x2plus / 1x keys) with random weights."""
    import torch

    from lorastudio.generate.upscalers.networks import RRDBNet

    torch.manual_seed(seed)
    unshuffle = {4: 1, 2: 2, 1: 4}[scale]
    net = RRDBNet(3, 3, num_feat, num_block, num_grow_ch, num_upsamples=2, unshuffle=unshuffle)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    return {k: v.clone() for k, v in net.state_dict().items()}


def old_esrgan_state(state: dict) -> dict:
    """The same weights under the old ESRGAN keys (`model.0`, `model.1.sub.N.RDB1.conv1.0`, `model.3/6/8/10`)."""
    old = {}
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "body":
            n, rdb, conv, kind = rest.split(".")
            old[f"model.1.sub.{n}.RDB{rdb[-1]}.{conv}.0.{kind}"] = value
        else:
            index = {"conv_first": "0", "conv_up1": "3", "conv_up2": "6", "conv_hr": "8", "conv_last": "10"}.get(head)
            old[f"model.1.sub.{blocks}.{rest}" if head == "conv_body" else f"model.{index}.{rest}"] = value
    return old


def compact_state(scale: int = 4, num_feat: int = 8, num_conv: int = 2, seed: int = 0) -> dict:
    """A realesr-general / animevideov3 layout SRVGGNetCompact state dict with random weights."""
    import torch

    from lorastudio.generate.upscalers.networks import SRVGGNetCompact

    torch.manual_seed(seed)
    net = SRVGGNetCompact(3, 3, num_feat, num_conv, scale)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    return {k: v.clone() for k, v in net.state_dict().items()}


def save(state: dict, path: Path, wrapper: str | None = "params_ema") -> Path:
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({wrapper: state} if wrapper else state, str(path))
    return path
