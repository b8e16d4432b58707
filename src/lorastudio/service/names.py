"""Names from requests become files in the workspace, and nothing else.

Every model, VAE, LoRA, embedding, data set, run, output, tagger/captioner/CLIP model,
upload or template a request names goes through `resolve`. A server (`NamePolicy.strict`)
accepts only a plain name of an entry in that name's workspace folder: no separators, no
`..`, no absolute or drive paths, no NUL, no hidden files, never the working directory. A
hub id (`org/name`) only where the server allows hub ids and the machine is online.

"Missing" and "not allowed" answer the same message, so a client cannot probe the server's
disk. The CLI runs as the user and may name local paths: it passes `LENIENT`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.workspace import LORA_SUFFIXES, MODEL_SUFFIXES, find_weight, find_with_suffix

if TYPE_CHECKING:
    from lorastudio.models.loading import ModelRef
    from lorastudio.service.workspace import Workspace

__all__ = [
    "NamePolicy",
    "STRICT",
    "LENIENT",
    "Resolved",
    "is_plain_name",
    "is_hub_id",
    "hub_online",
    "resolve",
    "unknown_name",
    "NOT_FOUND_KEYS",
    "find_model",
    "find_vae",
    "find_lora",
    "find_dataset",
    "find_aux_model",
]


@dataclass(frozen=True)
class NamePolicy:
    """How names from one front are read: `strict` for anything a client sends, lenient for the CLI."""

    strict: bool = True
    allow_hub_ids: bool = False


STRICT = NamePolicy(strict=True, allow_hub_ids=False)
LENIENT = NamePolicy(strict=False, allow_hub_ids=True)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")


def is_plain_name(name: object) -> bool:
    """One path component that stays in its folder on every OS: no `/`, `\\`, `:`, NUL, `..`, or leading `.`."""
    if not isinstance(name, str) or not name or name != name.strip():
        return False
    if name.startswith(".") or ".." in name or len(name.encode("utf-8", "surrogatepass")) > 240:
        return False  # 240: room for a suffix within the usual 255-byte file name limit
    return not any(ch in name for ch in '/\\:\x00') and all(ch.isprintable() for ch in name)


def is_hub_id(name: object) -> bool:
    """`org/name` as the Hugging Face hub spells a repository (never a path: no `..`, no leading `.`)."""
    return isinstance(name, str) and bool(_HUB_ID.match(name)) and ".." not in name


def hub_online() -> bool:
    """The hub may be asked (HF_HUB_OFFLINE is not set)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Resolved:
    """What a name points at: a file or folder in the workspace (or, leniently, anywhere), or a hub id."""

    name: str
    path: Path | None = None
    hub_id: str | None = None


# what a name names -> the key the web UI words its "not found" by (`err.<key>`); others: "name_not_found"
NOT_FOUND_KEYS = {
    "model": "model_not_found",
    "VAE": "vae_not_found",
    "LoRA": "lora_not_found",
    "embedding": "embedding_not_found",
    "ControlNet": "controlnet_not_found",
    "data set": "dataset_not_found",
    "data.dir": "dataset_not_found",
    "dataset": "dataset_not_found",
    "upload": "upload_not_found",
}


def unknown_name(what: str, name: object, folder: Path, listing: str) -> NotFoundError:
    """The one answer for a name that is missing *or* not allowed (the two must not be told apart)."""
    shown = name if isinstance(name, str) else str(name)
    return NotFoundError(
        f"{what} {shown[:200]!r} not found in {folder.name}/; give the plain name of one listed by {listing}.",
        key=NOT_FOUND_KEYS.get(what, "name_not_found"),
        params={"what": what, "name": shown[:200], "folder": folder.name},
    )


def _entry(folder: Path, name: str, suffixes: Iterable[str], want: str) -> Path | None:
    """`folder/name` or `folder/name<suffix>` when it exists as the wanted kind (file, dir or either)."""
    for candidate in [folder / name, *(folder / f"{name}{s}" for s in suffixes)]:
        try:
            if want in {"file", "any"} and candidate.is_file():
                return candidate
            if want in {"dir", "any"} and candidate.is_dir():
                return candidate
        except OSError:  # a name the file system refuses is a name that is not there
            continue
    if want in {"file", "any"} and suffixes:
        try:
            return find_with_suffix(folder, name, tuple(suffixes))  # `x.SAFETENSORS` as listed
        except OSError:
            return None
    return None


def resolve(
    name: str,
    folder: Path,
    what: str,
    listing: str,
    *,
    policy: NamePolicy = STRICT,
    suffixes: Iterable[str] = (),
    want: str = "any",
) -> Resolved:
    """The workspace entry `name` names in `folder` (with one of `suffixes`), a local path, or a hub id.

    Strict: a plain name of an existing entry, else a hub id where `policy.allow_hub_ids` and
    the machine is online; anything else raises the same `NotFoundError` as a missing name.
    Lenient: the same, then any existing local path, then any hub id (the CLI's user may read
    what they like).
    """
    suffixes = tuple(suffixes)
    if is_plain_name(name):
        found = _entry(folder, name, suffixes, want)
        if found is not None:
            return Resolved(name, path=found)
    if not policy.strict and isinstance(name, str) and name and "\x00" not in name:
        path = Path(name).expanduser()
        try:
            if (want in {"file", "any"} and path.is_file()) or (want in {"dir", "any"} and path.is_dir()):
                return Resolved(path.stem if path.is_file() else path.name, path=path)
        except OSError:
            pass
    if not policy.strict and _looks_like_path(name, suffixes):  # a mistyped path: never a hub lookup
        raise NotFoundError(f"{what} {name!r}: no such file or folder; check the path, or give a name from {listing}.")
    if policy.allow_hub_ids and is_hub_id(name) and (hub_online() or not policy.strict):
        return Resolved(name.split("/")[-1], hub_id=name)
    raise unknown_name(what, name, folder, listing)


def _looks_like_path(name: object, suffixes: tuple[str, ...]) -> bool:
    """A name the user meant as a local path: `./x`, `/x`, `~/x`, one ending in a weight file's suffix,
    or one whose folder exists here (`single/typo.safetensors`); `org/name` alone is a hub id."""
    if not isinstance(name, str) or not name:
        return False
    if name.startswith((".", "/", "~", "\\")) or Path(name).suffix.lower() in {*suffixes, ".safetensors", ".ckpt"}:
        return True
    parent = Path(name).expanduser().parent
    try:
        return str(parent) not in ("", ".") and parent.is_dir()
    except OSError:
        return False


# -- the kinds of names a request carries ------------------------------------------------


LIST_MODELS = "GET /api/v1/models (or `lorastudio models list`)"
LIST_VAES = "GET /api/v1/models (VAE files live in models/)"
LIST_LORAS = "GET /api/v1/loras (or `lorastudio lora list`)"
LIST_EMBEDDINGS = "GET /api/v1/embeddings (or `lorastudio embeddings list`)"
LIST_DATASETS = "GET /api/v1/datasets (or `lorastudio dataset list`)"
LIST_AUX_MODELS = "the folders in models/ (ask the server's operator)"


def find_model(
    ws: Workspace, name: str, policy: NamePolicy = STRICT, what: str = "model", build: bool = True
) -> ModelRef:
    """A generation/training model: built-in tiny name, diffusers folder or checkpoint in models/, or hub id.

    `build=False` only checks the name: a built-in tiny model is not built yet (a request
    is checked in the API thread; the worker builds it on first use).
    """
    from lorastudio.models.loading import ModelRef
    from lorastudio.models.tiny import ensure_tiny_model, is_tiny_name

    if isinstance(name, str) and is_tiny_name(name):
        return ModelRef(name, ensure_tiny_model(name, ws.models) if build else ws.models / name, "folder")
    found = resolve(name, ws.models, what, LIST_MODELS, policy=policy, suffixes=MODEL_SUFFIXES)
    if found.hub_id:
        return ModelRef(found.name, None, "hub", hub_id=found.hub_id)
    path = found.path
    if path.is_dir() and (path / "model_index.json").is_file():
        return ModelRef(path.name, path.resolve(), "folder")
    if path.is_file() and path.suffix.lower() in MODEL_SUFFIXES:
        return ModelRef(path.stem, path.resolve(), "single_file")
    if policy.strict:  # a tagger folder or a text file in models/ is not a model: the same answer
        raise unknown_name(what, name, ws.models, LIST_MODELS)
    raise LorastudioError(
        f"{path}: neither a diffusers folder (no model_index.json) nor a .safetensors/.ckpt checkpoint."
    )


def find_vae(ws: Workspace, name: str, policy: NamePolicy = STRICT) -> Path:
    """A VAE: a weight file or a diffusers vae folder in models/ (leniently, any local path)."""
    found = resolve(name, ws.models, "VAE", LIST_VAES, policy=NamePolicy(policy.strict), suffixes=MODEL_SUFFIXES)
    return found.path


def find_lora(ws: Workspace, name: str, policy: NamePolicy = STRICT) -> Path:
    """A LoRA named by a `<lora:NAME:…>` tag: `loras/NAME.safetensors` (or a peft folder there),
    else, as A1111 finds it, a file of that name in a subfolder of loras/, else the one LoRA whose
    `ss_output_name` (A1111's alias, what its cards insert) is NAME."""
    try:
        found = resolve(name, ws.loras, "LoRA", LIST_LORAS, policy=NamePolicy(policy.strict), suffixes=LORA_SUFFIXES)
    except NotFoundError:
        elsewhere = (find_weight(ws.loras, name, "lora") or _lora_with_alias(ws, name)) if is_plain_name(name) else None
        if elsewhere is None:
            raise
        return elsewhere
    return found.path


def _lora_with_alias(ws: Workspace, alias: str) -> Path | None:
    """The LoRA file whose training name (`ss_output_name`) is `alias`; None when none or several
    have it (ambiguous: A1111's cards then insert the file name instead of the alias)."""
    from lorastudio.models.checkpoint import read_safetensors_metadata
    from lorastudio.service.workspace import list_weight_files

    owners = []
    for path in list_weight_files(ws.loras, "lora"):
        if path.suffix.lower() != ".safetensors":
            continue
        try:
            metadata = read_safetensors_metadata(path)
        except (LorastudioError, OSError):
            continue
        if metadata.get("ss_output_name") == alias:
            owners.append(path)
    return owners[0] if len(owners) == 1 else None


def find_dataset(ws: Workspace, name: str, what: str = "data set", policy: NamePolicy = STRICT) -> Path:
    """A data set folder in datasets/."""
    found = resolve(name, ws.datasets, what, LIST_DATASETS, policy=NamePolicy(policy.strict), want="dir")
    return found.path


def find_aux_model(ws: Workspace, name: str, what: str, policy: NamePolicy = STRICT) -> str:
    """A tagger/captioner/CLIP/face model: a folder in models/ (made absolute) or an allowed hub id."""
    found = resolve(name, ws.models, what, LIST_AUX_MODELS, policy=policy, want="dir")
    return found.hub_id or str(found.path.resolve())


def find_listed_weight(folder: Path, name: str, kind: str, what: str, listing: str) -> Path:
    """The file a listing shows for `name` (a LoRA, an embedding); anything else is "not found".

    Library operations (info, delete) act only on what the listing shows, so a name that is
    not a plain name gets the same answer as a missing one.
    """
    path = find_weight(folder, name, kind) if is_plain_name(name) else None
    if path is None:
        raise unknown_name(what, name, folder, listing)
    return path
