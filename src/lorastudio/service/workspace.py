"""The workspace folder: one place for models, LoRAs, data sets, runs, outputs and the db.

Default `./studio`; `LORASTUDIO_HOME` moves it. Everything a request names is resolved
inside it by *name*, never by a path taken from a request (see `safe_child`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError

__all__ = [
    "Workspace",
    "safe_name",
    "list_weight_files",
    "find_weight",
    "find_with_suffix",
    "weight_file_row",
    "MODEL_SUFFIXES",
    "LORA_SUFFIXES",
    "EMBEDDING_SUFFIXES",
    "CONTROLNET_SUFFIXES",
    "UPSCALER_SUFFIXES",
    "WEIGHT_SUFFIXES",
]

# The one table of weight-file suffixes per kind: listing and lookup read the same set, and
# both compare suffixes case-insensitively (`x.SAFETENSORS` is listed *and* found).
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# Pickled LoRAs are listed and found, then refused when read, with a message that says why.
LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
# What A1111 reads as an embedding; a `.ckpt` in embeddings/ is neither listed nor applied. A picture
# is one only when it holds A1111's embedding data (`_is_weight_file`): previews and pictures are not.
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin", ".png", ".webp", ".jxl", ".avif")
# ControlNets (studio/controlnet) and upscaler models (studio/models/upscalers): pickled ones
# are read with weights_only=True, never unpickled freely.
CONTROLNET_SUFFIXES = (".safetensors", ".pth", ".ckpt", ".pt", ".bin")
UPSCALER_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")
WEIGHT_SUFFIXES = {
    "model": MODEL_SUFFIXES,
    "lora": LORA_SUFFIXES,
    "embedding": EMBEDDING_SUFFIXES,
    "controlnet": CONTROLNET_SUFFIXES,
    "upscaler": UPSCALER_SUFFIXES,
}


def _suffixes(kind: str) -> tuple[str, ...]:
    if kind not in WEIGHT_SUFFIXES:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(WEIGHT_SUFFIXES)}")
    return WEIGHT_SUFFIXES[kind]


# Kinds whose folders are searched with their subfolders, as A1111 walks its Lora and embeddings
# folders (`loras/characters/hero.safetensors` is `<lora:hero>`); names stay file stems.
RECURSIVE_KINDS = frozenset({"lora", "embedding"})


def _candidate_files(folder: Path, recursive: bool) -> list[Path]:
    """Files in `folder` (and, recursive, its subfolders): the folder's own first, then each
    subfolder's in path order. Hidden files and folders are never names a request may use
    (`service.names`); a peft LoRA folder (adapter_config.json) is one LoRA, not files to list.

    A linked subfolder is walked when it leads inside `folder` (once) or to a folder outside the
    workspace (a shared LoRA folder); never to the workspace itself, a folder above it or another
    workspace folder (models/, runs/): a LoRA name must not reach, or delete, a file there.
    """
    if not folder.is_dir():
        return []
    own = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    if not recursive:
        return own
    nested: list[Path] = []
    root = os.path.realpath(folder)
    seen = {root}
    for where, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(where)
        if where != str(folder):
            if real in seen or not _walkable(real, root) or (Path(where) / "adapter_config.json").is_file():
                dirs[:] = []  # visited, outside what may be walked, or a peft folder
                continue
            seen.add(real)
            nested += [Path(where) / f for f in files if not f.startswith(".")]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return own + sorted((p for p in nested if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _walkable(real: str, root: str) -> bool:
    """A (linked) folder the walk of `root` (a workspace folder) may enter: see `_candidate_files`."""
    if _within(real, root):
        return True
    return not _within(real, os.path.dirname(root)) and not _within(root, real)


def _is_weight_file(path: Path) -> bool:
    """A file with a listed suffix is a weight file, except a picture: a `.png` (.webp, .jxl, .avif)
    in embeddings/ is one when it carries A1111's embedding data, as A1111 loads it (never
    `NAME.preview.png`); one in a format this Pillow cannot open is listed, with what to install."""
    from lorastudio.adapters.embedding_png import (
        EMBEDDING_IMAGE_SUFFIXES,
        holds_embedding,
        is_preview_picture,
        unreadable_format,
    )

    if path.suffix.lower() not in EMBEDDING_IMAGE_SUFFIXES:
        return True
    if is_preview_picture(path):
        return False
    return unreadable_format(path) is not None or holds_embedding(path)


def list_weight_files(folder: Path, kind: str) -> list[Path]:
    """The weight files of one kind in a workspace folder: its own, sorted, then (LoRAs and
    embeddings) those in its subfolders."""
    suffixes = _suffixes(kind)
    return [
        p
        for p in _candidate_files(folder, kind in RECURSIVE_KINDS)
        if p.suffix.lower() in suffixes and _is_weight_file(p)
    ]


def find_weight(folder: Path, name: str, kind: str) -> Path | None:
    """The listed file of `kind` in `folder` whose stem is `name` (its suffix in any case), or None.
    An embedding's word is looked up by `service.embedding_files.find_embedding` (a picture's is the
    name stored in it).

    `name` must already be a plain name (`service.names.is_plain_name`); this only looks.
    """
    return find_with_suffix(
        folder, name, _suffixes(kind), recursive=kind in RECURSIVE_KINDS, keep=_is_weight_file
    )


def find_with_suffix(
    folder: Path,
    name: str,
    suffixes: tuple[str, ...],
    *,
    recursive: bool = False,
    keep: Callable[[Path], bool] | None = None,
) -> Path | None:
    """`folder/name<suffix>` for one of `suffixes` in any case; the table's order, then exact case, wins.

    Recursive: a file of that stem in a subfolder where the folder itself has none (the first
    subfolder in path order: two LoRAs of one name are told apart only by renaming one).
    `keep`: what else a file must be to count (an embedding picture must hold an embedding).
    """

    def named(path: Path) -> bool:
        return path.stem == name and path.suffix.lower() in suffixes and (keep is None or keep(path))

    matches = [p for p in _candidate_files(folder, False) if named(p)]
    if not matches and recursive:  # the folder's own file wins: the subfolders are walked only without one
        matches = [p for p in _candidate_files(folder, True) if named(p)]
    if not matches:
        return None
    nearest = [p for p in matches if p.parent == folder] or [p for p in matches if p.parent == matches[0].parent]
    return min(nearest, key=lambda p: (suffixes.index(p.suffix.lower()), p.suffix != p.suffix.lower(), p.name))


def weight_file_row(path: Path) -> dict[str, Any]:
    """One listed weight file: name, file, size and safetensors metadata.

    A file that cannot be read is listed with an `error` (one line), never an exception,
    so one broken file does not hide the others.
    """
    return weight_file_row_and_header(path)[0]


def weight_file_row_and_header(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`weight_file_row` and the safetensors header it was read from (None: not read), so a
    listing that needs the tensor shapes too opens each file once."""
    from lorastudio.models.checkpoint import read_safetensors_header

    header, error = None, None
    if path.suffix.lower() == ".safetensors":
        try:
            header = read_safetensors_header(path)
        except (LorastudioError, OSError) as exc:
            error = str(exc) if isinstance(exc, LorastudioError) else f"{path.name}: cannot be read ({exc})."
    return weight_row(path, header, error), header


def weight_row(path: Path, header: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
    """`weight_file_row` from a header already read (None: not a .safetensors file, or unreadable)."""
    return {
        "name": path.stem,
        "file": path.name,
        "size_bytes": path.stat().st_size,
        "metadata": dict((header or {}).get("__metadata__") or {}),
        "error": error,
    }


def rename_without_clobbering(path: Path, target: Path, what: str) -> Path:
    """Give a library file (or model folder, or link) a new name in its folder; never replaces one.

    A plain file is hard-linked under the new name before the old name goes, so a file that
    appears under the new name meanwhile is never overwritten (the link fails instead).
    """
    if target.exists() or target.is_symlink():
        raise _name_taken(what, target)
    if path.is_file() and not path.is_symlink():
        try:
            os.link(path, target)
        except FileExistsError:
            raise _name_taken(what, target) from None
        except OSError:  # a file system without hard links: a plain rename after the check above
            path.rename(target)
            return target
        path.unlink()
        return target
    path.rename(target)
    return target


def _name_taken(what: str, target: Path) -> LorastudioError:
    return LorastudioError(
        f"{what} {target.stem!r}: already exists in {target.parent}; choose another name.",
        key="name_taken",
        params={"what": what, "name": target.stem},
    )


SUBDIRS = ("models", "loras", "embeddings", "controlnet", "datasets", "runs", "outputs", "cache")
_SAFE_NAME = re.compile(r"[\w.\-]+", re.UNICODE)  # whole name (fullmatch: `$` let a trailing newline in)
MAX_NAME_BYTES = 240  # room for a suffix within the usual 255-byte file name limit


def safe_name(name: str, what: str = "name") -> str:
    """A name for a new file or folder: letters/digits (any script), '.', '-', '_'; not hidden, no '..'.

    Looking up an existing entry by a request's name goes through `service.names` instead.
    """
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name.startswith(".") or ".." in name:
        raise LorastudioError(
            f"{what} {name!r} is not allowed; use letters, digits, '.', '-' or '_' "
            "(no slashes or spaces, not starting with '.').",
            key="name_not_allowed",
            params={"what": what, "name": str(name)[:200]},
        )
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise LorastudioError(
            f"{what} {name[:40]!r}… is too long for a file name; use a shorter one.",
            key="name_too_long",
            params={"what": what, "name": name[:40]},
        )
    return name


def name_from_stem(stem: str, fallback: str) -> str:
    """A file's stem as a new library name, as A1111 takes any file name: what a name may not hold
    (spaces, brackets, `..`) becomes `_` (`add_detail (v2)` -> `add_detail_v2`), letters of any
    script stay, cut to `safe_name`'s 240 bytes (a long CJK stem made a name no file could carry);
    `fallback` when nothing is left. An explicit name goes through `safe_name`."""
    name = re.sub(r"[^\w.\-]+|\.{2,}", "_", stem).strip("_.")
    name = name.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", errors="ignore").strip("_.")
    return name or fallback


def new_entry_name(name: str | None, stem: str, what: str, fallback: str) -> str:
    """A new library entry's name: the one given, checked (`safe_name`), else the file's stem made
    safe (`name_from_stem`), as every import (CLI, API upload) names what it adds."""
    return safe_name(name, f"{what} name") if name else name_from_stem(stem, fallback)


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def default(cls) -> Workspace:
        return cls(Path(os.environ.get("LORASTUDIO_HOME", "studio")).expanduser().resolve())

    @classmethod
    def open(cls, root: str | Path | None = None) -> Workspace:
        ws = cls(Path(root).expanduser().resolve()) if root else cls.default()
        ws.ensure()
        return ws

    def ensure(self) -> None:
        for sub in SUBDIRS:
            try:
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LorastudioError(
                    f"workspace {self.root}: cannot create {sub}/ ({exc.strerror or exc}); set LORASTUDIO_HOME "
                    "to a folder you can write (default ./studio)."
                ) from None

    @property
    def db_path(self) -> Path:
        return self.root / "studio.db"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def loras(self) -> Path:
        return self.root / "loras"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def controlnet(self) -> Path:
        """ControlNet files and diffusers ControlNet folders (A1111's models/ControlNet)."""
        return self.root / "controlnet"

    @property
    def upscalers(self) -> Path:
        """Upscaler model files (ESRGAN family, SwinIR, SCUNet) for hires fix and Extras (A1111's models/ESRGAN etc.)."""
        return self.models / "upscalers"

    @property
    def annotators(self) -> Path:
        """Preprocessor weights the user brings (OpenPose, HED, ...; A1111's annotator/downloads)."""
        return self.models / "annotators"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def exports(self) -> Path:
        """LoRAs written for other tools (`lora export`): kept out of loras/, where every file is a LoRA
        A1111 and `<lora:…>` load. Made on first use."""
        return self.root / "exports"

    def safe_child(self, folder: Path, name: str, what: str = "name") -> Path:
        """`folder/name`, refusing anything that would leave `folder`."""
        path = (folder / safe_name(name, what)).resolve()
        if folder.resolve() not in path.parents:
            raise LorastudioError(f"{what} {name!r} points outside the workspace; use a plain name.")
        return path
