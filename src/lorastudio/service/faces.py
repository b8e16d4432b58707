"""Faces for the fronts and the portrait flows: open a backend, detect, compare.

The default backend is dlib (weights from PyPI). Others are "bring your own weights" folders in
`studio/models/faces/<name>/`: OpenCV-zoo YuNet + SFace ONNX files, or an insightface-style pack
(buffalo_l, antelopev2: SCRFD detector + ArcFace recogniser). Nothing is ever downloaded: a
missing folder or file is one line naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.image_modes import to_rgb
from lorastudio.portrait.faces import Face, FaceBackend, largest_face
from lorastudio.service.workspace import Workspace

__all__ = [
    "DEFAULT_BACKEND",
    "compare_faces",
    "detect_faces",
    "detect_report",
    "face_crop_dataset",
    "faces_folder",
    "list_backends",
    "load_face_image",
    "open_backend",
]

DEFAULT_BACKEND = "dlib"
_OPEN: dict[tuple[str, str, float], FaceBackend] = {}


def faces_folder(ws: Workspace) -> Path:
    """`studio/models/faces`: one folder per bring-your-own-weights backend."""
    return ws.models / "faces"


def _folder_kind(folder: Path) -> str | None:
    from lorastudio.portrait.backends.insightface_onnx import is_insightface_pack
    from lorastudio.portrait.backends.opencv_zoo import is_opencv_zoo_folder

    if is_opencv_zoo_folder(folder):
        return "opencv-zoo"
    if is_insightface_pack(folder):
        return "insightface"
    return None


def _folder_mtime(folder: Path) -> float:
    return max((p.stat().st_mtime for p in folder.iterdir()), default=0.0)


def open_backend(ws: Workspace, name: str | None = None) -> FaceBackend:
    """The named face backend (None or "dlib": the default), opened once per process and folder state."""
    if name is None or name == DEFAULT_BACKEND:
        from lorastudio.portrait.backends.dlib_backend import DlibBackend

        key = (DEFAULT_BACKEND, "", 0.0)
        if key not in _OPEN:
            _OPEN[key] = DlibBackend()
        return _OPEN[key]
    folder = ws.safe_child(faces_folder(ws), name, "face backend")
    if not folder.is_dir():
        raise NotFoundError(
            f"face backend {name!r}: no folder {folder}; put YuNet + SFace ONNX files or an insightface pack "
            f"(e.g. buffalo_l) there, or use the default 'dlib' (`lorastudio face backends`)."
        )
    key = (name, str(folder), _folder_mtime(folder))
    if key not in _OPEN:
        _OPEN[key] = _open_folder(folder, name)
    return _OPEN[key]


def _open_folder(folder: Path, name: str) -> FaceBackend:
    kind = _folder_kind(folder)
    if kind == "opencv-zoo":
        from lorastudio.portrait.backends.opencv_zoo import OpenCvZooBackend

        return OpenCvZooBackend(folder, name=name)
    if kind == "insightface":
        from lorastudio.portrait.backends.insightface_onnx import InsightFaceBackend

        return InsightFaceBackend(folder, name=name)
    raise LorastudioError(
        f"{folder}: neither YuNet + SFace (*yunet*.onnx, *sface*.onnx) nor an insightface pack "
        "(det_10g.onnx/scrfd*.onnx + w600k_r50.onnx/glintr100.onnx); see `lorastudio face backends`."
    )


def list_backends(ws: Workspace) -> list[dict[str, Any]]:
    """Every backend the user can pick: dlib, then each folder in studio/models/faces, with licence and
    an `error` line instead of an exception when one cannot be opened."""
    from lorastudio.portrait.backends.dlib_backend import DlibBackend

    rows = [_row(ws, DEFAULT_BACKEND, "dlib", DlibBackend.licence, None)]
    folder = faces_folder(ws)
    if folder.is_dir():
        for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            rows.append(_row(ws, path.name, _folder_kind(path), None, path))
    return rows


def _row(ws: Workspace, name: str, kind: str | None, licence: str | None, folder: Path | None) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "kind": kind, "folder": str(folder) if folder else None,
                           "default": name == DEFAULT_BACKEND, "licence": licence, "threshold": None, "error": None}  # fmt: skip
    try:
        backend = open_backend(ws, None if name == DEFAULT_BACKEND else name)
    except LorastudioError as exc:
        row["error"] = str(exc)
        if kind == "insightface" and licence is None:
            from lorastudio.portrait.backends.insightface_onnx import LICENCE

            row["licence"] = LICENCE
        elif kind == "opencv-zoo" and licence is None:
            from lorastudio.portrait.backends.opencv_zoo import LICENCE

            row["licence"] = LICENCE
        return row
    row.update(licence=backend.licence, threshold=backend.threshold, metric=backend.metric)
    return row


def load_face_image(image: Image.Image | str | Path, what: str | None = None) -> Image.Image:
    """A PIL image as given, or the file at `image` opened upright (EXIF orientation applied), in RGB."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    path = Path(image)
    label = what or str(path)
    if not path.is_file():
        raise NotFoundError(f"{label}: no such image file.")
    try:
        with Image.open(path) as opened:
            return to_rgb(ImageOps.exif_transpose(opened))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise LorastudioError(
            f"{label}: not a readable image ({type(exc).__name__}).", key="image_unreadable", params={"what": label}
        ) from None


def _backend(ws: Workspace, backend: FaceBackend | str | None) -> FaceBackend:
    return backend if isinstance(backend, FaceBackend) else open_backend(ws, backend)


def detect_faces(ws: Workspace, image: Image.Image | str | Path, backend: FaceBackend | str | None = None) -> list[Face]:
    """The faces in an image (a PIL image or a file), left to right."""
    return _backend(ws, backend).detect(load_face_image(image))


def detect_report(ws: Workspace, image: Image.Image | str | Path, backend: FaceBackend | str | None = None) -> dict[str, Any]:
    """What `face detect --json` and POST /api/v1/faces/detect answer: the backend, image size and faces."""
    opened = _backend(ws, backend)
    picture = load_face_image(image)
    faces = opened.detect(picture)
    return {"backend": opened.name, "width": picture.width, "height": picture.height,
            "faces": [face.to_dict() for face in faces]}  # fmt: skip


def compare_faces(
    ws: Workspace,
    a: Image.Image | str | Path,
    b: Image.Image | str | Path,
    backend: FaceBackend | str | None = None,
    labels: tuple[str, str] = ("first image", "second image"),
) -> dict[str, Any]:
    """Identity distance between the largest face of `a` and of `b`, and the backend's verdict.

    `labels` name in-memory images in messages (files are named by their path)."""
    opened = _backend(ws, backend)
    embeddings, faces = [], []
    for label, image in zip(labels, (a, b), strict=True):
        what = label if isinstance(image, Image.Image) else str(image)
        picture = load_face_image(image, what)
        face = largest_face(opened.detect(picture))
        if face is None:
            raise LorastudioError(f"{what}: no face found ({opened.name} backend); use a photo with one clear face.")
        faces.append(face)
        embeddings.append(opened.embed(picture, face))
    distance = opened.distance(embeddings[0], embeddings[1])
    return {
        "backend": opened.name,
        "metric": opened.metric,
        "distance": round(distance, 4),
        "threshold": opened.threshold,
        "same_person": distance < opened.threshold,
        "faces": [face.to_dict() for face in faces],
    }


def face_crop_dataset(
    ws: Workspace,
    name: str,
    scale: float = 3.0,
    backend: FaceBackend | str | None = None,
    files: list[str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """`dataset import/clean --face-crop`: crop each image (or only `files`) to a square `scale` x the
    largest face's box; images without a face are left as they are and listed."""
    from lorastudio.data.clean import crop_images
    from lorastudio.portrait.align import crop_around
    from lorastudio.service.datasets import dataset_folder

    if not 1.0 <= scale <= 10.0:
        raise LorastudioError(f"--face-scale {scale}: use 1 to 10 (times the face box; EasyPhoto uses about 3).")
    opened = _backend(ws, backend)

    def face_box(image: Image.Image) -> tuple[int, int, int, int] | None:
        face = largest_face(opened.detect(image.convert("RGB")))
        return None if face is None else crop_around(image, face, scale=scale, square=True)[1]

    folder = dataset_folder(ws, name)
    changes, left = crop_images(folder, face_box, files=files, dry_run=dry_run)
    return {"name": name, "dry_run": dry_run, "backend": opened.name, "scale": scale,
            "cropped": len(changes), "changes": changes, "no_face": left}  # fmt: skip
