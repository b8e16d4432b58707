"""`face_identity`: does a checkpoint draw the trained person? (face-identity similarity)

For a person's LoRA the question is whose face comes out, not how the picture looks: each
checkpoint's validation portraits (the scoring prompts, fixed seeds: `train/scoring.py`
renders them) are embedded with a face backend and compared with the person's kept photos.

The reference embeddings are computed once: `portrait train` stores them beside its data set
(`portrait_embeddings.npy`, backend named in `portrait.json`); a data set without them is
embedded here with the default backend (largest face of each training image).

Per generated image the score is the mean over reference photos of
`1 - distance / (2 x threshold)`, clipped to 0..1: 0.5 is the backend's same-person
threshold, 1 the same embedding. An image without a face scores 0 (the worst), never an error.

Face backends are opened by the service layer (`studio/models/faces/<name>`), which installs
the opener here with `install_backend_opener`; this module only uses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.image_modes import to_rgb
from lorastudio.train.scorers import Checkpoint, Scorer, ScoringContext, register_scorer

if TYPE_CHECKING:
    import numpy as np

    from lorastudio.portrait.faces import FaceBackend

__all__ = [
    "SCORER_NAME",
    "REPORT_FILE",
    "EMBEDDINGS_FILE",
    "identity_similarity",
    "image_identity",
    "identity_score",
    "install_backend_opener",
]

SCORER_NAME = "face_identity"
REPORT_FILE = "portrait.json"  # in the data set folder: the selection report (backend, kept photos)
EMBEDDINGS_FILE = "portrait_embeddings.npy"  # in the data set folder: one row per kept photo

BackendOpener = Callable[[Any, str | None], "FaceBackend"]  # (workspace, backend name or None)
_OPENER: list[BackendOpener] = []
_REFERENCE_CACHE: dict[tuple, tuple[str | None, Any]] = {}


def install_backend_opener(opener: BackendOpener) -> None:
    """The service layer's `open_backend(ws, name)`: how this scorer gets a face backend."""
    _OPENER[:] = [opener]


def identity_similarity(distance: float, threshold: float) -> float:
    """0..1 from a backend distance: 1 identical, 0.5 at the same-person threshold, 0 far away."""
    return min(1.0, max(0.0, 1.0 - distance / (2.0 * threshold)))


def image_identity(backend: FaceBackend, image: Any, references: Sequence[np.ndarray]) -> float:
    """Similarity of the largest face in `image` to the reference embeddings; 0 without a face."""
    faces = backend.detect(image)
    if not faces:
        return 0.0
    face = max(faces, key=lambda f: f.size)
    embedding = backend.embed(image, face)
    values = [identity_similarity(backend.distance(embedding, ref), backend.threshold) for ref in references]
    return float(sum(values) / len(values))


def identity_score(backend: FaceBackend, paths: Sequence[Path], references: Sequence[np.ndarray]) -> float:
    """Mean `image_identity` over generated images (an unreadable image counts as no face)."""
    from PIL import Image

    scores = []
    for path in paths:
        try:
            with Image.open(path) as opened:
                image = to_rgb(opened)
        except OSError:
            scores.append(0.0)
            continue
        scores.append(image_identity(backend, image, references))
    return float(sum(scores) / len(scores)) if scores else 0.0


# -- the run's reference identity -------------------------------------------------------------
def _dataset_dir(ctx: ScoringContext) -> Path:
    from lorastudio.train.plan import resolve_dataset_path

    return resolve_dataset_path(ctx.cfg.data.dir, ctx.ws.datasets)


def _stored_reference(folder: Path) -> tuple[str | None, Any] | None:
    """(backend name, embeddings) that `portrait train` stored with the data set, or None."""
    import numpy as np

    report, stored = folder / REPORT_FILE, folder / EMBEDDINGS_FILE
    if not (report.is_file() and stored.is_file()):
        return None
    backend = json.loads(report.read_text(encoding="utf-8")).get("backend") or None
    return backend, np.load(stored)


def _embedded_reference(ctx: ScoringContext, backend: FaceBackend) -> Any:
    """Embeddings of the largest face of each training image (a data set `portrait train` did not make)."""
    import numpy as np
    from PIL import Image

    from lorastudio.data.dataset import Dataset

    rows = []
    for item in Dataset.open(_dataset_dir(ctx), fallback_caption=ctx.cfg.trigger):
        with Image.open(item.image) as opened:
            image = to_rgb(opened)
        faces = backend.detect(image)
        if faces:
            rows.append(backend.embed(image, max(faces, key=lambda f: f.size)))
    return np.stack(rows) if rows else None


def _open(ctx: ScoringContext, name: str | None) -> FaceBackend:
    return _OPENER[0](ctx.ws, name)


def _reference_for(ctx: ScoringContext) -> tuple[FaceBackend, Any]:
    """The backend and the person's embeddings, computed once per data set state."""
    folder = _dataset_dir(ctx)
    stamp = tuple(
        (p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else None
        for p in (folder / REPORT_FILE, folder / EMBEDDINGS_FILE, folder / "manifest.json")
    )
    key = (str(folder), stamp)
    if key not in _REFERENCE_CACHE:
        if len(_REFERENCE_CACHE) >= 16:
            _REFERENCE_CACHE.clear()
        stored = _stored_reference(folder)
        if stored is not None:
            _REFERENCE_CACHE[key] = stored
        else:
            _REFERENCE_CACHE[key] = (None, _embedded_reference(ctx, _open(ctx, None)))
    name, embeddings = _REFERENCE_CACHE[key]
    return _open(ctx, name), embeddings


def _unavailable(ctx: ScoringContext) -> str | None:
    from lorastudio.errors import LorastudioError

    if not _OPENER:
        return "no face backend opener installed (scoring outside lorastudio.service)"
    try:
        _, embeddings = _reference_for(ctx)
    except (LorastudioError, ImportError) as exc:
        return f"face backend: {exc}"
    if embeddings is None or len(embeddings) == 0:
        return "no face found in the training images; nothing to compare"
    return None


def _face_identity(ctx: ScoringContext, checkpoint: Checkpoint, lora) -> float:
    """Identity similarity of this checkpoint's portraits to the person's photos: higher is better."""
    backend, embeddings = _reference_for(ctx)
    return identity_score(backend, ctx.generated[checkpoint.step], list(embeddings))


register_scorer(
    Scorer(
        SCORER_NAME,
        higher_is_better=True,
        score=_face_identity,
        unavailable=_unavailable,
        description="face-identity similarity of generated portraits to the person's photos (0.5 = same-person threshold)",
    )
)
