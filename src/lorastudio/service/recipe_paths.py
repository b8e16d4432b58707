"""Weights a request named by a local path, written into its recipe so the recipe finds them from anywhere.

The CLI takes the model, the VAE, the hires upscaler and `<lora:PATH>` tags as paths relative to the
folder it runs in; a recipe that kept them as typed breaks when it is opened from another folder (the
init-image fix, `service.recipe_inputs`, does the same for pictures). A file the workspace finds by a
plain name (it lives in the workspace's folder for its kind) is recorded by that name, so a moved
workspace still finds it; any other file by its absolute path. Names the library answers to, built-in
tiny models and hub ids are kept as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.service.names import (
    LENIENT,
    STRICT,
    NamePolicy,
    find_lora,
    find_model,
    find_vae,
    is_plain_name,
)
from lorastudio.service.recipe_loras import LORA_TAG, PROMPT_KEYS
from lorastudio.service.workspace import Workspace

__all__ = ["portable_request"]


def portable_request(
    ws: Workspace, request: dict[str, Any], policy: NamePolicy = LENIENT
) -> tuple[dict[str, Any], dict[str, str]]:
    """(`request` with each weight it names by a local path recorded portably, {a `<lora:…>` tag's typed
    name: its recorded name} for the tags rewritten). A strict `policy` (a server's) takes plain names
    only: nothing to rewrite, and no path a client sent is looked at."""
    if policy.strict:
        return request, {}
    request = dict(request)
    if request.get("model"):
        request["model"] = _portable_model(ws, str(request["model"]))
    if request.get("vae"):
        request["vae"] = _portable(
            str(request["vae"]), lambda name, policy: find_vae(ws, name, policy), lambda path: [path.name, path.stem]
        )
    if request.get("hires_upscaler"):
        request["hires_upscaler"] = _portable_upscaler(ws, str(request["hires_upscaler"]))
    renamed: dict[str, str] = {}

    def tag(match) -> str:
        name = match.group(2)
        if name not in renamed:
            renamed[name] = _portable(
                name, lambda n, policy: find_lora(ws, n, policy), lambda path: [path.stem, path.name]
            )
        return f"{match.group(1)}{renamed[name]}{match.group(3)}"

    for key in PROMPT_KEYS:
        if isinstance(request.get(key), str):
            request[key] = LORA_TAG.sub(tag, request[key])
    return request, {typed: kept for typed, kept in renamed.items() if typed != kept}


def _portable(
    name: str, find: Callable[[str, Any], Path], names: Callable[[Path], Iterable[str]]
) -> str:
    """`name` where the library answers to it (or nothing does); else the plain name the library finds
    the same file by, else that file's absolute path (one without `:`, which a `<lora:…>` tag splits on)."""
    try:
        find(name, STRICT)
        return name
    except LorastudioError:
        pass
    try:
        path = find(name, LENIENT)
    except LorastudioError:
        return name  # nothing answers: the request fails, or skips it, as it would have
    if path is None:
        return name
    for plain in names(path):
        try:
            if is_plain_name(plain) and _same(find(plain, STRICT), path):
                return plain
        except LorastudioError:
            continue
    absolute = str(path.absolute())
    return name if ":" in absolute and ":" not in name else absolute


def _portable_model(ws: Workspace, name: str) -> str:
    from lorastudio.models.tiny import is_tiny_name

    if is_tiny_name(name):
        return name

    def find(ref: str, policy) -> Path | None:
        return find_model(ws, ref, policy, build=False).path  # None for a hub id

    return _portable(name, find, lambda path: [path.name, path.stem])


def _portable_upscaler(ws: Workspace, name: str) -> str:
    """A model upscaler given as a path: the name the workspace lists that file under, else its absolute path."""
    from lorastudio.generate.upscalers.names import fixed_upscaler
    from lorastudio.service.upscalers import find_upscaler, list_upscalers

    path = Path(name).expanduser()
    try:
        if fixed_upscaler(name) or not path.is_file():
            return name
        find_upscaler(ws, name)  # a name the workspace lists wins over a file of that name here
        return name
    except LorastudioError:
        pass
    except OSError:
        return name
    for row in list_upscalers(ws):
        if row["kind"] == "model" and row["model_path"] and not row["error"] and _same(Path(row["model_path"]), path):
            return row["name"]
    return str(path.absolute())


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
