"""`lora merge`: LoRAs baked into a model, saved as a diffusers folder or an A1111 single file.

The model is a library name (`tiny-sd15`, `my-model`), a diffusers folder or a single-file
checkpoint; each LoRA a name `lora list` shows or a file. A single-file model (`.ckpt` included)
merges into a `.safetensors` single file (what A1111 and `models import` take), in the dtype its UNet had.
A pivotal LoRA's trigger embedding cannot go into a checkpoint: it is written beside it
(`service.merge_embeddings`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.lora_sources import lora_source, model_ref
from lorastudio.service.merge_embeddings import (
    TRIGGERS_INDEX_KEY,
    TRIGGERS_KEY,
    plan_trigger_embeddings,
    split_for_model,
    write_trigger_embeddings,
)

if TYPE_CHECKING:
    from lorastudio.models.loading import ModelRef
    from lorastudio.service.workspace import Workspace

__all__ = ["MERGE_FORMATS", "parse_lora_spec", "merge_model"]

MERGE_FORMATS = ("diffusers", "single-file")


def parse_lora_spec(spec: str) -> tuple[Path, float]:
    """`NAME_OR_FILE:WEIGHT` (weight optional, default 1.0) -> (name or path, weight)."""
    import math

    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            return Path(spec), 1.0
        if not math.isfinite(weight):
            raise LorastudioError(f"--lora {spec}: the weight {tail} is not a number; give e.g. {head}:0.8.")
        return Path(head), weight
    return Path(spec), 1.0


def _merge_format(fmt: str | None, ref: ModelRef, out: Path) -> str:
    """The output format: the one asked for, else a single file for a single-file model or a
    `.safetensors` --out, else a diffusers folder; refuses pairs that would write a trap."""
    is_file_name = out.suffix.lower() == ".safetensors"
    if fmt is None:
        fmt = "single-file" if ref.kind == "single_file" or is_file_name else "diffusers"
    if fmt not in MERGE_FORMATS:
        raise LorastudioError(f"--format {fmt!r}: unknown; choose one of {', '.join(MERGE_FORMATS)}.")
    if fmt == "diffusers" and ref.kind == "single_file":
        raise LorastudioError(
            f"{ref.path.name}: a single-file model merges into a single file; pass --format single-file "
            "and a .safetensors --out."
        )
    if fmt == "single-file" and not is_file_name:
        from lorastudio.models.checkpoint import PICKLE_SUFFIXES

        named = out.with_suffix(".safetensors") if out.suffix.lower() in PICKLE_SUFFIXES else Path(f"{out}.safetensors")
        raise LorastudioError(
            f"--out {out}: a merged single file is written as .safetensors (never a pickle); name it {named.name}."
        )
    if fmt == "diffusers" and is_file_name:
        raise LorastudioError(f"--out {out}: a diffusers model is a folder; give a folder name, or --format single-file.")
    if ref.path is not None and out.resolve() == ref.path.resolve():
        raise LorastudioError(f"--out {out}: is the model itself; write the merged model to another path.")
    return fmt


def _check_out(out: Path, ws: Workspace | None) -> None:
    """A merge writes a new model: never over a file or folder that exists (another model, say), and
    never into loras/ (what is there must be a LoRA A1111 loads)."""
    if out.exists():
        raise LorastudioError(f"--out {out}: already exists; choose a new name (nothing is overwritten).")
    if ws is not None and (ws.loras.resolve() == out.resolve().parent or ws.loras.resolve() in out.resolve().parents):
        raise LorastudioError(f"--out {out}: a merged model does not go into {ws.loras.name}/; write it to models/.")


def _load_pipeline(model: Path):
    """A diffusers folder as its pipeline (full precision), and its family."""
    from lorastudio.models.families import family_from_diffusers_config

    index_file = model / "model_index.json"
    if not index_file.is_file():
        raise NotFoundError(f"{model}: no model_index.json; pass a diffusers model folder or a library model name.")
    index = json.loads(index_file.read_text(encoding="utf-8"))
    te_config = model / "text_encoder" / "config.json"
    te = json.loads(te_config.read_text(encoding="utf-8")) if te_config.is_file() else {}
    family = family_from_diffusers_config(index, te.get("hidden_size"), te.get("hidden_act"))
    import diffusers

    pipeline_class = getattr(diffusers, family.pipeline_class)
    return pipeline_class.from_pretrained(str(model), local_files_only=True), family


def _folder_model(ref: ModelRef) -> tuple[Any, Any, dict[str, Any], dict[str, str]]:
    """(pipeline, family, torch components, single-file metadata) of a diffusers folder."""
    import torch

    pipe, family = _load_pipeline(ref.path)
    components = {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}
    metadata = {}
    marker = ref.path / "lorastudio.json"  # a tiny model: recorded, so the single file loads back
    tiny = json.loads(marker.read_text(encoding="utf-8")).get("tiny") if marker.is_file() else None
    if tiny:
        metadata["lorastudio.base_config"] = tiny
    metadata["lorastudio.base_model"] = tiny or str(ref.path)
    return pipe, family, components, {**metadata, **_prediction_metadata(pipe.scheduler.config)}


def _prediction_metadata(scheduler_config) -> dict[str, str]:
    """The SAI model spec's prediction type, so an SD 2.x v-model's merge loads as one."""
    prediction = scheduler_config.get("prediction_type", "epsilon")
    return {"modelspec.prediction_type": "v" if prediction == "v_prediction" else str(prediction)}


def _half_dtype(spelled: str | None):
    """torch's half dtype for safetensors' spelling (`F16`, `BF16`); None (full precision) for others."""
    import torch

    return {"F16": torch.float16, "BF16": torch.bfloat16}.get(spelled)


def _unet_dtype(path: Path, cache_dir: Path):
    """The float dtype of the file's UNet (an fp16 checkpoint, `.ckpt` or `.safetensors`, stays fp16);
    None for fp32. Read from the safetensors header: a `.ckpt`'s is its weights-only conversion's, the
    very file the model then loads from (the pickle unpickled once, not once more for its dtype)."""
    from lorastudio.models.checkpoint import read_safetensors_header
    from lorastudio.models.loading import as_safetensors

    header = read_safetensors_header(as_safetensors(path, cache_dir))
    dtypes = {k: v.get("dtype") for k, v in header.items() if k != "__metadata__"}
    unet = [v for k, v in dtypes.items() if "diffusion_model" in k] or list(dtypes.values())
    return _half_dtype(unet[0]) if unet else None


def _folder_unet_dtype(folder: Path):
    """The float dtype of a diffusers folder's UNet weights (an fp16 folder merges into an fp16 single
    file); None for fp32 or a folder without safetensors weights."""

    from lorastudio.models.checkpoint import read_safetensors_header

    for path in sorted((folder / "unet").glob("*.safetensors")):
        dtypes = [v.get("dtype") for k, v in read_safetensors_header(path).items() if k != "__metadata__"]
        return _half_dtype(dtypes[0]) if dtypes else None
    return None


def _vae_path(ws: Workspace | None, vae: str | Path | None, ref: ModelRef) -> Path | None:
    """The `--vae` a single file without one takes (as `generate --vae`): a name in models/ or a path.
    A diffusers folder has its own vae/ and is saved whole."""
    if vae is None:
        return None
    if ref.kind == "folder":
        raise LorastudioError(
            f"--vae {vae}: {ref.name} is a diffusers folder, merged with its own vae/; --vae is for a "
            "single-file checkpoint (one without a VAE, say)."
        )
    if ws is None:
        path = Path(vae).expanduser()
        if not path.exists():
            raise NotFoundError(f"VAE {path} not found; pass a .safetensors file or a diffusers vae folder.")
        return path
    from lorastudio.service.names import LENIENT, find_vae

    return find_vae(ws, str(vae), LENIENT)


def _library_name(folder: Path, ws: Workspace | None) -> str:
    """How a merged file names its base folder: the library name for a folder in models/ (a tiny model's
    included, rebuilt where missing), else its path."""
    from lorastudio.models.tiny import is_tiny_name

    in_library = ws is not None and folder.parent.resolve() == ws.models.resolve()
    return folder.name if in_library or is_tiny_name(folder.name) else str(folder)


_KEPT_METADATA = ("lorastudio.base_config", "lorastudio.base_model", "lorastudio.merged_loras", TRIGGERS_KEY)


def _file_model(
    ref: ModelRef, ws: Workspace | None, cache_dir: Path, vae: Path | None = None
) -> tuple[Any, Any, dict[str, Any], dict[str, str]]:
    """(loaded model, family, components, metadata kept) of a single-file checkpoint, on the CPU in fp32;
    `vae` replaces (or, for a file without one, supplies) its VAE, which the merged file then holds."""
    from lorastudio.models.checkpoint import read_safetensors_metadata
    from lorastudio.models.loading import load_model

    models_dir = ws.models if ws is not None else ref.path.parent
    loaded = load_model(str(ref.path), models_dir, cache_dir, device="cpu", vae=vae, where=ref)
    own = read_safetensors_metadata(ref.path) if ref.path.suffix.lower() == ".safetensors" else {}
    kept = {k: own[k] for k in _KEPT_METADATA if own.get(k)}
    if loaded.base is not None:  # a UNet-only file: the folder it was completed from is the merge's base too
        kept.setdefault("lorastudio.base_model", _library_name(loaded.base, ws))
    return loaded, loaded.family, loaded.components, {**kept, **_prediction_metadata(loaded.scheduler_config)}


def merge_model(
    model: str | Path,
    lora_specs: list[str],
    out: str | Path,
    fmt: str | None = None,
    ws: Workspace | None = None,
    vae: str | Path | None = None,
) -> dict[str, Any]:
    """Bake LoRAs (`NAME_OR_FILE:WEIGHT`) into a model; write a diffusers folder or a single file.

    With a workspace, names are looked up as `generate` does (models/, loras/ and their aliases).
    `vae` (a single-file model only, as `generate --vae`) goes into the merged file. Trigger embeddings
    of pivotal LoRAs go to `<out name>-embeddings/<word>.safetensors`, the words into the model's
    metadata; `embeddings` and `notes` (one line per word) say so.
    """
    from lorastudio.adapters.detect import check_lora_family, load_lora_file
    from lorastudio.adapters.ldm import save_single_file
    from lorastudio.adapters.merge import merge_loras

    if not lora_specs:
        raise LorastudioError("merge: no --lora given; pass at least one NAME:WEIGHT (or FILE:WEIGHT).")
    out = Path(out)
    ref = model_ref(ws, model)
    if ref.kind == "hub":
        raise NotFoundError(f"model {str(model)!r}: not on this machine; download it, or give a library name or path.")
    fmt = _merge_format(fmt, ref, out)
    _check_out(out, ws)
    vae_path = _vae_path(ws, vae, ref)
    specs = [parse_lora_spec(spec) for spec in lora_specs]
    files = [(lora_source(ws, name), weight) for name, weight in specs]  # a misspelt name fails before loading
    loras = [(path, weight, load_lora_file(path)) for path, weight in files]
    embeddings, triggers, notes = plan_trigger_embeddings(loras, out, ws, ref)
    with tempfile.TemporaryDirectory(prefix="lorastudio-merge-") as scratch:
        cache_dir = ws.cache if ws is not None else Path(scratch)
        if ref.kind == "folder":
            dtype = _folder_unet_dtype(ref.path)
            holder, family, components, metadata = _folder_model(ref)
        else:
            dtype = _unet_dtype(ref.path, cache_dir)
            holder, family, components, metadata = _file_model(ref, ws, cache_dir, vae_path)
        requests, recorded = [], []
        for path, weight, lora in loras:
            check_lora_family(lora, family, name=path.name, components=components)
            requests.append((lora, weight, weight))
            recorded.append(f"{path.name}:{weight:g}")  # file names only: a shared file tells no one's folders
        touched = merge_loras(components, requests)
        triggers = triggers if family.embedding_keys else []
        if fmt == "single-file":
            earlier = json.loads(metadata.pop("lorastudio.merged_loras", "[]"))
            metadata["lorastudio.merged_loras"] = json.dumps(earlier + recorded)
            metadata.pop(TRIGGERS_KEY, None)
            if triggers:
                metadata[TRIGGERS_KEY] = json.dumps(triggers)
            base = metadata.pop("lorastudio.base_model", None)  # only a UNet-only file (Kolors) records it
            save_single_file(components, family, out, metadata, dtype=dtype, base_model=base)
        else:
            holder.save_pretrained(str(out), safe_serialization=True)
            _record_triggers_in_folder(out, triggers)
        embeddings = split_for_model(embeddings, components, family)  # HCP's SDXL matrix: CLIP-L and CLIP-G
        written, lines = write_trigger_embeddings(embeddings, family)
    trigger_info = {"embeddings": written, "notes": lines + notes} if lines or notes else {}
    return {
        "path": str(out),
        "format": fmt,
        "model": ref.name,
        "family": family.name,
        "loras": [f"{path}:{weight:g}" for path, weight in files],
        "vae": str(vae_path) if vae_path is not None else None,
        "modules_changed": touched,
        **trigger_info,
    }


def _record_triggers_in_folder(folder: Path, triggers: list[str]) -> None:
    """A merged diffusers folder's trigger words, in model_index.json under a private key (diffusers'
    loaders ignore keys starting with `_`)."""
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text(encoding="utf-8"))
    had = index.pop(TRIGGERS_INDEX_KEY, None)
    if triggers:
        index[TRIGGERS_INDEX_KEY] = triggers
    if triggers or had is not None:
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
