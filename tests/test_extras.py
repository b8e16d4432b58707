"""Extras: one function upscales for the API and the UI, within the limits, keeping the recipe."""

from __future__ import annotations

import pytest
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate.image_metadata import read_infotext, save_png
from lorastudio.service.extras import save_upscaled, upscale_image
from lorastudio.service.settings import StudioSettings


def test_upscaling_resizes_and_keeps_the_recipe_with_the_postprocess_keys(workspace, tmp_path):
    source = save_png(Image.new("RGB", (32, 16), "red"), tmp_path / "a.png", "red fox\nSteps: 2, Seed: 5, Size: 32x16")
    out = upscale_image(Image.open(source), StudioSettings(), scale=2, upscaler="lanczos")
    assert out.size == (64, 32)
    saved = save_upscaled(workspace, source, out, 2, "Lanczos")
    assert saved.parent.parent == workspace.outputs
    assert read_infotext(saved) == (
        "red fox\nSteps: 2, Seed: 5, Size: 32x16, Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    )
    assert save_upscaled(workspace, source, out, 2, "Lanczos") != saved  # never overwrites


def test_upscaling_is_refused_past_the_limit_or_with_an_unknown_upscaler():
    image = Image.new("RGB", (64, 64))
    with pytest.raises(LorastudioError, match="max-output-pixels"):
        upscale_image(image, StudioSettings(max_output_pixels=100 * 100), scale=4)
    with pytest.raises(LorastudioError, match="ESRGAN_4x.*Lanczos"):
        upscale_image(image, StudioSettings(), scale=2, upscaler="ESRGAN_4x")


def test_none_resizes_with_lanczos_as_the_a1111_route_always_did():
    image = Image.new("RGB", (8, 8), "white")
    image.putpixel((3, 3), (0, 0, 0))
    none = upscale_image(image, StudioSettings(), scale=2, upscaler="None")
    assert list(none.getdata()) == list(upscale_image(image, StudioSettings(), scale=2, upscaler="Lanczos").getdata())
    assert list(none.getdata()) != list(upscale_image(image, StudioSettings(), scale=2, upscaler="Nearest").getdata())
