"""The model library: list, inspect and import checkpoints into the workspace."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.library import Library
from lorastudio.service.model_cache import file_stamp
from lorastudio.service.names import LIST_MODELS, STRICT, NamePolicy, find_model, is_plain_name, unknown_name
from lorastudio.service.workspace import (
    Workspace,
    find_with_suffix,
    new_entry_name,
    rename_without_clobbering,
    safe_name,
)

__all__ = [
    "list_models",
    "titled_models",
    "model_info",
    "import_model",
    "delete_model",
    "rename_model",
    "default_model",
    "model_on_disk",
    "list_vaes",
]

# Tensor-name beginnings of a VAE saved on its own (A1111's models/VAE files: vae-ft-mse-840000...).
_VAE_KEY_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")

# A built-in tiny model (built on first use): the default of a workspace without models.
DEFAULT_MODEL = "tiny-sd15"


def default_model(ws: Workspace) -> str:
    """The model a request that names none uses: the first of the user's own models in models/, else
    the built-in default (tiny-sd15), else another built-in tiny model already there.

    The built-in ones come last: `tiny-kolors` sorts before `tiny-sd15` but is no better default.
    """
    from lorastudio.models.tiny import is_tiny_name

    models = ws.models
    found = []
    for path in sorted(models.iterdir()) if models.is_dir() else []:
        if path.is_dir() and (path / "model_index.json").is_file():
            found.append(path.name)
        elif path.is_file() and path.suffix == ".safetensors":
            found.append(path.stem)
    own = [name for name in found if not is_tiny_name(name)]
    if own:
        return own[0]
    return DEFAULT_MODEL if DEFAULT_MODEL in found or not found else found[0]


def model_on_disk(ws: Workspace, name: str) -> bool:
    """In models/ already (a built-in tiny model that is not there yet would be built, slowly)."""
    return (ws.models / name).exists() or (ws.models / f"{name}.safetensors").exists()


def _describe(ws: Workspace, name: str, path: Path) -> dict[str, Any]:
    """Family, hash and size of a model in the folder; hashes are cached by size+mtime.

    A .ckpt converted on import also answers its own SHA-256 (`original_sha256`): A1111 wrote
    that one into the images it made with the .ckpt.
    """
    from lorastudio.models.checkpoint import original_sha256, read_safetensors_keys
    from lorastudio.models.families import detect_family_from_keys
    from lorastudio.models.loading import _family_of_folder, model_hash

    if path.is_dir():
        family = _family_of_folder(path).name
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        kind = "diffusers"
    else:  # a pickled .ckpt is read through its weights-only conversion (cached, as generation uses it)
        from lorastudio.models.loading import as_safetensors

        readable = as_safetensors(path, ws.cache)
        family = detect_family_from_keys(read_safetensors_keys(readable), str(path)).name
        size = path.stat().st_size
        kind = "single_file"
    sha = model_hash(path, ws.cache)
    info = {
        "name": name,
        "path": str(path),
        "family": family,
        "sha256": sha,
        "hash": sha[:10],
        "size_bytes": size,
        "kind": kind,
    }
    if not path.is_dir() and (original := original_sha256(path)):
        info.update(original_sha256=original, original_hash=original[:10])
    return info


def _remember(library: Library, info: dict[str, Any]) -> None:
    """The library row of a described model; a converted .ckpt's own hash goes with it (`model_by_hash`)."""
    extra = {"original_sha256": info["original_sha256"]} if info.get("original_sha256") else None
    library.add_model(
        info["name"], Path(info["path"]), info["family"], info["sha256"], info["size_bytes"], info["kind"], extra
    )


# Listed models: diffusers folders, .safetensors files and, as A1111 lists them, .ckpt checkpoints
# dropped into models/ (read weights-only through a cached conversion; a .safetensors of the same name wins).
LISTED_MODEL_SUFFIXES = (".safetensors", ".ckpt")


def _entries(ws: Workspace) -> dict[str, Path]:
    entries = {}
    paths = sorted(ws.models.iterdir(), key=lambda p: (p.suffix.lower() == ".ckpt", p.name))
    for path in paths:
        if path.name.startswith("."):
            continue  # never a name a request may use (service.names)
        if path.is_dir() and (path / "model_index.json").is_file():
            entries[path.name] = path
        elif path.is_file() and path.suffix.lower() in LISTED_MODEL_SUFFIXES:
            entries.setdefault(path.stem, path)
    return dict(sorted(entries.items()))


# Files that could not be described, by their stamp (`model_cache.file_stamp`): listings are polled
# (A1111 clients ask /sdapi/v1/sd-models often) and a broken multi-GB .ckpt would be hashed and
# unpickled each time.
_UNREADABLE: dict[tuple, BaseException] = {}


def list_models(ws: Workspace) -> list[dict[str, Any]]:
    """Every model in the workspace, plus the built-in tiny models (built on first use)."""
    from lorastudio.models.tiny import TINY_FAMILIES

    library = Library(ws)
    known = {m["name"]: m for m in library.models()}
    rows = []
    for name, path in _entries(ws).items():
        row = known.get(name)
        if row is None or row["path"] != str(path):
            stamp = file_stamp(path)
            if stamp in _UNREADABLE:  # read (and hashed) once: a broken file is not read again per listing
                rows.append(_broken_row(name, path, _UNREADABLE[stamp]))
                continue
            try:
                info = _describe(ws, name, path)
            except Exception as exc:  # one broken file must not hide the others (or answer 500)
                _UNREADABLE[stamp] = exc
                rows.append(_broken_row(name, path, exc))
                continue
            _remember(library, info)
            row = info
        rows.append(
            {
                "name": name,
                "path": str(path),
                "family": row["family"],
                "hash": row["sha256"][:10],
                "sha256": row["sha256"],
                "size_bytes": row["size_bytes"],
            }
        )
    for tiny, family in TINY_FAMILIES.items():
        if tiny not in {r["name"] for r in rows}:
            rows.append(
                {
                    "name": tiny,
                    "path": None,
                    "family": family,
                    "hash": None,
                    "sha256": None,
                    "size_bytes": None,
                    "note": "built-in, built on first use",
                }
            )
    return rows


def titled_models(ws: Workspace) -> list[dict[str, Any]]:
    """`list_models` rows with the `filename` and the `title` ("file [hash10]") A1111 clients name models by."""
    rows = []
    for row in list_models(ws):
        filename = Path(row["path"]).name if row.get("path") else row["name"]
        row = dict(row, filename=filename)
        row["title"] = f"{filename} [{row['hash']}]" if row.get("hash") else filename
        rows.append(row)
    return rows


def _broken_row(name: str, path: Path, exc: BaseException) -> dict[str, Any]:
    reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    return {
        "name": name,
        "path": str(path),
        "family": None,
        "hash": None,
        "sha256": None,
        "size_bytes": path.stat().st_size if path.is_file() else None,
        "error": f"{path.name}: cannot be read ({reason}); replace or delete it.",
    }


def model_info(ws: Workspace, name: str, names: NamePolicy = STRICT) -> dict[str, Any]:
    """Family, hash and size of one model; `names` as in `service.names` (the CLI passes LENIENT)."""
    ref = find_model(ws, name, names)
    if ref.path is None:
        raise NotFoundError(
            f"model {name!r} is a hub id and not on this machine; download it or give a path."
        )
    info = _describe(ws, ref.name, ref.path)
    _remember(Library(ws), info)
    return info


def import_model(
    ws: Workspace, source: str | Path, name: str | None = None, link: bool = False
) -> dict[str, Any]:
    """Copy (or link) a checkpoint into `studio/models`; pickles are converted to safetensors."""
    from lorastudio.models.checkpoint import PICKLE_SUFFIXES, convert_ckpt_to_safetensors

    source = Path(source).expanduser()
    if not source.exists():
        raise NotFoundError(
            f"{source}: not found; give the path of a .safetensors/.ckpt file or a diffusers folder."
        )
    is_folder = source.is_dir()
    if is_folder and not (source / "model_index.json").is_file():
        raise LorastudioError(f"{source}: a folder must be a diffusers model (with model_index.json).")
    if not is_folder and source.suffix.lower() not in {".safetensors", *PICKLE_SUFFIXES}:
        raise LorastudioError(
            f"{source}: unsupported file type {source.suffix!r}; use .safetensors or .ckpt."
        )
    name = new_entry_name(name, source.stem, "model", "model")
    target = ws.models / (name if is_folder else f"{name}.safetensors")
    if target.exists():
        raise LorastudioError(f"model {name!r} already exists in {ws.models}; choose another --name.")
    if not is_folder and source.suffix.lower() in PICKLE_SUFFIXES:
        convert_ckpt_to_safetensors(source, target)
    elif link:
        target.symlink_to(source.resolve(), target_is_directory=is_folder)
    elif is_folder:
        shutil.copytree(source, target)
    else:
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    _bring_yaml(source, target)
    try:
        return model_info(ws, name)
    except LorastudioError:
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        raise


def _bring_yaml(source: Path, target: Path) -> None:
    """The LDM `.yaml` beside a single file goes with it: it says whether an SD 2.x file predicts v."""
    from lorastudio.models.prediction import yaml_beside

    config = None if source.is_dir() else yaml_beside(source)
    if config is not None:
        shutil.copyfile(config, target.with_suffix(".yaml"))


def delete_model(ws: Workspace, name: str) -> dict[str, Any]:
    """Remove a model from models/ (a file, a diffusers folder or a link to either) and its library row.

    A link is removed, never what it points at. Built-in tiny models are not files: not found.
    """
    if not is_plain_name(name):
        raise unknown_name("model", name, ws.models, LIST_MODELS)
    folder = ws.models / name
    links = [ws.models / f"{name}{suffix}" for suffix in LISTED_MODEL_SUFFIXES]
    single = next((p for p in links if p.is_symlink()), None) or find_with_suffix(ws.models, name, LISTED_MODEL_SUFFIXES)
    if folder.is_symlink() or single is not None:
        (folder if folder.is_symlink() else single).unlink()  # a link goes, never what it points at
        (ws.models / f"{name}.yaml").unlink(missing_ok=True)  # its LDM config, brought by the import
    elif folder.is_dir():
        shutil.rmtree(folder)
    else:
        raise unknown_name("model", name, ws.models, LIST_MODELS)
    Library(ws).remove_model(name)
    return {"name": name, "deleted": True}


def rename_model(ws: Workspace, name: str, new_name: str) -> dict[str, Any]:
    """Give a model in models/ (a file, a diffusers folder or a link) a new name; requests and
    recipes that name the old one stop finding it. Built-in tiny models are not files: not found."""
    if not is_plain_name(name):
        raise unknown_name("model", name, ws.models, LIST_MODELS)
    folder = ws.models / name
    single = find_with_suffix(ws.models, name, LISTED_MODEL_SUFFIXES)
    if folder.is_symlink() or folder.is_dir():
        path, suffix = folder, ""
    elif single is not None:
        path, suffix = single, single.suffix
    else:
        raise unknown_name("model", name, ws.models, LIST_MODELS)
    new_name = safe_name(new_name, "new model name")
    for taken in (ws.models / new_name, *(ws.models / f"{new_name}{suffix}" for suffix in LISTED_MODEL_SUFFIXES)):
        if taken.exists() or taken.is_symlink():
            raise LorastudioError(
                f"model {new_name!r}: already exists in {ws.models}; choose another name.",
                key="name_taken",
                params={"what": "model", "name": new_name},
            )
    target = rename_without_clobbering(path, ws.models / f"{new_name}{suffix}", "model")
    if suffix and (ws.models / f"{name}.yaml").is_file():  # its LDM config follows it
        rename_without_clobbering(ws.models / f"{name}.yaml", target.with_suffix(".yaml"), "model config")
    Library(ws).rename_model(name, new_name, target)
    return {"name": new_name, "renamed_from": name}


def _is_vae(path: Path) -> bool:
    """A separate VAE: a diffusers AutoencoderKL folder, or a .safetensors holding only VAE tensors."""
    import json

    from lorastudio.models.checkpoint import read_safetensors_header

    if path.is_dir():
        config = path / "config.json"
        try:
            return config.is_file() and json.loads(config.read_text()).get("_class_name") == "AutoencoderKL"
        except (OSError, ValueError):
            return False
    if path.suffix.lower() != ".safetensors":
        return False
    try:
        keys = [key for key in read_safetensors_header(path) if key != "__metadata__"]
    except (LorastudioError, OSError):
        return False
    return bool(keys) and all(key.startswith(_VAE_KEY_PREFIXES) for key in keys)


def list_vaes(ws: Workspace) -> list[dict[str, Any]]:
    """VAEs a request may name in `vae` (A1111's SD VAE list): separate VAE files and folders in models/."""
    rows = []
    for path in sorted(ws.models.iterdir()) if ws.models.is_dir() else []:
        if path.name.startswith(".") or not _is_vae(path):
            continue
        name = path.name if path.is_dir() else path.stem
        rows.append({"name": name, "file": path.name})
    return rows
