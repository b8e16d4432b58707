"""README.md and the Makefile say what the commands do: the install line, every CLI option."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def torch_install_line(tmp_path: Path, *variables: str) -> str:
    """The pip command `make install` would run for torch (make -n: printed, nothing run)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    command = ["make", "-n", "-B", "-C", str(REPO), "install", f"VENV={tmp_path / 'venv'}", *variables]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    [line] = [line for line in printed.splitlines() if "pip install" in line and "torch==" in line]
    return line


def test_make_install_takes_torch_from_the_configured_index_unless_told(tmp_path):
    assert "--index-url" not in torch_install_line(tmp_path)  # CI's offline wheel mirror keeps working
    cpu = "https://download.pytorch.org/whl/cpu"
    assert torch_install_line(tmp_path, f"TORCH_INDEX={cpu}").endswith(f"--index-url {cpu}")
    assert f"make install TORCH_INDEX={cpu}" in README  # what a CPU-only machine runs
