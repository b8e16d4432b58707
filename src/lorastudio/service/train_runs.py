"""Training as a form sees it: a preset's values, a request from edited values, a run's progress.

The web UI's Train tab shows every `TrainConfig` field filled from the chosen preset, and
sends back only what the user changed: `train_request` turns that into the same request
the API takes (`preset` plus the keys the user set), so `Studio.submit_train` layers it over
the preset exactly as it layers an API request or the CLI's overrides.

`foreign_key_hints` words a REST training body's unknown keys as the CLI does (kohya's `network_dim`
is `lora.rank`). `run_progress` reads a run folder while it trains (loss log, sample images, scores), so a
reloaded page shows the same run as the browser that started it.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from lorastudio.config import nest_keys
from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from lorastudio.service.workspace import Workspace
    from lorastudio.train.config import TrainConfig

__all__ = [
    "form_keys", "preset_values", "train_request", "run_progress", "training_eta", "latest_training_job",
    "foreign_key_hints", "resume_training", "pick_training", "resume_run",
]  # fmt: skip


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The nested config model a field holds (`data: DataConfig`), else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def form_keys(model: type[BaseModel] | None = None, prefix: str = "") -> dict[str, tuple[type[BaseModel], str]]:
    """Every dotted key of the training config -> (the model that holds it, its field name).

    Sections (`train`, `lora`, ...) are walked; `preset` is left out (the preset picker sets it).
    """
    if model is None:
        from lorastudio.train.config import TrainConfig

        model = TrainConfig
    keys: dict[str, tuple[type[BaseModel], str]] = {}
    for name, info in model.model_fields.items():
        if not prefix and name == "preset":
            continue
        section = _section_model(info.annotation)
        if section is not None:
            keys.update(form_keys(section, f"{prefix}{name}."))
        else:
            keys[f"{prefix}{name}"] = (model, name)
    return keys


def _default(model: type[BaseModel], name: str) -> Any:
    info = model.model_fields[name]
    return info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]


def preset_values(preset: str | None) -> dict[str, Any]:
    """The value of every form key with `preset` applied over the config's defaults.

    Not validated: a preset may leave a key for the user to fill in (the character preset's
    trigger word), and the form must still show it.
    """
    from lorastudio.config import flatten_keys
    from lorastudio.train.config import read_preset

    values = {key: _default(model, name) for key, (model, name) in form_keys().items()}
    if preset:
        if preset not in _shipped_presets():
            raise LorastudioError(f"preset {preset!r}: not a shipped preset; choose one of {', '.join(_shipped_presets())}.")
        shown = flatten_keys(read_preset(preset))
        values.update({key: value for key, value in shown.items() if key in values})
    return values


def _shipped_presets() -> list[str]:
    from lorastudio.train.config import preset_names

    return preset_names()


def train_request(preset: str | None, values: dict[str, Any]) -> TrainConfig:
    """The request a form sends: `preset` plus the values that differ from it.

    A value the user left as the preset shows it is not sent, so the preset's way of saying how
    long to train (`train.epochs_per_image`) gives way to a `train.steps` the user typed, as an
    override does on the command line. `Studio.submit_train` resolves the layers.
    """
    from lorastudio.config import explain_validation_error, validation_key
    from lorastudio.train.config import TrainConfig

    shown = preset_values(preset)
    unknown = sorted(set(values) - set(shown))
    if unknown:
        raise LorastudioError(f"training form: unknown key {unknown[0]!r}; use a key of the training config.")
    changed = {key: value for key, value in values.items() if value != shown[key]}
    data = nest_keys(changed)
    if preset:
        data["preset"] = preset
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        message = explain_validation_error(TrainConfig, exc, "training form")
        raise LorastudioError(message, **validation_key(exc, "train")) from None  # worded by the field's label


def foreign_key_hints(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A training request's validation errors, each unknown key another tool spells so (kohya, HCP-Diffusion,
    EasyPhoto) with the CLI's one-line hint added to its `msg` (the JSON to send instead); the rest as given."""
    from collections.abc import Mapping

    from lorastudio.config import flatten_keys
    from lorastudio.train.foreign_keys import foreign_key_hint

    out = []
    for error in errors:
        key = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        given = error.get("input")
        lines = []
        unknown = error.get("type") == "extra_forbidden"  # a key lorastudio lacks: a kohya key at any depth in it
        if key and unknown:
            lines = [foreign_key_hint(key, given, "request")]
        if key and isinstance(given, Mapping) and given and not any(lines):
            # HCP's `model: {pretrained_model_name_or_path: ...}`, or kohya's keys under a section lorastudio lacks
            lines = [
                foreign_key_hint(f"{key}.{sub}", value, "request", tails=unknown)
                for sub, value in flatten_keys(given).items()
            ]
        found = [line for line in lines if line]
        out.append({**error, "msg": f"{error.get('msg', '')}; {'; '.join(found)}"} if found else error)
    return out


def _log_records(path: Path) -> list[dict[str, Any]]:
    """`log.jsonl` as far as it is written: a line the trainer is writing now is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def run_progress(ws: Workspace, run: str) -> dict[str, Any]:
    """What a run folder shows so far: loss per step, sample images (newest step first), scores.

    `loss` is a list of {"step", "loss"}; `samples` a list of (path, "step N") pairs; `scores`
    the rows of scores.json with `best_step` and `result_step` (the step now in the library).
    """
    from lorastudio.train.steps import step_folders

    run_dir = ws.safe_child(ws.runs, run, "run")
    loss = [
        {"step": int(r["step"]), "loss": float(r["loss"])}
        for r in _log_records(run_dir / "log.jsonl")
        if isinstance(r.get("step"), int) and isinstance(r.get("loss"), int | float)
    ]
    samples = [
        (str(image), f"step {step}")
        for step, folder in reversed(step_folders(run_dir / "samples"))
        for image in sorted(folder.glob("*.png"))
    ]
    scores_path = run_dir / "scores.json"
    table = json.loads(scores_path.read_text(encoding="utf-8")) if scores_path.is_file() else {}
    return {
        "run": run_dir.name,
        "loss": loss,
        "samples": samples,
        "scores": table.get("rows", []),
        "scorers": list(table.get("scorers", {})),
        "best_step": table.get("best_step"),
        "result_step": table.get("result_step"),
    }


def training_eta(job: Any, now: float | None = None, reported: float | None = None) -> float | None:
    """Seconds a running job still needs: the trainer's own estimate when it `reported` one (its
    pace over the steps of this session, after loading: a resumed run is not "half done in 20 s"),
    else at the job's pace so far (None before its first progress)."""
    import time

    if reported is not None:
        return max(0.0, float(reported))
    fraction = float(job.progress or 0)
    if not job.started_at or fraction <= 0:
        return None
    elapsed = (time.time() if now is None else now) - float(job.started_at)
    return max(0.0, elapsed * (1 - fraction) / fraction)


RESUMABLE_STATES = ("cancelled", "failed")  # what `Studio.resume_train` queues again


def latest_training_job(studio: Any, owner: str | None, scan: int = 1000) -> Any | None:
    """What a reloaded Train page shows: `owner`'s (None: anyone's) training job still queued or
    running, else their newest training job when it ended cancelled or failed, so Resume can queue it
    again (after a page reload or a server restart); None when their newest run succeeded or there is none."""
    for state in ("running", "queued"):
        job = next((j for j in studio.list_jobs(state=state, user=owner, limit=scan) if j.kind == "train"), None)
        if job is not None:
            return job
    newest = next((j for j in studio.list_jobs(user=owner, limit=scan) if j.kind == "train"), None)  # newest first
    return newest if newest is not None and newest.state in RESUMABLE_STATES else None


def _run_jobs(studio: Any, run: str, scan: int = 1000) -> list[Any]:
    """The training jobs still on record for run folder `run`, newest first."""
    return [j for j in studio.list_jobs(limit=scan) if j.kind == "train" and j.payload.get("run") == run]


def _job_gone(studio: Any, job_id: str) -> bool:
    from lorastudio.errors import NotFoundError

    try:
        studio.get_job(job_id)
    except NotFoundError:
        return True
    return False


def resume_training(studio: Any, job_id: str, run: str, *, user: str | None, priority: int = 0) -> Any:
    """The Train tab's Resume: job `job_id` queued again (`Studio.resume_train`); when its record was purged
    (`jobs purge`, `--keep-jobs-days`), run `run` by its folder name, as `train --resume RUN` does."""
    if run and (not job_id or _job_gone(studio, job_id)):
        return resume_run(studio, run, user=user, priority=priority)
    return studio.resume_train(job_id, user=user, priority=priority)


def pick_training(studio: Any, job_id: str, run: str, step: int | str, *, user: str | None) -> dict[str, Any]:
    """The Train tab's "Use this checkpoint": by job (`Studio.pick_checkpoint`), else, its record purged,
    by run name."""
    from lorastudio.service.training import pick_training_checkpoint

    if run and (not job_id or _job_gone(studio, job_id)):
        jobs = _run_jobs(studio, run)
        if jobs:  # another job of the run is still on record: its owner decides
            return studio.pick_checkpoint(jobs[0].id, step, user=user)
        studio.workspace.safe_child(studio.workspace.runs, run, "run")  # a name under runs/, never a path
        return pick_training_checkpoint(studio.workspace, run, step, by="user")
    return studio.pick_checkpoint(job_id, step, user=user)


def resume_run(studio: Any, run: str, *, user: str | None, priority: int = 0) -> Any:
    """Queue run `run` (a folder name under runs/) again from its last checkpoint, by name.

    A job of the run still on record resumes through `Studio.resume_train` (its owner and state checked).
    With none left (purged), the run's own `config.yaml` is queued, under `user` ("" when None): the
    caller vouches the run is theirs (the web tab passes only the run it showed this user)."""
    from lorastudio.errors import InvalidRequest
    from lorastudio.service.training import has_checkpoint, resume_config

    ws = studio.workspace
    ws.safe_child(ws.runs, run, "run")  # a name under runs/, never a path
    jobs = _run_jobs(studio, run)
    if jobs:
        return studio.resume_train(jobs[0].id, user=user, priority=priority)
    config, run_dir = resume_config(ws, run)  # "run X not found" when the folder or its config is gone
    if not has_checkpoint(ws, run):
        raise LorastudioError(
            f"run {run!r}: has no saved checkpoint to resume from; start it again instead.",
            key="run_no_checkpoint",
            params={"name": run},
        )
    if (run_dir / f"{config.output.name or run_dir.name}.safetensors").is_file():  # its final files: it ended
        raise InvalidRequest(
            f"run {run!r}: finished already; pick one of its checkpoints instead of resuming it.",
            key="run_finished",
            params={"name": run},
        )
    payload = {"config": config.model_dump(mode="json"), "run": run_dir.name}
    return studio.submit("train", payload, user=user or "", priority=priority, affinity=config.model)
