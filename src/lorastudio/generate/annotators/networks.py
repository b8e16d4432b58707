"""The preprocessors whose network weights the user brings (studio/models/annotators).

Names are the A1111 ControlNet extension's labels (`/controlnet/module_list?alias_names=true`);
`aliases` are its internal keys, which clients also send (e.g. "hed", "pidinet_safe", "depth").
Sliders are the extension's; a row without sliders has none there either. This table imports
no torch: each row names its function as "module:function".
"""

from __future__ import annotations

from pathlib import Path

from lorastudio.generate.annotators.base import Annotator, Slider

__all__ = ["DEPTH_FOLDERS", "NET_ANNOTATORS", "depth_folder"]

_PACKAGE = "lorastudio.generate.annotators"

_MIDAS_FOLDERS = ("dpt-hybrid-midas", "dpt-large", "dpt-hybrid-midas-hf")

# The depth rows need a transformers model FOLDER in studio/models/annotators, not a file: module ->
# accepted folder names (the first is the one messages suggest), matched case-insensitively. A row
# is ready when one of them holds a config.json.
DEPTH_FOLDERS: dict[str, tuple[str, ...]] = {
    "depth_midas": _MIDAS_FOLDERS,
    "normal_midas": _MIDAS_FOLDERS,
    "depth_anything": (
        "depth-anything-small-hf",
        "depth-anything-small",
        "depth-anything-base-hf",
        "depth-anything-large-hf",
    ),
    "depth_anything_v2": (
        "Depth-Anything-V2-Small-hf",
        "depth-anything-v2-small",
        "Depth-Anything-V2-Base-hf",
        "Depth-Anything-V2-Large-hf",
    ),
}

NET_ANNOTATORS: list[Annotator] = [
    Annotator("softedge_hed", f"{_PACKAGE}.hed:softedge_hed", ("ControlNetHED.pth",), aliases=("hed",)),
    Annotator("softedge_hedsafe", f"{_PACKAGE}.hed:softedge_hedsafe", ("ControlNetHED.pth",), aliases=("hed_safe",)),
    Annotator("scribble_hed", f"{_PACKAGE}.hed:scribble_hed", ("ControlNetHED.pth",)),
    Annotator("softedge_pidinet", f"{_PACKAGE}.pidinet:softedge_pidinet", ("table5_pidinet.pth",), aliases=("pidinet",)),
    Annotator(
        "softedge_pidisafe", f"{_PACKAGE}.pidinet:softedge_pidisafe", ("table5_pidinet.pth",), aliases=("pidinet_safe",)
    ),
    Annotator(
        "scribble_pidinet", f"{_PACKAGE}.pidinet:scribble_pidinet", ("table5_pidinet.pth",), aliases=("pidinet_scribble",)
    ),
    Annotator(
        "t2ia_sketch_pidi", f"{_PACKAGE}.pidinet:sketch_pidinet", ("table5_pidinet.pth",), aliases=("pidinet_sketch",)
    ),
    Annotator("lineart_realistic", f"{_PACKAGE}.lineart:lineart_realistic", ("sk_model.pth",), aliases=("lineart",)),
    Annotator("lineart_coarse", f"{_PACKAGE}.lineart:lineart_coarse", ("sk_model2.pth",)),
    Annotator("lineart_anime", f"{_PACKAGE}.lineart_anime:lineart_anime", ("netG.pth",)),
    Annotator("lineart_anime_denoise", f"{_PACKAGE}.manga_line:lineart_anime_denoise", ("erika.pth",)),
    Annotator(
        "mlsd",
        f"{_PACKAGE}.mlsd:mlsd",
        ("mlsd_large_512_fp32.pth",),
        threshold_a=Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
        threshold_b=Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01),
    ),
    # `weights` names files; the depth rows' folders are DEPTH_FOLDERS (depth.py names them when missing).
    Annotator("depth_midas", f"{_PACKAGE}.depth:depth_midas", aliases=("depth",)),
    Annotator(
        "normal_midas",
        f"{_PACKAGE}.depth:normal_midas",
        threshold_a=Slider("Normal Background Threshold", 0.4, 0.0, 1.0, 0.01),
        aliases=("normal_map",),
    ),
    Annotator("depth_anything", f"{_PACKAGE}.depth:depth_anything"),
    Annotator("depth_anything_v2", f"{_PACKAGE}.depth:depth_anything_v2"),
]


def depth_folder(module: str, weights_dir: Path | None) -> Path | None:
    """The first folder DEPTH_FOLDERS accepts for `module` that holds a config.json, or None."""
    if weights_dir is None or not Path(weights_dir).is_dir():
        return None
    present = {entry.name.lower(): entry for entry in Path(weights_dir).iterdir() if (entry / "config.json").is_file()}
    for name in DEPTH_FOLDERS[module]:
        if name.lower() in present:
            return present[name.lower()]
    return None
