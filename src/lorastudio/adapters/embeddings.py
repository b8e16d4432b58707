"""Textual-inversion embeddings: A1111 `.pt`, kohya/A1111 safetensors, SDXL, LoRA bundles.

`.pt` files are pickles; they are read only with `torch.load(weights_only=True)`, which
refuses any pickled object other than tensors and plain containers, so a crafted file
cannot run code. Anything it refuses is refused here with `UnsafeFileError`. The one class
allowed beside them is `nn.ParameterDict`, which original textual-inversion files pickle as
`string_to_param` (A1111's restricted unpickler allows it too).

A1111 also saves embeddings as PNG pictures: the `.pt` dict as JSON (tensors as
`{"TORCHTENSOR": nested lists}`), base64-encoded in an `sd-ti-embedding` text chunk. That
is read as JSON, never unpickled; the older form hidden in the picture's pixels is not read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.errors import LorastudioError, UnsafeFileError

if TYPE_CHECKING:
    import torch

    from lorastudio.models.families import Family

__all__ = [
    "Embedding",
    "load_embedding",
    "embedding_from_state_dict",
    "embeddings_from_lora",
    "has_embedding_layout",
    "save_embedding",
]

_PICKLE_SUFFIXES = (".pt", ".bin", ".ckpt", ".pth")


@dataclass
class Embedding:
    """A trigger word and its vectors: one [n_vectors, dim] tensor per text encoder, in order."""

    name: str
    vectors: list[torch.Tensor]

    @property
    def num_vectors(self) -> int:
        return int(self.vectors[0].shape[0])


def _as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.unsqueeze(0) if tensor.dim() == 1 else tensor


def has_embedding_layout(names: Iterable[str]) -> bool:
    """Tensor names of an embedding file and nothing else: `emb_params`, `clip_l`/`clip_g`, or an
    A1111 .pt's `string_to_param(.*)` (the layouts `embedding_from_state_dict` reads by name)."""
    names = list(names)
    return bool(names) and all(
        name in ("emb_params", "clip_l", "clip_g") or name.split(".", 1)[0] == "string_to_param" for name in names
    )


def embedding_from_state_dict(data: dict, name: str, source: str = "embedding") -> Embedding:
    """Vectors from any known embedding layout (already loaded into a dict)."""
    import torch

    if "string_to_param" in data:  # A1111 .pt
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)  # an nn.ParameterDict keeps its tensors there
        tensor = params.get("*", next(iter(params.values()))) if isinstance(params, dict) else params
        return Embedding(name, [_as_matrix(tensor)])
    if "clip_l" in data or "clip_g" in data:
        return Embedding(name, [_as_matrix(data[k]) for k in ("clip_l", "clip_g") if k in data])
    if "emb_params" in data:
        return Embedding(name, [_as_matrix(data["emb_params"])])
    flat = {k: v for k, v in data.items() if k.startswith("string_to_param.")}
    if flat:
        return Embedding(name, [_as_matrix(next(iter(flat.values())))])
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:  # diffusers concept: {"<token>": tensor}
        return Embedding(name, [_as_matrix(tensors[0])])
    raise LorastudioError(
        f"{source}: no emb_params, clip_l/clip_g or string_to_param tensors; it is not a textual-inversion embedding."
    )


def embeddings_from_lora(lora) -> list[Embedding]:
    """The embeddings bundled in a LoRA file (`bundle_emb.*`), as A1111 and ComfyUI load them."""
    return [Embedding(token, list(vectors)) for token, vectors in lora.embeddings.items()]


def _load_pickle_safely(path: Path) -> dict:
    import pickle

    import torch

    from lorastudio.models.checkpoint import weights_only_load

    try:  # old A1111 files keep `string_to_param` as an (inert) ParameterDict
        return weights_only_load(path, [torch.nn.ParameterDict])
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError) as exc:
        raise UnsafeFileError(
            f"{path.name}: holds pickled objects that are not plain tensors, so it is refused "
            "(it could run code); convert it to .safetensors in a trusted environment."
        ) from exc


_PNG_CHUNK = "sd-ti-embedding"


def _tensor_from_json(value: dict):
    import torch

    if set(value) == {"TORCHTENSOR"}:
        return torch.tensor(value["TORCHTENSOR"], dtype=torch.float32)
    return value


def _load_png(path: Path) -> dict:
    """The embedding dict in an A1111 PNG's `sd-ti-embedding` chunk (base64 JSON, no pickle)."""
    import base64
    import binascii
    import json

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            text = getattr(image, "text", {}).get(_PNG_CHUNK)
    except (OSError, UnidentifiedImageError) as exc:
        raise LorastudioError(f"{path.name}: not a readable PNG ({exc}); save the embedding again.") from None
    if text is None:
        raise LorastudioError(
            f"{path.name}: has no {_PNG_CHUNK} text chunk (embeddings hidden in a picture's pixels are "
            "not read); use the .pt or .safetensors file of the embedding."
        )
    try:
        return json.loads(base64.b64decode(text), object_hook=_tensor_from_json)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise LorastudioError(f"{path.name}: its {_PNG_CHUNK} chunk is not base64 JSON ({exc}).") from None


def load_embedding(path: str | Path, name: str | None = None) -> Embedding:
    """An embedding file; its trigger word is the file stem, as in A1111, unless `name` is given."""
    from lorastudio.models.checkpoint import read_safetensors_private

    path = Path(path)
    if not path.is_file():
        raise LorastudioError(f"{path}: embedding file not found.")
    if path.suffix.lower() == ".safetensors":
        data = read_safetensors_private(path)[0]  # never memory-mapped: the file may change
    elif path.suffix.lower() in _PICKLE_SUFFIXES:
        data = _load_pickle_safely(path)
    elif path.suffix.lower() == ".png":
        data = _load_png(path)
    else:
        raise LorastudioError(f"{path.name}: unknown embedding file type; use .safetensors, .pt or an A1111 .png.")
    if not isinstance(data, dict):
        raise LorastudioError(f"{path.name}: is not a dict of tensors; it is not an embedding.")
    return embedding_from_state_dict(data, name or path.stem, source=path.name)


def save_embedding(
    embedding: Embedding,
    path: str | Path,
    family: Family | str | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write an A1111/ComfyUI/kohya-compatible safetensors embedding.

    SD1/SD2: `{"emb_params": [n, dim]}`; SDXL (two vectors): `{"clip_l": ..., "clip_g": ...}`.
    """
    from safetensors.torch import save_file

    from lorastudio.models.families import get_family

    if isinstance(family, str):
        family = get_family(family)
    count = len(family.text_encoders) if family is not None else len(embedding.vectors)
    if len(embedding.vectors) != count:
        raise LorastudioError(
            f"embedding {embedding.name}: has {len(embedding.vectors)} vector sets but the model has {count} text encoders."
        )
    keys = ("clip_l", "clip_g") if count == 2 else ("emb_params",)
    state = {k: _as_matrix(v).detach().contiguous() for k, v in zip(keys, embedding.vectors, strict=True)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()} or None)
    return path
