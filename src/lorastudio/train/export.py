"""Trained tensors -> files: the kohya/webui LoRA (with bundled trigger) and the A1111 embedding.

`training_facts` says what the run was (kohya's `ss_*` names); every file carries them. Its
`lorastudio_config` is `TrainConfig.model_dump()`, so the order and names of the config's
fields are part of the file bytes.

A DreamBooth / fine-tune run writes a whole A1111 single-file checkpoint instead.
The LoRA-format details live in `lorastudio.adapters`; this module only gathers what the
trainer holds (LoRA layers, trigger vectors, facts about the run) into a `LoraFile`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.adapters.kohya import save_kohya
from lorastudio.adapters.lora_file import LoraFile
from lorastudio.adapters.metadata import build_metadata
from lorastudio.train.kohya_config import kohya_training_facts
from lorastudio.train.lora_modules import conv_network_args, lycoris_network_args
from lorastudio.train.outputs import atomic_file, output_targets
from lorastudio.train.trainables import learning_rates

if TYPE_CHECKING:
    from lorastudio.models.families import Family
    from lorastudio.models.loading import LoadedModel
    from lorastudio.train.config import TrainConfig
    from lorastudio.train.lora_modules import LoraSet
    from lorastudio.train.text import TriggerEmbedding

__all__ = [
    "lora_file_from_training",
    "save_lora",
    "save_embedding",
    "save_full_checkpoint",
    "training_facts",
    "write_training_outputs",
]


def lora_file_from_training(lora_set: LoraSet | None, embedding: TriggerEmbedding | None = None) -> LoraFile:
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
    lora_set: LoraSet | None,
    embedding: TriggerEmbedding | None,
    path: Path,
    family: Family,
    unet_config: dict[str, Any],
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


def save_embedding(embedding: TriggerEmbedding, path: Path, family: Family, facts: dict[str, Any]) -> Path:
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


def base_reference(ref: str, model: LoadedModel, models_dir: Path | None = None) -> str:
    """How an exported file names its base model: a tiny name, a hub id, the library name when
    the model is in `models_dir` (it resolves in any session), else the loaded model's absolute
    path (the name the config gave may be relative to the folder training ran in)."""
    from lorastudio.models.loading import WEIGHT_SUFFIXES
    from lorastudio.models.tiny import is_tiny_name

    if is_tiny_name(ref):
        return ref
    source = Path(model.source)
    if not source.is_absolute():  # a hub id
        return model.source
    if models_dir is not None:
        for candidate in [models_dir / model.name, *(models_dir / f"{model.name}{s}" for s in WEIGHT_SUFFIXES)]:
            if candidate.exists() and candidate.resolve() == source:
                return model.name
    return model.source


def save_full_checkpoint(
    model: LoadedModel, path: Path, facts: dict[str, Any], base_name: str = "", precision: str = "fp16"
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
        save_single_file(
            model.components, model.family, temporary, metadata, dtype=_dtype_of(precision), base_model=base_name
        )
    return path


_METADATA_SUFFIXES = (".csv", ".json", ".jsonl")


def training_facts(
    cfg: TrainConfig,
    name: str,
    model: LoadedModel,
    images: list,
    step: int,
    epoch: int,
    mixed_precision: str,
    prediction_type: str,
    started_at: float | None = None,
    class_images: list | None = None,
) -> dict[str, Any]:
    """What the run was, for the files' metadata: network, data set, tags, buckets, rates, seed.

    In kohya's shapes, which A1111's LoRA info dialog reads: `bucket_info` lists each bucket's
    resolution and count (an int per bucket made that dialog empty), `num_train_images` counts
    repeats, `training_started_at` is seconds since the epoch (its "Date trained").

    `epoch` is 1-based (the epoch `step` ended in); `images` are the plan's `TrainImage`s and
    `class_images` the prior-preservation ones (kohya's regularisation images), if any.
    """
    # kohya keys both by the subset's folder name ("10_alice"): an image from a kohya folder is in
    # its folder's subset, any other in the data set's.
    data_dir = Path(cfg.data.dir.rstrip("/\\"))
    # a metadata file (DiffSynth's train/metadata.csv, a kohya in_json) names its folder, as kohya does
    dataset_name = (data_dir.parent.name if data_dir.suffix.lower() in _METADATA_SUFFIXES else data_dir.name) or cfg.data.dir
    subsets: dict[str, list] = {}
    for img in images:
        key = img.subset or dataset_name
        subsets.setdefault(key, []).append(img)
    tag_frequency: dict[str, dict[str, int]] = {}
    for key, members in subsets.items():
        tags = tag_frequency.setdefault(key, {})
        for img in members:
            for tag in (t.strip() for t in img.caption.split(",")):
                if tag:
                    tags[tag] = tags.get(tag, 0) + 1
    buckets: dict[tuple[int, int], int] = {}
    for img in images:
        buckets[tuple(img.bucket)] = buckets.get(tuple(img.bucket), 0) + img.repeats
    bucket_info = {
        "buckets": {
            str(i): {"resolution": list(resolution), "count": count}
            for i, (resolution, count) in enumerate(sorted(buckets.items()))
        },
        "mean_img_ar_error": sum(abs(i.bucket[0] / i.bucket[1] - i.size[0] / i.size[1]) for i in images)
        / max(len(images), 1),
    }
    return {
        "output_name": name,
        "network_dim": cfg.lora.rank if cfg.trains_lora else None,
        "network_alpha": cfg.lora.alpha if cfg.trains_lora else None,
        "network_args": _network_args(cfg) if cfg.trains_lora else None,
        "network_module": "lycoris.kohya" if cfg.trains_lora and cfg.lora.type != "lora" else None,
        "steps": step,
        "epoch": epoch,
        "resolution": (cfg.train.resolution, cfg.train.resolution),
        "clip_skip": cfg.clip_skip,
        "v2": model.family.name == "sd2",
        "v_parameterization": prediction_type == "v_prediction",
        "num_train_images": sum(i.repeats for i in images),
        "sd_model_name": model.name,
        "sd_model_hash": model.short_hash,
        "new_sd_model_hash": model.sha256,
        "dataset_dirs": _dir_counts(subsets),
        "lorastudio_data_fingerprint": data_fingerprint(images),
        **_prior_facts(cfg, class_images),
        "tag_frequency": tag_frequency,
        "bucket_info": bucket_info,
        "training_started_at": started_at,
        "learning_rate": cfg.train.learning_rate,
        **_learning_rate_facts(cfg),
        "mixed_precision": mixed_precision,
        "lr_scheduler": cfg.train.lr_scheduler,
        "optimizer": cfg.train.optimizer,
        "min_snr_gamma": cfg.train.min_snr_gamma,
        "noise_offset": cfg.train.noise_offset or None,
        "seed": cfg.seed,
        "training_comment": f"lorastudio {cfg.method}"
        + (f", prior preservation: {cfg.prior.class_prompt!r}" if cfg.uses_prior else "")
        + (f", EMA {cfg.train.ema_decay:g}" if cfg.train.ema_decay else ""),
        "lorastudio_config": cfg.model_dump(mode="json"),
        "trigger_phrase": cfg.trigger or None,
        **kohya_training_facts(cfg),
    }


def data_fingerprint(images: list) -> str:
    """What a data set trained: each picture's content hash with its caption, order-free (16 hex digits).
    A resume compares it, so an edited caption or a replaced picture under the same name is said."""
    import hashlib

    rows = sorted(f"{img.digest}\t{img.caption}" for img in images)
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()[:16]


def _dir_counts(groups: dict[str, list]) -> dict[str, dict[str, int]]:
    """kohya's `ss_dataset_dirs` / `ss_reg_dataset_dirs` entry per folder: its repeats and image count."""
    return {key: {"n_repeats": max(i.repeats for i in members), "img_count": len(members)} for key, members in groups.items()}


def _network_args(cfg) -> dict[str, Any]:
    """`ss_network_args`: kohya's networks.lora (and LyCORIS) read `conv_dim` as "train the 3x3 convs",
    so only a LoCon run, whose convs are trained, names it (with `conv_alpha`: lora.conv_alpha, else
    lora.alpha), as the strings kohya writes."""
    args: dict[str, Any] = {"targets": cfg.lora.targets, "method": cfg.method, **lycoris_network_args(cfg.lora)}
    if cfg.lora.targets == "locon" and cfg.lora.type == "lora":  # LyCORIS' own args hold them otherwise
        args.update(conv_network_args(cfg.lora))
    return args


def _prior_facts(cfg, class_images: list | None) -> dict[str, Any]:
    """kohya's regularisation-image keys for a prior-preservation run: count, folders, loss weight."""
    if not cfg.uses_prior:
        return {}
    images = class_images or []
    folders: dict[str, list] = {}
    for img in images:
        folders.setdefault(img.subset or Path(img.path).parent.name, []).append(img)
    return {
        "num_reg_images": sum(i.repeats for i in images) if images else cfg.prior.num_images,
        "reg_dataset_dirs": _dir_counts(folders),
        "prior_loss_weight": cfg.prior.loss_weight,
    }


def _learning_rate_facts(cfg) -> dict[str, Any]:
    """kohya's `ss_network_train_unet_only`, `ss_unet_lr`, and `ss_text_encoder_lr` only where it applied.

    The trigger embedding's rate is `ss_embedding_lr`: kohya readers take `ss_text_encoder_lr`
    for the rate of text-encoder LoRA layers.
    """
    te_lora = cfg.trains_lora and cfg.lora.train_text_encoder
    unet_lr, te_lr, emb_lr = learning_rates(cfg)
    facts: dict[str, Any] = {"text_encoder_lr": te_lr if te_lora else None}
    if cfg.trains_embedding:
        facts["embedding_lr"] = emb_lr
    if cfg.trains_lora:
        facts["unet_lr"] = unet_lr
        facts["network_train_unet_only"] = not te_lora
    return facts


def write_training_outputs(
    folder: Path,
    cfg: TrainConfig,
    name: str,
    model: LoadedModel,
    lora_set: LoraSet | None,
    embedding: TriggerEmbedding | None,
    facts: dict[str, Any],
    models_dir: Path | None = None,
) -> dict[str, Path]:
    """The LoRA (or model) and the embedding, each on its own path (see `train.outputs`);
    `models_dir` (the workspace's library) lets a full model name its base portably."""
    folder.mkdir(parents=True, exist_ok=True)
    family = model.family
    precision = cfg.output.save_precision
    targets = output_targets(
        folder,
        name,
        cfg.trigger,
        full_model=cfg.trains_full_unet,
        lora=lora_set is not None,
        embedding=embedding is not None,
    )
    if "model" in targets:
        base = base_reference(cfg.model, model, models_dir)
        save_full_checkpoint(model, targets["model"], facts, base_name=base, precision=precision)
    if "lora" in targets:
        save_lora(lora_set, embedding, targets["lora"], family, model.unet.config, facts, precision=precision)
    if "embedding" in targets:
        save_embedding(embedding, targets["embedding"], family, facts)
    return targets
