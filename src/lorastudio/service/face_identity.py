"""Face backends for the `face_identity` checkpoint scorer (train/face_scoring.py).

The scorer lives in train/, below the service layer, so it cannot open
`studio/models/faces/<name>` itself: `install()` hands it `open_face_backend`. Scoring
entry points (`service.training`, `service.portraits`) call `install()` before they score.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lorastudio.portrait.faces import FaceBackend
    from lorastudio.service.workspace import Workspace

__all__ = ["install", "open_face_backend"]


def open_face_backend(ws: Workspace, name: str | None = None) -> FaceBackend:
    """The face backend `name` (None: the default, dlib) of workspace `ws`."""
    from lorastudio.service.faces import open_backend

    return open_backend(ws, name)


def install() -> None:
    """Let `face_identity` open backends (looked up at call time, so a test may replace it)."""
    from lorastudio.train import face_scoring

    face_scoring.install_backend_opener(lambda ws, name: open_face_backend(ws, name))
