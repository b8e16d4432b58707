"""WD14-family booru taggers (SmilingWolf's wd-*-tagger) through onnxruntime.

A tagger folder holds `model.onnx` and `selected_tags.csv` (columns tag_id, name, category,
count; category 0 = general, 4 = character, 9 = rating). The graph takes NHWC float32
`[N, S, S, 3]` in BGR order with 0-255 values (S = 448 for the released models; read from
the graph) and returns `[N, num_tags]` sigmoid probabilities. Images are padded to a
white square before resizing, as the models were trained.

Models load from a local folder, or a hub id that is already in the Hugging Face cache;
nothing is downloaded unless `allow_download` is set.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lorastudio.data.config import TaggerConfig
from lorastudio.errors import LorastudioError, NotFoundError

__all__ = ["WD14Tagger", "Tag", "load_tag_table", "looks_like_hub_id", "resolve_tagger_dir"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]$")


def looks_like_hub_id(model: str) -> bool:
    """'SmilingWolf/wd-vit-tagger-v3' yes; '/abs/path', './x', 'a/b/c' no."""
    return bool(_HUB_ID.match(model)) and ".." not in model


GENERAL, CHARACTER, RATING = 0, 4, 9
MODEL_FILE, TAGS_FILE = "model.onnx", "selected_tags.csv"
# Emoticon tags whose underscores are part of the face, not word separators.
KAOMOJI = frozenset(
    {
        "0_0",
        "(o)_(o)",
        "+_+",
        "+_-",
        "._.",
        "<o>_<o>",
        "<|>_<|>",
        "=_=",
        ">_<",
        "3_3",
        "6_9",
        ">_o",
        "@_@",
        "^_^",
        "o_o",
        "u_u",
        "x_x",
        "|_|",
        "||_||",
    }
)


@dataclass(frozen=True)
class Tag:
    name: str
    category: int
    score: float


def load_tag_table(path: Path) -> list[tuple[str, int]]:
    """selected_tags.csv -> [(name, category)] in model output order."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return [(row["name"], int(row["category"])) for row in rows]
    except (KeyError, ValueError) as exc:
        raise LorastudioError(
            f"{path}: needs columns tag_id,name,category,count ({exc}); use the tagger's own file."
        ) from None


def resolve_tagger_dir(model: str, allow_download: bool = False) -> Path:
    """A folder with model.onnx + selected_tags.csv, from a path or a (cached) hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        missing = [name for name in (MODEL_FILE, TAGS_FILE) if not (path / name).is_file()]
        if missing:
            raise NotFoundError(
                f"{path}: tagger folder lacks {', '.join(missing)}; copy both files from the model repo."
            )
        return path
    if path.exists() or not looks_like_hub_id(model):
        raise NotFoundError(
            f"tagger {model!r}: not a folder or hub id; give the folder with {MODEL_FILE} + {TAGS_FILE}."
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        files = [
            hf_hub_download(model, name, local_files_only=not allow_download)
            for name in (MODEL_FILE, TAGS_FILE)
        ]
    except LocalEntryNotFoundError:
        raise NotFoundError(
            f"tagger {model!r} is not in the local Hugging Face cache; download it while online or pass a folder."
        ) from None
    return Path(files[0]).parent


class WD14Tagger:
    """Scores images and turns scores into ordered, filtered tag lists."""

    def __init__(self, model_dir: Path, config: TaggerConfig):
        import onnxruntime as ort

        self.config = config
        self.tags = load_tag_table(model_dir / TAGS_FILE)
        providers = [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
        ]
        self.session = ort.InferenceSession(str(model_dir / MODEL_FILE), providers=providers)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        side = model_input.shape[1]
        self.size = side if isinstance(side, int) and side > 0 else 448
        outputs = self.session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(self.tags):
            raise LorastudioError(
                f"{model_dir}: model has {outputs[-1]} outputs but {TAGS_FILE} lists {len(self.tags)} tags; use matching files."
            )
        self.undesired = {self._spell(t) for t in config.undesired_tags} | set(config.undesired_tags)

    @classmethod
    def load(cls, config: TaggerConfig) -> WD14Tagger:
        return cls(resolve_tagger_dir(config.model, config.allow_download), config)

    def _spell(self, name: str) -> str:
        if self.config.replace_underscores and name not in KAOMOJI:
            return name.replace("_", " ")
        return name

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB image -> [S, S, 3] float32 BGR 0-255, padded to a white square first."""
        side = max(image.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(image.convert("RGB"), ((side - image.width) // 2, (side - image.height) // 2))
        square = square.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return np.asarray(square, dtype=np.float32)[:, :, ::-1]

    def scores(self, images: list[Image.Image]) -> np.ndarray:
        batch = np.ascontiguousarray(np.stack([self.preprocess(image) for image in images]))
        return np.asarray(self.session.run(None, {self.input_name: batch})[0], dtype=np.float32)

    def select(self, scores: np.ndarray) -> list[Tag]:
        """One image's scores -> the tags to write, in caption order."""
        chosen: list[Tag] = []
        ratings: list[Tag] = []
        for (name, category), score in zip(self.tags, scores.tolist(), strict=True):
            if category == RATING:
                ratings.append(Tag(name, category, score))
                continue
            threshold = (
                self.config.character_threshold if category == CHARACTER else self.config.general_threshold
            )
            if score >= threshold:
                tag = Tag(self._spell(name), category, score)
                if tag.name not in self.undesired and name not in self.undesired:
                    chosen.append(tag)
        chosen.sort(key=lambda t: -t.score)
        if self.config.character_first:
            chosen.sort(key=lambda t: t.category != CHARACTER)  # stable: keeps score order inside
        if self.config.include_rating and ratings:
            chosen.insert(0, max(ratings, key=lambda t: t.score))
        return chosen

    def tag(self, images: list[Image.Image]) -> list[str]:
        """Captions ('tag, tag, ...') for a batch of images."""
        return [", ".join(t.name for t in self.select(row)) for row in self.scores(images)]
