"""Where the images are: kohya data folders (`NN_name` repeats, reg folders) and dataset TOMLs.

A dataset config (`[general]`, `[[datasets]]`, `[[datasets.subsets]]`) resolves each subset's
values as general < dataset < subset. lorastudio trains one `data.dir` (kohya `NN_name`
sub-folders give per-folder repeats) plus one `prior.class_dir`, so subsets map onto that.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.train.kohya_mapping import KohyaImport, apply_table, read_kohya_file

__all__ = ["apply_dataset_config", "apply_folders"]


def _class_prompt_from_folders(folder: Path) -> str | None:
    """kohya DreamBooth folders: `reg/1_dog/` -> 'dog' (the class of the regularisation images)."""
    from lorastudio.data.sources import kohya_repeats

    names = {
        found[1] for child in folder.glob("*") if child.is_dir() and (found := kohya_repeats(child.name))
    }
    return names.pop() if len(names) == 1 else None


def _count_images(folder: Path) -> int:
    from lorastudio.data.images import is_image_name

    return (
        sum(1 for p in folder.rglob("*") if p.is_file() and is_image_name(p.name)) if folder.is_dir() else 0
    )


def apply_folders(flat: dict[str, Any], out: KohyaImport, has_dataset_config: bool) -> None:
    for key in ("train_data_dir", "reg_data_dir", "in_json"):
        if key in flat and has_dataset_config:
            out.skip(key, "ignored because a dataset config is given (as sd-scripts does)")
    if has_dataset_config:
        return
    if flat.get("in_json"):
        out.set("in_json", "data.dir", str(flat["in_json"]))
        if flat.get("train_data_dir"):
            _check_images_beside_metadata(str(flat["in_json"]), str(flat["train_data_dir"]), "in_json", "train_data_dir")
            out.no_effect.append(("train_data_dir", "the in_json metadata's images are found in it"))
    elif flat.get("train_data_dir"):
        out.set("train_data_dir", "data.dir", str(flat["train_data_dir"]))  # NN_name folders give repeats
        _folder_class_caption(Path(str(flat["train_data_dir"])).expanduser(), out)
    if flat.get("reg_data_dir"):
        folder = Path(str(flat["reg_data_dir"])).expanduser()
        out.set("reg_data_dir", "prior.class_dir", str(flat["reg_data_dir"]))
        prompt = _class_prompt_from_folders(folder)
        if prompt:
            out.set("reg_data_dir (NN_class folder)", "prior.class_prompt", prompt)
        else:
            out.skip(
                "reg_data_dir", "class prompt unknown (no single NN_class sub-folder); set prior.class_prompt"
            )
        if count := _count_images(folder):
            out.set("reg_data_dir (images)", "prior.num_images", count)


def _check_images_beside_metadata(metadata: str, image_dir: str, key: str, dir_key: str) -> None:
    """sd-scripts finds a metadata file's `image_key`s in `image_dir`; lorastudio reads them beside the
    file. Two folders and relative keys would train on other images (or none): refused, with the fix."""
    path, folder = Path(metadata).expanduser(), Path(image_dir).expanduser()
    if path.parent.resolve() == folder.resolve() or not path.is_file():
        return  # one folder; or no file: the data set says what is missing
    try:
        keys = list(json.loads(path.read_text(encoding="utf-8-sig")))
    except (ValueError, OSError, UnicodeDecodeError, TypeError):
        return
    if all(Path(k).expanduser().is_absolute() for k in keys):
        return
    raise LorastudioError(
        f"kohya {key} {path}: sd-scripts finds its images in {dir_key} {folder}, lorastudio beside the"
        f" metadata file; put {path.name} in {folder} and point {key} at it."
    )


def _folder_class_caption(folder: Path, out: KohyaImport) -> None:
    """kohya DreamBooth: an image without a caption file is captioned with its `NN_<name>` folder's name."""
    from lorastudio.data.sources import kohya_repeats

    names = sorted({found[1] for c in folder.glob("*") if c.is_dir() and (found := kohya_repeats(c.name))})
    if names:
        out.no_effect.append(
            (
                "train_data_dir (NN_name folders)",
                f"uncaptioned images train on their folder's name ({', '.join(names)}), as in kohya",
            )
        )


# -- dataset config -------------------------------------------------------------------------
_DATASET_LEVEL = {
    "resolution": "resolution",
    "batch_size": "train_batch_size",
    "enable_bucket": "enable_bucket",
    "min_bucket_reso": "min_bucket_reso",
    "max_bucket_reso": "max_bucket_reso",
    "bucket_reso_steps": "bucket_reso_steps",
    "bucket_no_upscale": "bucket_no_upscale",
}
_SUBSET_STRUCTURE = {"image_dir", "num_repeats", "class_tokens", "is_reg", "metadata_file"}
# kohya subset options that only shape captions in ways lorastudio has no key for.
_NO_CAPTION_EQUIVALENT = (
    "caption_prefix",
    "caption_suffix",
    "caption_separator",
    "keep_tokens_separator",
    "secondary_separator",
    "enable_wildcard",
    "cache_info",
    "resize_interpolation",
)

_SUBSET_OPTIONS = (
    "keep_tokens",
    "shuffle_caption",
    "flip_aug",
    "color_aug",
    "caption_dropout_rate",
    "caption_tag_dropout_rate",
    "caption_extension",
    "random_crop",
    "face_crop_aug_range",
    "caption_dropout_every_n_epochs",
    *_NO_CAPTION_EQUIVALENT,
)


def apply_dataset_config(path: Path, out: KohyaImport) -> None:
    data = read_kohya_file(path)
    general = dict(data.get("general", {}))
    datasets = list(data.get("datasets", []))
    for key in data:
        if key not in ("general", "datasets"):
            out.skip(f"dataset:{key}", "not a sd-scripts dataset config table")
    if not datasets:
        raise LorastudioError(
            f"{path}: no [[datasets]] table; add one with [[datasets.subsets]] image_dir=..."
        )
    for index in range(1, len(datasets)):
        out.skip(f"datasets[{index}]", "lorastudio trains one data set per run; only datasets[0] is imported")
    dataset = datasets[0]
    base = {**general, **{k: v for k, v in dataset.items() if k != "subsets"}}
    flat_dataset = {}
    for key, value in base.items():
        if key in _DATASET_LEVEL:
            flat_dataset[_DATASET_LEVEL[key]] = value
        elif key not in _SUBSET_OPTIONS and key not in _SUBSET_STRUCTURE:
            out.skip(f"dataset:{key}", "lorastudio has no equivalent setting")
    apply_table(flat_dataset, out)
    subsets = [
        {**{k: v for k, v in base.items() if k in _SUBSET_OPTIONS}, **s} for s in dataset.get("subsets", [])
    ]
    known = _SUBSET_STRUCTURE | set(_SUBSET_OPTIONS)
    for index, subset in enumerate(dataset.get("subsets", [])):
        for key in subset:
            if key not in known:
                out.skip(f"subsets[{index}].{key}", "lorastudio has no equivalent setting")
    train = [s for s in subsets if not s.get("is_reg")]
    reg = [s for s in subsets if s.get("is_reg")]
    if not train:
        raise LorastudioError(f"{path}: datasets[0] has no training subset (is_reg = false); add one.")
    _apply_train_subsets(train, out)
    if reg:
        _apply_reg_subset(reg, out)
    _apply_subset_options(train, out)


def _subset_dir(subset: dict[str, Any]) -> str:
    if subset.get("metadata_file") and subset.get("image_dir"):
        _check_images_beside_metadata(str(subset["metadata_file"]), str(subset["image_dir"]), "metadata_file", "image_dir")
    return str(subset.get("metadata_file") or subset.get("image_dir") or "")


def _apply_train_subsets(subsets: list[dict[str, Any]], out: KohyaImport) -> None:
    from lorastudio.data.sources import kohya_repeats

    first = subsets[0]
    if len(subsets) == 1:
        out.set("subsets[0].image_dir", "data.dir", _subset_dir(first))
        if "num_repeats" in first:
            out.set("subsets[0].num_repeats", "data.repeats", int(first["num_repeats"]))
    else:
        # Several folders with their own repeats = kohya's NN_name layout, if they already sit that way.
        dirs = [Path(_subset_dir(s)).expanduser() for s in subsets]
        parent = dirs[0].parent
        matches = all(
            d.parent == parent
            and not s.get("metadata_file")
            and (found := kohya_repeats(d.name)) is not None
            and found[0] == int(s.get("num_repeats", 1))
            for d, s in zip(dirs, subsets, strict=True)
        )
        siblings = {p for p in parent.iterdir() if p.is_dir()} if parent.is_dir() else set()
        if matches and siblings == set(dirs):
            out.set("subsets[*].image_dir", "data.dir", str(parent))
            out.no_effect.append(
                ("subsets[*].num_repeats", "the NN_ folder prefixes already give these repeats")
            )
        else:
            out.set("subsets[0].image_dir", "data.dir", _subset_dir(first))
            if "num_repeats" in first:
                out.set("subsets[0].num_repeats", "data.repeats", int(first["num_repeats"]))
            for index, subset in enumerate(subsets[1:], 1):
                out.skip(
                    f"subsets[{index}].image_dir",
                    f"lorastudio trains one data.dir; to add {_subset_dir(subset)!r}, put the subsets as"
                    " NN_name folders (NN = num_repeats) under one folder and use it as data.dir",
                )
    tokens = {s.get("class_tokens") for s in subsets if s.get("class_tokens")}
    if len(tokens) == 1:
        out.set("subsets.class_tokens", "data.default_caption", tokens.pop())
    elif tokens:
        out.skip("subsets.class_tokens", "differs between subsets; set data.default_caption")


def _apply_reg_subset(subsets: list[dict[str, Any]], out: KohyaImport) -> None:
    subset = subsets[0]
    folder = _subset_dir(subset)
    out.set("subsets[is_reg].image_dir", "prior.class_dir", folder)
    if subset.get("class_tokens"):
        out.set("subsets[is_reg].class_tokens", "prior.class_prompt", subset["class_tokens"])
    else:
        out.skip(
            "subsets[is_reg].class_tokens", "not set; set prior.class_prompt to the class of these images"
        )
    if count := _count_images(Path(folder).expanduser()):
        out.set("subsets[is_reg] (images)", "prior.num_images", count)
    if "num_repeats" in subset:
        out.no_effect.append(
            (
                "subsets[is_reg].num_repeats",
                "class images are drawn one per training image, on their own schedule",
            )
        )
    for index in range(1, len(subsets)):
        out.skip(f"subsets[is_reg #{index}]", "lorastudio uses one prior.class_dir; merge the folders")
    options = sorted({k for s in subsets for k in s if k in _SUBSET_OPTIONS})
    if options:
        out.no_effect.append(
            (
                f"subsets[is_reg].{{{','.join(options)}}}",
                "class images are used with their own captions as they are",
            )
        )


def _apply_subset_options(subsets: list[dict[str, Any]], out: KohyaImport) -> None:
    """Per-subset caption/augmentation options: one lorastudio value when every subset agrees."""
    for key in _SUBSET_OPTIONS:
        values = [s[key] for s in subsets if key in s]
        if not values:
            continue
        distinct = {json.dumps(v, sort_keys=True) for v in values}
        if len(distinct) > 1:
            out.skip(
                f"subsets.{key}",
                f"differs between subsets ({', '.join(sorted(distinct))}); one value per run",
            )
            continue
        if key in _NO_CAPTION_EQUIVALENT:
            out.skip(f"subsets.{key}", "lorastudio has no equivalent caption option")
            continue
        apply_table({key: values[0]}, out)
