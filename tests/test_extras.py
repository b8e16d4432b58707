"""Extras: one function upscales for the API and the UI, within the limits, keeping the recipe."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate.image_metadata import read_infotext, save_png
from lorastudio.service.extras import (
    extras_png,
    postprocess_keys,
    save_upscaled,
    upscale_files,
    upscale_image,
)
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


def test_upscaler_none_leaves_the_picture_as_it_is_as_a1111_extras_do(workspace, tmp_path):
    """A1111's Extras skip the upscale (and the second upscaler) for Upscaler 1 "None", its default."""
    image = Image.new("RGB", (8, 8), "white")
    image.putpixel((3, 3), (0, 0, 0))
    none = upscale_image(image, StudioSettings(), scale=2, upscaler="None", upscaler_2="Lanczos", upscaler_2_visibility=1)
    assert none.size == (8, 8) and list(none.getdata()) == list(image.getdata())
    assert upscale_image(image, StudioSettings(), scale=2, upscaler="Lanczos").size == (16, 16)
    assert postprocess_keys(2, "None") == ""
    png, keys = extras_png(
        image, StudioSettings(), workspace, scale=2, size=None, crop=False, upscaler=None, upscaler_2=None,
        upscaler_2_visibility=0,
    )  # fmt: skip
    assert keys == "" and "postprocessing" not in Image.open(io.BytesIO(png)).text
    source = tmp_path / "a.png"
    image.save(source)
    with pytest.raises(LorastudioError, match="a.png: upscaler None leaves the picture as it is"):
        upscale_files(workspace, [source], StudioSettings(), "None", 2.0, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- model upscalers (issue 15) -------------------------------------------------------------------


@pytest.fixture
def with_upscalers(workspace):
    from upscaler_files import compact_state, rrdbnet_state, save

    save(rrdbnet_state(4, seed=2), workspace.upscalers / "RealESRGAN_x4plus.pth")
    save(compact_state(2, seed=4), workspace.upscalers / "2x-Compact.safetensors")
    return workspace


def _gradient(width: int = 24, height: int = 16) -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 10 % 256, y * 15 % 256, 128) for y in range(height) for x in range(width)])
    return image


def test_model_upscalers_are_listed_by_a1111_title_and_found_by_title_or_stem(with_upscalers):
    from lorastudio.service.extras import extras_upscaler_names
    from lorastudio.service.upscalers import find_upscaler, list_upscalers

    rows = {row["name"]: row for row in list_upscalers(with_upscalers)}
    assert rows["R-ESRGAN 4x+"]["kind"] == "model" and rows["R-ESRGAN 4x+"]["scale"] == 4
    assert rows["Latent (bicubic antialiased)"]["kind"] == "latent" and rows["Nearest"]["kind"] == "resample"
    assert set(rows["2x-Compact"]) == {"name", "model_name", "model_path", "model_url", "scale", "kind", "error"}
    assert find_upscaler(with_upscalers, "realesrgan_X4PLUS")["name"] == "R-ESRGAN 4x+"
    assert find_upscaler(with_upscalers, "r-esrgan 4x+")["model_name"] == "RealESRGAN_x4plus"
    assert extras_upscaler_names(with_upscalers) == ["None", "Lanczos", "Nearest", "2x-Compact", "R-ESRGAN 4x+"]
    with pytest.raises(LorastudioError, match="'ESRGAN_4x': not found; use one of: .*R-ESRGAN 4x\\+"):
        find_upscaler(with_upscalers, "ESRGAN_4x")


def test_a_model_upscaler_upscales_then_lanczos_reaches_the_target(with_upscalers):
    import numpy as np

    image = _gradient()
    model = upscale_image(image, StudioSettings(), scale=3, upscaler="R-ESRGAN 4x+", workspace=with_upscalers)
    lanczos = upscale_image(image, StudioSettings(), scale=3, upscaler="Lanczos")
    assert model.size == lanczos.size == (72, 48)
    assert np.abs(np.asarray(model, dtype=float) - np.asarray(lanczos, dtype=float)).mean() > 1
    with pytest.raises(LorastudioError, match="not available; use one of None, Lanczos, Nearest"):
        upscale_image(image, StudioSettings(), scale=3, upscaler="R-ESRGAN 4x+")  # no workspace: filters only


def test_second_upscaler_blends_at_its_visibility_and_crop_fills_the_target(with_upscalers):
    import numpy as np

    image = _gradient()
    settings = StudioSettings()
    first = np.asarray(upscale_image(image, settings, scale=2, upscaler="Nearest"), dtype=float)
    second = np.asarray(upscale_image(image, settings, scale=2, upscaler="2x-Compact", workspace=with_upscalers), dtype=float)
    blended = upscale_image(
        image, settings, scale=2, upscaler="Nearest", workspace=with_upscalers,
        upscaler_2="2x-Compact", upscaler_2_visibility=0.25,
    )  # fmt: skip
    assert np.abs(np.asarray(blended, dtype=float) - (0.75 * first + 0.25 * second)).max() <= 1
    cropped = upscale_image(image, settings, size=(40, 40), crop=True, upscaler="Lanczos")
    assert cropped.size == (40, 40)  # filled keeping the aspect: 60x40, to 8s 56x40, then centred and cut
    filled = image.resize((56, 40), Image.Resampling.LANCZOS).crop((8, 0, 48, 40))
    assert list(cropped.getdata()) == list(filled.getdata())


def test_extras_sizes_are_a1111s_multiples_of_8_and_resize_to_keeps_the_aspect_without_crop():
    import numpy as np

    settings = StudioSettings()
    assert upscale_image(Image.new("RGB", (333, 200)), settings, scale=1.5).size == (496, 296)  # 499.5x300 down to 8s
    wide = Image.new("RGB", (60, 30), "white")
    assert upscale_image(wide, settings, size=(100, 100), crop=False).size == (200, 96)  # not stretched to 100x100
    framed = np.asarray(upscale_image(wide, settings, size=(100, 100), crop=True))
    assert framed.shape == (100, 100, 3)
    # 200x96 centred on 100x100: the 96 rows leave a black band of 2 at the top and bottom, as A1111's paste does
    assert framed[:2].max() == 0 and framed[-2:].max() == 0 and framed[2:98].min() > 200
    # The limit counts the size the upscalers work at, before the cut: 10x100 filling 100x100 is 96x1000 (8s).
    with pytest.raises(LorastudioError, match="96x1000.*max-output-pixels"):
        upscale_image(Image.new("RGB", (10, 100)), StudioSettings(max_output_pixels=20000), size=(100, 100), crop=True)


def test_extra_single_and_batch_images_with_model_upscalers(client, studio):
    import base64
    import io

    from upscaler_files import compact_state, save

    save(compact_state(2, seed=4), studio.workspace.upscalers / "2x-Compact.safetensors")

    def b64(image: Image.Image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    def unb64(text: str) -> Image.Image:
        return Image.open(io.BytesIO(base64.b64decode(text)))

    listed = client.get("/sdapi/v1/upscalers").json()
    assert [row["name"] for row in listed] == ["None", "Lanczos", "Nearest", "2x-Compact"]
    assert listed[3] == {
        "name": "2x-Compact", "model_name": "2x-Compact", "model_url": None, "scale": 2,
        "model_path": str(studio.workspace.upscalers / "2x-Compact.safetensors"),
    }  # fmt: skip
    single = client.post(
        "/sdapi/v1/extra-single-image",
        json={"image": b64(_gradient()), "upscaler_1": "2x-compact", "upscaling_resize": 2},
    )
    assert single.status_code == 200, single.text
    expected = upscale_image(_gradient(), StudioSettings(), scale=2, upscaler="2x-Compact", workspace=studio.workspace)
    assert list(unb64(single.json()["image"]).getdata()) == list(expected.getdata())
    batch = client.post(
        "/sdapi/v1/extra-batch-images",
        json={
            "imageList": [{"data": b64(_gradient()), "name": "a"}, {"data": b64(_gradient(8, 8)), "name": "b"}],
            "resize_mode": 1, "upscaling_resize_w": 40, "upscaling_resize_h": 40, "upscaling_crop": True,
            "upscaler_1": "Lanczos", "upscaler_2": "2x-Compact", "extras_upscaler_2_visibility": 0.5,
        },
    )  # fmt: skip
    assert batch.status_code == 200, batch.text
    assert [unb64(im).size for im in batch.json()["images"]] == [(40, 40), (40, 40)]
    keys = (
        "Postprocess upscale to: 40x40, Postprocess crop to: 40x40, Postprocess upscaler: Lanczos, "
        "Postprocess upscaler 2: 2x-Compact"
    )
    assert batch.json()["html_info"] == f"<p>{keys}</p>"
    assert unb64(batch.json()["images"][0]).info["postprocessing"] == keys
    unknown = client.post("/sdapi/v1/extra-single-image", json={"image": b64(_gradient()), "upscaler_1": "SwinIR 4x"})
    assert unknown.status_code == 422 and "2x-Compact" in unknown.json()["detail"]


def test_cli_upscale_end_to_end(with_upscalers, tmp_path):
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    _register()
    source = save_png(_gradient(20, 12), tmp_path / "fox.png", "red fox\nSteps: 2, Seed: 5, Size: 20x12")
    runner = CliRunner()
    listed = runner.invoke(app, ["upscale", "--list"])
    assert listed.exit_code == 0 and "R-ESRGAN 4x+" in listed.output and "2x-Compact" in listed.output
    result = runner.invoke(
        app, ["upscale", str(source), "--upscaler", "realesrgan_x4plus", "--scale", "2", "--out", str(tmp_path / "up"),
              "--tile", "8", "--tile-overlap", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = tmp_path / "up" / "fox-upscaled-2x.png"
    assert Image.open(saved).size == (40, 24)
    assert read_infotext(saved) == (
        "red fox\nSteps: 2, Seed: 5, Size: 20x12, Postprocess upscale by: 2, Postprocess upscaler: R-ESRGAN 4x+"
    )
    bad = runner.invoke(app, ["upscale", str(source), "--upscaler", "nope"])
    assert bad.exit_code == 2 and "upscaler 'nope': not found" in bad.output
    model = runner.invoke(app, ["upscale", str(source), "-u", str(with_upscalers.upscalers / "2x-Compact.safetensors"),
                                "--out", str(tmp_path / "path")])  # fmt: skip
    assert model.exit_code == 0, model.output  # the CLI also takes a model file's path
    assert "Postprocess upscaler: 2x-Compact" in read_infotext(tmp_path / "path" / "fox-upscaled-2x.png")


def test_form_choices_offer_the_workspace_upscalers(with_upscalers):
    from lorastudio.service.choices import hires_upscaler_names

    names = hires_upscaler_names(with_upscalers)
    assert names[:6] == ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                         "Latent (nearest)", "Latent (nearest-exact)"]  # fmt: skip
    assert names[6:] == ["None", "Lanczos", "Nearest", "2x-Compact", "R-ESRGAN 4x+"]
    (with_upscalers.upscalers / "broken.pth").write_bytes(b"nope")
    assert "broken" not in hires_upscaler_names(with_upscalers)  # unreadable files are not offered
    assert hires_upscaler_names() == names[:9]


def test_the_a1111_extras_answer_keeps_the_recipe_and_adds_a_postprocessing_chunk(client, tmp_path):
    """As A1111's API: the source's `parameters` stay, the upscale is written as a `postprocessing`
    chunk and shown in `html_info` (the picture came back with no text at all)."""
    import base64
    import io

    recipe = "red fox\nSteps: 2, Seed: 5, Size: 32x16"
    source = save_png(Image.new("RGB", (32, 16), "red"), tmp_path / "a.png", recipe)
    answer = client.post(
        "/sdapi/v1/extra-single-image",
        json={"image": base64.b64encode(source.read_bytes()).decode(), "upscaler_1": "Lanczos", "upscaling_resize": 2},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["html_info"] == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"
    out = Image.open(io.BytesIO(base64.b64decode(answer.json()["image"])))
    assert out.size == (64, 32)
    assert out.info["parameters"] == recipe
    assert out.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
