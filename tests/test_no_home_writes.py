"""Libraries our code imports write nothing into the user's home (caches stay in the workspace)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # imports onnxruntime in a fresh process (~5 s)


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    "code",
    [
        "import lorastudio.data.tagger, onnxruntime",
        "import lorastudio; from diffusers.pipelines import onnx_utils",  # what training's imports reach
    ],
)
def test_importing_onnxruntime_through_lorastudio_writes_nothing_into_home(tmp_path, code):
    pytest.importorskip("onnxruntime")
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env["HF_HUB_OFFLINE"] = "1"
    # the control first: without lorastudio's setting, onnxruntime writes its telemetry id into the
    # home. Some machines (CI) never write it; there the check below could not fail, so it is skipped.
    control_home = tmp_path / "control"
    control_home.mkdir()
    subprocess.run(
        [sys.executable, "-c", "import onnxruntime"],
        env={**env, "HOME": str(control_home)},
        check=True,
        timeout=120,
    )
    if not any("onnxruntime" in name for name in files_under(control_home)):
        pytest.skip("onnxruntime writes nothing into the home on this machine even without the setting")
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run([sys.executable, "-c", code], env={**env, "HOME": str(home)}, check=True, timeout=120)
    assert files_under(home) == []
