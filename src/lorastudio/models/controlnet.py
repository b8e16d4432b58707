"""ControlNet files: what a file is (sniffed from its keys), and loading it offline.

A ControlNet comes as a diffusers folder (`config.json` + weights), a single file with
diffusers keys (`controlnet_cond_embedding.*`, `controlnet_down_blocks.*`), or a single file
in lllyasviel's original layout (`input_hint_block.*`, `zero_convs.*`, `middle_block_out.*`,
with or without the `control_model.` prefix, often fp16). Single files are read with the
configs shipped in `models/configs/controlnet/` (SD1.5 v1.1, SD2.x, SDXL full/mid/small), so
diffusers never reaches for the hub.

Sniffing reads only a safetensors header (or a weights-only unpickling), so a file that is no
ControlNet, or one for another family, is refused with one line before any work: diffusers
itself fails mid-run or with `'NoneType'` errors.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from lorastudio.errors import LorastudioError
from lorastudio.models.checkpoint import (
    PICKLE_SUFFIXES,
    load_pickled_state_dict,
    read_safetensors_header,
    read_safetensors_private,
    weights_only_load,
)

if TYPE_CHECKING:
    import torch
    from diffusers import ControlNetModel

__all__ = [
    "ControlNetKind",
    "ControlNetFacts",
    "check_controlnet_family",
    "controlnet_facts",
    "load_controlnet",
    "original_to_diffusers",
    "shipped_config",
    "sniff_controlnet",
]

ORIGINAL_PREFIX = "control_model."
# Cross-attention width of the real families (the text encoder's hidden size).
_FAMILY_BY_WIDTH = {768: "sd15", 1024: "sd2", 2048: "sdxl"}
_FAMILY_LABELS = {"sd15": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


class ControlNetKind(NamedTuple):
    """What `sniff_controlnet` tells: family ("sd15"/"sd2"/"sdxl"), layout ("original"/"diffusers"),
    variant (SDXL: "full", "mid" or "small" by its transformer blocks; None otherwise)."""

    family: str
    layout: str
    variant: str | None


@dataclass(frozen=True)
class ControlNetFacts:
    """Everything the keys say, read once: the kind plus what the family check and the config need."""

    family: str
    layout: str
    variant: str | None
    cross_attention_dim: int | None
    has_add_embedding: bool
    transformer_layers: tuple[int, ...]  # per down block (diffusers order), for the config

    @property
    def kind(self) -> ControlNetKind:
        return ControlNetKind(self.family, self.layout, self.variant)


# -- reading keys ---------------------------------------------------------------------------


def _keys_and_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor names -> shapes (and the metadata) without loading a safetensors file's data."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        header = read_safetensors_header(path)
        metadata = dict(header.get("__metadata__") or {})
        shapes = {k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__"}
        return shapes, metadata
    if suffix in PICKLE_SUFFIXES:
        return {k: tuple(v.shape) for k, v in _pickled_tensors(path).items()}, {}
    raise LorastudioError(f"{path.name}: not a ControlNet file type; use .safetensors, .pth, .ckpt, .pt or .bin.")


def _pickled_tensors(path: Path) -> dict:
    """A weights-only pickle's tensors, memory-mapped when the file is torch's zip format (sniffing
    a 1.4 GB .pth then reads no tensor data); anything else goes through the checked loader."""
    import torch

    try:
        data = weights_only_load(path, mmap=True)
    except Exception:  # legacy (non-zip) format, or refused: the checked loader says which, in one line
        return load_pickled_state_dict(path)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise LorastudioError(f"{path.name}: holds no state dict; it is not a ControlNet file.")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def _refuse(path: Path, what: str, fix: str) -> LorastudioError:
    return LorastudioError(f"{path.name}: {what}, not a ControlNet; {fix}.")


def _refuse_non_controlnet(path: Path, keys: list[str], metadata: dict[str, str]) -> None:
    """One line naming what the file is when it is a known non-ControlNet kind."""
    if any("lora_controlnet" in k for k in keys) or "lora_controlnet" in json.dumps(metadata):
        raise _refuse(path, "a Control-LoRA (Stability's LoRA-compressed ControlNet)", "Control-LoRAs are not supported; use a full ControlNet file")
    if any(k.startswith("adapter.") or ".body.0.block1" in k or k.startswith("body.0.block1") for k in keys):
        raise _refuse(path, "a T2I-Adapter", "T2I-Adapters are not supported; use a ControlNet of the same kind")
    if any(k.startswith("conv_first.") or k.startswith("model.0.weight") or k == "body.0.weight" for k in keys):
        raise _refuse(path, "an upscaler (ESRGAN-family)", "put it in studio/models/upscalers")
    if any(re.search(r"lora_(up|down|A|B)\b|\.lora\.|hada_w|lokr_w|\.alpha$", k) for k in keys):
        raise _refuse(path, "a LoRA", "put it in studio/loras and use <lora:NAME:1> in the prompt")
    if any(k.startswith("model.diffusion_model.") for k in keys):
        raise _refuse(path, "a full Stable Diffusion checkpoint", "put it in studio/models")


def _strip_prefix(keys: list[str]) -> list[str]:
    """The ControlNet's own keys: `control_model.*` when the file has any (full CLDM files too)."""
    prefixed = [k[len(ORIGINAL_PREFIX) :] for k in keys if k.startswith(ORIGINAL_PREFIX)]
    return prefixed or keys


def _cross_attention_width(shapes: dict[str, tuple[int, ...]]) -> int | None:
    for key, shape in shapes.items():
        if key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return int(shape[1])
    return None


def _uses_linear_projection(shapes: dict[str, tuple[int, ...]]) -> bool | None:
    for key, shape in shapes.items():
        if key.endswith("proj_in.weight"):
            return len(shape) == 2
    return None


def _transformer_counts(keys: list[str], layout: str) -> dict[str, int]:
    """Transformer blocks per attention module (`down_blocks.1.attentions.0` -> 2)."""
    pattern = (
        r"^(.*?attentions\.\d+)\.transformer_blocks\.(\d+)\."
        if layout == "diffusers"
        else r"^((?:input_blocks|middle_block)\.\d+\.\d+)\.transformer_blocks\.(\d+)\."
    )
    blocks: dict[str, set[int]] = {}
    for key in keys:
        match = re.match(pattern, key)
        if match:
            blocks.setdefault(match.group(1), set()).add(int(match.group(2)))
    return {module: len(indices) for module, indices in blocks.items()}


def _down_transformer_layers(keys: list[str], counts: dict[str, int]) -> tuple[int, ...]:
    """`transformer_layers_per_block` as diffusers reads it: per down block, the transformer blocks its
    attentions hold (0 when they hold none); a block without attentions gets the mid block's count,
    since diffusers takes the mid block's from the last entry."""
    down = sorted({int(m.group(1)) for k in keys if (m := re.match(r"^down_blocks\.(\d+)\.", k))})
    mid = counts.get("mid_block.attentions.0", 0)
    layers = []
    for i in down:
        prefix = f"down_blocks.{i}.attentions."
        if any(k.startswith(prefix) for k in keys):
            layers.append(max((n for module, n in counts.items() if module.startswith(prefix)), default=0))
        else:
            layers.append(mid)
    return tuple(layers)


def _sdxl_variant(counts: dict[str, int]) -> str:
    """diffusers' SDXL ControlNets: full (10 blocks in the deepest level), mid (a few), small (none)."""
    deepest = max(counts.values(), default=0)
    if deepest >= 10:
        return "full"
    return "mid" if deepest > 0 else "small"


def _facts_from_keys(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]) -> ControlNetFacts:
    keys = list(shapes)
    _refuse_non_controlnet(path, keys, metadata)
    own = _strip_prefix(keys)
    own_shapes = {k: shapes[(ORIGINAL_PREFIX + k) if (ORIGINAL_PREFIX + k) in shapes else k] for k in own}
    if "controlnet_cond_embedding.conv_in.weight" in own_shapes:
        layout = "diffusers"
    elif any(k.startswith("input_hint_block.") for k in own) and any(k.startswith("zero_convs.") for k in own):
        layout = "original"
    else:
        raise LorastudioError(
            f"{path.name}: no ControlNet keys (input_hint_block/zero_convs or controlnet_cond_embedding); "
            "it is not a ControlNet file."
        )
    width = _cross_attention_width(own_shapes)
    add_embedding = any(k.startswith(("add_embedding.", "label_emb.")) for k in own)
    family = _FAMILY_BY_WIDTH.get(width) if width else None
    if family is None:  # a width no real family has (a tiny or custom model): judge by structure
        family = "sdxl" if add_embedding else ("sd2" if _uses_linear_projection(own_shapes) else "sd15")
    counts = _transformer_counts(own, layout)
    variant = _sdxl_variant(counts) if family == "sdxl" else None
    layers = _down_transformer_layers(own, counts) if layout == "diffusers" else ()
    return ControlNetFacts(family, layout, variant, width, add_embedding, layers)


def _facts_from_folder(folder: Path) -> ControlNetFacts:
    config = _read_folder_config(folder)
    width = config.get("cross_attention_dim")
    add_embedding = config.get("addition_embed_type") == "text_time"
    family = _FAMILY_BY_WIDTH.get(width) or (
        "sdxl" if add_embedding else ("sd2" if config.get("use_linear_projection") else "sd15")
    )
    layers = config.get("transformer_layers_per_block", 1)
    down = config.get("down_block_types") or []
    per_block = tuple(layers if isinstance(layers, list) else [layers] * len(down))
    per_block = tuple(n if "CrossAttn" in t else 0 for n, t in zip(per_block, down, strict=False))
    variant = None
    if family == "sdxl":
        deepest = max(per_block, default=0)
        variant = "full" if deepest >= 10 else ("mid" if deepest > 0 else "small")
    return ControlNetFacts(family, "diffusers", variant, width, add_embedding, per_block)


def _read_folder_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise LorastudioError(f"{folder.name}/config.json: cannot be read ({type(exc).__name__}); re-download it.") from None
    if config.get("_class_name") not in (None, "ControlNetModel"):
        raise LorastudioError(
            f"{folder.name}: config.json describes a {config.get('_class_name')}, not a ControlNetModel; "
            "use a ControlNet folder."
        )
    return config


def controlnet_facts(path: str | Path) -> ControlNetFacts:
    """What a ControlNet file or folder is, from its header/keys or config only (no weights loaded).

    An SDXL ControlNet in the original layout is refused: only its diffusers format loads here.
    """
    path = Path(path)
    if not path.exists():
        raise LorastudioError(f"{path}: ControlNet not found; check the name (`lorastudio control list`).")
    if path.is_dir():
        return _facts_from_folder(path)
    facts = _facts_from_keys(path, *_keys_and_shapes(path))
    if facts.family == "sdxl" and facts.layout == "original":
        raise LorastudioError(
            f"{path.name}: an SDXL ControlNet in the original (ldm) layout is not supported; "
            "use its diffusers-format file (diffusion_pytorch_model.safetensors)."
        )
    return facts


def sniff_controlnet(path: str | Path) -> ControlNetKind:
    """`(family, layout, variant)` of a ControlNet file or folder; one line when it is no usable ControlNet."""
    return controlnet_facts(path).kind


def check_controlnet_family(path: str | Path, facts: ControlNetFacts, family: str, unet_config: Any = None) -> None:
    """Refuse a ControlNet made for another family than the base model (one line naming the file)."""
    name = Path(path).name
    if facts.family != family:
        raise LorastudioError(
            f"{name}: a ControlNet for {_FAMILY_LABELS.get(facts.family, facts.family)}, the model is "
            f"{_FAMILY_LABELS.get(family, family)}; use a ControlNet made for {_FAMILY_LABELS.get(family, family)}."
        )
    width = _config_value(unet_config, "cross_attention_dim") if unet_config is not None else None
    if width and facts.cross_attention_dim and int(width) != int(facts.cross_attention_dim):
        raise LorastudioError(
            f"{name}: made for a text width of {facts.cross_attention_dim}, the model's is {width}; "
            "use a ControlNet made for this model family."
        )


def _config_value(config: Any, key: str) -> Any:
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)


# -- the original <-> diffusers key names ---------------------------------------------------


def _hint_blocks(keys) -> int:
    return len({int(m.group(1)) for k in keys if (m := re.match(r"^controlnet_cond_embedding\.blocks\.(\d+)\.", k))})


def original_to_diffusers(state_dict: dict, config: dict[str, Any]) -> dict:
    """lllyasviel's layout (prefix stripped) -> diffusers `ControlNetModel` keys, for this config.

    diffusers' own single-file conversion (Apache-2.0), given the config it needs: block numbering
    follows `layers_per_block`, the hint encoder's length follows the file.
    """
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    converted = convert_controlnet_checkpoint(dict(state_dict), dict(config))
    return {k: v for k, v in converted.items() if v is not None}


# -- configs --------------------------------------------------------------------------------


def shipped_config(family: str, variant: str | None = None) -> dict[str, Any]:
    """The diffusers config shipped for a family (SDXL: by variant), a fresh copy."""
    name = family if family != "sdxl" or variant in (None, "full") else f"sdxl-{variant}"
    text = resources.files("lorastudio.models").joinpath("configs", "controlnet", name, "config.json").read_text()
    return json.loads(text)


def _config_from_unet(unet_config: Any) -> dict[str, Any]:
    """A ControlNet config copying the base UNet's body (what `ControlNetModel.from_unet` does)."""
    import inspect

    from diffusers import ControlNetModel

    accepted = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    source = dict(unet_config) if not isinstance(unet_config, dict) else unet_config
    return {k: v for k, v in source.items() if k in accepted and not k.startswith("_")}


def _fits_shipped(config: dict[str, Any], facts: ControlNetFacts, state_dict: dict) -> bool:
    """Whether the file is the size of the shipped config: its text width and first block's channels."""
    conv_in = state_dict.get("conv_in.weight")
    channels_fit = conv_in is None or int(conv_in.shape[0]) == config["block_out_channels"][0]
    return channels_fit and facts.cross_attention_dim in (None, config["cross_attention_dim"])


def _single_file_config(path: Path, facts: ControlNetFacts, unet_config: Any, state_dict: dict) -> dict[str, Any]:
    """The config a single file loads with: the shipped one for its family, or the base UNet's body
    for sizes no shipped config has (tiny and custom models); corrected from the keys' facts."""
    config = shipped_config(facts.family, facts.variant)
    if not _fits_shipped(config, facts, state_dict):
        if unet_config is None:
            raise LorastudioError(
                f"{path.name}: a ControlNet of a size no shipped config has; use its diffusers folder (with config.json)."
            )
        config = _config_from_unet(unet_config)
    return _fit_config_to_keys(config, facts, state_dict)


def _fit_config_to_keys(config: dict[str, Any], facts: ControlNetFacts, state_dict: dict) -> dict[str, Any]:
    """What the (diffusers-key) weights state beats the config: hint channels, transformer depth."""
    conv_in = state_dict.get("controlnet_cond_embedding.conv_in.weight")
    if conv_in is not None:
        config["conditioning_channels"] = int(conv_in.shape[1])
        outs = [int(conv_in.shape[0])]
        for i in range(1, _hint_blocks(state_dict), 2):
            outs.append(int(state_dict[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0]))
        config["conditioning_embedding_out_channels"] = outs
    if facts.transformer_layers:
        config["transformer_layers_per_block"] = list(facts.transformer_layers)
    proj = next((v for k, v in state_dict.items() if k.endswith("proj_in.weight")), None)
    if proj is not None:
        config["use_linear_projection"] = proj.ndim == 2
    return config


# -- loading --------------------------------------------------------------------------------


def _read_state_dict(path: Path, dtype) -> dict:
    if path.suffix.lower() == ".safetensors":
        tensors, _ = read_safetensors_private(path)
    else:
        tensors = load_pickled_state_dict(path)
    keys = list(tensors)
    if any(k.startswith(ORIGINAL_PREFIX) for k in keys):
        tensors = {k[len(ORIGINAL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(ORIGINAL_PREFIX)}
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in tensors.items()}


def _fit_projection_shapes(state_dict: dict, model) -> dict:
    """1x1 conv <-> linear projections (proj_in/proj_out): the same weights in either shape."""
    expected = model.state_dict()
    for key, value in state_dict.items():
        want = expected.get(key)
        if want is None or tuple(want.shape) == tuple(value.shape):
            continue
        if value.ndim == 4 and want.ndim == 2 and value.shape[2:] == (1, 1):
            state_dict[key] = value[:, :, 0, 0]
        elif value.ndim == 2 and want.ndim == 4:
            state_dict[key] = value[:, :, None, None]
    return state_dict


def _from_single_file(path: Path, facts: ControlNetFacts, dtype, unet_config: Any):
    import torch
    from diffusers import ControlNetModel

    state_dict = _read_state_dict(path, dtype)
    if facts.layout == "original":
        table_config = shipped_config(facts.family)
        if facts.cross_attention_dim not in (None, table_config["cross_attention_dim"]) and unet_config is not None:
            table_config = _config_from_unet(unet_config)
        try:
            state_dict = original_to_diffusers(state_dict, table_config)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise LorastudioError(
                f"{path.name}: its original-layout keys do not form a {facts.family} ControlNet "
                f"({type(exc).__name__}: {str(exc)[:120]}); is it complete?"
            ) from None
    config = _single_file_config(path, facts, unet_config, state_dict)
    with torch.device("meta"):
        model = ControlNetModel.from_config(config)
    state_dict = _fit_projection_shapes(state_dict, model)
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[1 if len(str(exc).splitlines()) > 1 else 0].strip()[:200]
        raise LorastudioError(
            f"{path.name}: its weights do not fit a {facts.family} ControlNet ({reason}); is it complete?"
        ) from None
    return model


def _folder_variant(folder: Path) -> str | None:
    """"fp16" when the folder holds only `diffusion_pytorch_model.fp16.*` weights (as many hub copies do)."""
    names = {p.name for p in folder.iterdir()}
    plain = {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"}
    fp16 = {"diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin"}
    return "fp16" if not names & plain and names & fp16 else None


def load_controlnet(
    path: str | Path,
    family: str,
    dtype: torch.dtype | None = None,
    device: str | None = None,
    unet_config: Any = None,
) -> ControlNetModel:
    """A diffusers `ControlNetModel` from a folder or single file, offline, in `dtype` on `device`.

    `family` is the base model's ("sd15", "sd2", "sdxl"): a ControlNet for another one is refused
    before its weights are read. `unet_config` (the base UNet's) checks the text width and gives
    the config for widths no shipped config has (tiny and custom models).
    """
    import torch

    path = Path(path)
    dtype = dtype or torch.float32
    facts = controlnet_facts(path)
    check_controlnet_family(path, facts, family, unet_config)
    if path.is_dir():
        from diffusers import ControlNetModel

        try:
            model = ControlNetModel.from_pretrained(
                str(path), local_files_only=True, torch_dtype=dtype, variant=_folder_variant(path)
            )
        except (OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise LorastudioError(f"{path.name}: the ControlNet folder cannot be loaded ({reason}).") from None
    else:
        model = _from_single_file(path, facts, dtype, unet_config)
    model.to(device or "cpu")  # already in dtype: diffusers warns when `to` casts a model
    model.eval()
    model.requires_grad_(False)
    return model
