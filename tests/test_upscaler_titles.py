"""Every upscaler file is listed under a name of its own, and a request by that name runs that file.

A1111 lists every file it finds; here the SwinIR/ScuNET/Real-ESRGAN files take A1111's titles, so two files
can claim one title (the release `003_realSR_..._SwinIR-L_x4_GAN.pth` and A1111's saved download
`SwinIR_4x.pth` are both `SwinIR 4x`): the download keeps it, the other is listed by its stem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upscaler_arch_files import swinir_state
from upscaler_files import compact_state, save

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RELEASE = "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN"


def _two_swinir_4x(folder: Path) -> tuple[Path, Path]:
    """The release file and A1111's saved download, with different weights so their outputs tell them apart."""
    release = save(swinir_state(seed=11), folder / f"{RELEASE}.pth")
    download = save(swinir_state(seed=12), folder / "SwinIR_4x.pth")
    return release, download


def _picture() -> Image.Image:
    image = Image.new("RGB", (16, 12))
    image.putdata([((x * 13) % 256, (y * 17) % 256, (x * y * 5) % 256) for y in range(12) for x in range(16)])
    return image


def test_two_files_of_one_title_are_listed_apart_and_found_by_their_names(workspace):
    from lorastudio.service.upscalers import find_upscaler, list_upscalers

    release, download = _two_swinir_4x(workspace.upscalers)
    rows = [row for row in list_upscalers(workspace) if row["kind"] == "model"]
    assert {row["name"]: row["model_path"] for row in rows} == {"SwinIR 4x": str(download), RELEASE: str(release)}
    assert find_upscaler(workspace, "SwinIR 4x")["model_path"] == str(download)  # listed first, found second
    assert find_upscaler(workspace, "swinir 4X")["model_path"] == str(download)
    assert find_upscaler(workspace, RELEASE.lower())["model_path"] == str(release)
    assert find_upscaler(workspace, "SwinIR_4x")["model_path"] == str(download)  # the stem still works


def test_the_title_stays_with_the_only_file_that_claims_it(workspace):
    from lorastudio.service.upscalers import list_upscalers

    release = save(swinir_state(seed=11), workspace.upscalers / f"{RELEASE}.pth")
    rows = [row for row in list_upscalers(workspace) if row["kind"] == "model"]
    assert [(row["name"], row["model_path"]) for row in rows] == [("SwinIR 4x", str(release))]


def test_extras_run_the_file_the_title_names(workspace):
    from lorastudio.generate.upscalers.model import load_model_upscaler
    from lorastudio.service.extras import upscale_image, upscaler_title
    from lorastudio.service.settings import StudioSettings

    release, download = _two_swinir_4x(workspace.upscalers)
    picture = _picture()
    for name, path in (("SwinIR 4x", download), (RELEASE, release)):
        out = upscale_image(picture, StudioSettings(), scale=4, upscaler=name, workspace=workspace)
        want = load_model_upscaler(path).upscale_to(picture, out.size)
        assert np.array_equal(np.asarray(out), np.asarray(want)), name
        assert upscaler_title(workspace, name.lower()) == name  # the postprocess key names the file run


def test_same_stem_and_a_filter_name_get_their_file_names(workspace):
    from lorastudio.service.upscalers import find_upscaler, list_upscalers

    pth = save(compact_state(2, seed=1), workspace.upscalers / "2x-Foo.pth", None)
    safetensors = save(compact_state(4, seed=2), workspace.upscalers / "2x-Foo.safetensors")
    lanczos = save(compact_state(2, seed=3), workspace.upscalers / "Lanczos.pth", None)
    rows = {row["name"]: row for row in list_upscalers(workspace) if row["kind"] == "model"}
    assert {name: row["model_path"] for name, row in rows.items()} == {
        "2x-Foo": str(pth), "2x-Foo.safetensors": str(safetensors), "Lanczos.pth": str(lanczos),
    }  # fmt: skip
    assert find_upscaler(workspace, "2x-foo.safetensors")["scale"] == 4
    assert find_upscaler(workspace, "Lanczos")["kind"] == "resample"  # the filter, not the file


def test_the_cli_list_the_api_and_the_web_dropdowns_show_both(cli, client, studio):
    from lorastudio.service.choices import hires_upscaler_names
    from lorastudio.service.extras import extras_upscaler_names

    release, download = _two_swinir_4x(studio.workspace.upscalers)
    listed = client.get("/sdapi/v1/upscalers").json()
    assert {row["name"]: row["model_path"] for row in listed if row["model_path"]} == {
        "SwinIR 4x": str(download), RELEASE: str(release),
    }  # fmt: skip
    for names in (extras_upscaler_names(studio.workspace), hires_upscaler_names(studio.workspace)):
        assert names.count("SwinIR 4x") == 1 and names.count(RELEASE) == 1
    result = cli("upscale", "--list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if str(studio.workspace.upscalers) in line}
    assert str(release) in lines[RELEASE] and lines["SwinIR"].startswith("SwinIR 4x") and str(download) in lines["SwinIR"]
