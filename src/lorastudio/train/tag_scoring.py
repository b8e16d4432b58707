"""`tag_agreement`: does a checkpoint draw the character's booru tags? (WD14 tagger)

For anime-character LoRAs, CLIP similarity mostly measures style; a booru tagger answers the
question users actually ask: are the hair colour, eye colour and outfit there? The character's
tags are the reference: caption tags shared by at least half of the training (and held-out)
images, minus the trigger. Plain-text captions carry no tags, so then the tagger tags the
training images itself and the tags it finds in at least half of them are the reference.

Only tags the tagger knows count (a caption tag it cannot output would lower every checkpoint
alike), and both sides are spelled the same way (`normalise_tag`: spaces, lower case, kaomoji
kept), so kohya-style `long_hair` captions match the tagger's `long hair`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError
from lorastudio.image_modes import to_rgb
from lorastudio.train.scorers import Checkpoint, Scorer, ScoringContext, register_scorer

if TYPE_CHECKING:
    from lorastudio.data.tagger import WD14Tagger

__all__ = ["normalise_tag", "caption_tags", "common_tags", "reference_tags", "tag_agreement"]

MIN_SHARE = 0.5  # a reference tag is in at least this share of the training images
_TAGGER_CACHE: dict[str, Any] = {}  # tagger_model setting -> loaded WD14Tagger
_REFERENCE_CACHE: dict[tuple, list[str]] = {}  # (tagger, trigger, images) -> reference tags


def normalise_tag(tag: str) -> str:
    """One spelling for captions and tagger output: 'Long_Hair ' -> 'long hair', '^_^' kept."""
    from lorastudio.data.tagger import KAOMOJI

    tag = " ".join(tag.replace("\\(", "(").replace("\\)", ")").split()).lower()
    return tag if tag in KAOMOJI else tag.replace("_", " ")


def caption_tags(caption: str) -> set[str]:
    """Comma-separated (kohya) caption -> its normalised tags."""
    return {normalise_tag(part) for part in caption.split(",") if part.strip()}


def common_tags(tag_sets: list[set[str]], min_share: float = MIN_SHARE) -> list[str]:
    """Tags present in at least `min_share` of the sets, most frequent first."""
    counts = Counter(tag for tags in tag_sets for tag in tags)
    needed = min_share * len(tag_sets)
    return sorted((t for t, n in counts.items() if n >= needed), key=lambda t: (-counts[t], t))


def _vocabulary(tagger) -> set[str]:
    """Every tag the tagger can output (ratings excluded: they say nothing about the character)."""
    from lorastudio.data.tagger import RATING

    return {normalise_tag(name) for name, category in tagger.tags if category != RATING}


def _found_tags(tagger, paths: list[Path]) -> list[set[str]]:
    """The tagger's tags (above its thresholds) for each image, in batches."""
    from PIL import Image

    found: list[set[str]] = []
    batch = tagger.config.batch_size
    for start in range(0, len(paths), batch):
        images = []
        for path in paths[start : start + batch]:
            with Image.open(path) as img:
                images.append(to_rgb(img))
        found += [{normalise_tag(t.name) for t in tagger.select(row)} for row in tagger.scores(images)]
    return found


def reference_tags(
    tagger: WD14Tagger, captions: list[str], paths: list[Path], trigger: str = ""
) -> list[str]:
    """The character's tags: from the captions, or (no shared tags there) from tagging `paths`."""
    excluded = {normalise_tag(trigger)} if trigger else set()
    known = _vocabulary(tagger)
    from_captions = [(caption_tags(c) & known) - excluded for c in captions]
    tags = common_tags(from_captions)
    if not tags:
        tags = [t for t in common_tags(_found_tags(tagger, paths)) if t not in excluded]
    return tags


def tag_agreement(tagger: WD14Tagger, reference: Iterable[str], paths: list[Path]) -> float:
    """Mean over images of the share of reference tags the tagger finds in each: 0..1."""
    reference = set(reference)
    if not reference or not paths:
        raise LorastudioError("tag_agreement: needs reference tags and at least one generated image.")
    shares = [len(found & reference) / len(reference) for found in _found_tags(tagger, paths)]
    return float(sum(shares) / len(shares))


# -- the scorer ----------------------------------------------------------------------------
def _tagger(setting: str):
    if setting not in _TAGGER_CACHE:
        from lorastudio.data.config import TaggerConfig
        from lorastudio.data.tagger import WD14Tagger

        _TAGGER_CACHE[setting] = WD14Tagger.load(TaggerConfig(model=setting))
    return _TAGGER_CACHE[setting]


def _training_images(ctx: ScoringContext) -> list[tuple[Path, str]]:
    """(image, caption) of every training image plus the held-out ones, once each.

    Read from the data set itself rather than `prepare_plan`, which hashes every image.
    """
    from lorastudio.data.dataset import Dataset
    from lorastudio.train.plan import resolve_dataset_path

    cfg = ctx.cfg
    dataset = Dataset.open(
        resolve_dataset_path(cfg.data.dir, ctx.ws.datasets),
        default_caption=cfg.data.default_caption,
        fallback_caption=cfg.trigger,
        caption_extension=cfg.data.caption_extension,
    )
    images = {Path(item.image): item.caption for item in dataset}
    for img in ctx.held_out:
        images.setdefault(Path(img.path), img.caption)
    return list(images.items())


def _reference_for(ctx: ScoringContext) -> list[str]:
    """Reference tags of this run, remembered by content (scoring each checkpoint does not re-tag)."""
    setting = ctx.cfg.scoring.tagger_model
    images = _training_images(ctx)
    stamps = tuple((str(p), caption, p.stat().st_mtime_ns, p.stat().st_size) for p, caption in images)
    key = (setting, ctx.cfg.trigger, stamps)
    if key not in _REFERENCE_CACHE:
        if len(_REFERENCE_CACHE) >= 16:  # a long-running server scores many runs
            _REFERENCE_CACHE.clear()
        captions, paths = [c for _, c in images], [p for p, _ in images]
        _REFERENCE_CACHE[key] = reference_tags(_tagger(setting), captions, paths, ctx.cfg.trigger)
    return _REFERENCE_CACHE[key]


def _tag_unavailable(ctx: ScoringContext) -> str | None:
    import importlib.util

    from lorastudio.data.tagger import MODEL_FILE, TAGS_FILE, resolve_tagger_dir

    setting = ctx.cfg.scoring.tagger_model
    if not setting:
        return f"no tagger; set scoring.tagger_model=<local WD14 folder with {MODEL_FILE} + {TAGS_FILE}>"
    try:
        resolve_tagger_dir(setting)
    except LorastudioError as exc:
        return f"scoring.tagger_model: {exc}"
    if importlib.util.find_spec("onnxruntime") is None:
        return "scoring.tagger_model: onnxruntime is not installed; pip install 'lorastudio[tagger]'"
    if not _reference_for(ctx):
        return "no tag is shared by half of the training images (captions or tagger); nothing to compare"
    return None


def _tag_agreement(ctx: ScoringContext, checkpoint: Checkpoint, lora) -> float:
    """Share of the character's tags found in this checkpoint's generations: higher is better."""
    tagger = _tagger(ctx.cfg.scoring.tagger_model)
    return tag_agreement(tagger, _reference_for(ctx), ctx.generated[checkpoint.step])


register_scorer(
    Scorer(
        "tag_agreement",
        higher_is_better=True,
        score=_tag_agreement,
        unavailable=_tag_unavailable,
        description="share of the character's booru tags (WD14 tagger) found in generated images",
    )
)
