"""The preprocessors whose network weights the user brings (HED, PiDiNet, lineart, MLSD, depth)."""

from __future__ import annotations

from lorastudio.generate.annotators.base import Annotator

NET_ANNOTATORS: list[Annotator] = []
