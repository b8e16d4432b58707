"""Pixel <-> tensor conversions and mask handling shared by img2img, inpainting and hires."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageFilter, ImageOps

from lorastudio.image_modes import to_mask, to_rgb

if TYPE_CHECKING:
    import torch

__all__ = [
    "open_image_file",
    "open_request_image",
    "picture_size",
    "RequestImageError",
    "MAX_REQUEST_IMAGE_PIXELS",
    "pil_to_tensor",
    "tensor_to_pil",
    "prepare_mask",
    "mask_crop_region",
    "expand_to_aspect",
    "resize_image",
    "fill_masked",
    "RESIZE_MODES",
    "INPAINTING_FILLS",
]

# A1111's img2img "Resize mode" and inpainting "Masked content", by index.
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
INPAINTING_FILLS = ("fill", "original", "latent noise", "latent nothing")


# Decoding limits for images that come from requests (uploads, base64 fields): a small
# file must not decompress into gigabytes of pixels or of PNG text chunks.
MAX_REQUEST_IMAGE_PIXELS = 64 * 1024 * 1024
MAX_TEXT_CHUNK_BYTES = 1024 * 1024  # one PNG text chunk, decompressed (A1111 infotexts are a few KB)
MAX_TEXT_MEMORY_BYTES = 8 * 1024 * 1024  # all text chunks of one PNG, decompressed
REQUEST_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")


class RequestImageError(ValueError):
    """An image from a request that cannot or may not be decoded; the message names the field.
    `key`/`params` as `LorastudioError`'s (the service passes them on when it turns this into one)."""

    def __init__(self, message: str, *, key: str | None = None, params: dict | None = None) -> None:
        super().__init__(message)
        self.key, self.params = key, dict(params or {})


def _apply_decode_limits() -> None:
    """Pillow's text-chunk guards, tightened for every decode in this process (pixels are checked per call)."""
    from PIL import PngImagePlugin

    PngImagePlugin.MAX_TEXT_CHUNK = min(PngImagePlugin.MAX_TEXT_CHUNK, MAX_TEXT_CHUNK_BYTES)
    PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, MAX_TEXT_MEMORY_BYTES)


def open_request_image(
    source: Any, what: str = "image", max_pixels: int = MAX_REQUEST_IMAGE_PIXELS
) -> tuple[Image.Image, str]:
    """The one place images from requests are decoded: bytes or a path -> (loaded image, format).

    The pixel count is checked from the header before any pixel is decoded, PNG text
    chunks are capped, and only the usual formats pass; anything else raises
    `RequestImageError` with one line naming `what`.
    """
    import io
    import warnings
    from pathlib import Path

    from PIL import UnidentifiedImageError

    _apply_decode_limits()
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray) else Path(source).open("rb")
    try:
        with warnings.catch_warnings():  # the pixel count is checked right below, with a clearer message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
        if image.width * image.height > max_pixels:
            raise RequestImageError(
                f"{what}: {image.width}x{image.height} is too large; send at most "
                f"{max_pixels / 2**20:.0f} megapixels.",
                key="image_too_large",
                params={"what": what, "size": f"{image.width}x{image.height}"},
            )
        fmt = image.format or ""
        if fmt not in REQUEST_IMAGE_FORMATS:
            raise RequestImageError(
                f"{what}: format {fmt or '?'} is not accepted; send a PNG, JPEG or WebP.",
                key="image_format",
                params={"what": what, "format": fmt or "?"},
            )
        image.load()
    except RequestImageError:
        stream.close()
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        stream.close()
        raise RequestImageError(
            _decode_failure(what, exc), key="image_unreadable", params={"what": what}
        ) from None
    stream.close()
    return image, fmt


def _decode_failure(what: str, exc: Exception) -> str:
    """One line for an image Pillow could not decode. Pillow's "cannot identify image file" names
    the stream (`<_io.BytesIO object at 0x…>`) or the server's upload path; neither helps a client."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return f"{what}: not a readable image (no format Pillow knows); send a PNG, JPEG or WebP."
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return f"{what}: not a readable image or over the decoding limits ({reason}); send a PNG, JPEG or WebP."


def open_image_file(path: str, what: str, *, grey: bool = False, where: str | None = None) -> Image.Image:
    """A request's image file (init image, mask, a ControlNet unit's image), EXIF-rotated, as RGB or a mask
    (`image_modes`: transparency on white; a mask painted as transparency read from its alpha).

    A missing or unreadable file is one line naming it; `where` names the request part (a unit).
    """
    from pathlib import Path

    from PIL import UnidentifiedImageError

    from lorastudio.errors import LorastudioError

    def head(shown: object) -> str:
        return f"{where}: {what} {shown}" if where else f"{path}: {what}"

    try:
        with Image.open(path) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
            return to_mask(upright) if grey else to_rgb(upright)
    except FileNotFoundError:
        raise LorastudioError(
            f"{head(path)} not found; check the path.", key="image_missing", params={"what": head(path)}
        ) from None
    except Image.DecompressionBombError as exc:
        raise LorastudioError(
            f"{head(Path(path).name)} is too large to open ({exc}); shrink it first.",
            key="image_bomb",
            params={"what": head(Path(path).name)},
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise LorastudioError(
            f"{head(Path(path).name)} is not a readable image ({type(exc).__name__}); use a PNG or JPEG.",
            key="image_unreadable",
            params={"what": head(Path(path).name)},
        ) from None


_SIDEWAYS = {5, 6, 7, 8}  # EXIF orientations that turn a picture a quarter: width and height swap


def picture_size(source: str | Path | Image.Image) -> tuple[int, int] | None:
    """Width x height of a picture as it is shown (EXIF rotation applied, as `open_image_file` does),
    from its header alone; None where the file is missing or no picture (its opener says why later)."""
    try:
        if isinstance(source, Image.Image):
            return _shown_size(source)
        with Image.open(source) as image:
            return _shown_size(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _shown_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    return (height, width) if image.getexif().get(0x0112) in _SIDEWAYS else (width, height)


def pil_to_tensor(image: Image.Image, device: str, dtype: torch.dtype) -> Any:
    """RGB PIL -> [1, 3, H, W] in [-1, 1]."""
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(device=device, dtype=dtype)


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[N, 3, H, W] in [-1, 1] -> PIL images."""
    import numpy as np

    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(dtype=images.new_tensor(0).byte().dtype)
    array = array.permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
    return [Image.fromarray(a) for a in array]


def binary_mask(mask: Image.Image) -> Image.Image:
    """The mask black and white at A1111's threshold: a grey above 128 repaints (its default "mask_round")."""
    return mask.convert("L").point(lambda v: 255 if v > 128 else 0)


def prepare_mask(mask: Image.Image, size: tuple[int, int], blur: int) -> Image.Image:
    """Greyscale mask at `size`, white = repaint: made black and white (`binary_mask`), then blurred
    like A1111's mask blur."""
    mask = binary_mask(mask.convert("L").resize(size, Image.Resampling.LANCZOS))
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return mask


def expand_to_aspect(
    box: tuple[int, int, int, int], aspect: float, bounds: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Grow a box to width/height == aspect, staying inside the image where possible."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w / max(h, 1) < aspect:
        grow = int(round(h * aspect)) - w
        x0, x1 = x0 - grow // 2, x1 + grow - grow // 2
    else:
        grow = int(round(w / aspect)) - h
        y0, y1 = y0 - grow // 2, y1 + grow - grow // 2
    width, height = bounds
    if x0 < 0:
        x0, x1 = 0, min(width, x1 - x0)
    if x1 > width:
        x0, x1 = max(0, x0 - (x1 - width)), width
    if y0 < 0:
        y0, y1 = 0, min(height, y1 - y0)
    if y1 > height:
        y0, y1 = max(0, y0 - (y1 - height)), height
    return x0, y0, x1, y1


def mask_crop_region(mask: Image.Image, padding: int, aspect: float) -> tuple[int, int, int, int] | None:
    """The masked area plus padding, widened to the output aspect ("only masked" inpainting)."""
    bbox = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    box = (
        max(0, x0 - padding),
        max(0, y0 - padding),
        min(mask.width, x1 + padding),
        min(mask.height, y1 + padding),
    )
    return expand_to_aspect(box, aspect, mask.size)


def _scaled_to(image: Image.Image, width: int, height: int) -> Image.Image:
    return image if image.size == (width, height) else image.resize((width, height), Image.Resampling.LANCZOS)


def resize_image(mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """An init image (or mask) at width x height, by A1111's img2img resize modes.

    0 stretches; 1 scales to cover the target and keeps the centre (crops what sticks out);
    2 scales to fit inside and fills the bands with the stretched edge rows/columns.
    Mode 3 (latent upscale) resizes latents instead; for pixels it stretches like 0.
    """
    if mode in (0, 3):
        return _scaled_to(image, width, height)
    target_ratio, source_ratio = width / height, image.width / image.height
    cover = mode == 1
    full_width = target_ratio > source_ratio if cover else target_ratio < source_ratio
    if full_width:
        fit_w, fit_h = width, image.height * width // image.width
    else:
        fit_w, fit_h = image.width * height // image.height, height
    scaled = _scaled_to(image, fit_w, fit_h)
    canvas = Image.new(image.mode, (width, height))
    left, top = width // 2 - fit_w // 2, height // 2 - fit_h // 2
    canvas.paste(scaled, (left, top))
    if not cover and target_ratio != source_ratio:
        _fill_bands(canvas, scaled, left, top, above_and_below=full_width)
    return canvas


def _fill_bands(canvas: Image.Image, scaled: Image.Image, left: int, top: int, above_and_below: bool) -> None:
    """Resize-and-fill: stretch the first/last row (or column) of the image over the empty bands."""
    width, height = canvas.size
    if above_and_below and top > 0:  # wider than the target
        edge_top = scaled.resize((width, top), box=(0, 0, width, 0))
        edge_bottom = scaled.resize((width, top), box=(0, scaled.height, width, scaled.height))
        canvas.paste(edge_top, (0, 0))
        canvas.paste(edge_bottom, (0, top + scaled.height))
    elif not above_and_below and left > 0:  # taller than the target
        edge_left = scaled.resize((left, height), box=(0, 0, 0, height))
        edge_right = scaled.resize((left, height), box=(scaled.width, 0, scaled.width, height))
        canvas.paste(edge_left, (0, 0))
        canvas.paste(edge_right, (left + scaled.width, 0))


# Inpainting "fill", coarse to fine: Gaussian radii in the order their blurs are laid on. A
# radius written twice is laid on twice, so the narrow blurs, which carry the colours right
# at a hole's edge, outweigh the wide ones; the final 0 puts the known pixels back sharp.
FILL_BLUR_RADII = (256, 64, 16, 16, 4, 4, 4, 4, 2, 2, 0)


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Inpainting "fill": paint the masked pixels with the colours around them before sampling.

    Only unmasked pixels carry colour; each blur spreads them into the holes, and laying
    sharper blurs over wider ones leaves a pixel deep in a hole with the mean of a wide
    neighbourhood and one at the edge with the colour beside it. Unmasked pixels keep theirs.
    """
    canvas = Image.new("RGBA", image.size)
    for layer in _spread_layers(_known_colours(image, mask)):
        canvas = Image.alpha_composite(canvas, layer)
    return canvas.convert("RGB")


def _known_colours(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The image with the mask as transparency, premultiplied ("RGBa") so a blur averages
    only known colours and the hidden ones never leak into the fill."""
    known = image.convert("RGBA")
    known.putalpha(ImageOps.invert(mask.convert("L")))
    return known.convert("RGBa")


def _spread_layers(known: Image.Image):
    """One straight-alpha layer per entry of FILL_BLUR_RADII (a repeated radius is blurred once)."""
    radius, layer = None, None
    for next_radius in FILL_BLUR_RADII:
        if next_radius != radius:
            radius, layer = next_radius, known.filter(ImageFilter.GaussianBlur(next_radius)).convert("RGBA")
        yield layer
