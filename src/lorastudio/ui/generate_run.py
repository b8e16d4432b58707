"""Running what the Generate tab asks for: form -> GenerateConfig -> a queued job -> live updates.

Apart from the tab's layout so that the same follow loop serves the Generate button and a page
reload (which reconnects to the user's job still running), and so the mask arithmetic of the
inpaint painter can be tested without a browser.
"""

from __future__ import annotations

import base64
import io
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from pydantic import ValidationError

from lorastudio.config import validation_key
from lorastudio.errors import InvalidRequest
from lorastudio.generate.config import GenerateConfig, snap_size
from lorastudio.ui.context import (
    UiContext,
    error_markup,
    error_text,
    failed_markup,
    poll_job,
    queued_text,
    unfinished_job_of,
)
from lorastudio.ui.forms import optional_number

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "OUTPUT_COUNT",
    "follow_running",
    "forget_lone_sub_grids",
    "selected_image",
    "selected_seed",
    "size_from_picture",
    "form_config",
    "mask_from_editor",
    "submit_and_follow",
    "submit_grid_and_follow",
    "submit_series_and_follow",
]
# job kinds the Generate tab starts and follows
FOLLOWED_KINDS = ("generate", "series", "grid")

POLL_S = 0.4
MAX_SEED = 2**32 - 1
INT_FIELDS = ("steps", "seed", "subseed", "batch_size", "count", "clip_skip", "hires_steps", "mask_blur",
              "inpaint_padding", "resize_mode", "inpainting_fill", "seed_resize_from_w", "seed_resize_from_h", "unipc_order")  # fmt: skip
# progress, preview, gallery, infotext, the gallery's selected index, image paths
OUTPUT_COUNT = 6
# Gradio's temporary folder's sub-folder for lone sub-grids (answered, never saved: A1111's rule)
SUB_GRID_FOLDER = "xyz-sub-grids"


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def mask_from_editor(value: dict[str, Any] | None) -> tuple[PILImage.Image, PILImage.Image] | None:
    """(source image, mask) from the inpaint painter, or None when nothing was painted.

    The painter gives the uploaded picture as `background` and the strokes as transparent
    `layers`; every painted pixel (alpha > 0) of any layer is repainted (white), as A1111's
    inpaint sketch reads it.
    """
    from PIL import Image

    if not value or value.get("background") is None:
        return None
    background = value["background"]
    if not isinstance(background, Image.Image):
        background = Image.open(background)
    mask = Image.new("L", background.size, 0)
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        if not isinstance(layer, Image.Image):
            layer = Image.open(layer)
        alpha = layer.convert("RGBA").getchannel("A").resize(background.size)
        mask.paste(255, mask=alpha.point(lambda a: 255 if a > 0 else 0))
    if mask.getbbox() is None:
        return None
    return background, mask  # its transparency is composited on white when stored, as the API's


def form_config(ctx: UiContext, values: dict[str, Any], painter: dict[str, Any] | None = None) -> GenerateConfig:
    """The form as a GenerateConfig; an img2img source or a painted inpaint mask become uploads the
    job names (the same store the API's base64 images go to)."""
    from lorastudio.service.uploads import store_image

    values = dict(values)
    styles = values.pop("styles", None) or []
    if styles:  # merged into the prompts the image records, as the API and the CLI merge them
        from lorastudio.service.styles import apply_styles, hires_styled

        values["prompt"], values["negative_prompt"] = apply_styles(
            ctx.studio.workspace, values.get("prompt") or "", values.get("negative_prompt") or "", list(styles)
        )
        values.update(hires_styled(ctx.studio.workspace, values, list(styles)))
    values["schedule"] = None if values.get("schedule") in (None, "", "Automatic") else values["schedule"]
    values["vae"] = values.get("vae") or None  # "Automatic": the model's own VAE
    for name in INT_FIELDS:
        if values.get(name) is not None:
            values[name] = int(values[name])
    values["width"], values["height"] = optional_number(values.get("width")), optional_number(values.get("height"))
    source = values.pop("init_image", None)
    try:
        cfg = GenerateConfig(**values)
    except ValidationError as exc:  # the line the page showed, and a key to word it by the field's label
        raise InvalidRequest(error_text(exc), **validation_key(exc, "generate")) from None
    ws = ctx.studio.workspace
    painted = mask_from_editor(painter)
    if painted is not None:
        image, mask = painted
        return cfg.model_copy(
            update={
                "init_image": store_image(ws, _png_base64(image), "init_image"),
                "mask": store_image(ws, _png_base64(mask), "mask", mask=True),
            }
        )
    if source:
        encoded = base64.b64encode(Path(source).read_bytes()).decode()
        cfg = cfg.model_copy(update={"init_image": store_image(ws, encoded, "init_image")})
    elif painter and painter.get("background") is not None:  # a picture to inpaint, nothing painted on it
        raise InvalidRequest(
            "inpaint: nothing is painted on the picture; paint the part to repaint (or clear the painter "
            "to draw from the prompt alone)."
        )
    return cfg


def size_from_picture(picture: Any, width: Any, height: Any, only_masked: bool = False) -> tuple:
    """A1111's "auto detect size from img2img": a picture given with both size boxes blank sets them
    to its own size as shown (EXIF rotation applied; multiples of 8), so a photo is not drawn into
    the model's square; a size the user typed stays, and so do blank boxes for "only masked"
    inpainting (its cut-out is sampled at the model's size). `picture`: an image path, or the
    inpaint painter's value. (A request sent with blank boxes gets the same: `request_size`.)"""
    from lorastudio.service.uploads import shown_size

    background = picture.get("background") if isinstance(picture, dict) else picture
    if background is None or only_masked or optional_number(width) or optional_number(height):
        return gr.update(), gr.update()
    size = shown_size(background)
    if size is None:
        return gr.update(), gr.update()
    return gr.update(value=snap_size(size[0])), gr.update(value=snap_size(size[1]))


UnitsFn = Callable[[], list]  # the form's ControlNet units (ui/control_panel.units_from_form)


def _with_units(cfg: GenerateConfig, units: UnitsFn | None) -> GenerateConfig:
    return cfg.model_copy(update={"controlnet": units()}) if units is not None else cfg


def submit_and_follow(
    ctx: UiContext,
    values: dict[str, Any],
    painter: dict[str, Any] | None,
    user: str,
    units: UnitsFn | None = None,
    shown: list[str] | None = None,
) -> Iterator[tuple]:
    """Queue the job, then yield the tab's outputs until it ends; a refused form says why and keeps the form.
    `shown`: the gallery's paths now, which the job's pictures replace (`forget_lone_sub_grids`)."""
    no_change = gr.update()
    try:
        cfg = _with_units(form_config(ctx, values, painter), units)
        if cfg.seed == -1:
            cfg = cfg.model_copy(update={"seed": random.randint(0, MAX_SEED)})
        job = ctx.studio.submit_generate(cfg, user=user)
    except Exception as exc:
        yield (error_markup(ctx, exc), gr.update(visible=False), *[no_change] * (OUTPUT_COUNT - 2))
        return
    yield from _follow(ctx, job.id, shown)


def submit_series_and_follow(
    ctx: UiContext,
    values: dict[str, Any],
    prompts: str,
    seed_policy: str,
    user: str,
    units: UnitsFn | None = None,
    shown: list[str] | None = None,
) -> Iterator[tuple]:
    """The story mode: the form is the base request, each line (or YAML entry) one picture."""
    from lorastudio.service.series import SeriesRequest, submit_series

    no_change = gr.update()
    values = dict(values)
    styles = list(values.pop("styles", None) or [])  # merged into every story line, not the base only
    try:
        cfg = _with_units(form_config(ctx, values), units)
        if cfg.seed == -1:
            cfg = cfg.model_copy(update={"seed": random.randint(0, MAX_SEED)})
        request = SeriesRequest(prompts=prompts or "", seed_policy=seed_policy, styles=styles)
        job = submit_series(ctx.studio, cfg, request, user=user)
    except Exception as exc:
        yield (error_markup(ctx, exc), gr.update(visible=False), *[no_change] * (OUTPUT_COUNT - 2))
        return
    yield from _follow(ctx, job.id, shown)


def submit_grid_and_follow(
    ctx: UiContext,
    values: dict[str, Any],
    painter: dict[str, Any] | None,
    grid: Callable[[], Any],
    user: str,
    units: UnitsFn | None = None,
    shown: list[str] | None = None,
) -> Iterator[tuple]:
    """The X/Y/Z plot: the form is the base request, `grid()` the GridRequest; seed -1 is left to
    the service (one seed for the whole grid, or a new one per cell with "Keep -1 for seeds")."""
    from lorastudio.service.grid import submit_grid

    no_change = gr.update()
    try:
        cfg = _with_units(form_config(ctx, values, painter), units)
        job = submit_grid(ctx.studio, cfg, grid(), user=user)
    except Exception as exc:
        yield (error_markup(ctx, exc), gr.update(visible=False), *[no_change] * (OUTPUT_COUNT - 2))
        return
    yield from _follow(ctx, job.id, shown)


def follow_running(ctx: UiContext, request: Any) -> Iterator[tuple]:
    """On a page (re)load: follow the caller's generation still queued or running, if any."""
    job = unfinished_job_of(ctx, request, FOLLOWED_KINDS, ("running", "queued"))
    if job is None:
        yield tuple(gr.update() for _ in range(OUTPUT_COUNT))
        return
    yield from _follow(ctx, job.id)


def _follow(ctx: UiContext, job_id: str, shown: list[str] | None = None) -> Iterator[tuple]:
    """The job's progress, then its pictures in the gallery, which replace `shown` (the gallery's paths
    before: a lone sub-grid among them, a file of its own, is removed then)."""
    from lorastudio.service.png_info import png_info

    t, studio, no_change = ctx.t, ctx.studio, gr.update()
    started = time.monotonic()
    for job in poll_job(studio, job_id, POLL_S):
        if job.finished:
            break
        state = studio.progress_state(job.user, job.id)  # this job's progress and preview
        image = _preview_image(state) if state.get("job") == job.id else None
        yield (_progress_text(ctx, job, state), gr.update(value=image, visible=image is not None),
               *[no_change] * (OUTPUT_COUNT - 2))  # fmt: skip
    images = [str(path) for path in studio.job_images(job)]
    result, folder = job.result or {}, studio.job_folder(job)
    if result.get("grid") and not result.get("include_sub_images", True):
        images = []  # a grid without A1111's "Include Sub Images": the grid (and sub-grids) alone
    # a grid: the grid (its infotext shown: "Script: X/Y/Z plot"), its Z sub-grids, then its cells;
    # a series: its contact sheet, then every picture
    firsts = [result["grid"], *result.get("sub_grids", [])] if result.get("grid") else []
    firsts += [result["contact_sheet"]] if result.get("contact_sheet") else []
    paths = [str(folder / name) for name in firsts] + images
    if result.get("kept") is False:  # an A1111 API request's pictures: answered, then removed (service.unsaved)
        paths = [path for path in paths if Path(path).is_file()]
        images = [path for path in images if path in paths]
    if paths and result.get("grid") and result.get("lone_sub_grid_top") is not None:
        paths.insert(1, _lone_sub_grid_file(ctx, job.id, folder / result["grid"], result))
    forget_lone_sub_grids([path for path in shown or [] if path not in paths])
    first = (paths[0] if paths else None) if result.get("grid") else (images[0] if images else None)
    info = png_info(first)["info"] if first else ""
    if job.state == "succeeded":
        status = t("progress.done", seconds=f"{time.monotonic() - started:.1f}")
        if result.get("notes"):  # asked for and not used: a missing LoRA, an embedding for another model
            status += " · " + "; ".join(result["notes"])
    elif job.state == "cancelled":
        status = t("progress.cancelled")
    else:
        status = failed_markup(ctx, job)
    yield status, gr.update(visible=False), paths, info, 0, paths  # a new gallery: its first image selected


def _lone_sub_grid_file(ctx: UiContext, job_id: str, grid: Path, result: dict[str, Any]) -> str:
    """A one-value Z axis's X/Y grid, which A1111 shows but does not save: written into Gradio's own
    temporary folder (which it serves), never into outputs/, with its infotext for PNG info and "send to"."""
    import os

    from lorastudio.service.grid import lone_sub_grid_png

    infotext = (result.get("sub_grid_infotexts") or [""])[0]
    temp = Path(os.environ.get("GRADIO_TEMP_DIR") or ctx.studio.workspace.cache / "gradio")
    path = temp / SUB_GRID_FOLDER / f"{job_id}-{grid.stem}-z1.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lone_sub_grid_png(grid, int(result["lone_sub_grid_top"]), infotext))
    return str(path)


def forget_lone_sub_grids(paths: Any) -> None:
    """Remove the lone sub-grid files (`_lone_sub_grid_file`) among a gallery's `paths`: when the next
    pictures replace them, and as the gallery's state's `delete_callback` when the browser session ends
    (Gradio drops a closed session's state). Every other path (outputs/) is left alone."""
    for path in paths or []:
        path = Path(str(path))
        if path.parent.name == SUB_GRID_FOLDER and path.name.endswith("-z1.png"):
            path.unlink(missing_ok=True)


def _progress_text(ctx: UiContext, job: Any, state: dict[str, Any]) -> str:
    t = ctx.t
    if job.state == "queued":
        return queued_text(ctx, job)
    if state.get("job") != job.id or not state.get("steps"):
        return t("progress.starting")
    eta = state.get("eta")
    return t(
        "progress.running",
        step=state["step"],
        steps=state["steps"],
        percent=int(100 * float(state.get("progress") or 0)),
        eta=f"{eta:.0f} s" if eta is not None else "…",
    )


def _preview_image(state: dict[str, Any]):
    from lorastudio.service.uploads import decode_image

    data = state.get("preview")
    if not data:
        return None
    try:
        return decode_image(data, "preview")[0]
    except Exception:  # a preview that cannot be decoded is only a missing preview
        return None


def selected_image(paths: list[str] | None, index: int | None) -> str | None:
    """The gallery's selected image (A1111's "send to" buttons send it), the first when none was picked."""
    if not paths:
        return None
    return paths[index] if index is not None and 0 <= index < len(paths) else paths[0]


def selected_seed(paths: list[str] | None, index: int | None) -> int:
    """The seed the selected image states (each image of a batch has its own), for "reuse seed";
    a picture without one (a grid, a contact sheet): the first image's that states one; -1 for none."""
    from lorastudio.service.png_info import image_seeds

    chosen = selected_image(paths, index)
    for path in [chosen, *(p for p in paths or [] if p != chosen)] if chosen else []:
        try:
            seed = image_seeds([Path(path)])[1][0]
        except Exception:  # an image gone from disk: nothing to read
            continue
        if seed != -1:
            return seed
    return -1


def infotext_of(paths: list[str], index: int) -> str:
    """The infotext of the gallery's selected image (each image of a batch has its own seed)."""
    from lorastudio.service.png_info import png_info

    if not paths or not 0 <= index < len(paths):
        return ""
    try:
        return png_info(paths[index])["info"]
    except Exception as exc:
        return error_text(exc)
