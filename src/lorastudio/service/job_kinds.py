"""The application's job kinds: generate, grid, train, caption, import, portrait-train, portrait-make
(and the queue's `sleep`).

`KINDS` is the one table of them: for each kind its typed config (the `config` of every
payload), its handler, the function that queues it after the checks a request needs, and
its folder rule (where its files go). `install(registry)` hands the handlers and folder
rules to a worker's `HandlerRegistry`; `Studio.start` and `lorastudio worker` call it.
Adding a job kind is one `JobKind` line here.

Every payload is `{"config": {...}, **extras}` (a train job adds `run`, a grid job `grid`);
handlers also read a flat payload, the shape caption and import jobs had before.

Each handler reads its typed payload, reports progress through the `JobContext`, checks
for a cancel between steps and writes its files into `ctx.artifacts_dir`. The config
models below are also the request bodies of the native API (`POST /api/v1/jobs/<kind>`).

Nothing heavy is imported at module level: a handler imports torch & co. when it runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from pydantic import Field, model_validator

from lorastudio.config import ConfigLayer, StrictModel, load_config, resolve_config
from lorastudio.data.config import CaptionerConfig, CaptionMode, TaggerConfig
from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.series import SeriesRequest
from lorastudio.service.grid import grid_job_result, run_grid, submit_grid
from lorastudio.service.grid_request import GridRequest
from lorastudio.service.job_steps import (
    PREVIEW_EVERY_STEPS,
    StepReporter,
    generation_config,
    json_ready,
    keep_partial_result,
    model_cache_of,
    names_policy_of,
    noting_loaded_models,
    publish_artifacts,
    run_folder,
)
from lorastudio.service.jobs.registry import (
    FolderRule,
    Handler,
    HandlerRegistry,
    SleepConfig,
    output_folder,
    sleep_handler,
)
from lorastudio.service.jobs.store import Job
from lorastudio.service.models import default_model
from lorastudio.service.portrait_make import PortraitMakeConfig, portrait_make_handler, submit_portrait_make
from lorastudio.service.portrait_train_job import portrait_train_handler
from lorastudio.service.portraits import PortraitTrainConfig
from lorastudio.service.series import series_handler, submit_series
from lorastudio.service.unsaved import image_job_folder, keeps_files
from lorastudio.service.uploads import UPLOADS_DIR, upload_path
from lorastudio.service.workspace import Workspace, safe_name
from lorastudio.train.config import TrainConfig, saved_train_config

if TYPE_CHECKING:
    from lorastudio.service.jobs.context import JobContext

__all__ = [
    "KINDS",
    "CaptionJobConfig",
    "ImportJobConfig",
    "JobKind",
    "UPLOADS_DIR",
    "caption_handler",
    "generate_handler",
    "grid_handler",
    "import_handler",
    "install",
    "job_folder",
    "job_kind",
    "portrait_train_handler",
    "publish_artifacts",
    "submit_job",
    "train_handler",
    "typed_job",
    "upload_path",
]

class CaptionJobConfig(StrictModel):
    """Caption (image-to-text model) or tag (WD14 ONNX tagger) every image of a data set."""

    dataset: str = Field(..., description="Data-set name in the workspace.")
    mode: CaptionMode = Field("missing", description="missing, overwrite, prepend or append.")
    captioner: CaptionerConfig | None = Field(
        None, description="An image-to-text model (BLIP, Florence-2...)."
    )
    tagger: TaggerConfig | None = Field(None, description="A WD14-family ONNX tagger.")

    @model_validator(mode="after")
    def _one_labeller(self) -> CaptionJobConfig:
        if (self.captioner is None) == (self.tagger is None):
            raise ValueError("give exactly one of 'captioner' or 'tagger'")
        return self


class ImportJobConfig(StrictModel):
    """Bring uploaded files into the workspace library under a name."""

    what: Literal["dataset", "model", "lora", "embedding"] = Field(..., description="What the files are.")
    name: str = Field(..., description="Name in the workspace (letters, digits, '.', '-', '_').")
    uploads: list[str] = Field(..., min_length=1, description="Upload names from POST /api/v1/uploads.")
    background: str = Field("white", description="Data sets: colour that replaces transparency.")
    file_names: list[str] = Field(
        default_factory=list,
        description="Data sets: each upload's original file name, in order, so a caption .txt is paired "
        "with its image by name (an upload is stored under a fresh name).",
    )
    refused_files: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Data sets: files the upload itself refused ({source, reason}, and a common reason's key and"
        " params), reported with the import's own.",
    )
    caption_extension: str | None = Field(
        None,
        description="Data sets: read only this caption file beside each image ('.caption' for kohya's BLIP"
        " captions, kohya caption_extension); default: '.txt', else '.caption'.",
    )

    @model_validator(mode="after")
    def _names(self) -> ImportJobConfig:
        safe_name(self.name, "import name")
        for upload in self.uploads:
            safe_name(upload, "upload name")
        if self.file_names and len(self.file_names) != len(self.uploads):
            raise ValueError("file_names must give one name per upload, in the same order")
        for original in self.file_names:
            if not original or Path(original).name != original or original in (".", ".."):
                raise ValueError(f"file name {original!r}: a plain file name, without folders")
        if self.caption_extension is not None:
            from lorastudio.data.sources import caption_extension_of

            try:
                self.caption_extension = caption_extension_of(self.caption_extension)
            except LorastudioError as exc:
                raise ValueError(str(exc)) from None
        if self.what != "dataset" and len(self.uploads) != 1:
            raise ValueError(f"a {self.what} import takes exactly one upload")
        return self


# --- generate ---------------------------------------------------------------------------


def generate_handler(ctx: JobContext) -> dict[str, Any]:
    """payload: `config` (a GenerateConfig). Images go to `outputs/<job id>/` and the library; with
    `keep: false` (A1111's save_images false) to a folder removed once answered (`service.unsaved`)."""
    from lorastudio.service.generation import generation_notes, run_generation

    cfg = generation_config(ctx)
    cache = model_cache_of(ctx)
    reporter = StepReporter(ctx, skippable=True)
    result = run_generation(
        ctx.workspace, cfg, cache, reporter.progress, reporter.should_stop, out_dir=ctx.artifacts_dir,
        preview=reporter.preview, preview_every=PREVIEW_EVERY_STEPS,
        missing_loras=str(ctx.payload.get("missing_loras") or "refuse"), add_to_library=keeps_files(ctx.payload),
    )  # fmt: skip
    notes = [*(ctx.payload.get("notes") or []), *generation_notes(result)]  # the request's own first
    for line in notes:  # A1111's console lines ("Lora not found", "Textual inversion embeddings skipped")
        ctx.emit("log", {"line": line})
    for image in result.images:
        ctx.emit("image", {"name": image.path.name, "seed": image.seed, "infotext": image.infotext})
    ctx.loaded.clear()
    ctx.loaded.update(cache.loaded_names())
    # A cancel keeps the images made before it (the job ends `cancelled` with them as its result).
    return keep_partial_result(ctx, reporter, {
        "images": [i.path.name for i in result.images],
        "seeds": [i.seed for i in result.images],
        "infotexts": [i.infotext for i in result.images],
        "model": result.model,
        "model_hash": result.model_hash,
        "loras": [{k: v for k, v in lora.items() if k != "path"} for lora in result.loras],
        # the units' maps, relative to the job folder (A1111 answers append them)
        "control_maps": [p.relative_to(ctx.artifacts_dir).as_posix() for p in result.control_maps],
        "missing_loras": result.missing_loras,
        "inpainting_model": result.inpainting_model,
        "notes": notes,  # what the request asked for and did not get, shown beside "Done"
    })  # fmt: skip


def grid_handler(ctx: JobContext) -> dict[str, Any]:
    """payload: `config` (GenerateConfig) and `grid` (GridRequest). Files go to `outputs/<job id>/` (with
    `keep: false`, a folder removed once answered, and no library rows: `service.unsaved`)."""
    cfg = generation_config(ctx)
    request = GridRequest.model_validate(ctx.payload.get("grid") or {})
    cache = model_cache_of(ctx)
    reporter = StepReporter(ctx, skippable=True)  # /skip drops the current cell
    try:
        with noting_loaded_models(ctx, cache):
            result = run_grid(
                ctx.workspace, cfg, request, cache, reporter.progress, reporter.should_stop, out_dir=ctx.artifacts_dir,
                add_to_library=keeps_files(ctx.payload),
            )
    except LorastudioError:
        if reporter.stopped is not None:  # stopped before any cell was done: nothing to draw
            raise reporter.stopped from None
        raise
    return keep_partial_result(ctx, reporter, grid_job_result(result))


# --- train ------------------------------------------------------------------------------


def _training_module():
    try:
        from lorastudio.service import training
    except ImportError as exc:
        raise LorastudioError(
            f"training: not available in this install ({exc}); update lorastudio to a version with training."
        ) from None
    if not hasattr(training, "run_training"):
        raise LorastudioError("training: lorastudio.service.training has no run_training; update lorastudio.")
    return training


def train_handler(ctx: JobContext) -> dict[str, Any]:
    """payload: `config` (a TrainConfig) and `run` (the run folder name under runs/).

    A job that ran before (worker crash or restart) resumes from the run's last checkpoint.
    """
    from lorastudio.train.checkpoints import latest_state

    training = _training_module()
    cfg = saved_train_config(ctx.payload.get("config") or {})  # resolved when it was queued
    run_dir = run_folder(ctx.workspace, ctx.job)  # the train kind's folder rule: ctx.artifacts_dir too
    run = run_dir.name

    def on_event(event: dict) -> None:
        kind = event.get("event")
        if kind == "step":
            loss = event.get("loss")
            message = f"loss {loss:.4f}" if isinstance(loss, float) else None
            fraction = event["step"] / max(event["total"], 1)
            ctx.progress(fraction, event["step"], event["total"], message, eta_s=event.get("eta_s"))
        elif kind:
            ctx.emit(str(kind), {k: v for k, v in event.items() if k != "event"})
        ctx.check_cancelled()

    if latest_state(run_dir, say=ctx.log) is not None:  # the job log says which checkpoint was skipped
        ctx.log(f"resuming run {run} from its last checkpoint (attempt {ctx.attempt})")
        result = training.run_training(
            ctx.workspace,
            resume=str(run_dir),
            callback=on_event,
            device=ctx.device,
            progress=False,
            names=names_policy_of(ctx),
        )
    else:
        result = training.run_training(
            ctx.workspace,
            cfg,
            callback=on_event,
            run_dir=run_dir,
            device=ctx.device,
            progress=False,
            names=names_policy_of(ctx),
        )
    publish_artifacts(ctx, run_dir)
    return json_ready(result)


# --- caption ----------------------------------------------------------------------------


def caption_handler(ctx: JobContext) -> dict[str, Any]:
    """payload: `config` (a CaptionJobConfig); a flat payload (queued before `config`) is read the same."""
    from lorastudio.service.datasets import caption_dataset, tag_dataset

    cfg = CaptionJobConfig.model_validate(ctx.payload.get("config", ctx.payload))

    def progress(done: int, total: int) -> None:
        ctx.progress(done / max(total, 1), step=done, total=total)
        ctx.check_cancelled()

    if cfg.captioner is not None:
        return caption_dataset(ctx.workspace, cfg.dataset, cfg.captioner, cfg.mode, progress)
    return tag_dataset(ctx.workspace, cfg.dataset, cfg.tagger, cfg.mode, progress)


# --- import -----------------------------------------------------------------------------


def import_handler(ctx: JobContext) -> dict[str, Any]:
    """payload: `config` (an ImportJobConfig), or the flat old shape. Upload files are removed once imported."""
    cfg = ImportJobConfig.model_validate(ctx.payload.get("config", ctx.payload))
    ws = ctx.workspace
    sources = [upload_path(ws, name, pickles=cfg.what == "embedding") for name in cfg.uploads]
    ctx.check_cancelled()
    if cfg.what == "dataset":
        from lorastudio.service.datasets import import_dataset, import_uploaded_files

        def progress(done: int, name: str) -> None:
            ctx.progress(done / max(len(sources), 1), step=done, total=len(sources), message=name)
            ctx.check_cancelled()

        if cfg.file_names:  # a browser's files: together again under their own names
            result = import_uploaded_files(
                ws, cfg.name, sources, cfg.background, progress=progress, names=cfg.file_names,
                caption_extension=cfg.caption_extension,
            )  # fmt: skip
        else:
            result = import_dataset(
                ws, cfg.name, sources, background=cfg.background, progress=progress,
                caption_extension=cfg.caption_extension,
            )  # fmt: skip
        result["failed_files"] = [*cfg.refused_files, *result.get("failed_files", [])]
        result["failed"] = len(result["failed_files"])
    elif cfg.what == "model":
        from lorastudio.service.models import import_model

        result = import_model(ws, _with_suffix(sources[0], ".safetensors"), cfg.name)
    elif cfg.what == "lora":
        from lorastudio.service.loras import import_lora

        result = import_lora(ws, _with_suffix(sources[0], ".safetensors"), cfg.name)
    else:
        from lorastudio.service.embeddings import import_embedding

        result = import_embedding(ws, sources[0], cfg.name, shown_as=(cfg.file_names or [None])[0])
    for source in sources:
        source.unlink(missing_ok=True)
    return json_ready(result)


def submit_dataset_upload(
    studio: Any,
    name: str,
    files: Sequence[str | Path | tuple[str, BinaryIO]],
    background: str = "white",
    *,
    user: str = "",
    caption_extension: str | None = None,
) -> Job:
    """Store a browser's files (paths) or a REST client's (`(file name, stream)`) as uploads and queue
    their import as a job (progress, cancel, the Jobs list); the job pairs each caption (.txt,
    .caption) or kohya meta_*.json with its images by the original names, by the folder rules
    (`caption_extension`: read only that caption file). A file refused here is reported with its
    reason in the job's `refused_files` (its result's `failed_files`); the others are imported."""
    from lorastudio.service.uploads import DATASET_UPLOAD_SUFFIXES, discard_uploads, store_stream

    if not files:
        raise LorastudioError(
            "dataset import: choose at least one image, caption (.txt, .caption), kohya meta_*.json"
            " or zip to upload."
        )
    safe_name(name, "data-set name")
    stored: list[str] = []
    kept: list[str] = []
    refused: list[dict[str, Any]] = []
    try:
        for file in files:  # one bad file is reported, as kohya skips it; the others are imported
            shown = re.split(r"[\\/]", file[0])[-1] if isinstance(file, tuple) else Path(file).name
            try:
                if isinstance(file, tuple):
                    stored.append(store_stream(studio.workspace, file[1], shown, DATASET_UPLOAD_SUFFIXES)[0])
                else:
                    with open(file, "rb") as stream:
                        stored.append(store_stream(studio.workspace, stream, shown, DATASET_UPLOAD_SUFFIXES)[0])
                kept.append(shown)
            except LorastudioError as exc:
                row = {"source": shown, "reason": str(exc)}  # with its key: the web UI words it (datasets tab)
                refused.append({**row, "key": exc.key, "params": exc.params} if exc.key else row)
        if not stored:
            first = refused[0]
            raise LorastudioError(
                f"dataset import: none of the {len(files)} files can be used ({first['reason']})",
                key="dataset_none_usable",
                params={"count": len(files), "file": first["source"], "reason": first["reason"]},
            )
        cfg = ImportJobConfig(
            what="dataset", name=name, uploads=stored, file_names=kept, background=background, refused_files=refused,
            caption_extension=caption_extension or None,
        )
        return studio.submit_import(cfg, user=user)
    except BaseException:
        discard_uploads(studio.workspace, stored)  # a refused import leaves no uploads behind
        raise


def _with_suffix(path: Path, suffix: str) -> Path:
    """Importers read the file type from the suffix; uploads keep the client's, so check it."""
    if path.suffix.lower() != suffix:
        raise LorastudioError(f"upload {path.name!r}: expected a {suffix} file; convert it first.")
    return path


# --- where a job's files live ----------------------------------------------------------


def job_folder(ws: Workspace, job: Job) -> Path:
    """Where `job` writes its files: its kind's folder rule, `outputs/<job id>` for kinds without one."""
    kind = KINDS.get(job.kind)
    return (kind.folder if kind is not None else output_folder)(ws, job)


def job_images(ws: Workspace, job: Job) -> list[Path]:
    """A generate job's PNGs: all of them, or those made before a cancel (of a job whose images were
    not kept, those still there: none once its answer was built)."""
    folder = job_folder(ws, job)
    if job.result and job.result.get("images"):
        paths = [folder / name for name in job.result["images"]]
        return paths if keeps_files(job.payload) else [p for p in paths if p.is_file()]
    return sorted(folder.glob("*.png")) if folder.is_dir() else []


def job_control_maps(ws: Workspace, job: Job) -> list[Path]:
    """A generate job's ControlNet maps, one per unit in the request's order ([] without units)."""
    names = (job.result or {}).get("control_maps") or []
    return [job_folder(ws, job) / name for name in names]


# --- queueing a typed job ----------------------------------------------------------------
# Each takes the studio (the checks and name resolution a request needs), the validated
# config and the payload's extras; the studio's submit_* methods build the payload.


def _submit_generate(studio: Any, cfg: GenerateConfig, extras: dict[str, Any], **who: Any) -> Job:
    return studio.submit_generate(cfg, **who)


def _submit_grid(studio: Any, cfg: GenerateConfig, extras: dict[str, Any], **who: Any) -> Job:
    return submit_grid(studio, cfg, extras["grid"], **who)


def _submit_series(studio: Any, cfg: GenerateConfig, extras: dict[str, Any], **who: Any) -> Job:
    return submit_series(studio, cfg, extras["series"], **who)


def _submit_train(studio: Any, cfg: TrainConfig, extras: dict[str, Any], **who: Any) -> Job:
    return studio.submit_train(cfg, **who)


def _submit_portrait_train(studio: Any, cfg: PortraitTrainConfig, extras: dict[str, Any], **who: Any) -> Job:
    """Check the photos were uploaded and the base model exists; reserve the run folder; queue."""
    from lorastudio.service.portraits import reserve_run

    if not cfg.photos:
        raise LorastudioError("portrait-train: photos is empty; upload the person's photos (POST /api/v1/uploads).")
    for name in cfg.photos:
        upload_path(studio.workspace, name)
    model = studio.check_model_name(cfg.base or studio.settings.model or default_model(studio.workspace))
    cfg = cfg.model_copy(update={"base": model})
    run = reserve_run(studio.workspace, cfg.name)
    return studio.submit("portrait-train", {"config": cfg.model_dump(), "run": run}, affinity=model, **who)


def _submit_caption(studio: Any, cfg: CaptionJobConfig, extras: dict[str, Any], **who: Any) -> Job:
    return studio.submit_caption(cfg, **who)


def _submit_import(studio: Any, cfg: ImportJobConfig, extras: dict[str, Any], **who: Any) -> Job:
    return studio.submit_import(cfg, **who)


def _submit_sleep(studio: Any, cfg: SleepConfig, extras: dict[str, Any], **who: Any) -> Job:
    return studio.submit("sleep", {"config": cfg.model_dump()}, **who)


@dataclass(frozen=True)
class JobKind:
    """One kind of job: its config model, handler, how it is queued and where its files go.

    `extras` are the payload keys a client gives besides `config`, with their models.
    """

    config: type[StrictModel]
    handler: Handler
    submit: Callable[..., Job]
    folder: FolderRule = output_folder
    extras: Mapping[str, type[StrictModel]] = field(default_factory=dict)


KINDS: dict[str, JobKind] = {
    "generate": JobKind(GenerateConfig, generate_handler, _submit_generate, folder=image_job_folder),
    "grid": JobKind(GenerateConfig, grid_handler, _submit_grid, folder=image_job_folder, extras={"grid": GridRequest}),
    "series": JobKind(GenerateConfig, series_handler, _submit_series, extras={"series": SeriesRequest}),
    "train": JobKind(TrainConfig, train_handler, _submit_train, folder=run_folder),
    "portrait-train": JobKind(PortraitTrainConfig, portrait_train_handler, _submit_portrait_train, folder=run_folder),
    "caption": JobKind(CaptionJobConfig, caption_handler, _submit_caption),
    "import": JobKind(ImportJobConfig, import_handler, _submit_import),
    "portrait-make": JobKind(PortraitMakeConfig, portrait_make_handler, submit_portrait_make),
    "sleep": JobKind(SleepConfig, sleep_handler, _submit_sleep),
}


def install(registry: HandlerRegistry) -> HandlerRegistry:
    """Give a worker's registry every kind of `KINDS` (handler and folder rule); returns it."""
    for name, kind in KINDS.items():
        registry.register(name, kind.handler, kind.folder)
    return registry


def job_kind(kind: str) -> JobKind:
    """The `JobKind` called `kind`; an unknown name is refused with the known ones."""
    found = KINDS.get(kind)
    if found is None:
        raise LorastudioError(f"job kind {kind!r}: unknown; use one of {', '.join(sorted(KINDS))}.")
    return found


def typed_job(
    kind: str,
    *,
    file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    payload: Mapping[str, Any] | None = None,
) -> tuple[StrictModel, dict[str, Any]]:
    """A job's validated config and extras from a payload, a config file and `key=value` overrides.

    The payload is `{"config": {...}, **extras}` or, without `config`, the config itself
    (plus any extras). Its config is the lowest layer, then the file, then the overrides;
    unknown keys are refused with "did you mean".
    """
    spec = job_kind(kind)
    data = dict(payload or {})
    if "config" in data:
        base = data.pop("config")
        unknown = sorted(set(data) - set(spec.extras))
        if unknown:
            known = ", ".join(["config", *spec.extras])
            raise LorastudioError(f"payload key {unknown[0]!r}: not part of a {kind} job; use {known}.")
    else:  # the flat shape: the payload is the config (and its extras)
        base = {key: value for key, value in data.items() if key not in spec.extras}
    if not isinstance(base, Mapping):
        raise LorastudioError(f"payload config: must be an object of {kind} settings, not {type(base).__name__}.")
    cfg = load_config(spec.config, file, overrides, base=base)
    extras = {
        key: resolve_config(model, [ConfigLayer(key, data.get(key) or {})], source=f"payload {key}").config
        for key, model in spec.extras.items()
    }
    return cfg, extras


def submit_job(
    studio: Any, kind: str, cfg: StrictModel, extras: Mapping[str, Any] | None = None, *, user: str = "",
    priority: int = 0,
) -> Job:
    """Queue a typed job through the studio's checks (the same path as the API's)."""
    return job_kind(kind).submit(studio, cfg, dict(extras or {}), user=user, priority=priority)
