"""Extras: upscale one finished image (A1111's Extras tab and `/sdapi/v1/extra-single-image`).

One function for the API, the web UI and `lorastudio upscale`. The upscalers are the resampling
filters (Lanczos, Nearest), "None" (A1111's default: the picture as it is) and the model upscalers in studio/models/upscalers (ESRGAN
family, SwinIR, SCUNet: `service.upscalers`); a second upscaler can be blended in (A1111's `upscaler_2` with its
visibility), and a target size can be filled and centre-cropped (`upscaling_crop`). The result
keeps the source's recipe and adds A1111's `Postprocess upscale by` / `Postprocess upscaler`
keys, so an upscaled picture still says how it was made.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lorastudio.errors import InvalidRequest, LorastudioError
from lorastudio.service.limits import RequestLimits, check_output_pixels
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "UPSCALERS",
    "extras_png",
    "extras_upscaler_names",
    "is_no_upscaler",
    "postprocess_keys",
    "read_picture",
    "save_upscaled",
    "upscale_files",
    "upscale_image",
    "upscaler_title",
]

# name -> Pillow resampling filter; "None" (A1111's default Upscaler 1) leaves the picture as it is.
NO_UPSCALER = "None"
UPSCALERS: dict[str, str | None] = {NO_UPSCALER: None, "Lanczos": "LANCZOS", "Nearest": "NEAREST"}
_KINDS = ("resample", "model")


def _upscaled_size(image: PILImage.Image, scale: float | None, size: tuple[int, int] | None) -> tuple[int, int]:
    """A1111's Extras size: the picture times `scale` (with a target `size`, times the larger ratio,
    which fills it), each side rounded down to a multiple of 8, as A1111's upscalers all end."""
    if size is not None:
        if min(size) < 1:
            raise InvalidRequest(f"upscaling_resize_w/h: target size {size[0]}x{size[1]} is out of range.")
        factor = max(size[0] / image.width, size[1] / image.height)
    elif scale is None or not scale > 0:
        raise InvalidRequest(f"upscaling_resize: {scale} is out of range; use a factor above 0.")
    else:
        factor = scale
    return int(image.width * factor // 8 * 8), int(image.height * factor // 8 * 8)


def is_no_upscaler(name: str | None) -> bool:
    """A1111's Extras skip the upscale for Upscaler 1 "None" (or none given): no resize, no keys."""
    return (name or NO_UPSCALER).strip().lower() == NO_UPSCALER.lower()


def extras_upscaler_names(ws: Workspace | None) -> list[str]:
    """What the Extras tab offers: the filters, then the model upscalers that read."""
    if ws is None:
        return list(UPSCALERS)
    from lorastudio.service.upscalers import upscaler_names

    return upscaler_names(ws, _KINDS)


def _centred_on(image: PILImage.Image, size: tuple[int, int]) -> PILImage.Image:
    """A1111's `upscaling_crop`: the picture centred on a canvas of `size`, cut where it is larger
    (a side that came out short of an odd target after rounding to 8 leaves a black band, as there)."""
    from PIL import Image

    canvas = Image.new("RGB", size)
    canvas.paste(image, (size[0] // 2 - image.width // 2, size[1] // 2 - image.height // 2))
    return canvas


def _one_upscaler(
    image: PILImage.Image,
    size: tuple[int, int],
    upscaler: str | None,
    ws: Workspace | None,
    device: str | None,
    tile: int,
    tile_overlap: int,
    should_stop: Callable[[], bool] | None,
    progress: Callable[[int, int], None] | None,
    allow_paths: bool = False,
) -> tuple[PILImage.Image, str]:
    """`image` at `size` through one upscaler, and the upscaler's name as A1111 writes it."""
    from PIL import Image

    known = {name.lower(): name for name in UPSCALERS if UPSCALERS[name] is not None}
    name = known.get((upscaler or "").strip().lower())
    if name is not None:
        return image.convert("RGB").resize(size, getattr(Image.Resampling, UPSCALERS[name])), name
    if ws is None:
        raise LorastudioError(f"upscaler {upscaler!r}: not available; use one of {', '.join(UPSCALERS)}.")
    from lorastudio.service.upscalers import find_upscaler, load_upscaler

    row = find_upscaler(ws, str(upscaler), _KINDS, allow_paths)
    model = load_upscaler(row["model_path"], device or _device())
    return model.upscale_to(image, size, tile, tile_overlap, should_stop, progress), row["name"]


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def upscale_image(
    image: PILImage.Image,
    limits: RequestLimits,
    *,
    scale: float | None = 2.0,
    size: tuple[int, int] | None = None,
    upscaler: str | None = "Lanczos",
    workspace: Workspace | None = None,
    crop: bool = False,
    upscaler_2: str | None = None,
    upscaler_2_visibility: float = 0.0,
    tile: int = 192,
    tile_overlap: int = 8,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
    allow_paths: bool = False,
) -> PILImage.Image:
    """`image` resized by `scale` (or to fill `size`) with `upscaler`, within `--max-output-pixels`.

    Sizes as A1111's Extras (`_upscaled_size`): multiples of 8; with `size`, scaled by the ratio
    that fills it, keeping the aspect, then centred and cut to `size` when `crop` (A1111's
    `upscaling_crop`). Model upscalers need the `workspace` (their files); `upscaler_2` is blended
    in at its visibility. Upscaler "None" returns the picture as it is (A1111 skips the upscale and
    the second upscaler with it).
    """
    from PIL import Image

    if is_no_upscaler(upscaler):
        return image.convert("RGB")
    fill = _upscaled_size(image, scale, size)
    if min(fill) < 1:
        what = "upscaling_resize_w/h" if size is not None else "upscaling_resize"
        raise InvalidRequest(
            f"{what}: the {image.width}x{image.height} picture would be {fill[0]}x{fill[1]}; ask for a larger size."
        )
    final = size if size is not None and crop else fill
    for width, height in {fill, final}:  # the upscalers work at `fill` before any crop
        check_output_pixels(limits, width, height, f"upscaled size {width}x{height}")
    if not 0 <= upscaler_2_visibility <= 1:
        raise InvalidRequest(f"extras_upscaler_2_visibility: {upscaler_2_visibility} is out of range; use 0 to 1.")
    device = getattr(limits, "device", None)  # a server's StudioSettings carries its --device
    run = (workspace, device, tile, tile_overlap, should_stop, progress, allow_paths)
    out, _ = _one_upscaler(image, fill, upscaler, *run)
    if not is_no_upscaler(upscaler_2) and upscaler_2_visibility > 0:
        second, _ = _one_upscaler(image, fill, upscaler_2, *run)
        out = Image.blend(out, second, upscaler_2_visibility)
    return _centred_on(out, final) if out.size != final else out


def postprocess_keys(
    scale: float | None,
    upscaler: str,
    *,
    size: tuple[int, int] | None = None,
    crop: bool = False,
    upscaler_2: str | None = None,
    upscaler_2_visibility: float = 0.0,
) -> str:
    """A1111's Extras infotext: `Postprocess upscale by` (or `... upscale to` and, cropped, `... crop to`),
    `Postprocess upscaler` and, when blended in, `Postprocess upscaler 2`; none for upscaler "None"."""
    if is_no_upscaler(upscaler):
        return ""
    keys = [f"Postprocess upscale to: {size[0]}x{size[1]}"] if size is not None else [f"Postprocess upscale by: {scale:g}"]
    if size is not None and crop:
        keys.append(f"Postprocess crop to: {size[0]}x{size[1]}")
    keys.append(f"Postprocess upscaler: {upscaler}")
    if not is_no_upscaler(upscaler_2) and upscaler_2_visibility > 0:
        keys.append(f"Postprocess upscaler 2: {upscaler_2}")
    return ", ".join(keys)


def extras_png(
    image: PILImage.Image,
    limits: RequestLimits,
    ws: Workspace,
    *,
    scale: float | None,
    size: tuple[int, int] | None,
    crop: bool,
    upscaler: str | None,
    upscaler_2: str | None,
    upscaler_2_visibility: float,
) -> tuple[bytes, str]:
    """The A1111 API's Extras answer for one picture: (PNG bytes, its postprocess infotext).

    As A1111, the PNG keeps the source's text (its `parameters`, also one read from a JPEG's EXIF)
    and adds a `postprocessing` chunk with the keys, which the answer's `html_info` shows."""
    import io

    from PIL.PngImagePlugin import PngInfo

    from lorastudio.generate.image_metadata import infotext_and_items

    out = upscale_image(
        image, limits, scale=scale, size=size, upscaler=upscaler, workspace=ws, crop=crop,
        upscaler_2=upscaler_2, upscaler_2_visibility=upscaler_2_visibility,
    )  # fmt: skip
    titles = [upscaler_title(ws, name) for name in (upscaler, upscaler_2)]
    keys = postprocess_keys(
        scale, titles[0], size=size, crop=crop, upscaler_2=titles[1], upscaler_2_visibility=upscaler_2_visibility
    )
    parameters, items = infotext_and_items(image)
    chunks = PngInfo()
    for key, value in {**({"parameters": parameters} if parameters else {}), **items}.items():
        if isinstance(value, str) and key != "postprocessing":
            chunks.add_text(key, value)
    if keys:  # upscaler "None": the picture as sent, with its own text only
        chunks.add_text("postprocessing", keys)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", pnginfo=chunks)
    return buffer.getvalue(), keys


def upscaler_title(ws: Workspace, name: str | None, allow_paths: bool = False) -> str:
    """How the postprocess keys name an Extras upscaler: a filter's spelling or a model's A1111 title."""
    known = {key.lower(): key for key in UPSCALERS}
    if (name or "None").strip().lower() in known:
        return known[(name or "None").strip().lower()]
    from lorastudio.service.upscalers import find_upscaler

    return find_upscaler(ws, str(name), _KINDS, allow_paths)["name"]


def upscale_files(
    ws: Workspace,
    sources: list[Path],
    limits: RequestLimits,
    upscaler: str,
    scale: float,
    out_dir: Path | None = None,
    tile: int = 192,
    tile_overlap: int = 8,
    progress_for: Callable[[Path], Callable[[int, int], None] | None] | None = None,
) -> list[Path]:
    """`lorastudio upscale`: each picture upscaled and saved with its recipe plus the postprocess keys.

    The upscaler may be a path to a model file (the CLI's local files); `progress_for(source)`
    gives each picture's tile callback.
    """
    if is_no_upscaler(upscaler):
        _refuse_saving_unchanged(sources[0] if sources else Path("picture"))
    title = upscaler_title(ws, upscaler, allow_paths=True)
    saved, failed = [], []
    for source in sources:  # a picture that cannot be upscaled is named; the others are still done
        try:
            picture = read_picture(source)
            progress = progress_for(source) if progress_for else None
            out = upscale_image(
                picture, limits, scale=scale, upscaler=upscaler, workspace=ws,
                tile=tile, tile_overlap=tile_overlap, progress=progress, allow_paths=True,
            )  # fmt: skip
        except LorastudioError as exc:
            text = str(exc).rstrip(".")
            failed.append(text if text.startswith(str(source)) else f"{source}: {text}")
            continue
        saved.append(save_upscaled(ws, source, out, scale, title, out_dir))
    if failed:
        done = f"; the other {len(saved)} were saved: {', '.join(str(p) for p in saved)}" if saved else ""
        raise LorastudioError(f"{len(failed)} pictures not upscaled: {'; '.join(failed)}{done}.")
    return saved


def read_picture(path: str | Path) -> PILImage.Image:
    """A picture file as shown (EXIF rotation applied, as A1111 reads it), RGB; one line naming an
    unreadable file. The web UI hands JPEGs over as stored."""
    from lorastudio.generate.images import open_image_file

    return open_image_file(str(path), "image")


def _refuse_saving_unchanged(source: str | Path) -> None:
    """An "upscaled" copy that is the source again would only fill outputs/ (the CLI and the web tab)."""
    raise InvalidRequest(
        f"{Path(source).name}: upscaler None leaves the picture as it is, so nothing was saved; "
        "pick Lanczos, Nearest or a model upscaler."
    )


def save_upscaled(
    ws: Workspace,
    source: str | Path,
    upscaled: PILImage.Image,
    scale: float,
    upscaler: str,
    folder: Path | None = None,
) -> Path:
    """Store an upscaled picture in `folder` (default `outputs/<date>/`) with the source's recipe plus the postprocess keys."""
    from lorastudio.generate.image_metadata import read_infotext, save_png

    if is_no_upscaler(upscaler):
        _refuse_saving_unchanged(source)
    recipe = read_infotext(source) or ""
    keys = postprocess_keys(scale, upscaler)
    text = f"{recipe.rstrip()}, {keys}" if recipe else keys  # on the parameters line, as A1111 writes it
    folder = Path(folder) if folder is not None else ws.outputs / dt.date.today().isoformat()
    stem = Path(source).stem
    target = folder / f"{stem}-upscaled-{scale:g}x.png"
    index = 1
    while target.exists():
        index += 1
        target = folder / f"{stem}-upscaled-{scale:g}x-{index}.png"
    return save_png(upscaled, target, text)
