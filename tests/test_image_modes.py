"""16-bit and float greyscale pictures read as the grey they show, by every reader (image_modes)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from lorastudio.image_modes import to_8bit, to_mask, to_rgb

MID_GREY = 32896  # 16-bit; 8-bit 128 (65535 / 257 = 255)


def _grey16_png(path=None) -> bytes:
    """A 16-bit greyscale PNG (opens in Pillow mode I;16 or I): a mid-grey left half, black right."""
    array = np.zeros((64, 64), dtype=np.uint16)
    array[:, :32] = MID_GREY
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    if path is not None:
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _assert_mid_grey(image: Image.Image, mode: str) -> None:
    assert image.mode == mode
    pixels = np.asarray(image).astype(int)
    left, right = pixels[:, :32], pixels[:, 32:]
    assert abs(int(left.mean()) - 128) <= 1 and right.max() == 0  # convert() alone gives 255 on the left


def test_high_bit_modes_scale_to_8_bits():
    assert Image.open(io.BytesIO(_grey16_png())).mode in {"I;16", "I"}
    _assert_mid_grey(to_8bit(Image.open(io.BytesIO(_grey16_png()))), "L")
    _assert_mid_grey(to_rgb(Image.open(io.BytesIO(_grey16_png()))).convert("L"), "L")
    floats = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), "F")
    assert np.asarray(to_8bit(floats)).max() == 127
    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_8bit(rgb) is rgb  # other modes untouched


def test_portrait_photo_and_face_image_keep_16_bit_grey(tmp_path):
    from lorastudio.portrait.selection import load_photo
    from lorastudio.service.faces import load_face_image

    path = tmp_path / "scan.png"
    _grey16_png(path)
    _assert_mid_grey(load_photo(path).convert("L"), "L")
    _assert_mid_grey(load_face_image(path).convert("L"), "L")
    _assert_mid_grey(load_face_image(Image.open(path)).convert("L"), "L")


def test_template_portrait_and_control_preview_pictures_keep_16_bit_grey(tmp_path):
    """The readers the first pass missed: a template photo, a portrait's picture, a unit's preview."""
    from lorastudio.service.annotate import open_control_picture
    from lorastudio.service.portrait_make import _open_rgb
    from lorastudio.service.templates import _open_photo

    path = tmp_path / "scan.png"
    _grey16_png(path)
    for image in (_open_photo(path), _open_rgb(path), open_control_picture(str(path))):
        _assert_mid_grey(image.convert("L"), "L")


@pytest.mark.parametrize("grey", [False, True])
def test_request_image_file_keeps_16_bit_grey(tmp_path, grey):
    from lorastudio.generate.images import open_image_file

    path = tmp_path / "init.png"
    _grey16_png(path)
    image = open_image_file(str(path), "init image", grey=grey)
    _assert_mid_grey(image.convert("L"), "L")
    assert image.mode == ("L" if grey else "RGB")


def test_uploaded_16_bit_grey_picture_and_mask(workspace):
    from lorastudio.service.uploads import decode_image, store_image, upload_path

    data = base64.b64encode(_grey16_png()).decode()
    _assert_mid_grey(decode_image(data, "image")[0], "L")
    with Image.open(upload_path(workspace, store_image(workspace, data, "mask", mask=True))) as mask:
        _assert_mid_grey(mask, "L")
    with Image.open(upload_path(workspace, store_image(workspace, data, "init_images[0]"))) as picture:
        _assert_mid_grey(picture.convert("L"), "L")


def _halves_png(left: tuple, right: tuple, path=None) -> bytes:
    """A 64x64 RGBA PNG: its left half one RGBA value, its right half another."""
    array = np.zeros((64, 64, 4), dtype=np.uint8)
    array[:, :32], array[:, 32:] = left, right
    buffer = io.BytesIO()
    Image.fromarray(array, "RGBA").save(buffer, format="PNG")
    if path is not None:
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _cut_out_png(path=None) -> bytes:
    """A cut-out: a red opaque left half; the right half fully transparent over black (what many
    editors leave under transparency)."""
    return _halves_png((255, 0, 0, 255), (0, 0, 0, 0), path)


def _assert_on_white(image: Image.Image) -> None:
    pixels = np.asarray(image.convert("RGB")).astype(int)
    assert (pixels[:, :32] == (255, 0, 0)).all()
    assert (pixels[:, 32:] == 255).all()  # convert("RGB") alone shows the black under the transparency


def _stroke_mask_png(path=None) -> bytes:
    """A mask painted as transparency: black strokes (opaque) on the left half, transparent white right.

    Its luminance says "keep the left, repaint the right"; its alpha (A1111's reading) says the opposite.
    """
    return _halves_png((0, 0, 0, 255), (255, 255, 255, 0), path)


def _assert_alpha_read(mask: Image.Image) -> None:
    pixels = np.asarray(mask)
    assert mask.mode == "L"
    assert (pixels[:, :32] == 255).all() and (pixels[:, 32:] == 0).all()


def test_to_mask_reads_alpha_only_when_the_picture_has_transparency():
    _assert_alpha_read(to_mask(Image.open(io.BytesIO(_stroke_mask_png()))))
    opaque = Image.new("RGBA", (4, 4), (200, 200, 200, 255))
    assert np.asarray(to_mask(opaque)).min() == 200  # fully opaque: its luminance, as A1111
    half = Image.new("LA", (4, 4), (0, 100))
    assert np.asarray(to_mask(half)).max() == 0  # alpha 100 <= 128: kept


def test_every_colour_reader_composites_transparency_on_white(tmp_path, workspace):
    from lorastudio.generate.images import open_image_file
    from lorastudio.portrait.selection import load_photo
    from lorastudio.service.faces import load_face_image
    from lorastudio.service.uploads import store_image, upload_path

    path = tmp_path / "cut out.png"
    _cut_out_png(path)
    for image in (open_image_file(str(path), "init image"), load_photo(path), load_face_image(path)):
        _assert_on_white(image)
    data = base64.b64encode(_cut_out_png()).decode()
    with Image.open(upload_path(workspace, store_image(workspace, data, "init_images[0]"))) as stored:
        _assert_on_white(stored)


def test_a_transparency_mask_is_read_from_its_alpha_by_file_and_upload(tmp_path, workspace):
    from lorastudio.generate.images import open_image_file
    from lorastudio.service.uploads import store_image, upload_path

    path = tmp_path / "mask.png"
    _stroke_mask_png(path)
    _assert_alpha_read(open_image_file(str(path), "mask", grey=True))
    data = base64.b64encode(_stroke_mask_png()).decode()
    with Image.open(upload_path(workspace, store_image(workspace, data, "mask", mask=True))) as stored:
        _assert_alpha_read(stored)


@pytest.mark.parametrize("mode", ["RGBa", "P-key", "RGB-key", "L-key"])
def test_premultiplied_and_colour_keyed_transparency_is_transparency(mode):
    """Pillow names a premultiplied alpha band "a", and an optimiser's PNG keeps yes-or-no alpha as a
    colour key (tRNS) on a palette, grey or RGB picture: both are transparency, as A1111 sees them."""
    if mode.endswith("-key"):
        base = mode.split("-")[0]
        picture = Image.new(base, (4, 4), 0 if base != "RGB" else (0, 0, 0))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", transparency=0 if base != "RGB" else (0, 0, 0))
        picture = Image.open(io.BytesIO(buffer.getvalue()))
    else:
        picture = Image.new("RGBA", (4, 4), (0, 0, 0, 10)).convert(mode)
    assert np.asarray(to_rgb(picture)).min() >= 240  # on white, not the black under it
    assert np.asarray(to_mask(picture)).max() == 0  # alpha <= 128 everywhere: nothing repainted


def test_a1111_controlnet_unit_picture_and_mask_follow_the_rule(workspace):
    """The extension composites a unit's RGBA picture on white (its HWC3); the API path stored black."""
    from lorastudio.api.a1111_controlnet import A1111Unit, _store_images
    from lorastudio.service.uploads import upload_path

    picture = base64.b64encode(_cut_out_png()).decode()
    mask = base64.b64encode(_stroke_mask_png()).decode()
    image_name, mask_name = _store_images(workspace, A1111Unit(0, {}, image=picture, mask=mask))
    with Image.open(upload_path(workspace, image_name)) as stored:
        _assert_on_white(stored)
    with Image.open(upload_path(workspace, mask_name)) as stored:
        _assert_alpha_read(stored)
