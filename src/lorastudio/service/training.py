"""Training as a service call: config in, run folder and library files out.

CLI, API and job queue all call `run_training`; progress reaches them through the
optional `callback(event)` (events: plan, step, checkpoint, done).

The trainer writes only into its run folder. `publish` is the one place that copies a run's
files into models/, loras/ or embeddings/ and records them in studio.db: once after training
(the best-scored checkpoint when scoring is on, else the final files) and on `train pick`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.names import NamePolicy, find_model
from lorastudio.service.training_family import explained_resolution, with_native_resolution

if TYPE_CHECKING:
    from lorastudio.service.workspace import Workspace
    from lorastudio.train.config import TrainConfig

logger = logging.getLogger(__name__)

__all__ = [
    "run_training",
    "has_checkpoint",
    "explain_training",
    "import_kohya",
    "import_diffsynth",
    "resume_config",
    "run_name_for",
    "list_presets",
    "score_training_run",
    "pick_training_checkpoint",
    "publish",
]


def list_presets() -> list[dict[str, str]]:
    """Shipped presets with their one-line description (the first comment line of the YAML)."""
    from importlib import resources

    from lorastudio.train.config import preset_names

    out = []
    for name in preset_names():
        text = (
            resources.files("lorastudio.train")
            .joinpath("presets", f"{name}.yaml")
            .read_text(encoding="utf-8")
        )
        first = next((line[1:].strip() for line in text.splitlines() if line.startswith("#")), "")
        out.append({"name": name, "description": first})
    return out


def import_kohya(
    kohya_config: str | Path | None,
    dataset_config: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | None = None,
    report: Callable[[str], None] | None = None,
) -> tuple[Any, str]:
    """A kohya training (and dataset) TOML as lorastudio's config: (resolved config, YAML text).

    `report` gets one line per kohya key saying what became of it, before the config is
    checked (so a refused config still shows the mapping). The YAML holds the imported keys
    and the command line's, so `--config FILE` reproduces the run.
    """
    from lorastudio.train.kohya_config import import_kohya_config, kohya_resolved_config

    imported = import_kohya_config(kohya_config, dataset_config)
    return _resolved_import(imported, kohya_resolved_config, overrides, preset, report)


def import_diffsynth(
    command: str,
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | None = None,
    report: Callable[[str], None] | None = None,
) -> tuple[Any, str]:
    """A DiffSynth-Studio training command line as lorastudio's config: (resolved config, YAML text).

    As `import_kohya`: `report` gets one line per argument (and the notes on what differs)
    before the config is checked; the YAML reproduces the run with `--config FILE`.
    """
    from lorastudio.train.diffsynth_args import diffsynth_resolved_config, import_diffsynth_args

    imported = import_diffsynth_args(command)
    return _resolved_import(imported, diffsynth_resolved_config, overrides, preset, report)


def _resolved_import(imported, resolve, overrides, preset: str | None, report) -> tuple[Any, str]:
    """A foreign tool's imported settings: the mapping reported line by line first (a refused config
    still shows it), then the resolved config and the YAML that reproduces the run."""
    from lorastudio.train.kohya_config import kohya_yaml_config

    for line in imported.lines() if report is not None else ():
        report(line)
    resolved = resolve(imported, overrides, preset)
    imported.config = kohya_yaml_config(imported, overrides)
    if preset:
        imported.config["preset"] = preset
    return resolved, imported.to_yaml()


def explain_training(ws: Workspace, resolved: Any) -> list[str]:
    """`train --explain`: every resolved value with its source, then the step budget when the data opens."""
    from lorastudio.train.config import explain_lines
    from lorastudio.train.plan import prepare_plan

    resolved = explained_resolution(ws, resolved)  # train.resolution at the model's native size
    lines = explain_lines(resolved) + family_training_defaults(ws, resolved.config)
    try:
        plan = prepare_plan(resolved.config, ws.datasets, num_processes=int(os.environ.get("WORLD_SIZE", "1")))
    except LorastudioError as exc:
        return [*lines, f"# plan: not checked ({exc})"]
    notes = [*(f"# data: {note}" for note in plan.notes), *(f"# config: {note}" for note in plan.config_notes)]
    return [*lines, f"# plan: {plan.explanation}", *notes]


def family_training_defaults(ws: Workspace, cfg: Any) -> list[str]:
    """`--explain` lines for what the base model's family sets on a GPU where the config is silent
    (Kolors: bf16, gradient checkpointing); none for SD families or a model not found."""
    from lorastudio.models.loading import peek_family, resolve_model

    try:
        family = peek_family(resolve_model(cfg.model, ws.models))
    except LorastudioError:
        return []
    if family is None:
        return []
    lines = []
    if family.train_precision != "auto" and cfg.train.mixed_precision == "auto":
        lines.append(
            f"# {family.name} on a GPU: train.mixed_precision auto -> {family.train_precision}"
            " (fp32 where the GPU lacks it; the CPU trains in fp32)"
        )
    if family.train_gradient_checkpointing and "gradient_checkpointing" not in cfg.train.model_fields_set:
        lines.append(f"# {family.name} on a GPU: train.gradient_checkpointing -> true (set it to override)")
    return lines


def run_name_for(ws: Workspace, cfg: TrainConfig) -> str:
    """`output.name`, else the trigger or data set name; a new run never reuses a finished run's folder."""
    from lorastudio.service.workspace import safe_name

    if cfg.output.name:
        return safe_name(cfg.output.name, "output.name")
    base = cfg.trigger or Path(cfg.data.dir.rstrip("/")).name or "lora"
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in base) or "lora"
    name, n = base, 1
    while (ws.runs / name).exists() or (ws.loras / f"{name}.safetensors").exists():
        n += 1
        name = f"{base}-{n}"
    return name


def resume_config(ws: Workspace, run: str) -> tuple[TrainConfig, Path]:
    """The saved config of run `run` (a name under runs/ or a path) and its folder."""
    from lorastudio.train.config import saved_train_config

    run_dir = _run_folder(ws, run)
    if not (run_dir / "config.yaml").is_file():
        raise NotFoundError(
            f"run {run!r}: no config.yaml in {run_dir}; give a run name from `{ws.runs}`.",
            key="run_not_found",
            params={"name": run},
        )
    return saved_train_config(run_dir / "config.yaml"), run_dir


def has_checkpoint(ws: Workspace, run: str) -> bool:
    """Whether run `run` (a name under runs/ or a path) has a complete checkpoint to resume from."""
    from lorastudio.train.checkpoints import latest_state

    run_dir = _run_folder(ws, run)
    return run_dir.is_dir() and latest_state(run_dir) is not None


def _run_folder(ws: Workspace, run: str) -> Path:
    """Run `run`: the name of one under runs/, else a folder path as given (a plain name that is a
    run wins over a same-named folder of the current directory)."""
    path = Path(run).expanduser()
    if len(path.parts) == 1 and not path.is_absolute() and (ws.runs / run).is_dir():
        return ws.safe_child(ws.runs, run, "run")
    return path if path.is_dir() else ws.safe_child(ws.runs, run, "run")


def run_training(
    ws: Workspace,
    config: TrainConfig | None = None,
    resume: str | None = None,
    callback: Callable[[dict], None] | None = None,
    *,
    run_dir: Path | None = None,
    device: str | None = None,
    progress: bool = True,
    stop_at_step: int | None = None,
    names: NamePolicy | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run; returns run folder, LoRA file paths, name and final step.

    `names` is how the base model's name is found: a server passes its strict policy, so a
    model deleted after the job was queued is "not found", never a path in the working
    directory; the CLI passes none (local paths allowed, as the user).

    `stop_at_step` ends the run early after saving a resumable checkpoint (used by tests
    and by a job queue that pauses work).
    """
    from lorastudio.train.checkpoints import latest_state
    from lorastudio.train.config import ignored_keys
    from lorastudio.train.plan import prepare_plan
    from lorastudio.train.runs import TrainPaths
    from lorastudio.train.trainer import Trainer

    if device:  # a device this machine lacks: one line before any planning (the trainer checks it again)
        from lorastudio.models.loading import pick_device

        pick_device(device)
    state, facts = None, None
    if resume is not None:
        config, run_dir = resume_config(ws, resume)
        name = run_dir.name if not config.output.name else config.output.name
        state = latest_state(run_dir, say=_stderr_printer(progress))
        if state is None:
            raise LorastudioError(
                f"run {resume!r}: has no saved checkpoint to resume from; start it again instead.",
                key="run_no_checkpoint",
                params={"name": resume},
            )
        facts = _check_resumable(config, state, resume)
        _check_lora_name_free(ws, name, run_dir, config)
    elif config is None:
        raise LorastudioError("training: give a config or a run to resume.")
    else:
        name = run_name_for(ws, config)
        run_dir = Path(run_dir) if run_dir is not None else ws.runs / name
        if latest_state(run_dir) is not None:
            raise LorastudioError(
                f"run folder {run_dir}: already holds a run; resume it with --resume {run_dir.name} or set output.name.",
                key="run_exists",
                params={"name": run_dir.name},
            )
        if _finished(ws, run_dir, name):  # a finished run that kept no state: its files would be replaced
            raise LorastudioError(
                f"run folder {run_dir}: already holds a finished run; set another output.name or delete that run.",
                key="run_exists",
                params={"name": run_dir.name},
            )
        _check_lora_name_free(ws, name, run_dir, config)
        if config.trains_full_unet:
            _check_model_name_free(ws, name)
        _check_trigger_embedding_fits(ws, config)
        # The resolved name is saved with the run, so a resume names its files the same way.
        config = config.model_copy(update={"output": config.output.model_copy(update={"name": name})})
        config = with_native_resolution(ws, config, names)  # unless a layer set it: the family's size
    plan = prepare_plan(config, ws.datasets, num_processes=int(os.environ.get("WORLD_SIZE", "1")))
    # said on stderr (CLI) and in the job log (UI, API)
    notes = [*(f"data: {note}" for note in plan.notes), *(f"config: {note}" for note in plan.config_notes)]
    if state is not None:
        from lorastudio.train.resume import dataset_change, rate_change

        values = config.model_dump(mode="json")
        notes += filter(None, (dataset_change(values, facts, plan.images), rate_change(values, facts)))
    say = _stderr_printer(progress)
    for note in notes:
        if say is not None:
            say(note)
        if callback is not None:
            callback({"event": "log", "line": note})
    run_dir.mkdir(parents=True, exist_ok=True)
    if os.environ.get("RANK", "0") == "0":  # one writer: every rank of a data-parallel run holds the same config
        from lorastudio.train.outputs import atomic_file

        with atomic_file(run_dir / "config.yaml") as temporary:  # a kill here must not cost the run its config
            temporary.write_text(config.to_yaml(), encoding="utf-8")
    model_where = find_model(ws, config.model, names) if names is not None else None
    paths = TrainPaths(run_dir=run_dir, models=ws.models, datasets=ws.datasets, cache=ws.cache)
    trainer = Trainer(
        config, paths, name, callback=callback, device=device, progress=progress, model_where=model_where
    )
    if progress and os.environ.get("RANK", "0") == "0":
        import sys

        print(f"plan: {plan.explanation}", file=sys.stderr, flush=True)
        for line in ignored_keys(config):
            print(f"config: {line}", file=sys.stderr, flush=True)
    result = trainer.run(plan, resume_from=state, stop_at_step=stop_at_step)
    result.setdefault("run_dir", str(run_dir))
    result.setdefault("name", name)
    result["steps"] = plan.steps
    del trainer
    _free_training_memory()  # before scoring loads a clean copy of the model
    if result.get("finished") and os.environ.get("RANK", "0") == "0":
        final = {kind: Path(result[kind]) for kind in ("model", "lora", "embedding") if kind in result}
        try:
            chosen = _choose_checkpoint(ws, run_dir, config, device, model_where) if config.scoring.enabled else {}
        except Exception:
            # The run is trained and saved: a scorer that fails (a broken CLIP folder) must not
            # leave the library without it. The final files go in, then the error is reported.
            publish(ws, run_dir, config, final, result["step"], "final")
            raise
        if chosen:
            result.update(best_step=chosen["best_step"], scores=chosen["scores"], decided_by=chosen["decided_by"])
            files, step, by = chosen["files"], chosen["best_step"], "score"
        else:
            files, step, by = final, result["step"], "final"
        result.update(publish(ws, run_dir, config, files, step, by))
        result.update(result_step=step, picked_by=by)  # which checkpoint became the library file
    return result


def _check_resumable(config: TrainConfig, state: Path, run: str) -> dict[str, str] | None:
    """A config.yaml edited since the checkpoint must not reshape what it holds (refused, naming the
    keys); returns the checkpoint's metadata for the data set check."""
    from lorastudio.train.resume import check_resumable, checkpoint_facts

    facts = checkpoint_facts(state)
    check_resumable(config.model_dump(mode="json"), facts, run, state.parent.name)
    return facts


def _stderr_printer(progress: bool) -> Callable[[str], None] | None:
    """Where the run's own lines go (main process only): stderr, as the trainer's."""
    if not progress or os.environ.get("RANK", "0") != "0":
        return None
    import sys

    return lambda text: print(text, file=sys.stderr, flush=True)


def _check_model_name_free(ws: Workspace, name: str) -> None:
    """A fine-tune lands in models/<name>.safetensors: never over (or beside) another model."""
    taken = [p for p in (ws.models / name, ws.models / f"{name}.safetensors") if p.exists()]
    if taken:
        raise LorastudioError(
            f"output.name {name!r}: {taken[0]} already exists; choose another output.name for the trained model."
        )


def _finished(ws: Workspace, run_dir: Path, name: str) -> bool:
    """A run that ended: its result file is in its folder, or the library holds its LoRA
    (a run stopped before its first checkpoint left only config.yaml and logs: it may start again)."""
    return (run_dir / f"{name}.safetensors").is_file() or _library_lora_of_run(ws, run_dir.name) is not None


def _check_lora_name_free(ws: Workspace, name: str, run_dir: Path, cfg: TrainConfig) -> None:
    """A LoRA run publishes loras/<name>.safetensors: never over a LoRA that is not this run's own
    (one put there by hand, imported, or left by a deleted run of another data set)."""
    if not cfg.trains_lora:
        return
    target = ws.loras / f"{name}.safetensors"
    if not target.exists():
        return
    if (run_dir / "config.yaml").is_file() and _library_lora_of_run(ws, run_dir.name) is not None:
        return  # a resume: publishing replaces this run's own LoRA (under its name now), nothing else
    raise LorastudioError(
        f"output.name {name!r}: {target} is another LoRA; set another output.name or rename that LoRA first."
    )


def _check_trigger_embedding_fits(ws: Workspace, cfg: TrainConfig) -> None:
    """The run publishes embeddings/<trigger>.safetensors, and `publish` never replaces another run's or
    family's file there: a word that already names another family's embedding is refused up front."""
    if not (cfg.trains_embedding and cfg.trigger):
        return
    existing = ws.embeddings / f"{cfg.trigger}.safetensors"
    if not existing.is_file():
        return
    from lorastudio.models.checkpoint import read_safetensors_keys
    from lorastudio.models.loading import peek_family, peek_text_widths, resolve_model

    try:
        where = resolve_model(cfg.model, ws.models)
        family = peek_family(where)
        shapes = read_safetensors_keys(existing)
    except LorastudioError:  # a model found only later (hub id) or an unreadable file: the run decides
        return
    if family is None or not family.embedding_keys:
        return
    fits = set(shapes) == set(family.embedding_keys)
    widths = peek_text_widths(where, family)
    if fits and widths is not None:  # SD1.x and SD2.x embeddings share their tensor name: their width tells
        fits = tuple(shapes[key][-1] for key in family.embedding_keys) == widths
    elif widths is not None and len(widths) == 2 and len(shapes) == 1:
        # one CLIP-L + CLIP-G matrix (HCP-Diffusion's SDXL files): prompts cut it by these widths and use it
        (shape,) = shapes.values()
        fits = len(shape) == 2 and shape[-1] == sum(widths)
    if not fits:
        raise LorastudioError(
            f"trigger {cfg.trigger!r}: {existing} is an embedding for another model family, which publishing"
            f" keeps, so this {family.label} run's embedding could not go into embeddings/ under that word;"
            " pick another trigger, or rename or delete that file."
        )


def _free_training_memory() -> None:
    """The trainer and accelerate's state hooks reference each other: only a collection frees them."""
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def score_training_run(
    ws: Workspace, run: str, device: str | None = None, tagger_model: str | None = None
) -> dict[str, Any]:
    """Score every checkpoint of `run` (scores.json, contact sheet); the table is returned."""
    from lorastudio.service import face_identity
    from lorastudio.train.scoring import score_run

    face_identity.install()  # the face_identity scorer opens backends through the workspace
    return score_run(ws, run, device=device, tagger_model=tagger_model)


def pick_training_checkpoint(ws: Workspace, run: str, step: int | str, by: str = "user") -> dict[str, Any]:
    """Make checkpoint `step` (`20`, or its folder's name `step-20`) the run's result: copy it into the
    library and record it there."""
    from lorastudio.train.scoring import checkpoint_files, checkpoint_step

    files = checkpoint_files(ws, run, step)
    step = checkpoint_step(step)
    config, run_dir = resume_config(ws, run)
    return {"run": run_dir.name, "step": step, "picked_by": by, **publish(ws, run_dir, config, files, step, by)}


def publish(
    ws: Workspace, run_dir: Path, cfg: TrainConfig, files: dict[str, Path], step: int, by: str
) -> dict[str, str]:
    """Copy a run's chosen files into the library and record them; returns the `library_*` paths.

    `files` maps "model", "lora" and "embedding" to files in the run folder (see
    `train.outputs`); each is checked before it is copied (a broken file never enters the
    library). `by` is who chose the checkpoint: "score" or "user" are noted in scores.json,
    "final" (the files of the last step, no scoring) is not.
    """
    from lorastudio.service.embeddings import embedding_owner
    from lorastudio.train.outputs import copy_to_library

    name = cfg.output.name or run_dir.name
    out: dict[str, str] = {}
    if "model" in files:
        library = ws.safe_child(ws.models, f"{name}.safetensors", "output.name")
        copy_to_library(files["model"], library, "model")
        out["library_model"] = str(library)
    if "lora" in files:
        # A LoRA the user renamed since (its run follows it) is replaced under its new name
        library = _library_lora_of_run(ws, run_dir.name) or ws.safe_child(ws.loras, f"{name}.safetensors", "output.name")
        trigger = cfg.trigger if cfg.trains_embedding else None
        copy_to_library(files["lora"], library, "lora", expect_lora_keys=cfg.trains_lora, trigger=trigger)
        out["library_lora"] = str(library)
    if "embedding" in files:
        library = ws.safe_child(ws.embeddings, f"{cfg.trigger}.safetensors", "trigger")
        if library.exists() and embedding_owner(library) != name:
            # Another run's (or the user's own) embedding of the word: replacing it gave every LoRA of
            # that run this run's trigger. It stays; this run's is in its LoRA, which uses it.
            logger.warning(
                "%s is another run's or your own embedding of %r: kept; this run's is bundled in its LoRA (%s)",
                library, cfg.trigger, files["embedding"],
            )
            out["embedding_kept"] = str(library)
        else:
            copy_to_library(files["embedding"], library, "embedding")
            out["library_embedding"] = str(library)
    if by != "final":
        from lorastudio.train.scoring import record_pick

        record_pick(run_dir, step, by)
    _register_result(ws, run_dir, cfg, out, step)
    return out


def _library_lora_of_run(ws: Workspace, run: str) -> Path | None:
    """The library file the run's LoRA was last published as (renamed or moved since), if any."""
    import json

    from lorastudio.service.library import Library

    loras = ws.loras.resolve()
    rows = [row for row in Library(ws).loras() if json.loads(row.get("info") or "{}").get("run") == run]
    for row in sorted(rows, key=lambda r: r.get("added_at") or 0, reverse=True):
        path = Path(row["path"])
        if path.is_file() and loras in path.resolve().parents:
            return path
    return None


def _latest_samples(run_dir: Path, step: int | None) -> list[str]:
    """Sample images of checkpoint `step`, else of the last step that has some."""
    from lorastudio.train.steps import step_folders

    folders = dict(step_folders(run_dir / "samples"))
    chosen = folders.get(step) if step is not None else None
    if chosen is None and folders:
        chosen = folders[max(folders)]
    return [str(p) for p in sorted(chosen.glob("*.png"))] if chosen is not None else []


def _register_result(
    ws: Workspace, run_dir: Path, config: TrainConfig, result: dict[str, Any], step: int
) -> None:
    """Record the run's LoRA (trigger, base model, samples, settings) or model in studio.db."""
    from lorastudio.adapters.hashing import file_sha256
    from lorastudio.service.library import Library
    from lorastudio.service.models import model_info

    info = {
        "run": run_dir.name,
        "step": step,
        "method": config.method,
        "samples": _latest_samples(run_dir, step),
        "embedding": result.get("library_embedding"),
        "settings": config.model_dump(mode="json"),
    }
    if result.get("library_model"):
        model_info(ws, Path(result["library_model"]).stem)  # hashes the file and records it
        return
    if not result.get("library_lora"):
        return
    path = Path(result["library_lora"])
    Library(ws).add_lora(
        path.stem, path, _lora_family(path), file_sha256(path), config.trigger or None, config.model, info
    )


def _lora_family(path: Path) -> str | None:
    """The family the LoRA's metadata names (the header only; the tensors are not read)."""
    from lorastudio.adapters.metadata import family_from_metadata
    from lorastudio.models.checkpoint import read_safetensors_metadata

    family = family_from_metadata(read_safetensors_metadata(path))
    return family.name if family is not None else None


def _choose_checkpoint(
    ws: Workspace, run_dir: Path, config: TrainConfig, device: str | None, model_where: Any = None
) -> dict[str, Any]:
    """Score the run's checkpoints: the best step, the table's path and the best checkpoint's files."""
    from lorastudio.service import face_identity
    from lorastudio.train.scoring import checkpoint_files, list_checkpoints, score_run

    if run_dir.parent != ws.runs or not list_checkpoints(run_dir, config):
        return {}
    face_identity.install()
    table = score_run(ws, run_dir.name, device=device, model_where=model_where)
    best = table["best_step"]
    return {
        "best_step": best,
        "decided_by": table.get("decided_by"),
        "scores": str(run_dir / "scores.json"),
        "files": checkpoint_files(ws, run_dir.name, best),
    }
