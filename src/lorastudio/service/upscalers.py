"""The upscalers a workspace offers, found by A1111 name, and the loaded model upscalers kept.

Rows in A1111's shape (`name` is the title A1111 shows, `model_name`, `model_path`, `model_url`,
`scale`) plus `kind`: `latent` (the hires fix's latent modes), `resample` (None, Lanczos,
Nearest) or `model` (files in studio/models/upscalers: Real-ESRGAN releases and the SwinIR /
ScuNET files A1111 downloads by their A1111 titles, `generate.upscalers.names.model_upscaler_title`;
other files by their stem). Every file gets a name of its own, as A1111 lists every file: where two
files would share one (`SwinIR_4x.pth` and the release file are both `SwinIR 4x`), the file
`title_claim` prefers keeps it and the other takes its stem (its file name, if that is taken too).
A name is found by title, then stem, then file name, in any case.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import InvalidRequest, LorastudioError
from lorastudio.generate.upscalers.names import REAL_ESRGAN_TITLES  # pure names: no torch
from lorastudio.service.workspace import Workspace, list_weight_files

if TYPE_CHECKING:
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.generate.upscalers.model import ModelUpscaler

__all__ = [
    "REAL_ESRGAN_TITLES",
    "check_hires_upscaler",
    "find_upscaler",
    "hires_model_upscaler",
    "list_upscalers",
    "load_upscaler",
    "upscaler_names",
]

# Scales A1111 lists the filters with (the API answered these before model upscalers existed).
_RESAMPLE_SCALES = {"None": 1, "Lanczos": 4, "Nearest": 4}
_MAX_LOADED = 2

_lock = threading.Lock()
_sniffed: dict[tuple, tuple[float | None, str | None]] = {}
_loaded: OrderedDict[tuple, ModelUpscaler] = OrderedDict()


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)


def _sniff(path: Path) -> tuple[float | None, str | None]:
    """(scale, None) for an upscaler file, (None, the one-line reason) for anything else; memoised per stamp."""
    from lorastudio.generate.upscalers.loading import read_upscaler_state_dict, sniff_upscaler

    key = _stamp(path)
    with _lock:
        if key in _sniffed:
            return _sniffed[key]
    try:
        result: tuple[float | None, str | None] = (sniff_upscaler(read_upscaler_state_dict(path), path).scale, None)
    except LorastudioError as exc:
        result = (None, str(exc))
    with _lock:
        _sniffed[key] = result
    return result


def _row(name: str, kind: str, scale: float | None, path: Path | None = None, error: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "model_name": path.stem if path else None,
        "model_path": str(path) if path else None,
        "model_url": None,
        "scale": scale,
        "kind": kind,
        "error": error,
    }


def _unique_names(paths: list[Path], taken: set[str]) -> dict[Path, str]:
    """Each upscaler file's listed name: its A1111 title, unless another file holds it more strongly
    (`title_claim`), then its stem, then its file name; none equal to a name in `taken` (lower case)."""
    from lorastudio.generate.upscalers.names import model_upscaler_title, title_claim

    titles = {path: model_upscaler_title(path.stem) for path in paths}
    listed = {path: index for index, path in enumerate(paths)}
    order = sorted(paths, key=lambda path: (title_claim(path.stem, titles[path]), listed[path]))
    names: dict[Path, str] = {}
    for path in order:
        name = next(
            (option for option in (titles[path], path.stem, path.name) if option.lower() not in taken),
            str(path),
        )
        taken.add(name.lower())
        names[path] = name
    return names


def _model_rows(ws: Workspace) -> list[dict[str, Any]]:
    from lorastudio.generate.upscalers.names import FIXED_UPSCALERS

    paths = list_weight_files(ws.upscalers, "upscaler")
    names = _unique_names(paths, {name.lower() for name in FIXED_UPSCALERS})
    rows = []
    for path in paths:
        scale, error = _sniff(path)
        rows.append(_row(names[path], "model", scale, path, error))
    return sorted(rows, key=lambda row: row["name"].lower())


def list_upscalers(ws: Workspace) -> list[dict[str, Any]]:
    """Every upscaler: the six latent modes, the three filters, then the model files (with `error` if unreadable)."""
    from lorastudio.generate.upscalers.names import LATENT_UPSCALE_MODES, RESAMPLE_UPSCALERS

    rows = [_row(name, "latent", 2) for name in LATENT_UPSCALE_MODES]
    rows += [_row(name, "resample", _RESAMPLE_SCALES[name]) for name in RESAMPLE_UPSCALERS]
    return rows + _model_rows(ws)


def upscaler_names(ws: Workspace, kinds: tuple[str, ...] = ("latent", "resample", "model")) -> list[str]:
    """Names of the usable upscalers of `kinds` (unreadable files left out), in list order."""
    return [row["name"] for row in list_upscalers(ws) if row["kind"] in kinds and not row["error"]]


def _called(row: dict[str, Any], field: str) -> str:
    """A row's listed name, its file's stem or its file name, in lower case ("" for none)."""
    if field == "name":
        return row["name"].lower()
    if row["model_path"] is None:
        return ""
    path = Path(row["model_path"])
    return (path.stem if field == "stem" else path.name).lower()


def find_upscaler(
    ws: Workspace, name: str, kinds: tuple[str, ...] = ("latent", "resample", "model"), allow_paths: bool = False
) -> dict[str, Any]:
    """The row of the upscaler called `name` (its listed name, else a file's stem or file name; any
    case), or a 422 listing the names. A listed name wins over another file's stem, so a title two
    files could claim finds the file listed under it.

    `allow_paths` (the CLI) also takes a path to an upscaler file outside the workspace.
    """
    wanted = name.strip().lower()
    rows = [row for row in list_upscalers(ws) if row["kind"] in kinds]
    for field in ("name", "stem", "file name"):
        row = next((row for row in rows if wanted and _called(row, field) == wanted), None)
        if row is not None:
            if row["error"]:
                raise InvalidRequest(row["error"])
            return row
    path = Path(name).expanduser()
    if allow_paths and path.is_file():
        scale, error = _sniff(path)
        if error:
            raise LorastudioError(error)
        return _row(path.stem, "model", scale, path)
    usable = [row["name"] for row in rows if not row["error"]]
    raise InvalidRequest(
        f"upscaler {name!r}: not found; use one of: {', '.join(usable)} "
        f"(model upscalers are files in {ws.upscalers}).",
        key="upscaler_not_found",
        params={"name": name},
    )


def load_upscaler(path: str | Path, device: Any = "cpu", dtype: Any = None) -> ModelUpscaler:
    """The model upscaler in `path` on `device`, kept loaded (the last two; reloaded when the file changes)."""
    from lorastudio.generate.upscalers.model import load_model_upscaler

    path = Path(path)
    key = (*_stamp(path), str(device), str(dtype))
    with _lock:
        if key in _loaded:
            _loaded.move_to_end(key)
            return _loaded[key]
    model = load_model_upscaler(path, device, dtype)
    with _lock:
        _loaded[key] = model
        while len(_loaded) > _MAX_LOADED:
            _loaded.popitem(last=False)
    return model


def check_hires_upscaler(ws: Workspace, cfg: GenerateConfig, allow_paths: bool = False) -> dict[str, Any] | None:
    """The row of the model upscaler a txt2img hires fix names (None for latent modes and filters, or no hires)."""
    from lorastudio.generate.upscalers.names import fixed_upscaler

    if not cfg.hires_on or fixed_upscaler(cfg.hires_upscaler):
        return None
    return find_upscaler(ws, cfg.hires_upscaler, allow_paths=allow_paths)


def hires_model_upscaler(
    ws: Workspace, cfg: GenerateConfig, device: Any, dtype: Any, allow_paths: bool = False
) -> ModelUpscaler | None:
    """The loaded model upscaler of the request's hires fix, on the generation's device, or None."""
    row = check_hires_upscaler(ws, cfg, allow_paths)
    return None if row is None else load_upscaler(row["model_path"], device, dtype)
