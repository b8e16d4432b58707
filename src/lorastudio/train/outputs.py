"""Where a run's files go, and the checks before one of them enters the library.

One rule keeps a run's outputs apart: the LoRA (or whole model) is `<folder>/<name>.safetensors`
and the trigger embedding is `<folder>/embeddings/<trigger>.safetensors`, so a run named after
its trigger (the default) can no longer write its embedding over its LoRA. `output_targets`
refuses two outputs on one path in any case.

A file is checked before it is copied into `loras/`, `embeddings/` or `models/`: it must load
and hold what its kind needs (LoRA keys for a LoRA, vectors for an embedding, UNet weights for
a model). The copy goes to a hidden sibling first and is renamed into place, so the library
never holds half a file.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from lorastudio.errors import LorastudioError
from lorastudio.train.checkpoints import fsync_file

__all__ = [
    "EMBEDDINGS_FOLDER",
    "output_targets",
    "embedding_file",
    "find_embedding",
    "atomic_file",
    "check_output_file",
    "copy_to_library",
]

EMBEDDINGS_FOLDER = "embeddings"
OutputKind = Literal["lora", "embedding", "model"]


def embedding_file(folder: Path, trigger: str) -> Path:
    """The trigger embedding a run writes into `folder` (the run folder or a `step-N` folder)."""
    return folder / EMBEDDINGS_FOLDER / f"{trigger}.safetensors"


def find_embedding(folder: Path, trigger: str, lora_name: str) -> Path | None:
    """The embedding of `folder`, also where runs before the `embeddings/` folder wrote it.

    The old place (`<folder>/<trigger>.safetensors`) only counts when it is not the LoRA's own path.
    """
    if not trigger:
        return None
    current = embedding_file(folder, trigger)
    if current.is_file():
        return current
    legacy = folder / f"{trigger}.safetensors"
    return legacy if trigger != lora_name and legacy.is_file() else None


def output_targets(
    folder: Path, name: str, trigger: str, *, full_model: bool, lora: bool, embedding: bool
) -> dict[str, Path]:
    """The files a run writes into `folder`, by kind; two kinds on one path are refused."""
    targets: dict[str, Path] = {}
    if full_model:
        targets["model"] = folder / f"{name}.safetensors"
    elif lora or embedding:
        targets["lora"] = folder / f"{name}.safetensors"  # an embedding-only run bundles it here too
    if embedding:
        targets["embedding"] = embedding_file(folder, trigger)
    seen: dict[Path, str] = {}
    for kind, path in targets.items():
        other = seen.setdefault(path, kind)
        if other != kind:
            raise LorastudioError(
                f"{path}: the run's {other} and {kind} would be the same file; set output.name to another name."
            )
    return targets


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a hidden sibling path to write; on success it is fsynced and renamed onto `path`.

    The sibling's name is unique to this write: two writers of one path (ranks of a run, two jobs
    in one server) never write into, rename or delete each other's half-written file; the last
    rename wins whole.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        yield temporary
        fsync_file(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _check_lora(path: Path, expect_lora_keys: bool, trigger: str | None) -> str | None:
    from lorastudio.adapters.detect import load_lora_file

    lora = load_lora_file(path)
    if expect_lora_keys and not lora.modules:
        return "holds no LoRA weights (lora_unet_* / lora_te_* keys)"
    if trigger and trigger not in lora.embeddings and not lora.modules:
        return f"holds neither LoRA weights nor the bundled {trigger!r} embedding"
    return None


def _check_embedding(path: Path) -> str | None:
    from lorastudio.adapters.embeddings import load_embedding

    embedding = load_embedding(path)
    if not embedding.vectors or any(v.dim() != 2 or v.shape[0] < 1 for v in embedding.vectors):
        return "holds no embedding vectors"
    return None


def _check_model(path: Path) -> str | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        unet = [k for k in keys if k.startswith("model.diffusion_model.")]
        if not unet:
            return "holds no UNet weights (model.diffusion_model.* keys)"
        handle.get_tensor(unet[-1])  # the header is sound and the data is there
    return None


def check_output_file(
    path: Path, kind: OutputKind, *, expect_lora_keys: bool = True, trigger: str | None = None
) -> None:
    """Raise unless `path` loads as a `kind` file with the keys that kind needs."""
    if not path.is_file():
        raise LorastudioError(f"{path}: the trained {kind} file is missing; it was not copied to the library.")
    try:
        if kind == "lora":
            problem = _check_lora(path, expect_lora_keys, trigger)
        elif kind == "embedding":
            problem = _check_embedding(path)
        else:
            problem = _check_model(path)
    except Exception as exc:  # any reader error means a broken file; say which one
        problem = f"does not load ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if problem is not None:
        raise LorastudioError(
            f"{path}: {problem}; this {kind} was not copied to the library (train again or pick another checkpoint)."
        )


def copy_to_library(
    source: Path,
    destination: Path,
    kind: OutputKind,
    *,
    expect_lora_keys: bool = True,
    trigger: str | None = None,
) -> Path:
    """Check `source`, then copy it onto `destination` atomically; a bad file is never copied."""
    check_output_file(source, kind, expect_lora_keys=expect_lora_keys, trigger=trigger)
    with atomic_file(destination) as temporary:
        shutil.copyfile(source, temporary)
    return destination
