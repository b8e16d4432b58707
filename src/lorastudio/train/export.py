"""Trained tensors -> files: the kohya/webui LoRA (with bundled trigger) and the A1111 embedding.

A DreamBooth / fine-tune run writes a whole A1111 single-file checkpoint instead.
The LoRA-format details live in `lorastudio.adapters`; this module only gathers what the
trainer holds (LoRA layers, trigger vectors, facts about the run) into a `LoraFile`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorastudio.adapters.kohya import save_kohya
from lorastudio.adapters.lora_file import LoraFile
from lorastudio.adapters.metadata import build_metadata
from lorastudio.train.outputs import atomic_file

__all__ = ["lora_file_from_training", "save_lora", "save_embedding", "save_full_checkpoint"]


def lora_file_from_training(lora_set, embedding=None) -> LoraFile:
    """A `LoraFile` of the current weights (float32 copies on the CPU)."""
    lora = LoraFile(source_format="lorastudio")
    if lora_set is not None:
        for (component, path), layer in lora_set.items():
            lora.add(component, path, layer.to_module())  # LoraModule, or LyCORIS LoHa/LoKr
    if embedding is not None:
        lora.embeddings[embedding.trigger] = embedding.as_tensors()
    return lora


def _dtype_of(precision: str):
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]


def save_lora(
    lora_set,
    embedding,
    path: Path,
    family,
    unet_config,
    facts: dict[str, Any],
    precision: str = "fp16",
) -> Path:
    """Write the kohya-layout LoRA with `ss_*`/`sshs_*`/`modelspec.*` metadata, in `precision`.

    Written to a hidden sibling and renamed, so a kill never leaves half a LoRA in its place.
    """
    lora = lora_file_from_training(lora_set, embedding)
    metadata = build_metadata(facts, family, kind="lora")
    with atomic_file(path) as temporary:
        save_kohya(
            lora, temporary, metadata, family=family, unet_config=unet_config, dtype=_dtype_of(precision)
        )
    return path


def save_embedding(embedding, path: Path, family, facts: dict[str, Any]) -> Path:
    """A standalone A1111 embedding (`emb_params`, or `clip_l`/`clip_g` for SDXL); stem = trigger."""
    from safetensors.torch import save_file

    tensors = {
        key: vectors.contiguous()
        for key, vectors in zip(family.embedding_keys, embedding.as_tensors(), strict=True)
    }
    metadata = build_metadata(facts, family, kind="textual-inversion")
    with atomic_file(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return path


def save_full_checkpoint(
    model, path: Path, facts: dict[str, Any], base_name: str = "", precision: str = "fp16"
) -> Path:
    """The whole model as an A1111 / ComfyUI single-file `.safetensors` with training metadata.

    `lorastudio.base_config` names a tiny base model so lorastudio can load the file with
    that model's configs; `modelspec.prediction_type` keeps v-prediction models loadable.
    """
    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.models.tiny import is_tiny_name

    metadata = build_metadata(facts, model.family, kind="checkpoint")
    metadata["modelspec.architecture"] = metadata["modelspec.architecture"].removesuffix("/checkpoint")
    prediction = model.scheduler_config.get("prediction_type", "epsilon")
    metadata["modelspec.prediction_type"] = "v" if prediction == "v_prediction" else prediction
    if is_tiny_name(base_name):
        metadata["lorastudio.base_config"] = base_name
    with atomic_file(path) as temporary:
        save_single_file(model.components, model.family, temporary, metadata, dtype=_dtype_of(precision))
    return path
