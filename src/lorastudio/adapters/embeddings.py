"""Textual-inversion embeddings: A1111 `.pt`/`.bin`, kohya/A1111 safetensors, SDXL, A1111 PNGs, LoRA bundles.

`.pt` files are pickles; they are read only with `torch.load(weights_only=True)`, which
refuses any pickled object other than tensors and plain containers, so a crafted file
cannot run code. Anything it refuses is refused here with `UnsafeFileError`. The one class
allowed beside them is `nn.ParameterDict`, which original textual-inversion files pickle as
`string_to_param` (A1111's restricted unpickler allows it too).

A1111 also saves embeddings as PNG pictures (JSON in a text chunk or in the pixels), and reads them
from .webp, .jxl and .avif pictures too: `adapters.embedding_png` reads them as JSON, never unpickled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.adapters.embedding_png import EMBEDDING_IMAGE_SUFFIXES
from lorastudio.errors import LorastudioError, UnsafeFileError
from lorastudio.models.checkpoint import PICKLE_SUFFIXES

if TYPE_CHECKING:
    import torch

    from lorastudio.adapters.lora_file import LoraFile
    from lorastudio.models.families import Family

__all__ = [
    "Embedding",
    "load_embedding",
    "embedding_from_state_dict",
    "embeddings_from_lora",
    "has_embedding_layout",
    "save_embedding",
    "check_vectors",
    "split_joined_vectors",
    "JOINED_WIDTHS",
    "a1111_info",
    "refuse_several_concept_terms",
]

@dataclass
class Embedding:
    """A trigger word and its vectors: one [n_vectors, dim] tensor per text encoder, in order."""

    name: str
    vectors: list[torch.Tensor]
    # What an A1111 file records beside the vectors (`name`, `step`, `sd_checkpoint`, `sd_checkpoint_name`).
    info: dict[str, str] = field(default_factory=dict)

    @property
    def num_vectors(self) -> int:
        return int(self.vectors[0].shape[0])


def _as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.unsqueeze(0) if hasattr(tensor, "dim") and tensor.dim() == 1 else tensor


def has_embedding_layout(names: Iterable[str]) -> bool:
    """Tensor names of an embedding file and nothing else: `emb_params`, `clip_l`/`clip_g`, or an
    A1111 .pt's `string_to_param(.*)` (the layouts `embedding_from_state_dict` reads by name)."""
    names = list(names)
    return bool(names) and all(
        name in ("emb_params", "clip_l", "clip_g") or name.split(".", 1)[0] == "string_to_param" for name in names
    )


# The facts A1111 saves beside the vectors in a .pt or PNG embedding (kept as safetensors metadata).
A1111_INFO_KEYS = ("name", "step", "sd_checkpoint", "sd_checkpoint_name")


def a1111_info(data: dict) -> dict[str, str]:
    """The A1111 facts a file holds, as strings; a missing or non-plain value is left out."""
    return {
        key: str(data[key])
        for key in A1111_INFO_KEYS
        if isinstance(data.get(key), str | int | float) and not isinstance(data.get(key), bool)
    }


def embedding_from_state_dict(data: dict, name: str, source: str = "embedding") -> Embedding:
    """Vectors from any known embedding layout (already loaded into a dict), with its A1111 facts."""
    try:
        embedding = _vectors_from_state_dict(data, name, source)
    except (StopIteration, AttributeError, TypeError, KeyError):  # e.g. an empty string_to_param
        raise LorastudioError(f"{source}: its string_to_param holds no vectors; it is not an embedding.") from None
    embedding.info = a1111_info(data)
    return embedding


def _vectors_from_state_dict(data: dict, name: str, source: str) -> Embedding:
    import torch

    if "string_to_param" in data:  # A1111 .pt
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)  # an nn.ParameterDict keeps its tensors there
        if isinstance(params, dict):
            _one_term(list(params), source)
        tensor = params.get("*", next(iter(params.values()))) if isinstance(params, dict) else params
        return Embedding(name, [_as_matrix(tensor)])
    if "clip_l" in data or "clip_g" in data:
        return Embedding(name, [_as_matrix(data[k]) for k in ("clip_l", "clip_g") if k in data])
    if "emb_params" in data:
        return Embedding(name, [_as_matrix(data["emb_params"])])
    flat = {k: v for k, v in data.items() if k.startswith("string_to_param.")}
    if flat:
        _one_term([k.partition(".")[2] for k in flat], source)
        return Embedding(name, [_as_matrix(next(iter(flat.values())))])
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:  # diffusers concept: {"<token>": tensor}
        return Embedding(name, [_as_matrix(tensors[0])])
    shapes = {key: tuple(value.shape) for key, value in data.items() if isinstance(value, torch.Tensor)}
    refuse_several_concept_terms(shapes, source)
    raise LorastudioError(
        f"{source}: no emb_params, clip_l/clip_g or string_to_param tensors; it is not a textual-inversion embedding."
    )


def _one_term(terms: list[str], source: str, fix: str = "keep one term per file") -> None:
    """A1111 refuses a file whose `string_to_param` holds several terms (which word would it be?)."""
    if len(terms) > 1:
        shown = ", ".join(repr(t) for t in terms[:4]) + (", ..." if len(terms) > 4 else "")
        raise LorastudioError(
            f"{source}: embedding file has multiple terms in it ({len(terms)}: {shown}); A1111 refuses it "
            f"too, {fix}."
        )


def refuse_several_concept_terms(shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """A diffusers concept file (`learned_embeds.bin`/.safetensors) holds one `{"<token>": vectors}`
    tensor; one with several tokens is refused as A1111 refuses it ("multiple terms"), naming them.

    Only a file shaped like several concepts (vectors of one width: 1-D `[width]` or 2-D
    `[vectors, width]`) is; anything else (a LoRA put here by mistake) is no embedding at all.
    """
    vectors = [shape for shape in shapes.values() if len(shape) in (1, 2) and 0 not in shape]
    if len(shapes) > 1 and len(vectors) == len(shapes) and len({shape[-1] for shape in vectors}) == 1:
        _one_term(
            list(shapes), source, "save each token in a file of its own (its file name is then the prompt word)"
        )


def embeddings_from_lora(lora: LoraFile) -> list[Embedding]:
    """The embeddings bundled in a LoRA file (`bundle_emb.*`), as A1111 loads them (ComfyUI ignores them)."""
    return [Embedding(token, list(vectors)) for token, vectors in lora.embeddings.items()]


def _load_pickle_safely(path: Path) -> dict:
    """A pickled embedding read weights-only: a file that asks for other objects is refused as
    unsafe, one torch cannot parse at all as corrupt (both in one line naming the file)."""
    import pickle

    import torch

    from lorastudio.models.checkpoint import unpickling_refusal, weights_only_load

    _check_unpacked_size(path)
    try:  # old A1111 files keep `string_to_param` as an (inert) ParameterDict
        return weights_only_load(path, [torch.nn.ParameterDict])
    except pickle.UnpicklingError as exc:
        if "Unsupported operand" in str(exc):  # bytes that are no pickle at all; any object asked for is unsafe
            raise _corrupt(path, unpickling_refusal(exc)) from None
        raise UnsafeFileError(
            f"{path.name}: holds pickled objects that are not plain tensors, so it is refused "
            "(it could run code); convert it to .safetensors in a trusted environment."
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:  # torch's readers raise anything from EOFError to IndexError on bad bytes
        why = str(exc).splitlines()[0][:120] if str(exc).strip() else "no data"
        raise _corrupt(path, f"{type(exc).__name__}: {why}") from None


# What an embedding's tensors may unpack to (SDXL's 75 vectors are 600 KB); torch's zip reader inflates a
# deflated entry, so a small crafted file could otherwise ask for gigabytes.
MAX_EMBEDDING_UNPACKED_BYTES = 64 * 1024 * 1024
# More vectors than any prompt could hold (A1111 fits 75 tokens in a chunk; large embeddings use ~100).
MAX_EMBEDDING_VECTORS = 1000


def _check_unpacked_size(path: Path) -> None:
    """A zip-format `.pt` whose entries would unpack past the limit is refused before torch reads it."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # the legacy format holds its tensors as they are: the file size bounds them
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from None
    if unpacked > MAX_EMBEDDING_UNPACKED_BYTES:
        raise LorastudioError(
            f"{path.name}: unpacks to {unpacked >> 20} MB, far too large for an embedding; is it a model?"
        )


def _corrupt(path: Path, why: str) -> LorastudioError:
    return LorastudioError(
        f"{path.name}: not a readable PyTorch file ({why}); it is damaged or not an embedding, download it again."
    )


def load_embedding(path: str | Path, name: str | None = None) -> Embedding:
    """An embedding file; its trigger word is the file stem unless `name` is given (a picture's is
    the name it holds, `info["name"]`, as A1111 names it: `service.embedding_files`)."""
    from lorastudio.models.checkpoint import read_safetensors_private

    path = Path(path)
    if not path.is_file():
        raise LorastudioError(f"{path}: embedding file not found.")
    if path.suffix.lower() == ".safetensors":
        data = read_safetensors_private(path)[0]  # never memory-mapped: the file may change
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        data = _load_pickle_safely(path)
    elif path.suffix.lower() in EMBEDDING_IMAGE_SUFFIXES:
        from lorastudio.adapters.embedding_png import read_png_embedding

        data = read_png_embedding(path)
    else:
        raise LorastudioError(
            f"{path.name}: unknown embedding file type; use .safetensors, .pt or an A1111 picture "
            f"({', '.join(EMBEDDING_IMAGE_SUFFIXES)})."
        )
    if not isinstance(data, dict):
        raise LorastudioError(f"{path.name}: is not a dict of tensors; it is not an embedding.")
    embedding = embedding_from_state_dict(data, name or path.stem, source=path.name)
    check_vectors(embedding, path.name)
    return embedding


def check_vectors(embedding: Embedding, source: str) -> None:
    """Refuse what no text encoder can take: one or two sets (SDXL: CLIP-L then CLIP-G) of finite
    floating-point [vectors, width] matrices with the same number of vectors."""
    import torch

    sets = embedding.vectors
    if not 1 <= len(sets) <= 2 or not all(isinstance(v, torch.Tensor) for v in sets):
        raise LorastudioError(f"{source}: its vectors are not tensors; it is not a textual-inversion embedding.")
    for vectors in sets:
        if vectors.dim() != 2 or 0 in vectors.shape or not vectors.is_floating_point():
            raise LorastudioError(
                f"{source}: vectors of shape {list(vectors.shape)} ({vectors.dtype}); an embedding holds "
                "[vectors, width] floats."
            )
        if vectors.shape[0] > MAX_EMBEDDING_VECTORS:
            raise LorastudioError(
                f"{source}: {vectors.shape[0]} vectors, more than any prompt holds "
                f"(at most {MAX_EMBEDDING_VECTORS}); it is not a textual-inversion embedding."
            )
        if not torch.isfinite(vectors).all():
            raise LorastudioError(f"{source}: its vectors hold NaN or infinite values; the file is damaged.")
    if len({int(v.shape[0]) for v in sets}) != 1:
        raise LorastudioError(f"{source}: its CLIP-L and CLIP-G parts have different numbers of vectors.")


def split_joined_vectors(embedding: Embedding, widths: list[int]) -> Embedding:
    """One vector set per text encoder where a file holds them side by side in one matrix.

    HCP-Diffusion's SDXL embeddings (`.pt`, `string_to_param["*"]`) are one [vectors, CLIP-L width +
    CLIP-G width] matrix (its composed text encoder concatenates CLIP-L then CLIP-bigG): for a model with
    two encoders whose widths sum to that width, the matrix is cut into the CLIP-L/CLIP-G pair A1111's
    SDXL files hold. Anything else comes back unchanged (to be skipped as another family's, or used)."""
    vectors = embedding.vectors
    if len(widths) != 2 or len(vectors) != 1 or vectors[0].dim() != 2 or vectors[0].shape[-1] != sum(widths):
        return embedding
    first, second = vectors[0].split(list(widths), dim=-1)
    return Embedding(embedding.name, [first.contiguous(), second.contiguous()], dict(embedding.info))


# The two-encoder widths a joined (HCP-Diffusion SDXL) matrix is cut by where no model is at hand (a library
# listing): SDXL's CLIP-L + CLIP-G, and tiny-sdxl's stand-ins (`models.tiny_widths`).
JOINED_WIDTHS = {768 + 1280: [768, 1280], 32 + 48: [32, 48]}


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
