"""Portrait training as a service call: a person's photos in, their LoRA and registry entry out.

`train_person` (and the `portrait-train` job) runs the whole flow EasyPhoto users know:
select the usable photos (`portrait.selection`), write them as the data set
`datasets/<name>` (trigger + fixed caption; each crop's skin retouched first unless
`skin_retouch` is off, as EasyPhoto's training does), train with the `portrait` preset and the
`face_identity` scorer, publish the best checkpoint as `loras/<name>.safetensors`, and
record the person in `studio/portraits/<name>.json`.

The person registry is what portrait making reads (`load_person`): the LoRA, the trigger,
the reference photo with its face, and the mean identity embedding of the kept photos.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from lorastudio.config import StrictModel
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.names import NamePolicy
from lorastudio.service.workspace import Workspace, safe_name

if TYPE_CHECKING:
    import numpy as np

    from lorastudio.portrait.faces import Face, FaceBackend
    from lorastudio.portrait.selection import Selection
    from lorastudio.train.config import TrainConfig

__all__ = [
    "Person",
    "PortraitTrainConfig",
    "load_person",
    "list_people",
    "check_photos",
    "person_details",
    "list_photos",
    "portraits_dir",
    "person_folder",
    "select_person_photos",
    "write_portrait_dataset",
    "portrait_train_config",
    "train_person",
    "validation_prompts",
    "reserve_run",
]

REGISTRY_VERSION = 1


def portraits_dir(ws: Workspace) -> Path:
    """`studio/portraits`: one `<name>.json` per trained person, its files in `<name>/`."""
    return ws.root / "portraits"


def person_folder(ws: Workspace, name: str) -> Path:
    """`studio/portraits/<name>/`: the reference photo and the mean embedding."""
    return ws.safe_child(portraits_dir(ws), name, "person name")


@dataclass
class Person:
    """A trained person: what `portrait make` needs to put them into a template."""

    name: str
    trigger: str
    lora: Path | None  # loras/<name>.safetensors; None until training has published it
    reference_image: Path  # the chosen photo (cropped around the face, 512 px)
    reference_face: Face  # that photo's face, in its own pixel coordinates
    embedding: Path  # .npy: mean identity of the kept photos (backend `backend`)
    backend: str  # the face backend the embeddings come from
    base_model: str = ""
    kept_photos: list[Path] = field(default_factory=list)  # the data set's images
    run: str = ""  # runs/<run>: the training run

    def mean_embedding(self) -> np.ndarray:
        """The reference identity (the mean of the kept photos' embeddings)."""
        import numpy as np

        return np.load(self.embedding)


def load_person(ws: Workspace, name: str, need_lora: bool = True) -> Person:
    """The person `name` from `studio/portraits/<name>.json`; one clear line when there is none.

    `need_lora`: refuse a person whose training has not published a LoRA yet.
    """
    from lorastudio.portrait.faces import Face

    path = portraits_dir(ws) / f"{safe_name(name, 'person name')}.json"
    if not path.is_file():
        raise NotFoundError(
            f"person {name!r}: not trained; run `lorastudio portrait train --photos DIR --name {name}` first.",
            key="person_not_trained",
            params={"name": name},
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        root = path.parent
        lora = data.get("lora")
        person = Person(
            name=data["name"],
            trigger=data["trigger"],
            lora=(ws.root / lora) if lora else None,
            reference_image=root / data["reference_image"],
            reference_face=Face.from_dict(data["reference_face"]),
            embedding=root / data["embedding"],
            backend=data.get("backend", ""),
            base_model=data.get("base_model", ""),
            kept_photos=[ws.root / p for p in data.get("kept_photos", [])],
            run=data.get("run", ""),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LorastudioError(f"{path}: damaged person record ({exc}); train the person again.") from None
    if need_lora and (person.lora is None or not person.lora.is_file()):
        raise LorastudioError(
            f"person {name!r}: has no trained LoRA (loras/{name}.safetensors); run `lorastudio portrait train"
            f" --photos DIR --name {name}` to finish it.",
            key="person_not_trained",
            params={"name": name},
        )
    return person


def list_people(ws: Workspace) -> list[dict[str, Any]]:
    """Every recorded person: name, trigger, LoRA (or None), kept photo count."""
    folder = portraits_dir(ws)
    rows = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue
        rows.append(
            {
                "name": data.get("name", path.stem),
                "trigger": data.get("trigger", ""),
                "lora": data.get("lora"),
                "photos": len(data.get("kept_photos", [])),
            }
        )
    return rows


def person_details(ws: Workspace, name: str) -> dict[str, Any]:
    """A person as the Portrait tab shows them: reference photo, LoRA, and the identity score of
    each checkpoint of their training (the run's scores.json; [] before the first score)."""
    from lorastudio.service.train_runs import run_progress

    person = load_person(ws, name, need_lora=False)
    rows: list[dict[str, Any]] = []
    if person.run and (ws.runs / person.run).is_dir():
        state = run_progress(ws, person.run)
        rows = [
            {
                "step": row["step"],
                "identity": row.get("scores", {}).get("face_identity"),
                "best": row["step"] == state["best_step"],
                "in_library": row["step"] == state["result_step"],
            }
            for row in state["scores"]
        ]
    return {
        "name": person.name,
        "trigger": person.trigger,
        "lora": str(person.lora) if person.lora is not None and person.lora.is_file() else None,
        "reference_image": str(person.reference_image),
        "base_model": person.base_model,
        "run": person.run,
        "scores": rows,
    }


# -- the portrait-train flow ------------------------------------------------------------------
CAPTION = "a photo of {trigger} person"  # every photo's caption (EasyPhoto: one fixed caption)
VALIDATION_PROMPTS = (  # each checkpoint's portraits for face_identity (fixed seed: scoring.seed)
    "a photo of {trigger} person, portrait, looking at the camera",
    "a photo of {trigger} person, close-up, smiling",
    "a photo of {trigger} person, upper body, outdoors",
    "a photo of {trigger} person",
)
MIN_PHOTOS = 4
RETOUCH_STRENGTH = 0.7  # portrait.retouch.DEFAULT_STRENGTH, without importing OpenCV here
SCORERS = ["face_identity", "validation_loss"]  # face_identity decides; the loss when it cannot run


class PortraitTrainConfig(StrictModel):
    """Train a person's LoRA from their photos (the `portrait-train` job; `lorastudio portrait train`)."""

    name: str = Field(..., description="The person's name: data set, LoRA and registry entry are called so.")
    photos: list[str] = Field(
        default_factory=list, description="Upload names (POST /api/v1/uploads) of the person's photos."
    )
    file_names: list[str] = Field(
        default_factory=list,
        description="Each upload's original file name, in order: the photo report names the user's files.",
    )
    base: str = Field("", description="Base model to train on; default: the workspace's default model.")
    trigger: str = Field("", description="The word that calls the person in prompts; default: the name.")
    steps: int | None = Field(None, ge=1, description="Training steps; default: the portrait preset's (800).")
    resolution: int | None = Field(None, ge=64, description="Training resolution; default: the preset's (512).")
    save_every_steps: int | None = Field(
        None, ge=1, description="Checkpoint (and identity score) every N steps; default: the preset's (100)."
    )
    rank: int | None = Field(None, ge=1, description="LoRA rank; default: the preset's (128).")
    white_background: bool = Field(False, description="Put every photo's person over a white background.")
    skin_retouch: bool = Field(
        True, description="Retouch the skin of every training crop (EasyPhoto's training default; its API's is off)."
    )
    skin_retouch_strength: float = Field(
        RETOUCH_STRENGTH, ge=0, le=1, description="Skin retouch strength: 0 = unchanged, 1 = fully smoothed skin."
    )
    face_backend: str = Field("", description="Face backend (studio/models/faces/<name>); default: dlib.")
    min_face: int = Field(128, ge=16, description="Refuse photos whose face box is smaller than this (px).")
    max_photos: int = Field(15, ge=1, description="Keep at most this many photos (closest to the mean identity).")
    min_photos: int = Field(MIN_PHOTOS, ge=1, description="Refuse to train on fewer usable photos than this.")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return safe_name(value, "person name")

    @model_validator(mode="after")
    def _names_match(self) -> PortraitTrainConfig:
        if self.file_names and len(self.file_names) != len(self.photos):
            raise ValueError("file_names must give one name per photo, in the same order")
        for original in self.file_names:
            if not original or Path(original).name != original or original in (".", ".."):
                raise ValueError(f"file name {original!r}: a plain file name, without folders")
        return self

    @property
    def trigger_word(self) -> str:
        return self.trigger or self.name


def validation_prompts(trigger: str) -> list[str]:
    return [p.format(trigger=trigger) for p in VALIDATION_PROMPTS]


def _open_backend(ws: Workspace, name: str) -> FaceBackend:
    from lorastudio.service.face_identity import open_face_backend

    return open_face_backend(ws, name or None)


def list_photos(folder: str | Path) -> list[Path]:
    """The photos in a folder (image files, by name); one clear line when there are none."""
    from lorastudio.portrait.selection import list_photos as photos_in

    return photos_in(folder)


def select_person_photos(
    ws: Workspace,
    cfg: PortraitTrainConfig,
    photos: Sequence[Path],
    progress: Callable[[int, int, str], None] | None = None,
) -> Selection:
    """Check, crop and rank the photos (portrait.selection) with the configured backend."""
    from lorastudio.portrait.selection import select_photos

    backend = _open_backend(ws, cfg.face_backend)
    person_mask = None
    if cfg.white_background:
        from lorastudio.portrait.masks import person_mask
    size = max(512, cfg.resolution or 512)
    return select_photos(
        photos, backend, size=size, max_photos=cfg.max_photos, min_face=cfg.min_face, person_mask=person_mask,
        progress=progress, retouch=cfg.skin_retouch_strength if cfg.skin_retouch else 0.0,
    )


def check_photos(ws: Workspace, cfg: PortraitTrainConfig, photos: Sequence[Path]) -> dict[str, Any]:
    """The photo check alone, without training: which photos a training would keep (their crops,
    best first) and why each other one is left out, by its file name. The Portrait tab's
    "Check photos"; nothing is written."""
    if not photos:
        raise LorastudioError("portrait: no photos; choose 5 to 20 photos of the person.")
    selection = select_person_photos(ws, cfg, photos)
    reference = selection.reference
    return {
        "kept": [
            {"file": p.name, "crop": p.crop, "distance": p.distance, "reference": p is reference}
            for p in selection.kept
        ],
        "left_out": [{"file": p.name, "status": p.status, "reason": p.reason} for p in selection.left_out],
        "summary": selection.summary(),
        "enough": len(selection.kept) >= cfg.min_photos,
    }


def _dataset_root(ws: Workspace, name: str) -> Path:
    """datasets/<name>, refusing a data set that `portrait train` did not make (never overwritten)."""
    from lorastudio.train.face_scoring import REPORT_FILE

    root = ws.safe_child(ws.datasets, name, "person name")
    if (root / "manifest.json").is_file() and not (root / REPORT_FILE).is_file():
        raise LorastudioError(
            f"data set {name!r}: already exists and is not a portrait data set; choose another --name."
        )
    return root


def write_portrait_dataset(ws: Workspace, name: str, trigger: str, selection: Selection) -> Path:
    """The kept crops as data set `datasets/<name>` (images + captions), with portrait.json and
    the kept photos' embeddings; a previous portrait data set of that name is replaced."""
    import hashlib
    import io
    import shutil

    import numpy as np

    from lorastudio.data.manifest import (
        DatasetFolder,
        ManifestItem,
        atomic_write_bytes,
        atomic_write_json,
        safe_stem,
    )
    from lorastudio.train.face_scoring import EMBEDDINGS_FILE, REPORT_FILE

    root = _dataset_root(ws, name)
    for stale in (root / "images", root / "removed", root / "manifest.json"):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    folder = DatasetFolder.create(root)
    caption = CAPTION.format(trigger=trigger)
    kept = selection.kept
    for photo in kept:
        data = io.BytesIO()
        photo.crop.save(data, "PNG")
        sha = hashlib.sha256(photo.path.read_bytes()).hexdigest()
        item = ManifestItem(
            file=safe_stem(photo.name, sha) + ".png",
            original=photo.name,
            source=str(photo.path),
            sha256=sha,
            width=photo.crop.width,
            height=photo.crop.height,
        )
        atomic_write_bytes(folder.image_path(item), data.getvalue())
        folder.write_caption(item, caption)
        folder.items.append(item)
    folder.save()
    report = {"name": name, "trigger": trigger, "caption": caption, **selection.report()}
    report["kept"] = [{**row, "image": item.file} for row, item in zip(report["kept"], folder.items, strict=True)]
    buffer = io.BytesIO()
    np.save(buffer, np.stack([np.asarray(p.embedding, dtype=np.float32) for p in kept]))
    atomic_write_bytes(root / EMBEDDINGS_FILE, buffer.getvalue())
    atomic_write_json(root / REPORT_FILE, report)
    return root


def _write_person(
    ws: Workspace, name: str, trigger: str, selection: Selection, base_model: str, run: str, lora: str | None
) -> Path:
    """studio/portraits/<name>.json (+ reference.png, embedding.npy in <name>/)."""
    import io

    import numpy as np

    from lorastudio.data.manifest import DatasetFolder, atomic_write_bytes, atomic_write_json

    folder = person_folder(ws, name)
    folder.mkdir(parents=True, exist_ok=True)
    reference = selection.reference
    data = io.BytesIO()
    reference.crop.save(data, "PNG")
    atomic_write_bytes(folder / "reference.png", data.getvalue())
    data = io.BytesIO()
    np.save(data, np.asarray(selection.mean_embedding, dtype=np.float32))
    atomic_write_bytes(folder / "embedding.npy", data.getvalue())
    dataset = DatasetFolder.load(ws.datasets / name)
    record = {
        "version": REGISTRY_VERSION,
        "name": name,
        "trigger": trigger,
        "lora": lora,
        "base_model": base_model,
        "backend": selection.backend,
        "threshold": selection.threshold,
        "reference_image": f"{name}/reference.png",
        "reference_source": reference.name,
        "reference_face": reference.crop_face.to_dict(),
        "embedding": f"{name}/embedding.npy",
        "dataset": name,
        "kept_photos": [dataset.image_path(i).relative_to(ws.root).as_posix() for i in dataset.items],
        "run": run,
    }
    path = portraits_dir(ws) / f"{name}.json"
    atomic_write_json(path, record)
    return path


def portrait_train_config(
    ws: Workspace, cfg: PortraitTrainConfig, overrides: Sequence[str] = ()
) -> TrainConfig:
    """The `portrait` preset for this person: data set, trigger, LoRA name, identity scoring.

    `overrides` are `key=value` training settings on top (the command line's `--set`).
    """
    from lorastudio.config import parse_overrides
    from lorastudio.service.models import default_model
    from lorastudio.train.config import resolve_train_config
    from lorastudio.train.foreign_keys import OverrideSpelling

    trigger = cfg.trigger_word
    train: dict[str, Any] = {}
    for key, value in (("steps", cfg.steps), ("resolution", cfg.resolution), ("save_every_steps", cfg.save_every_steps)):
        if value is not None:
            train[key] = value
    lora = {"rank": cfg.rank, "alpha": cfg.rank / 2} if cfg.rank else {}  # the preset's alpha = rank / 2
    settings: dict[str, Any] = {
        "model": cfg.base or default_model(ws),
        "trigger": trigger,
        "data": {"dir": cfg.name},
        "output": {"name": cfg.name},
        "scoring": {"scorers": SCORERS, "prompts": validation_prompts(trigger)},
        "train": train,
        "lora": lora,
    }
    # `--set rank=64` is EasyPhoto's name: the error says `--set lora.rank=64`
    spelling = OverrideSpelling(set_flag="--set ", tools=("EasyPhoto", "kohya", "HCP-Diffusion"))
    merged = _merged(settings, parse_overrides(list(overrides)))
    layered = resolve_train_config(None, merged, "portrait", spelling=spelling)
    return layered.config


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _free_run_name(ws: Workspace, name: str) -> str:
    """runs/<name>, or <name>-2, -3 ...: a person trained again keeps the earlier run."""
    run, n = name, 1
    while (ws.runs / run).exists():
        n += 1
        run = f"{name}-{n}"
    return run


def reserve_run(ws: Workspace, name: str) -> str:
    """A free run folder for a queued portrait job, created now so two jobs never share one."""
    run = _free_run_name(ws, name)
    ws.safe_child(ws.runs, run, "run name").mkdir(parents=True)
    return run


def train_person(
    ws: Workspace,
    cfg: PortraitTrainConfig,
    photos: Sequence[Path],
    *,
    overrides: Sequence[str] = (),
    callback: Callable[[dict], None] | None = None,
    device: str | None = None,
    progress: bool = True,
    names: NamePolicy | None = None,
    run: str | None = None,
) -> dict[str, Any]:
    """Photos -> checked selection -> data set -> LoRA (best identity checkpoint) -> person record.

    `callback(event)` gets `{"event": "photo", "done", "total", "file"}` while photos are
    checked, `{"event": "selection", ...report}` once, then the training's events. `run` is a
    run folder name reserved by a job (default: a free `runs/<name>`).
    """
    from lorastudio.service import face_identity
    from lorastudio.service.training import run_training
    from lorastudio.train.checkpoints import latest_state

    say = callback or (lambda event: None)
    train_cfg = portrait_train_config(ws, cfg, overrides)  # a bad setting fails before any photo is read
    _dataset_root(ws, cfg.name)

    def photo_done(done: int, total: int, file: str) -> None:
        say({"event": "photo", "done": done, "total": total, "file": file})

    selection = select_person_photos(ws, cfg, photos, photo_done)
    say({"event": "selection", **selection.report()})
    selection.require(cfg.min_photos)
    trigger = cfg.trigger_word
    dataset = write_portrait_dataset(ws, cfg.name, trigger, selection)
    run = run or _free_run_name(ws, cfg.name)
    _write_person(ws, cfg.name, trigger, selection, train_cfg.model, run, None)
    face_identity.install()
    run_dir = ws.safe_child(ws.runs, run, "run name")
    if latest_state(run_dir) is not None:  # a job started before (worker restart): go on from its checkpoint
        result = run_training(ws, resume=str(run_dir), callback=callback, device=device, progress=progress, names=names)
    else:
        result = run_training(
            ws, train_cfg, callback=callback, run_dir=run_dir, device=device, progress=progress, names=names
        )
    if result.get("scores"):  # which scorer decided, and each checkpoint's identity score
        table = json.loads(Path(result["scores"]).read_text(encoding="utf-8"))
        result["decided_by"] = table.get("decided_by")
        result["identity"] = {
            row["step"]: row["scores"].get("face_identity") for row in table["rows"] if "face_identity" in row["scores"]
        }
    lora = result.get("library_lora")
    lora_rel = Path(lora).resolve().relative_to(ws.root).as_posix() if lora else None
    record = _write_person(ws, cfg.name, trigger, selection, train_cfg.model, run, lora_rel)
    return {
        "name": cfg.name,
        "trigger": trigger,
        "dataset": str(dataset),
        "kept": [p.name for p in selection.kept],
        "left_out": {p.name: p.reason for p in selection.left_out},
        "reference": selection.reference.name,
        "person": str(record),
        **result,
    }
