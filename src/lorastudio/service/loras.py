"""LoRA files in and out of the workspace: import (any format -> kohya), export, merge.

The CLI and API call these; they hold the logic so the fronts stay thin. Heavy imports
(torch, diffusers) happen inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.service.lora_merge import MERGE_FORMATS, merge_model, parse_lora_spec
from lorastudio.service.lora_sources import in_diffusers_layout, lora_source, model_unet_config, trained_base
from lorastudio.service.names import LIST_LORAS, find_listed_weight
from lorastudio.service.workspace import (
    Workspace,
    find_weight,
    list_weight_files,
    name_from_stem,
    rename_without_clobbering,
    safe_name,
    weight_file_row,
    weight_row,
)

__all__ = [
    "parse_lora_spec",
    "import_lora",
    "export_lora",
    "merge_model",
    "list_loras",
    "list_lora_files",
    "lora_file_info",
    "delete_lora",
    "rename_lora",
    "EXPORT_FORMATS",
    "MERGE_FORMATS",
]

EXPORT_FORMATS = ("kohya", "diffusers", "peft", "diffsynth")


def _family_for(lora, family: str | None, source: str):
    from lorastudio.adapters.detect import check_lora_family, detect_lora_family
    from lorastudio.models.families import FAMILIES, get_family

    if family is not None:
        chosen = get_family(family)
        check_lora_family(lora, chosen, name=source)
        return chosen
    detected = detect_lora_family(lora)
    if detected is None:
        raise LorastudioError(
            f"{source}: cannot tell which model family it is for (no metadata, no width it knows); "
            f"pass --family {'|'.join(FAMILIES)}, the family of the model it was trained on."
        )
    return detected


def _summary(lora, path: Path | None, family, fmt: str) -> dict[str, Any]:
    from lorastudio.adapters.lycoris import network_types

    return {
        "types": network_types(lora),
        "path": str(path) if path is not None else None,
        "format": fmt,
        "source_format": lora.source_format,
        "family": family.name if family is not None else None,
        "modules": len(lora.modules),
        "ranks": sorted(lora.ranks()),
        "embeddings": sorted(lora.embeddings),
    }


def _network_type(header: dict[str, Any] | None) -> str | None:
    """"lora", "loha", "lokr+dora", … from the tensor names in the file's header (no tensors loaded)."""
    from lorastudio.adapters.lycoris import network_types_from_keys

    if header is None:
        return None
    return "+".join(network_types_from_keys(k for k in header if k != "__metadata__")) or None


def _read_headers(ws: Workspace) -> list[tuple[Path, dict[str, Any] | None, str | None]]:
    """Every LoRA file in `loras/` with its safetensors header, each read once (None + one error line
    for a file that cannot be read: one broken file must not hide the others, or answer 500)."""
    from lorastudio.adapters.detect import foreign_lora_note
    from lorastudio.models.checkpoint import read_safetensors_header

    found = []
    paths = list_weight_files(ws.loras, "lora")
    shadowed = _shadowed_names(ws, paths)
    for path in paths:
        header, error = None, None
        if path.suffix.lower() == ".safetensors":
            try:
                header = read_safetensors_header(path)
            except Exception as exc:
                error = _unreadable(path, exc)
        if header is not None and error is None:  # an earlier export for another tool: what to do with it
            error = foreign_lora_note(path.name, (k for k in header if k != "__metadata__"))
        found.append((path, header, error or shadowed.get(path)))
    return found


def _shadowed_names(ws: Workspace, paths: list[Path]) -> dict[Path, str]:
    """Files whose name an earlier listed file has (the folder's own, or the first subfolder's):
    `<lora:name>` never reaches them, and the listing says so."""
    first: dict[str, Path] = {}
    shadowed = {}
    for path in paths:
        winner = first.setdefault(path.stem, path)
        if winner != path:
            shown = winner.relative_to(ws.loras).as_posix()
            shadowed[path] = f"{path.name}: <lora:{path.stem}> uses {shown}; rename this file to use it."
    return shadowed


def list_loras(ws: Workspace) -> list[dict[str, Any]]:
    """Every LoRA file in `loras/`, with what the library knows (trigger, base model, run, samples).

    Files are the truth: a LoRA copied in by hand is listed too, with its file metadata only.
    """
    return _listing_rows(ws, _read_headers(ws))


def _listing_rows(
    ws: Workspace, files: list[tuple[Path, dict[str, Any] | None, str | None]]
) -> list[dict[str, Any]]:
    from lorastudio.service.library import Library

    known = {row["name"]: row for row in Library(ws).loras()}
    rows = []
    for path, header, error in files:
        row = known.get(path.stem)
        info = json.loads(row["info"]) if row and row["info"] else {}
        metadata = (header or {}).get("__metadata__") or {}
        notes = _user_metadata(path)
        rows.append(
            {
                "name": path.stem,
                "path": str(path),
                "type": _network_type(header),
                "trigger": (row or {}).get("trigger")
                or metadata.get("modelspec.trigger_phrase")
                or notes["activation_text"],
                "base_model": (row or {}).get("base_model") or metadata.get("ss_sd_model_name"),
                "family": (row or {}).get("family") or _family_in_metadata(metadata),
                "run": info.get("run"),
                "step": info.get("step"),
                "method": info.get("method"),
                "samples": info.get("samples", []),
                **notes,
                "training": _training_summary(info.get("settings"), metadata),
                "scores": _run_scores(ws, info.get("run")),
                "registered": row is not None,
                "error": error,
            }
        )
    return rows


def _family_in_metadata(metadata: dict[str, str]) -> str | None:
    """The family a file's own metadata names (an imported or hand-copied file has no library row)."""
    from lorastudio.adapters.metadata import family_from_metadata

    family = family_from_metadata(metadata)
    return family.name if family is not None else None


def _user_metadata(path: Path) -> dict[str, Any]:
    """What a user noted about a LoRA in A1111's sidecar `<name>.json` (the extra-networks card editor):
    preferred weight, activation text, notes. A missing or broken sidecar is no note at all."""
    sidecar = path.with_suffix(".json")
    notes: dict[str, Any] = {}
    if sidecar.is_file():
        try:
            loaded = json.loads(sidecar.read_text(encoding="utf-8"))
            notes = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            notes = {}
    weight = notes.get("preferred weight")
    return {
        "preferred_weight": float(weight) if isinstance(weight, int | float) and weight else None,
        "activation_text": str(notes.get("activation text") or "") or None,
        "notes": str(notes.get("notes") or "") or None,
    }


def _training_summary(settings: dict[str, Any] | None, metadata: dict[str, str]) -> dict[str, Any]:
    """The few training settings a library card shows: from the run's config when lorastudio trained
    it, else from the file's kohya `ss_*` metadata (a LoRA from elsewhere)."""
    if settings:
        train, lora = settings.get("train") or {}, settings.get("lora") or {}
        return {
            "steps": train.get("steps"),
            "rank": lora.get("rank"),
            "alpha": lora.get("alpha"),
            "learning_rate": train.get("learning_rate"),
            "resolution": train.get("resolution"),
            "optimizer": train.get("optimizer"),
        }
    keys = {"steps": "ss_max_train_steps", "rank": "ss_network_dim", "alpha": "ss_network_alpha",
            "learning_rate": "ss_learning_rate", "resolution": "ss_resolution", "optimizer": "ss_optimizer"}  # fmt: skip
    return {field: metadata[key] for field, key in keys.items() if metadata.get(key) not in (None, "", "None")}


def _run_scores(ws: Workspace, run: str | None) -> dict[str, Any] | None:
    """The run's checkpoint pick (`scores.json`: best and chosen step, the score names), if it was scored."""
    if not run:
        return None
    path = ws.runs / run / "scores.json"
    try:
        table = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None
    if not table:
        return None
    best = next((r for r in table.get("rows", []) if r.get("step") == table.get("best_step")), {})
    return {
        "best_step": table.get("best_step"),
        "result_step": table.get("result_step"),
        "best": {
            key: value
            for key, value in best.items()
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
        },
    }


def _unreadable(path: Path, exc: BaseException) -> str:
    """The one line a listing shows for a file it cannot read."""
    if isinstance(exc, LorastudioError):
        return str(exc).splitlines()[0]  # already names the file and the fix
    reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    return f"{path.name}: not a readable .safetensors file ({reason}); replace or delete it."


# The fields of a library row the native API shows next to each LoRA file.
_LIBRARY_FIELDS = ("trigger", "base_model", "family", "run", "step", "method")


def lora_file_rows(ws: Workspace) -> list[dict[str, Any]]:
    """Each LoRA file's name, size and metadata, one header read per file (A1111's `/sdapi/v1/loras`)."""
    return [weight_row(path, header, error) for path, header, error in _read_headers(ws)]


def list_lora_files(ws: Workspace) -> list[dict[str, Any]]:
    """`GET /api/v1/loras`: each file's name, size and metadata, plus what training recorded (`library`)."""
    headers = _read_headers(ws)  # one read per file serves both rows
    files = []
    for (path, header, error), row in zip(headers, _listing_rows(ws, headers), strict=True):
        library = {k: row.get(k) for k in _LIBRARY_FIELDS}
        files.append({**weight_row(path, header, error), "library": library})
    return files


def _lora_path(ws: Workspace, name: str) -> Path:
    """The listed LoRA file `name` names (suffix in any case); anything else is not found."""
    return find_listed_weight(ws.loras, name, "lora", "LoRA", LIST_LORAS)


def lora_file_info(ws: Workspace, name: str) -> dict[str, Any]:
    """One LoRA file's name, size and metadata (as `GET /api/v1/loras` lists it)."""
    return weight_file_row(_lora_path(ws, name))


def delete_lora(ws: Workspace, name: str) -> dict[str, Any]:
    """Remove a LoRA file from loras/ and its library row (run, trigger, samples).

    Without the row, a file later copied in under this name is listed as `registered: False`.
    """
    from lorastudio.service.library import Library

    _lora_path(ws, name).unlink()
    Library(ws).remove_lora(name)
    return {"name": name, "deleted": True}


def rename_lora(ws: Workspace, name: str, new_name: str) -> dict[str, Any]:
    """Give a LoRA a new name (what `<lora:name:w>` takes); its run, trigger and samples follow it.

    Prompts and recipes that name the old name stop finding it, as in A1111.
    """
    from lorastudio.service.library import Library

    path = _lora_path(ws, name)
    new_name = safe_name(new_name, "new LoRA name")
    target = path.with_name(f"{new_name}{path.suffix}")  # in its own (sub)folder of loras/
    taken = find_weight(ws.loras, new_name, "lora")
    if taken is not None:
        raise LorastudioError(
            f"LoRA {new_name!r}: already exists in {taken.parent}; choose another name.",
            key="name_taken",
            params={"what": "LoRA", "name": new_name},
        )
    rename_without_clobbering(path, target, "LoRA")
    Library(ws).rename_lora(name, new_name, target)
    return {"name": new_name, "renamed_from": name, "file": target.name}


def _import_stem(source: Path) -> str:
    """The library name: the file's stem, HCP-Diffusion's `unet-N` / `text_encoder-N` / `TE-N`
    without their half's prefix, and what a name may not hold (civitai's `detail tweaker`,
    `add_detail (v2)`) as `_` (`detail_tweaker`, `add_detail_v2`): `--name` picks another."""
    stem = source.stem
    for prefix in ("unet-", "text_encoder-", "TE-"):
        if stem.startswith(prefix) and len(stem) > len(prefix):
            stem = stem[len(prefix) :]
            break
    return name_from_stem(stem, "lora")


def import_lora(
    ws: Workspace,
    source: str | Path,
    name: str | None = None,
    family: str | None = None,
    model: str | Path | None = None,
    alpha: float | None = None,
) -> dict[str, Any]:
    """Copy a LoRA of any supported format into `loras/` as a kohya file (what A1111 reads).

    DiffSynth-Studio files (`.ckpt` read weights-only, `blocks.N` names) are Kolors LoRAs unless
    `family` or the file says otherwise; they hold no alpha, so `alpha` (default 4.0, DiffSynth's; the
    rank for our own export, whose factors hold it) is written, with the rank, in kohya's metadata.
    """
    from lorastudio.adapters.detect import load_lora_file
    from lorastudio.adapters.hashing import lora_short_hash
    from lorastudio.adapters.kohya import save_kohya
    from lorastudio.service.lora_diffsynth import is_diffsynth_file, read_diffsynth_lora

    source = Path(source)
    unet_config = model_unet_config(model, ws)
    if is_diffsynth_file(source):
        lora, family, unet_config = read_diffsynth_lora(source, alpha, family, unet_config, ws)
    else:
        if alpha is not None:
            raise LorastudioError(f"{source.name}: --alpha is for DiffSynth-Studio files only; this file has its own.")
        lora = load_lora_file(source)
    chosen = _family_for(lora, family, source.name)
    stem = name or _import_stem(source)
    target = ws.safe_child(ws.loras, f"{stem}.safetensors", what="LoRA name")
    if target.exists():
        raise LorastudioError(f"LoRA {stem!r}: already in the library; pass another --name.")
    metadata = {"ss_output_name": stem} if "ss_output_name" not in lora.metadata else {}
    save_kohya(lora, target, metadata, family=chosen, unet_config=unet_config)
    info = _summary(lora, target, chosen, "kohya")
    info.update(name=stem, hash=lora_short_hash(target))
    return info


def _embedding_files_for(lora, folder: Path, keep_clear: tuple[Path, ...]) -> dict[str, Path]:
    """`<token>.safetensors` in `folder` per bundled embedding; refuses names that would clobber a
    LoRA or an embedding of another width (another family's, of the same trigger)."""
    planned = {}
    for token in sorted(lora.embeddings):
        if not token or Path(token).name != token or token in {".", ".."}:
            raise LorastudioError(
                f"bundle_emb.{token}: trigger token is not a usable file name; export with --to kohya to keep it bundled."
            )
        path = folder / f"{token}.safetensors"
        widths = [vectors.shape[-1] for vectors in lora.embeddings[token]]
        if any(path.resolve() == other.resolve() for other in keep_clear) or _holds_other_than_embedding(path, widths):
            raise LorastudioError(
                f"{path}: the embedding for {token!r} would overwrite that file; pass --out in another folder."
            )
        planned[token] = path
    return planned


def _holds_other_than_embedding(path: Path, widths: list[int]) -> bool:
    """An existing file that is not an embedding of these widths (a LoRA in loras/ named like the
    trigger, another family's embedding): keep it. One of the same widths is an earlier export of
    this one (or the trained run's own copy), replaced."""
    if not path.exists():
        return False
    from lorastudio.adapters.embeddings import has_embedding_layout
    from lorastudio.models.checkpoint import read_safetensors_keys

    try:
        shapes = read_safetensors_keys(path)
    except LorastudioError:
        return True
    return not has_embedding_layout(shapes) or sorted(s[-1] for s in shapes.values()) != sorted(widths)


def _write_embedding_files(lora, planned: dict[str, Path], family) -> list[str]:
    """Each bundled embedding as an A1111/diffusers-loadable file (`emb_params`, or `clip_l`/`clip_g`)."""
    from lorastudio.adapters.embeddings import Embedding, save_embedding

    return [
        str(save_embedding(Embedding(token, list(lora.embeddings[token])), path, family))
        for token, path in planned.items()
    ]


def _bundled_for_a1111_only(target: Path, lora) -> str:
    """The one line a kohya export with a bundled trigger embedding gets: A1111 reads `bundle_emb.*`,
    ComfyUI does not (ComfyUI issue #3659), so there the word would mean something else."""
    words = ", ".join(repr(word) for word in sorted(lora.embeddings))
    return (
        f"{target.name}: keeps the trigger embedding {words} bundled, which A1111 reads but ComfyUI "
        "ignores; for ComfyUI export with --no-embeddings and put each <trigger>.safetensors into its "
        "models/embeddings/."
    )


def _refuse_lycoris_modules(lora, source: str, to: str) -> None:
    """diffusers and peft files hold low-rank pairs only; LoHa/LoKr/(IA)^3/full/DoRA would be lost."""
    from lorastudio.adapters.lycoris import network_types

    other = [t for t in network_types(lora) if t not in ("lora", "locon")]
    if other:
        raise LorastudioError(
            f"{source}: has {'/'.join(other)} modules, which a {to} file cannot hold; use --to kohya."
        )


_EXPORT_SUFFIXES = {
    "kohya": "-kohya.safetensors",
    "diffusers": "-diffusers.safetensors",
    "peft": "-peft",
    "diffsynth": "-diffsynth.safetensors",
}


def _inside(path: Path, folder: Path) -> bool:
    resolved, root = path.resolve(), folder.resolve()
    return resolved == root or root in resolved.parents


def _export_target(source: Path, to: str, out: str | Path | None, ws: Workspace | None) -> Path:
    """Where an export goes: `--out`, else the workspace's `exports/` (else beside the source).

    studio/loras holds what A1111, ComfyUI and `<lora:…>` load as LoRAs; a file for another tool
    (DiffSynth-Studio names, diffusers/peft layouts) there would be listed and fail, so only a kohya
    file may be written into it, and only when `--out` asks for it.
    """
    stem = source.stem if source.is_file() else source.name
    if out is None:
        return (ws.exports if ws is not None else source.parent) / f"{stem}{_EXPORT_SUFFIXES[to]}"
    target = Path(out)
    from lorastudio.models.checkpoint import PICKLE_SUFFIXES

    if to in ("kohya", "diffusers") and target.suffix.lower() in PICKLE_SUFFIXES:  # always safetensors inside
        raise LorastudioError(
            f"--out {target}: a {to} export is written as .safetensors (never a pickle, which A1111 would "
            f"unpickle); name it {target.with_suffix('.safetensors').name}."
        )
    if ws is not None and to != "kohya" and _inside(target, ws.loras):
        raise LorastudioError(
            f"--out {target}: a {to} export in {ws.loras.name}/ is not a LoRA A1111 or `<lora:…>` loads; "
            "write it elsewhere (default studio/exports/), or pass --to kohya."
        )
    return target


def _unet_config_for(lora, chosen, model, to: str, ws: Workspace | None):
    """(UNet config, base model named but not in the library) the LoRA's UNet names follow: `--model`'s,
    else the trained-on model's when the library has it, else the family's standard UNet (where the
    export needs one)."""
    from lorastudio.adapters.kohya import default_unet_config

    if model is not None:
        return model_unet_config(model, ws), None
    base, unet_config = trained_base(ws, lora.metadata)
    if unet_config is not None:
        return unet_config, None
    if chosen is not None and (lora.unet_layout == "ldm" or to == "diffsynth"):
        unet_config = default_unet_config(chosen)
    return unet_config, base


def _export_base_name(lora, model, ws: Workspace | None) -> str | None:
    """The base model an export names (kohya's `ss_sd_model_name`, as training writes it): `--model`'s
    library name, else the one the LoRA names."""
    from lorastudio.service.lora_sources import model_ref

    if model is not None:
        try:
            return model_ref(ws, model, build=False).name
        except LorastudioError:
            return Path(model).name
    return trained_base(ws, lora.metadata)[0]


def export_lora(
    source: str | Path,
    to: str,
    out: str | Path | None = None,
    family: str | None = None,
    model: str | Path | None = None,
    no_embeddings: bool = False,
    ws: Workspace | None = None,
) -> dict[str, Any]:
    """Write a LoRA in another layout: kohya file, diffusers file, peft folder(s) or DiffSynth-Studio file
    (its attention projections, alpha baked in; `service.lora_diffsynth`).

    `source` is a name `lora list` shows or a path; without `out` the export goes to the workspace's
    `exports/` (`_export_target`). The UNet layout of LDM names comes from `model`, else from the
    base model the file names (`lora_sources.trained_base`). diffusers and peft files cannot hold a
    pivotal LoRA's trigger embedding (`bundle_emb.*`), and diffusers' `load_lora_weights` refuses a
    kohya file that has one; so for those targets, and for kohya with `no_embeddings`, each bundled
    embedding is written next to the output as `<token>.safetensors` (what A1111's embeddings folder
    and `load_textual_inversion` read) — into the workspace's embeddings/ when the output is in its
    loras/, where the studio and A1111 would list the embedding as a LoRA.
    """
    from dataclasses import replace

    from lorastudio.adapters.detect import load_lora_file
    from lorastudio.adapters.kohya import save_kohya
    from lorastudio.adapters.peft_format import save_diffusers, save_peft

    if to not in EXPORT_FORMATS:
        raise LorastudioError(f"--to {to!r}: unknown format; choose one of {', '.join(EXPORT_FORMATS)}.")
    source = lora_source(ws, source)
    target = _export_target(source, to, out, ws)
    lora = load_lora_file(source)
    if to not in ("kohya", "diffsynth"):  # a DiffSynth export drops what it cannot hold, saying so
        _refuse_lycoris_modules(lora, source.name, to)
    named_family = to in ("kohya", "diffsynth") or lora.unet_layout == "ldm"
    chosen = _family_for(lora, family, source.name) if named_family else None
    unet_config, base = _unet_config_for(lora, chosen, model, to, ws)
    separate = bool(lora.embeddings) and (no_embeddings or to != "kohya")
    embeddings_folder = target.parent
    if ws is not None and _inside(embeddings_folder, ws.loras):
        embeddings_folder = ws.embeddings  # loras/ and its subfolders: listed as LoRAs there
    planned = _embedding_files_for(lora, embeddings_folder, (source, target)) if separate else {}
    written = replace(lora, embeddings={}) if separate else lora
    if to != "kohya" and written.unet_layout == "ldm":  # names mapped once, with a clear refusal
        written = in_diffusers_layout(written, unet_config, source.name, chosen, base, model is not None)
    extra: dict[str, Any] = {}
    for folder in {target.parent, *(path.parent for path in planned.values())}:
        folder.mkdir(parents=True, exist_ok=True)  # studio/exports/ is made on first use
    if not written.modules and planned:
        target = None  # an embedding-only file: the standalone embeddings are the whole export
    elif to == "diffsynth":
        from lorastudio.service.lora_diffsynth import save_diffsynth_export

        named = _export_base_name(lora, model, ws)
        written, extra = save_diffsynth_export(written, source, target, chosen, unet_config, named)
    elif to == "kohya":
        save_kohya(written, target, family=chosen, unet_config=unet_config)
        if written.embeddings:
            extra["warnings"] = [_bundled_for_a1111_only(target, written)]
    elif to == "diffusers":
        save_diffusers(written, target, unet_config)
    else:
        save_peft(written, target, unet_config)
    info = _summary(written, target, chosen, to)
    info["embedding_files"] = _write_embedding_files(lora, planned, chosen)
    return {**info, **extra}
