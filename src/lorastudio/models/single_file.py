"""Single-file checkpoints read tensor by tensor straight into their modules.

diffusers' `from_single_file` memory-maps the whole file (its pages stay resident while the
state dict lives), converts the full state dict to diffusers names and then copies it into the
model, so the peak is the file plus the loaded weights: 1.6x the weights for an fp16 file
loaded in fp32. Here each module is built empty (meta parameters) from the shipped config, and
each parameter is cast from its bytes in the mapped file to the destination dtype and device,
put in place, and its file pages dropped from the process (`MADV_DONTNEED`; they stay in the
page cache); a tensor already in the destination dtype is read (`preadv`) straight into memory
of its own. The peak is the loaded weights plus a tensor per reader thread. Two threads work
side by side (one converts while the other waits for pages); a first load hashes the file
(A1111's model hash) in a third, at the same time.

A layout the name tables (`models.ldm_names`) do not cover — a tensor missing or of another
size — makes `read_single_file` return None with the reason logged, and the caller falls back
to diffusers' converter, which knows more variants.
"""

from __future__ import annotations

import importlib
import json
import logging
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.models.checkpoint import file_sha256, read_safetensors_header
from lorastudio.models.ldm_names import (
    UNET_PREFIX,
    VAE_PREFIX,
    clip_key_to_ldm,
    open_clip_key_to_ldm,
    text_encoder_layout,
    unet_diffusers_to_ldm_path,
    vae_path_to_ldm,
)

if TYPE_CHECKING:
    import torch

    from lorastudio.models.families import Family

__all__ = ["SingleFile", "component_class", "read_diffusers_folder", "read_single_file"]

logger = logging.getLogger(__name__)

# Older names of the same tensors: SD1.x files saved with transformers 3 have no `text_model.`.
_OLD_SPELLINGS = (("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."),)

_READERS = 2  # one converts while the other waits for pages (reads, page faults)

_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32"}


@dataclass
class SingleFile:
    """What `read_single_file` built: modules by component name, and the file's SHA-256 if it was read whole."""

    components: dict[str, Any]
    sha256: str | None


class _LayoutMismatch(Exception):
    """The file's layout is not the one the tables describe (the caller uses diffusers instead)."""


@dataclass(frozen=True)
class _Source:
    """Where one parameter comes from: a file key, optionally one third of it, optionally transposed."""

    key: str
    third: int | None = None
    transpose: bool = False


def _sources(component: str, module, family_name: str) -> dict[str, _Source]:
    """Parameter name -> where it is in the file, for every parameter of `module`."""
    names = [name for name, _ in module.named_parameters()]
    if component == "unet":
        return {n: _Source(UNET_PREFIX + unet_diffusers_to_ldm_path(n, module.config)) for n in names}
    if component == "vae":
        up_blocks = len(module.config["up_block_types"])
        return {n: _Source(VAE_PREFIX + vae_path_to_ldm(n, up_blocks)) for n in names}
    layout, prefix = text_encoder_layout(family_name, component)
    if layout == "clip":
        return {n: _Source(clip_key_to_ldm(n, prefix)) for n in names}
    sources = {}
    for name in names:
        key, third = open_clip_key_to_ldm(name, prefix)
        sources[name] = _Source(key, third, transpose=key.endswith("text_projection"))
    return sources


def component_class(index: dict, name: str) -> type:
    """The class `model_index.json` names for component `name` (e.g. transformers' CLIPTextModel)."""
    library, class_name = index[name]
    return getattr(importlib.import_module(library), class_name)


def _empty_modules(folder: Path, family: Family) -> dict[str, Any]:
    """UNet, VAE and text encoders built from `folder`'s configs with meta parameters (no memory).

    Built under `torch.device("meta")`, which holds for this thread only (accelerate's
    `init_empty_weights` patches `nn.Module` for every thread: a module another thread built
    meanwhile, an annotator for a preview, lost its weights) and skips the weight initialisers
    (0.07 s of an SD1.5 load). Buffers are made on the meta device too: CLIP's `position_ids` is
    filled in here, any other buffer makes the caller use diffusers' loader instead.
    """
    import torch

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    # Classes and configs first: a module imported inside the meta block would keep meta tensors
    # it makes at import time (diffusers has such constants).
    recipes = []
    for name in ("unet", "vae", *family.text_encoders):
        library, _ = index[name]
        cls = component_class(index, name)
        if library == "diffusers":
            recipes.append((name, cls.from_config, cls.load_config(str(folder / name))))
        else:
            recipes.append((name, cls, cls.config_class.from_pretrained(str(folder / name))))
    with torch.device("meta"):
        modules = {name: build(config) for name, build, config in recipes}
    for name, module in modules.items():
        _materialise_buffers(name, module)
    return modules


def _materialise_buffers(component: str, module) -> None:
    """Give the meta buffers of a module built on the meta device their values (CLIP's positions)."""
    import torch

    for owner_name, owner in module.named_modules():
        for attr, value in vars(owner).items():  # a tensor kept as a plain attribute: nothing would fill it
            if isinstance(value, torch.Tensor) and value.device.type == "meta":
                raise _LayoutMismatch(f"{component}: {owner_name or 'the module'}.{attr} is a tensor with no known value")
    for buffer_name, buffer in list(module.named_buffers()):
        if buffer.device.type != "meta":
            continue
        owner_name, _, attr = buffer_name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if attr != "position_ids" or buffer.dim() != 2 or buffer.shape[0] != 1:
            raise _LayoutMismatch(f"{component}: buffer {buffer_name!r} has no known value")
        positions = torch.arange(buffer.shape[1], dtype=buffer.dtype).expand((1, -1))
        owner.register_buffer(attr, positions, persistent=attr not in owner._non_persistent_buffers_set)


class _Reader:
    """Reads tensors of a .safetensors file by key: views of the mapped file, or memory of their own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header = read_safetensors_header(path)
        with open(path, "rb") as f:
            self.data_start = 8 + int.from_bytes(f.read(8), "little")

    def entry(self, key: str) -> dict:
        entry = self.header.get(key)
        if not isinstance(entry, dict):
            raise _LayoutMismatch(f"tensor {key!r} is not in the file")
        return entry

    def file_key(self, key: str) -> str:
        """`key`, or its older spelling when only that is in the file (as A1111 reads them)."""
        if key in self.header:
            return key
        # transformers 5 flattened CLIPTextModel (no `text_model.`); files saved before or after may differ.
        for other in ("text_model." + key, key.removeprefix("text_model.")):
            if other in self.header:
                return other
        for new, old in _OLD_SPELLINGS:
            if new in key and key.replace(new, old, 1) in self.header:
                return key.replace(new, old, 1)
        raise _LayoutMismatch(f"tensor {key!r} is not in the file")

    def file_dtype(self, key: str):
        import torch

        return getattr(torch, _DTYPES.get(self.entry(key).get("dtype"), ""), None)

    def in_file_order(self, keys) -> list[str]:
        return sorted(keys, key=lambda k: self.entry(k)["data_offsets"][0])

    def read(self, fd: int, mapping: mmap.mmap, key: str, converted: bool) -> torch.Tensor:
        """The tensor `key`: a view of the mapped file when the caller converts it right away
        (`converted`; then `release` it), else read into memory of its own (it becomes the weight)."""
        import torch

        entry = self.entry(key)
        start, end = entry["data_offsets"]
        dtype = self.file_dtype(key)
        if dtype is None:
            raise _LayoutMismatch(f"tensor {key!r} has dtype {entry.get('dtype')!r}")
        if end == start:
            raw = torch.empty(0, dtype=torch.uint8)
        elif converted:
            raw = torch.frombuffer(mapping, dtype=torch.uint8, count=end - start, offset=self.data_start + start)
        else:
            raw = torch.empty(end - start, dtype=torch.uint8)
            view, done = memoryview(raw.numpy()), 0
            while done < len(view):  # one pread reads at most ~2 GB
                count = os.preadv(fd, [view[done:]], self.data_start + start + done)
                if count <= 0:
                    raise _LayoutMismatch(f"tensor {key!r} is cut short")
                done += count
        try:
            return raw.view(dtype).reshape(entry["shape"])
        except RuntimeError:
            raise _LayoutMismatch(f"tensor {key!r} is {end - start} bytes for {entry['shape']}") from None

    def release(self, mapping: mmap.mmap, key: str) -> None:
        """Drop a converted tensor's file pages from this process (they stay in the page cache):
        the mapped file never adds up in the resident set, only the tensors being converted."""
        start, end = (self.data_start + offset for offset in self.entry(key)["data_offsets"])
        first = start - start % mmap.PAGESIZE
        if end > first:
            mapping.madvise(mmap.MADV_DONTNEED, first, end - first)


def _fitted(value: torch.Tensor, source: _Source, shape: torch.Size, name: str) -> torch.Tensor:
    """The file tensor cut (a q/k/v third), transposed and reshaped (1x1 conv <-> Linear) to `shape`."""
    if source.third is not None:
        size = value.shape[0] // 3
        value = value[source.third * size : (source.third + 1) * size]
    if source.transpose:
        value = value.T
    if value.shape != shape:
        if value.numel() != shape.numel():
            raise _LayoutMismatch(f"{name}: {tuple(value.shape)} in the file, {tuple(shape)} in the model")
        value = value.reshape(shape)
    return value


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device == b.device and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _close(mapping: mmap.mmap) -> None:
    try:
        mapping.close()
    except BufferError:  # a view still alive (an error mid-way): the mapping goes with it
        pass


def _place(module, name: str, value: torch.Tensor) -> None:
    import torch

    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    owner._parameters[attr] = torch.nn.Parameter(value, requires_grad=False)


def read_single_file(
    path: Path,
    family: Family,
    config: Path,
    dtype: torch.dtype,
    device: str,
    hash_file: bool = False,
    skip: tuple = (),
) -> SingleFile | None:
    """The family's modules with the file's weights in `dtype` on `device`, or None (layout unknown).

    `config` is a diffusers folder whose JSON configs describe the modules (the family's shipped
    configs, or a tiny model's folder). With `hash_file` the file's SHA-256 is computed beside
    the load (another thread; the file is in the page cache by then or soon) and returned too.
    Components in `skip` are left out (a checkpoint without a VAE, loaded with a separate one).
    """
    try:
        modules = {name: m for name, m in _empty_modules(config, family).items() if name not in skip}
        plans = {name: _sources(name, module, family.name) for name, module in modules.items()}
    except Exception as exc:  # a config or name the tables do not know
        logger.info("%s: streamed loading not possible (%s); using diffusers' converter", path.name, exc)
        return None
    hashing = None
    if hash_file:
        hasher = ThreadPoolExecutor(1, thread_name_prefix="lorastudio-hash")
        hashing = hasher.submit(file_sha256, path)
        hasher.shutdown(wait=False)  # the thread ends with the hash
    try:
        _fill(path, plans, modules, dtype, device)
    except _LayoutMismatch as exc:
        logger.info("%s: streamed loading not possible (%s); using diffusers' converter", path.name, exc)
        return None
    return SingleFile(_finished(modules, dtype, device), hashing.result() if hashing else None)


# The weight file of each component in a diffusers folder (one file; sharded or .bin folders go to diffusers).
_FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def read_diffusers_folder(folder: Path, family: Family, dtype: torch.dtype, device: str) -> SingleFile | None:
    """A diffusers folder's modules streamed the same way (names as saved), or None (let diffusers load it).

    Only the plain layout: one `.safetensors` file per component, every parameter in it by its
    own name (CLIP files may or may not carry `text_model.`).
    """
    try:
        modules = _empty_modules(folder, family)
    except Exception as exc:  # a class this reader does not build (Kolors' ChatGLM), a missing config
        logger.info("%s: streamed loading not possible (%s); using diffusers' loader", folder.name, exc)
        return None
    try:
        for component, module in modules.items():
            files = [folder / component / name for name in _FOLDER_WEIGHTS if (folder / component / name).is_file()]
            if len(files) != 1:
                raise _LayoutMismatch(f"{component}: not one .safetensors file")
            plan = {name: _Source(name) for name, _ in module.named_parameters()}
            _fill(files[0], {component: plan}, modules, dtype, device)
    except _LayoutMismatch as exc:
        logger.info("%s: streamed loading not possible (%s); using diffusers' loader", folder.name, exc)
        return None
    return SingleFile(_finished(modules, dtype, device), None)


def _fill(path: Path, plans: dict[str, dict[str, _Source]], modules: dict[str, Any], dtype, device: str) -> None:
    """Put every planned parameter in place from the file at `path`; `_LayoutMismatch` if one is not there."""
    reader = _Reader(path)
    targets: dict[str, list[tuple[str, str, _Source]]] = {}
    for component, plan in plans.items():
        for name, source in plan.items():
            targets.setdefault(reader.file_key(source.key), []).append((component, name, source))

    def prepared(fd: int, mapping: mmap.mmap, key: str) -> list[tuple[str, str, torch.Tensor]]:
        """The values one file tensor gives, in the destination dtype and device, in memory of their own."""
        converted = reader.file_dtype(key) != dtype or device != "cpu"
        tensor = reader.read(fd, mapping, key, converted)
        values = []
        for component, name, source in targets[key]:
            shape = modules[component].get_parameter(name).shape
            value = _fitted(tensor, source, shape, f"{component}.{name}").to(device=device, dtype=dtype)
            if _shares_memory(value, tensor) and (value.shape != tensor.shape or len(targets[key]) > 1):
                value = value.clone()  # a third or a transposed view: its own memory, not the whole tensor's
            values.append((component, name, value.contiguous()))
        if converted:
            del tensor  # the view of the mapped file goes first, then its pages
            reader.release(mapping, key)
        return values

    # Two readers: one converts while the other waits for pages; both release the GIL.
    fd = os.open(path, os.O_RDONLY)
    mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)  # copy-on-write: a writable buffer torch accepts
    try:
        with ThreadPoolExecutor(_READERS, thread_name_prefix="lorastudio-load") as pool:
            for values in pool.map(lambda key: prepared(fd, mapping, key), reader.in_file_order(targets)):
                for component, name, value in values:
                    _place(modules[component], name, value)
    finally:
        _close(mapping)
        os.close(fd)


def _finished(modules: dict[str, Any], dtype, device: str) -> dict[str, Any]:
    for module in modules.values():
        module.to(device=device, dtype=dtype)  # buffers (made on the CPU) follow the parameters
        module.eval()
        module.requires_grad_(False)
    return modules
