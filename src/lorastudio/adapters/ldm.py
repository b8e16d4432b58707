"""The single-file checkpoint writer: diffusers components as one A1111 / ComfyUI state dict.

The names come from `models.ldm_names` (one table for writing files, reading them back and
kohya's SDXL LoRA names); this module adds the tensor reshapes each layout needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.errors import LorastudioError
from lorastudio.models.ldm_names import (
    OPEN_CLIP_RENAMES,
    UNET_PREFIX,
    VAE_PREFIX,
    clip_key_to_ldm,
    text_encoder_layout,
    unet_diffusers_to_ldm_path,
    unet_ldm_to_diffusers_path,
    vae_path_to_ldm,
)

if TYPE_CHECKING:
    from typing import Any

    import torch

    from lorastudio.models.families import Family

__all__ = [
    "UNET_PREFIX",
    "unet_diffusers_to_ldm_path",
    "unet_ldm_to_diffusers_path",
    "unet_to_ldm",
    "unet_from_ldm",
    "vae_to_ldm",
    "clip_to_ldm",
    "open_clip_to_ldm",
    "checkpoint_state_dict",
    "save_single_file",
]

# --- single-file checkpoints -------------------------------------------------------------


def unet_to_ldm(state_dict: dict[str, torch.Tensor], unet_config: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {UNET_PREFIX + unet_diffusers_to_ldm_path(k, unet_config): v for k, v in state_dict.items()}


def unet_from_ldm(state_dict: dict[str, torch.Tensor], unet_config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The UNet part of a single-file state dict (`model.diffusion_model.*`) in diffusers names."""
    return {
        unet_ldm_to_diffusers_path(k[len(UNET_PREFIX) :], unet_config): v
        for k, v in state_dict.items()
        if k.startswith(UNET_PREFIX)
    }


def vae_to_ldm(state_dict: dict[str, torch.Tensor], vae_config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """AutoencoderKL weights in LDM names; mid-block attention Linear weights become 1x1 convs."""
    num_up = len(vae_config["up_block_types"] if isinstance(vae_config, dict) else vae_config.up_block_types)
    out = {}
    for key, value in state_dict.items():
        ldm_key = vae_path_to_ldm(key, num_up)
        if ".mid.attn_1." in ldm_key and ldm_key.endswith(".weight") and value.dim() == 2:
            value = value[:, :, None, None]
        out[VAE_PREFIX + ldm_key] = value
    return out


def clip_to_ldm(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """CLIP ViT-L text encoder: `<prefix>text_model.*` (transformers 5 dropped `text_model.`)."""
    return {
        clip_key_to_ldm(key, prefix): value
        for key, value in state_dict.items()
        if not key.startswith("text_projection")
    }


def open_clip_to_ldm(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP layout (SDXL's second encoder): resblocks, fused in_proj, transposed projection."""
    import torch

    sd = {k.removeprefix("text_model."): v for k, v in state_dict.items()}
    out = {
        prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": sd["final_layer_norm.weight"],
        prefix + "ln_final.bias": sd["final_layer_norm.bias"],
    }
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd["text_projection.weight"].T.contiguous()
    layer_ids = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layer_ids:
        src = f"encoder.layers.{i}."
        dst = f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd[f"{src}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
            for old, new in OPEN_CLIP_RENAMES.items():
                out[f"{dst}{new}.{kind}"] = sd[f"{src}{old}.{kind}"]
    return out


def checkpoint_state_dict(components: dict[str, torch.nn.Module], family: Family) -> dict[str, torch.Tensor]:
    """All components of a pipeline as one LDM / A1111 state dict."""
    missing = [name for name in ("unet", "vae", *family.text_encoders) if name not in components]
    if missing:
        raise LorastudioError(
            f"single-file export: components {missing} are missing; load the full model first."
        )
    unet, vae = components["unet"], components["vae"]
    state = unet_to_ldm(unet.state_dict(), unet.config)
    state.update(vae_to_ldm(vae.state_dict(), vae.config))
    for name in family.text_encoders:
        layout, prefix = text_encoder_layout(family.name, name)
        to_ldm = clip_to_ldm if layout == "clip" else open_clip_to_ldm
        state.update(to_ldm(components[name].state_dict(), prefix))
    return {k: v.detach().contiguous() for k, v in state.items()}


def save_single_file(
    components: dict[str, torch.nn.Module],
    family: Family,
    path: str | Path,
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
    base_model: str | None = None,
) -> Path:
    """Write an A1111 / ComfyUI single-file `.safetensors` checkpoint of the components.

    `dtype` casts every floating tensor (A1111 checkpoints are usually fp16). A family whose
    text encoder has no place in such a file (Kolors' ChatGLM) gets what its users load
    instead: the UNet alone under diffusers names (ComfyUI's UNet loader), with `base_model`
    recorded as `lorastudio.base_model` so lorastudio completes it from that folder.
    """
    from safetensors.torch import save_file

    path = Path(path)
    metadata = dict(metadata or {})
    if family.text_encoder_kind == "clip":
        state = checkpoint_state_dict(components, family)
    else:
        if not base_model:
            raise LorastudioError(
                f"single-file export: a {family.label} file holds the UNet alone; name the base model it "
                "completes (its diffusers folder)."
            )
        state = {k: v.detach().contiguous() for k, v in components["unet"].state_dict().items()}
        metadata["lorastudio.base_model"] = base_model
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    # Tensors sharing storage (tied weights) must be separate in a safetensors file.
    seen: set[int] = set()
    for key, value in state.items():
        pointer = value.untyped_storage().data_ptr()
        if pointer in seen:
            state[key] = value.clone()
        seen.add(pointer)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={k: str(v) for k, v in metadata.items()})
    return path
