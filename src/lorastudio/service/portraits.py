"""Portrait training as a service call: a person's photos in, their LoRA and registry entry out.

`train_person` (and the `portrait-train` job) runs the whole flow EasyPhoto users know:
select the usable photos (`portrait.selection`), write them as the data set
`datasets/<name>` (trigger + fixed caption), train with the `portrait` preset and the
`face_identity` scorer, publish the best checkpoint as `loras/<name>.safetensors`, and
record the person in `studio/portraits/<name>.json`.

The person registry is what portrait making reads (`load_person`): the LoRA, the trigger,
the reference photo with its face, and the mean identity embedding of the kept photos.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.workspace import Workspace, safe_name

if TYPE_CHECKING:
    import numpy as np

    from lorastudio.portrait.faces import Face

__all__ = ["Person", "load_person", "list_people", "portraits_dir", "person_folder"]

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


def face_to_json(face: Face) -> dict[str, Any]:
    """A `Face` as JSON: box, named points and score."""
    return {
        "box": [float(v) for v in face.box],
        "points": {k: [float(p[0]), float(p[1])] for k, p in (face.points or {}).items()},
        "score": float(face.score),
    }


def face_from_json(data: dict[str, Any]) -> Face:
    from lorastudio.portrait.faces import Face

    return Face(
        box=tuple(float(v) for v in data["box"]),
        points={k: (float(p[0]), float(p[1])) for k, p in (data.get("points") or {}).items()},
        score=float(data.get("score", 1.0)),
    )


def load_person(ws: Workspace, name: str, need_lora: bool = True) -> Person:
    """The person `name` from `studio/portraits/<name>.json`; one clear line when there is none.

    `need_lora`: refuse a person whose training has not published a LoRA yet.
    """
    path = portraits_dir(ws) / f"{safe_name(name, 'person name')}.json"
    if not path.is_file():
        raise NotFoundError(
            f"person {name!r}: not trained; run `lorastudio portrait train --photos DIR --name {name}` first."
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
            reference_face=face_from_json(data["reference_face"]),
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
            f" --photos DIR --name {name}` to finish it."
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
