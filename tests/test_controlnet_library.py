"""The ControlNet folder: listed with A1111 titles, found by name or title, nothing outside it."""

from __future__ import annotations

import hashlib

import pytest

from lorastudio.errors import NotFoundError
from lorastudio.service.controlnets import find_controlnet, list_controlnets
from lorastudio.service.names import LENIENT
from lorastudio.service.workspace import Workspace


@pytest.fixture()
def ws(tmp_path):
    return Workspace.open(tmp_path / "studio")


def _file(path, size=0x120000):
    path.write_bytes(bytes(i % 251 for i in range(size)))
    return path


def test_listing_shows_files_and_folders_with_the_extensions_hash(ws):
    weights = _file(ws.controlnet / "control_v11p_sd15_canny.pth")
    folder = ws.controlnet / "sdxl-depth"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    _file(folder / "diffusion_pytorch_model.safetensors")
    (ws.controlnet / "notes.txt").write_text("not a model")
    (ws.controlnet / "empty-dir").mkdir()
    rows = {row["name"]: row for row in list_controlnets(ws)}
    assert set(rows) == {"control_v11p_sd15_canny", "sdxl-depth"}
    data = weights.read_bytes()
    expected = hashlib.sha256(data[0x100000 : 0x110000]).hexdigest()[:8]
    assert rows["control_v11p_sd15_canny"]["title"] == f"control_v11p_sd15_canny [{expected}]"
    assert rows["sdxl-depth"]["folder"] is True


def test_found_by_plain_name_by_title_and_by_title_with_a_stale_hash(ws):
    weights = _file(ws.controlnet / "canny.safetensors")
    title = list_controlnets(ws)[0]["title"]
    assert find_controlnet(ws, "canny") == weights
    assert find_controlnet(ws, title) == weights
    assert find_controlnet(ws, "canny [deadbeef]") == weights


def test_paths_and_missing_names_are_refused_for_clients(ws, tmp_path):
    outside = _file(tmp_path / "elsewhere.safetensors")
    for name in ["missing", str(outside), "../elsewhere", "empty-dir"]:
        with pytest.raises(NotFoundError, match="controlnet/"):
            find_controlnet(ws, name)
    assert find_controlnet(ws, str(outside), LENIENT) == outside
