"""Which of a person's photos to train on (EasyPhoto's preprocessing, with reasons).

Per photo: upright (EXIF), detect; a photo with no face, with several faces of about the
same size (whose LoRA would it be?), with a face under `MIN_FACE` pixels or a strongly
tilted face is refused, naming the file and the reason. The face is cropped square at
about 3x its box (EasyPhoto's framing: head and shoulders) and resized, its skin retouched
(EasyPhoto's skin-retouching step; `portrait.retouch`, strength 0 = off), optionally over a white
background (person mask).

Then identity: every usable photo is embedded; a photo far from the mean of the others
(another person, a bad detection) is dropped as an outlier; the `max_photos` closest to the
mean identity are kept, and the closest of all is the reference photo that portrait making
warps onto templates.

Nothing here knows a particular detector: it works through the `FaceBackend` interface
(`portrait.faces`), so tests plant faces with a fake backend.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from lorastudio.portrait.faces import Face, FaceBackend

__all__ = [
    "MIN_FACE",
    "MAX_ROLL",
    "SIZE_RATIO",
    "CROP_SCALE",
    "MAX_PHOTOS",
    "PHOTO_SUFFIXES",
    "PhotoRefused",
    "Photo",
    "Selection",
    "list_photos",
    "load_photo",
    "main_face",
    "crop_box",
    "crop_around_face",
    "white_background",
    "find_outliers",
    "select_photos",
]

MIN_FACE = 128  # px: a smaller face has too little detail to learn an identity from
MAX_ROLL = 25.0  # degrees of head tilt (eye line) beyond which a photo is refused
SIZE_RATIO = 1.5  # the main face must be this much larger than the next one
CROP_SCALE = 3.0  # crop side / face box side (EasyPhoto frames about 3x the face)
MAX_PHOTOS = 15  # EasyPhoto keeps the best 15
ROBUST_Z = 3.5  # a robust z-score (median / MAD) above this is an outlier
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class PhotoRefused(Exception):
    """One photo cannot be used; the message is the reason (the file name is added by the caller)."""


@dataclass
class Photo:
    """One photo's fate: kept (with its crop and identity) or left out with a reason."""

    path: Path
    status: str = "kept"  # kept | refused | outlier | not_needed
    reason: str = ""
    face: Face | None = None  # on the upright original
    crop: Image.Image | None = None  # square, `size` px, the face near its centre
    crop_face: Face | None = None  # the face in the crop's coordinates
    embedding: np.ndarray | None = None
    distance: float | None = None  # identity distance to the mean of the kept photos

    @property
    def name(self) -> str:
        return self.path.name

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"file": self.name, "status": self.status}
        if self.reason:
            row["reason"] = self.reason
        if self.face is not None:
            row["face_box"] = [round(float(v), 1) for v in self.face.box]
            row["face_size"] = round(float(self.face.size), 1)
        if self.distance is not None:
            row["distance"] = round(float(self.distance), 4)
        return row


@dataclass
class Selection:
    """The outcome for a set of photos: kept ones best first, the others with reasons."""

    photos: list[Photo]
    backend: str
    threshold: float
    mean_embedding: np.ndarray | None = None
    white_background: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> list[Photo]:
        """Kept photos, closest to the mean identity first."""
        kept = [p for p in self.photos if p.status == "kept"]
        return sorted(kept, key=lambda p: p.distance if p.distance is not None else 0.0)

    @property
    def left_out(self) -> list[Photo]:
        return [p for p in self.photos if p.status != "kept"]

    @property
    def reference(self) -> Photo | None:
        """The kept photo closest to the mean identity: the person's face for templates."""
        kept = self.kept
        return kept[0] if kept else None

    def summary(self) -> str:
        """'3 of 5 photos usable; b.jpg: no face; c.jpg: face is 90 px ...'."""
        reasons = "; ".join(f"{p.name}: {p.reason}" for p in self.left_out)
        head = f"{len(self.kept)} of {len(self.photos)} photos usable"
        return f"{head}; {reasons}" if reasons else head

    def require(self, minimum: int) -> None:
        """Refuse to go on with fewer than `minimum` usable photos, saying why the rest were not."""
        if len(self.kept) < minimum:
            min_face = self.settings.get("min_face", MIN_FACE)
            raise LorastudioError(
                f"portrait: {self.summary()}; need at least {minimum}: add clear photos of one face"
                f" (at least {min_face:.0f} px, upright)."
            )

    def report(self) -> dict[str, Any]:
        """What `portrait.json` records: settings, kept (best first), left out with reasons."""
        reference = self.reference
        return {
            "backend": self.backend,
            "threshold": self.threshold,
            "white_background": self.white_background,
            **self.settings,
            "reference": reference.name if reference is not None else None,
            "kept": [p.to_json() for p in self.kept],
            "left_out": [p.to_json() for p in self.left_out],
            "summary": self.summary(),
        }


# -- one photo -------------------------------------------------------------------------------
def list_photos(folder: str | Path) -> list[Path]:
    """The image files directly in `folder`, by name (other files are not photos)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise LorastudioError(f"--photos {folder}: not a folder; give the folder that holds the person's photos.")
    photos = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise LorastudioError(
            f"--photos {folder}: no photos ({', '.join(PHOTO_SUFFIXES)}); put 5-20 photos of the person there."
        )
    return photos


def load_photo(path: Path, max_pixels: int = 64_000_000) -> Image.Image:
    """The photo upright (EXIF orientation applied) as RGB; `PhotoRefused` when it cannot be read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from lorastudio.image_modes import to_rgb

    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                raise PhotoRefused(f"{image.width}x{image.height} is over {max_pixels:,} pixels; shrink it")
            image.load()
            upright = ImageOps.exif_transpose(image) or image
            return to_rgb(upright)
    except PhotoRefused:
        raise
    except UnidentifiedImageError:
        raise PhotoRefused("not an image (unreadable or unsupported format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise PhotoRefused(f"damaged image ({str(exc).strip() or type(exc).__name__})") from None


def main_face(faces: Sequence[Face], min_size: float = MIN_FACE, max_roll: float = MAX_ROLL) -> Face:
    """The one face to train on; `PhotoRefused` for none, several alike, too small or too tilted."""
    if not faces:
        raise PhotoRefused("no face found")
    ranked = sorted(faces, key=lambda f: f.size, reverse=True)
    face = ranked[0]
    if len(ranked) > 1 and face.size < SIZE_RATIO * ranked[1].size:
        raise PhotoRefused(f"{len(ranked)} faces of about the same size; use photos of this person alone")
    if face.size < min_size:
        raise PhotoRefused(f"face is {face.size:.0f} px, under {min_size:.0f} px; use a closer or larger photo")
    roll = face.roll_degrees
    if roll is not None and abs(roll) > max_roll:
        raise PhotoRefused(f"head tilted {abs(roll):.0f} degrees (over {max_roll:.0f}); use an upright photo")
    return face


def crop_box(width: int, height: int, face: Face, scale: float = CROP_SCALE) -> tuple[int, int, int, int]:
    """A square around the face, `scale` x its box, moved (then shrunk) to stay inside the photo.

    Never padded: borders that are not in the photo would be learnt as part of the person.
    """
    x0, y0, x1, y1 = face.box
    side = min(max(x1 - x0, y1 - y0) * scale, width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - side / 2, 0), width - side)
    top = min(max(cy - side / 2, 0), height - side)
    side = int(round(side))
    left, top = int(round(left)), int(round(top))
    return left, top, left + side, top + side


def crop_around_face(
    image: Image.Image, face: Face, size: int = 512, scale: float = CROP_SCALE
) -> tuple[Image.Image, Face]:
    """The square training crop around `face` at `size` px, and the face in its coordinates."""
    from PIL import Image

    left, top, right, bottom = crop_box(image.width, image.height, face, scale)
    crop = image.crop((left, top, right, bottom)).resize((size, size), Image.Resampling.LANCZOS)
    factor = size / (right - left)
    return crop, face.scaled(factor, (-left * factor, -top * factor))


def white_background(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The person (mask white) over a white background."""
    from PIL import Image

    white = Image.new("RGB", image.size, (255, 255, 255))
    return Image.composite(image, white, mask.convert("L").resize(image.size))


# -- identity ----------------------------------------------------------------------------------
def _robust_z(values: list[float], value: float) -> float:
    """How many robust standard deviations (1.4826 x MAD) `value` lies above the median."""
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values) * 1.4826
    return (value - median) / mad if mad > 1e-9 else 0.0


def find_outliers(
    embeddings: list[np.ndarray], distance: Callable[[Any, Any], float], threshold: float
) -> dict[int, float]:
    """Indexes of photos whose identity is far from the others, with their distance.

    One at a time: the photo farthest from the mean of the *other* photos goes when that
    distance is over the backend's same-person `threshold`, or (five photos or more) a robust
    outlier over half the threshold; then the mean is taken again without it.
    """
    import numpy as np

    active = list(range(len(embeddings)))
    dropped: dict[int, float] = {}
    while len(active) > 2:
        total = np.sum([embeddings[i] for i in active], axis=0)
        far = {i: float(distance(embeddings[i], (total - embeddings[i]) / (len(active) - 1))) for i in active}
        worst = max(active, key=lambda i: far[i])
        robust = len(active) >= 5 and far[worst] > threshold / 2 and _robust_z(list(far.values()), far[worst]) > ROBUST_Z
        if far[worst] <= threshold and not robust:
            break
        dropped[worst] = far[worst]
        active.remove(worst)
    return dropped


def _prepare(
    path: Path, backend: FaceBackend, size: int, scale: float, min_face: float, mask: Callable | None,
    retouch: float = 0.0,
) -> Photo:
    """Load, detect, check, crop and embed one photo; a refused photo carries its reason.

    The identity is read from the photo as it is; only the crop is retouched."""
    photo = Photo(path)
    try:
        image = load_photo(path)
        photo.face = main_face(backend.detect(image), min_face)
        photo.embedding = backend.embed(image, photo.face)
        photo.crop, photo.crop_face = crop_around_face(image, photo.face, size, scale)
        if retouch > 0:
            from lorastudio.portrait.retouch import retouch_face

            photo.crop = retouch_face(photo.crop, photo.crop_face, retouch)
        if mask is not None:
            photo.crop = white_background(photo.crop, mask(photo.crop, photo.crop_face))
    except PhotoRefused as exc:
        photo.status, photo.reason = "refused", str(exc)
    return photo


def select_photos(
    paths: Sequence[Path],
    backend: FaceBackend,
    *,
    size: int = 512,
    scale: float = CROP_SCALE,
    max_photos: int = MAX_PHOTOS,
    min_face: float = MIN_FACE,
    person_mask: Callable[[Image.Image, Face], Image.Image] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    retouch: float = 0.0,
) -> Selection:
    """Check, crop and rank `paths`; with `person_mask(crop, face)` crops get a white background;
    `retouch` > 0 retouches each crop's skin at that strength (0..1)."""
    import numpy as np

    photos = []
    for index, path in enumerate(paths, 1):
        photos.append(_prepare(Path(path), backend, size, scale, min_face, person_mask, retouch))
        if progress is not None:
            progress(index, len(paths), Path(path).name)
    usable = [p for p in photos if p.status == "kept"]
    threshold = float(backend.threshold)
    for index, far in find_outliers([p.embedding for p in usable], backend.distance, threshold).items():
        photo = usable[index]
        photo.status, photo.distance = "outlier", far
        photo.reason = f"looks like someone else (identity distance {far:.2f} to the others, threshold {threshold:.2f})"
    usable = [p for p in usable if p.status == "kept"]
    mean = np.mean([p.embedding for p in usable], axis=0) if usable else None
    for photo in usable:
        photo.distance = float(backend.distance(photo.embedding, mean))
    for photo in sorted(usable, key=lambda p: p.distance)[max_photos:]:
        photo.status = "not_needed"
        photo.reason = f"the {max_photos} photos closest to the person's mean identity were kept"
    kept = [p.embedding for p in usable if p.status == "kept"]
    return Selection(
        photos=photos,
        backend=str(backend.name),
        threshold=threshold,
        mean_embedding=np.mean(kept, axis=0) if kept else None,
        white_background=person_mask is not None,
        settings={"size": size, "crop_scale": scale, "max_photos": max_photos, "min_face": min_face,
                  "skin_retouch": retouch},
    )
