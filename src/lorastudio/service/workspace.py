"""The workspace folder: one place for models, LoRAs, data sets, runs, outputs and the db.

Default `./studio`; `LORASTUDIO_HOME` moves it. Everything a request names is resolved
inside it by *name*, never by a path taken from a request (see `safe_child`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lorastudio.errors import LorastudioError

__all__ = ["Workspace", "safe_name", "list_weight_files"]

WEIGHT_SUFFIXES = {".safetensors", ".pt", ".ckpt", ".bin"}


def list_weight_files(folder: Path) -> list[Path]:
    """The weight files (LoRAs, embeddings, checkpoints) directly in a workspace folder, sorted."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES and not p.name.startswith(".")
    )  # hidden files are never names a request may use (service.names), so they are not listed


SUBDIRS = ("models", "loras", "embeddings", "datasets", "runs", "outputs", "cache")
_SAFE_NAME = re.compile(r"^[\w.\-]+$", re.UNICODE)


def safe_name(name: str, what: str = "name") -> str:
    """A name for a new file or folder: letters/digits (any script), '.', '-', '_'; not hidden, no '..'.

    Looking up an existing entry by a request's name goes through `service.names` instead.
    """
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name.startswith(".") or ".." in name:
        raise LorastudioError(
            f"{what} {name!r} is not allowed; use letters, digits, '.', '-' or '_' "
            "(no slashes or spaces, not starting with '.')."
        )
    return name


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
            (self.root / sub).mkdir(parents=True, exist_ok=True)

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

    def safe_child(self, folder: Path, name: str, what: str = "name") -> Path:
        """`folder/name`, refusing anything that would leave `folder`."""
        path = (folder / safe_name(name, what)).resolve()
        if folder.resolve() not in path.parents:
            raise LorastudioError(f"{what} {name!r} points outside the workspace; use a plain name.")
        return path
