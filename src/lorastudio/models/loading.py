"""Load a model, offline: a diffusers folder, an A1111 single file, a tiny model or a hub id.

Single files are read with the small per-family configs shipped in the package
(`models/configs/<family>`), so no hub access is ever needed for them. The result is a
`LoadedModel`: the torch components plus the facts generation and training need.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.models.chatglm import check_vocabulary
from lorastudio.models.checkpoint import (
    PICKLE_SUFFIXES,
    cached_file_hash,
    convert_ckpt_to_safetensors,
    detach_from_files,
    original_sha256,
    read_safetensors_keys,
    read_safetensors_metadata,
)
from lorastudio.models.checkpoint import hash_cache_path as _hash_cache_path
from lorastudio.models.families import (
    Family,
    detect_family_from_keys,
    family_from_diffusers_config,
    get_family,
)
from lorastudio.models.ldm_names import VAE_PREFIX
from lorastudio.models.prediction import declared_prediction, unet_predicts_v
from lorastudio.models.single_file import component_class, read_diffusers_folder, read_single_file
from lorastudio.models.tiny import TINY_MODELS, ensure_tiny_model, is_tiny_name
from lorastudio.models.tokenizer import write_clip_tokenizer

__all__ = [
    "LoadedModel",
    "ModelRef",
    "resolve_model",
    "load_model",
    "model_hash",
    "config_folder",
    "pick_device",
]

WEIGHT_SUFFIXES = (".safetensors",) + tuple(PICKLE_SUFFIXES)


@dataclass
class ModelRef:
    """Where a model is and what it is, before any weights are read."""

    name: str
    path: Path | None  # None for a hub id
    kind: str  # "folder", "single_file", "hub"
    hub_id: str | None = None


@dataclass
class LoadedModel:
    name: str
    family: Family
    source: str
    sha256: str
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_config: dict
    device: str
    dtype: Any
    vae_name: str | None = None
    vae_sha256: str | None = None
    extra: dict = field(default_factory=dict)
    base: Path | None = None  # the diffusers folder a UNet-only file (Kolors) was completed from

    @property
    def short_hash(self) -> str:
        """A1111's "Model hash": first 10 hex of the checkpoint's SHA-256."""
        return self.sha256[:10]

    @property
    def components(self) -> dict[str, Any]:
        comps = {"unet": self.unet, "vae": self.vae}
        for name, module in zip(self.family.text_encoders, self.text_encoders, strict=True):
            comps[name] = module
        return comps

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor


def pick_device(requested: str | None = None) -> tuple[str, Any]:
    """CUDA with bf16/fp16 when present, else CPU with fp32 (fp16 on CPU is slow and lossy)."""
    import torch

    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = device.partition(":")  # "cpu:0" is what a data-parallel rank is given
    if kind not in ("cpu", "cuda", "mps") or (index and not (index.isascii() and index.isdigit())):  # not "cuda:²"
        raise LorastudioError(f"device {device!r}: not a device here; use cpu, cuda or cuda:N (one GPU).")
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise LorastudioError(f"device {device!r} requested but this machine has no Apple GPU; use --device cpu.")
        return device, torch.float32
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise LorastudioError(
                f"device {device!r} requested but no CUDA GPU is available; use --device cpu."
            )
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return device, dtype
    return device, torch.float32


def resolve_model(ref: str, models_dir: Path) -> ModelRef:
    """Find a model by library name, built-in tiny name, path, or hub id (in that order)."""
    if is_tiny_name(ref):
        return ModelRef(ref, ensure_tiny_model(ref, models_dir), "folder")
    candidates = (
        [models_dir / ref] + [models_dir / f"{ref}{s}" for s in WEIGHT_SUFFIXES] + [Path(ref).expanduser()]
    )
    for path in candidates:
        if path.is_dir() and (path / "model_index.json").is_file():
            return ModelRef(path.name, path.resolve(), "folder")
        if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES:
            return ModelRef(path.stem, path.resolve(), "single_file")
        if path.is_dir() or path.is_file():
            raise LorastudioError(
                f"{path}: neither a diffusers folder (no model_index.json) nor a .safetensors/.ckpt checkpoint."
            )
    if "/" in ref and not ref.startswith((".", "/")) and ref.count("/") == 1:
        return ModelRef(ref.split("/")[-1], None, "hub", hub_id=ref)
    known = {p.stem for p in models_dir.iterdir()} if models_dir.is_dir() else set()
    choices = ", ".join(sorted(known | set(TINY_MODELS)))
    raise NotFoundError(
        f"model {ref!r} not found; use `lorastudio models import PATH`, a path, or one of: {choices}.",
        key="model_not_found",
        params={"name": ref},
    )


def config_folder(
    family: Family,
    cache_dir: Path,
    unet_overrides: dict | None = None,
    scheduler_overrides: dict | None = None,
) -> Path:
    """A diffusers config folder (JSON + tokenizers, no weights) for loading single files offline."""
    overrides = {"unet": unet_overrides or {}, "scheduler": scheduler_overrides or {}}
    tag = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
    folder = cache_dir / "configs" / f"{family.config_dir}-{tag}"
    if (folder / "model_index.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    src = resources.files("lorastudio.models").joinpath("configs", family.config_dir)
    for sub in src.iterdir():
        if sub.is_dir():
            for f in sub.iterdir():
                (tmp / sub.name).mkdir(parents=True, exist_ok=True)
                (tmp / sub.name / f.name).write_bytes(f.read_bytes())
        else:
            tmp.mkdir(parents=True, exist_ok=True)
            (tmp / sub.name).write_bytes(sub.read_bytes())
    for component, changes in (("unet", overrides["unet"]), ("scheduler", overrides["scheduler"])):
        if changes:
            name = "config.json" if component == "unet" else "scheduler_config.json"
            cfg_path = tmp / component / name
            cfg = json.loads(cfg_path.read_text())
            cfg.update(changes)
            cfg_path.write_text(json.dumps(cfg, indent=2))
    tokenizers = ["tokenizer"] + (["tokenizer_2"] if len(family.text_encoders) > 1 else [])
    for tok_name, pad in zip(tokenizers, family.tokenizer_pad_tokens, strict=True):
        write_clip_tokenizer(tmp / tok_name, pad_token=pad)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _remember_hash(path: Path, cache_dir: Path, sha256: str) -> None:
    """Keep a SHA-256 computed while loading, as `model_hash` would have (keyed by path, size, mtime)."""
    cached = _hash_cache_path(path, cache_dir)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(sha256)


def model_hash(path: Path, cache_dir: Path) -> str:
    """SHA-256 of a checkpoint file (A1111's hash), or of a folder's weight files; cached by size+mtime."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for f in files:
        value = cached_file_hash(f, cache_dir)
        if path.is_file():
            return value
        digest.update(f"{f.relative_to(path).as_posix()}:{value}\n".encode())
    return digest.hexdigest()


def _family_of_folder(folder: Path) -> Family:
    marker = folder / "lorastudio.json"
    if marker.is_file():
        return get_family(json.loads(marker.read_text())["family"])
    index = json.loads((folder / "model_index.json").read_text())
    te_cfg = folder / "text_encoder" / "config.json"
    te = json.loads(te_cfg.read_text()) if te_cfg.is_file() else {}
    return family_from_diffusers_config(index, te.get("hidden_size"), te.get("hidden_act"))


def peek_family(where: ModelRef) -> Family | None:
    """The family of a found model from its folder's JSON or a file's tensor names, without
    loading it (the trainer picks its precision before the model loads); None if unsure."""
    try:
        if where.kind == "folder":
            return _family_of_folder(where.path)
        if where.kind == "single_file" and where.path.suffix == ".safetensors":
            return detect_family_from_keys(read_safetensors_keys(where.path), str(where.path))
    except (LorastudioError, OSError, ValueError, KeyError):
        return None
    return None


def peek_text_widths(where: ModelRef, family: Family) -> tuple[int, ...] | None:
    """How wide the model's token embeddings are, one per text encoder, without loading it (an
    SD1.x and an SD2.x embedding share their tensor name and differ only there); None if unsure."""
    try:
        if where.kind == "folder":
            return tuple(
                int(json.loads((where.path / encoder / "config.json").read_text(encoding="utf-8"))["hidden_size"])
                for encoder in family.text_encoders
            )
        if where.kind == "single_file" and where.path.suffix == ".safetensors":
            shapes = read_safetensors_keys(where.path)
            # LDM and diffusers names alike end so; sorted, SDXL's embedders 0 and 1 are in encoder order.
            widths = [shape[-1] for name, shape in sorted(shapes.items()) if name.endswith("token_embedding.weight")]
            return tuple(widths) if len(widths) == len(family.text_encoders) else None
    except (LorastudioError, OSError, ValueError, KeyError, TypeError):
        return None
    return None


def _quiet_library_logging() -> None:
    """diffusers/transformers print per-component bars and warnings; our fronts show their own."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _pipeline_class(family: Family):
    import diffusers

    return getattr(diffusers, family.pipeline_class)


def _load_folder(folder: Path, dtype, device: str | None = None) -> tuple[Family, Any]:
    """A diffusers folder: streamed into place when its layout is the plain one and `device` is
    known (`models.single_file.read_diffusers_folder`), else through diffusers' `from_pretrained`."""
    family = _family_of_folder(folder)
    if device is not None:
        streamed = read_diffusers_folder(folder, family, dtype, device)
        if streamed is not None:
            return family, _StreamedPipeline(folder, family, streamed.components)
    pipe = _pipeline_class(family).from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    return family, pipe


def _single_file_config(
    path: Path,
    keys: dict[str, tuple[int, ...]],
    family: Family,
    cache_dir: Path,
    models_dir: Path,
    prediction_type: str | None,
    original: Path | None = None,
) -> tuple[Path, bool]:
    """The config folder for a single file (a tiny model's own folder, or the family's shipped
    one) and whether its prediction type is settled; an SD 2.x file that declares none is not,
    and its UNet is asked after loading (`models.prediction`)."""
    meta = read_safetensors_metadata(path) if path.suffix == ".safetensors" else {}
    base = meta.get("lorastudio.base_config")
    if base and is_tiny_name(base):
        return ensure_tiny_model(base, models_dir), True
    in_channels = keys.get("model.diffusion_model.input_blocks.0.0.weight", (0, 4))[1]
    unet = {"in_channels": in_channels} if in_channels != 4 else {}
    # A caller's choice, the SAI model spec, a yaml beside the file, a 9-channel SD 2.x UNet.
    # (the yaml sits beside the file the user has: a .ckpt, not its converted copy in the cache)
    prediction_type = prediction_type or declared_prediction(original or path, meta, in_channels, family.name)
    sched = {"prediction_type": prediction_type} if prediction_type else {}
    return config_folder(family, cache_dir, unet, sched), bool(prediction_type) or family.name != "sd2"


def _settle_prediction(pipe: Any) -> None:
    """An SD 2.x file that declares nothing: its UNet says whether it predicts v or the noise."""
    kind = "v_prediction" if unet_predicts_v(pipe.unet) else "epsilon"
    if pipe.scheduler.config.get("prediction_type") != kind:
        pipe.scheduler = pipe.scheduler.from_config(pipe.scheduler.config, prediction_type=kind)


def as_safetensors(path: Path, cache_dir: Path) -> Path:
    """`path` itself, or for a pickle its weights-only conversion cached by content hash (the pickle is
    unpickled once, when no conversion of this content is cached yet)."""
    path = Path(path)
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        return path
    converted = cache_dir / "converted" / f"{path.stem}-{model_hash(path, cache_dir)[:10]}.safetensors"
    if not converted.is_file():
        convert_ckpt_to_safetensors(path, converted)
    return converted


def _base_folder_for(path: Path, family: Family, models_dir: Path) -> Path:
    """The diffusers folder a UNet-only file completes: named in its metadata, else the library's."""
    base = read_safetensors_metadata(path).get("lorastudio.base_model")
    if base:
        return resolve_model(base, models_dir).path
    folders = sorted(p for p in models_dir.iterdir() if (p / "model_index.json").is_file()) if models_dir.is_dir() else []
    for folder in folders:
        if _family_of_folder(folder) is family and not is_tiny_name(folder.name):
            return folder
    raise NotFoundError(
        f"{path}: a {family.label} UNet-only file needs the {family.label} diffusers folder for its text "
        "encoder and VAE; import it with `lorastudio models import PATH` first."
    )


def _load_unet_over_base(path: Path, family: Family, dtype, models_dir: Path) -> tuple[Any, Path]:
    """A community fine-tune (UNet weights only, diffusers names) over its base model's folder; and that folder."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    base = _base_folder_for(path, family, models_dir)
    pipe = _load_folder(base, dtype)[1]
    state = {k.removeprefix("unet."): v for k, v in load_file(str(path)).items()}
    unet = UNet2DConditionModel.from_config(pipe.unet.config)
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        name = (missing or unexpected)[0]
        raise LorastudioError(
            f"{path}: does not fit {family.label}'s UNet ({len(missing)} missing, {len(unexpected)} "
            f"unexpected tensors, e.g. {name}); pass a diffusers-named UNet file."
        )
    pipe.unet = unet.to(dtype)
    return pipe, base


def _load_single_file(
    path: Path,
    dtype,
    device: str,
    cache_dir: Path,
    models_dir: Path,
    family_name: str | None,
    prediction_type: str | None,
    vae_given: bool = False,
) -> tuple[Family, Any, Path | None]:
    """(family, pipeline, the base folder a UNet-only file was completed from, else None)."""
    original = path
    path = as_safetensors(path, cache_dir)
    keys = read_safetensors_keys(path)
    family = get_family(family_name) if family_name else detect_family_from_keys(keys, str(path))
    if family.unet_marker and not family.single_file_markers:  # no all-in-one file exists (Kolors)
        return family, *_load_unet_over_base(path, family, dtype, models_dir)
    config, settled = _single_file_config(path, keys, family, cache_dir, models_dir, prediction_type, original)
    without_vae = not any(key.startswith(VAE_PREFIX) for key in keys)
    if without_vae and not vae_given:
        raise LorastudioError(
            f"{original}: this checkpoint has no VAE; pass one with --vae FILE (e.g. vae-ft-mse-840000 for SD 1.x)."
        )
    hash_file = path == original and not _hash_cache_path(path, cache_dir).is_file()
    skip = ("vae",) if without_vae else ()
    streamed = read_single_file(path, family, config, dtype, device, hash_file=hash_file, skip=skip)
    if streamed is not None:
        if streamed.sha256:
            _remember_hash(path, cache_dir, streamed.sha256)
        pipe = _StreamedPipeline(config, family, streamed.components)
        if without_vae:  # `load_model` puts the given VAE in, built from this config
            pipe.vae, pipe.vae_config = None, json.loads((config / "vae" / "config.json").read_text(encoding="utf-8"))
    elif without_vae:
        raise LorastudioError(f"{original}: a checkpoint without a VAE in a layout only diffusers reads; add the VAE to the file.")
    else:
        try:
            pipe = _pipeline_class(family).from_single_file(
                str(path), config=str(config), dtype=dtype, local_files_only=True
            )
        except (ValueError, RuntimeError, KeyError) as exc:
            first = str(exc).splitlines()[0][:200]
            raise LorastudioError(
                f"{path}: could not be loaded as {family.label} ({first}); is the file complete?"
            ) from None
    if not settled:
        _settle_prediction(pipe)
    return family, pipe, None


class _StreamedPipeline:
    """The parts of a diffusers pipeline `load_model` reads, for modules `read_single_file` built.

    Tokenizers and the scheduler come from the same config folder diffusers would use.
    """

    def __init__(self, folder: Path, family: Family, components: dict[str, Any]) -> None:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        for name, module in components.items():
            setattr(self, name, module)
        # Weights read into private memory on their device: no copy away from the file needed.
        self.private_modules = {id(module) for module in components.values()}
        tokenizers = ["tokenizer"] + (["tokenizer_2"] if len(family.text_encoders) > 1 else [])
        for name in tokenizers:
            tokenizer = component_class(index, name).from_pretrained(str(folder / name), local_files_only=True)
            setattr(self, name, tokenizer)
        scheduler = component_class(index, "scheduler")
        self.scheduler = scheduler.from_config(scheduler.load_config(str(folder / "scheduler")))


def single_file_sha256(path: Path, cache_dir: Path) -> str:
    """The hash images name a single file by: an imported .ckpt's own (the pickle's, as A1111 writes
    it for that file), else the file's."""
    return original_sha256(path) or model_hash(path, cache_dir)


def _load_vae_override(vae_path: Path, pipe, cache_dir: Path, dtype):
    from diffusers import AutoencoderKL

    vae_path = Path(vae_path)
    if vae_path.is_dir():
        return AutoencoderKL.from_pretrained(str(vae_path), dtype=dtype, local_files_only=True)
    if not vae_path.is_file():
        raise NotFoundError(
            f"VAE {vae_path} not found; pass a .safetensors file or a diffusers vae folder.",
            key="vae_not_found",
            params={"name": vae_path.name},
        )
    vae_path = as_safetensors(vae_path, cache_dir)
    config = dict(pipe.vae.config) if pipe.vae is not None else pipe.vae_config  # a checkpoint without one
    vae_cfg = cache_dir / "configs" / f"vae-{hashlib.sha256(json.dumps(config).encode()).hexdigest()[:8]}"
    if not (vae_cfg / "config.json").is_file() and pipe.vae is not None:
        pipe.vae.save_config(str(vae_cfg))
    elif not (vae_cfg / "config.json").is_file():
        vae_cfg.mkdir(parents=True, exist_ok=True)
        (vae_cfg / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return AutoencoderKL.from_single_file(
        str(vae_path), config=str(vae_cfg), dtype=dtype, local_files_only=True
    )


def load_model(
    ref: str,
    models_dir: Path,
    cache_dir: Path,
    device: str | None = None,
    vae: str | Path | None = None,
    family: str | None = None,
    prediction_type: str | None = None,
    where: ModelRef | None = None,
) -> LoadedModel:
    """Load every component of a model onto `device` (default: CUDA if present, else CPU).

    `where` is the model already found (a server resolves request names itself, see
    `service.names`); without it `ref` is looked up as `resolve_model` does. The weights end
    up in private memory, never memory-mapped from the file (see `detach_from_files`).
    """
    _quiet_library_logging()
    device, dtype = pick_device(device)
    where = where or resolve_model(ref, models_dir)
    base = None
    if where.kind == "hub":
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise NotFoundError(
                f"model {ref!r} is not on this machine and HF_HUB_OFFLINE=1; download it first or give a path."
            )
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(where.hub_id, dtype=dtype)
        te = getattr(getattr(pipe, "text_encoder", None), "config", None)  # None in SDXL refiners
        fam = family_from_diffusers_config(
            dict(pipe.config), getattr(te, "hidden_size", None), getattr(te, "hidden_act", None)
        )
        sha = hashlib.sha256(where.hub_id.encode()).hexdigest()
    elif where.kind == "folder":
        fam, pipe = _load_folder(where.path, dtype, device)
        sha = model_hash(where.path, cache_dir)
    else:
        fam, pipe, base = _load_single_file(
            where.path, dtype, device, cache_dir, models_dir, family, prediction_type, vae_given=vae is not None
        )
        sha = single_file_sha256(where.path, cache_dir)
    vae_name = vae_sha = None
    if vae is not None:
        try:
            pipe.vae = _load_vae_override(Path(vae), pipe, cache_dir, dtype)
        except LorastudioError:
            raise
        except Exception as exc:  # a LoRA or a broken file given as the VAE: name the VAE, not the model
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise LorastudioError(
                f"VAE {Path(vae).name}: could not be loaded ({reason}); give a VAE file (e.g. vae-ft-mse-840000)."
            ) from None
        vae_name, vae_sha = Path(vae).stem, model_hash(Path(vae), cache_dir)
    text_encoders = [getattr(pipe, name) for name in fam.text_encoders]
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if len(fam.text_encoders) > 1 else [])
    if fam.text_encoder_kind == "chatglm":
        check_vocabulary(tokenizers[0], text_encoders[0], str(where.path or where.hub_id))
    scheduler_config = dict(pipe.scheduler.config)
    if prediction_type:
        scheduler_config["prediction_type"] = prediction_type
    private = getattr(pipe, "private_modules", set())  # streamed from the file: nothing memory-mapped
    for module in [pipe.unet, pipe.vae, *text_encoders]:
        module.to(device)
        if id(module) not in private:
            detach_from_files(module)
        module.eval()
        module.requires_grad_(False)
    return LoadedModel(
        name=where.name,
        family=fam,
        source=str(where.path or where.hub_id),
        sha256=sha,
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoders=text_encoders,
        tokenizers=tokenizers,
        scheduler_config=scheduler_config,
        device=device,
        dtype=dtype,
        vae_name=vae_name,
        vae_sha256=vae_sha,
        base=base,
    )
