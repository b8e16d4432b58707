"""The ControlNets in `studio/controlnet`: listed and named as the A1111 ControlNet extension does.

A1111 clients name a ControlNet by its title, `name [hash8]` (the hash is the extension's: the
first 8 hex of the SHA-256 of the 64 KiB at offset 1 MiB, cheap on multi-GB files), or by its
plain name; both resolve to the same file. A diffusers ControlNet folder (with `config.json`)
is listed by its folder name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lorastudio.service.names import STRICT, NamePolicy, resolve, unknown_name
from lorastudio.service.workspace import CONTROLNET_SUFFIXES, Workspace, list_weight_files

__all__ = ["LIST_CONTROLNETS", "controlnet_title", "find_controlnet", "list_controlnets"]

LIST_CONTROLNETS = "GET /controlnet/model_list (or `lorastudio controlnet list`)"
_TITLE = re.compile(r"^(?P<name>.+?) \[(?P<hash>[0-9a-fA-F]{8,10})\]$")


def _is_controlnet_folder(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and (path / "config.json").is_file()


def _controlnet_paths(ws: Workspace) -> list[Path]:
    folder = ws.controlnet
    files = list_weight_files(folder, "controlnet")
    dirs = [p for p in sorted(folder.iterdir()) if _is_controlnet_folder(p)] if folder.is_dir() else []
    return sorted(files + dirs, key=lambda p: p.name.lower())


def _short_hash(path: Path) -> str:
    from lorastudio.adapters.hashing import legacy_hash

    if path.is_dir():  # a folder: the hash of its weights file, as the extension hashes what it loads
        weights = sorted(p for p in path.iterdir() if p.suffix.lower() in CONTROLNET_SUFFIXES)
        return legacy_hash(weights[0]) if weights else "00000000"
    return legacy_hash(path)


def controlnet_title(path: Path) -> str:
    """`name [hash8]`, what the A1111 extension shows and what its clients send back."""
    name = path.name if path.is_dir() else path.stem
    return f"{name} [{_short_hash(path)}]"


def list_controlnets(ws: Workspace) -> list[dict[str, Any]]:
    """One row per ControlNet: name, title, file; an unreadable entry is listed with its error."""
    rows = []
    for path in _controlnet_paths(ws):
        name = path.name if path.is_dir() else path.stem
        try:
            title, error = controlnet_title(path), None
        except OSError as exc:
            title, error = name, f"{path.name}: cannot be read ({exc})."
        rows.append({"name": name, "title": title, "file": path.name, "folder": path.is_dir(), "error": error})
    return rows


def find_controlnet(ws: Workspace, name: str, policy: NamePolicy = STRICT) -> Path:
    """The ControlNet a unit names: plain name, A1111 title `name [hash8]`, or (leniently) a path.

    A title whose hash does not match the file is still found by its name, as in A1111 (the
    extension looks the name up first); the recipe records the hash of what was used.
    """
    match = _TITLE.match(name.strip()) if isinstance(name, str) else None
    plain = match.group("name") if match else name
    found = resolve(
        plain, ws.controlnet, "ControlNet", LIST_CONTROLNETS, policy=NamePolicy(policy.strict),
        suffixes=CONTROLNET_SUFFIXES,
    )
    path = found.path
    if path is None or (path.is_dir() and not _is_controlnet_folder(path)):
        raise unknown_name("ControlNet", name, ws.controlnet, LIST_CONTROLNETS)
    return path
