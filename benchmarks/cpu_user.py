"""What a CPU-only user waits for: `lorastudio --help` and the tiny `lorastudio demo` (train + generate).

    python benchmarks/cpu_user.py [--help-runs 5] [--skip-demo]

Runs the command line exactly as a user does (a fresh Python process, the package on
`PYTHONPATH`), the demo in a new empty workspace so the tiny model is built as on a first
run. Prints the machine, the median wall seconds of `--help`, the demo's wall seconds and
peak memory, and the targets (help < 1 s, demo < 120 s on 2 cores). CPU seconds are printed
too: on a busy machine the wall time grows with the other load, the CPU time hardly does.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
HELP_TARGET_S = 1.0
DEMO_TARGET_S = 120.0


def machine() -> str:
    """Cores, CPU model and memory, in one line for RESULTS.md."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
        )
        memory = f"{mem_kb / 2**20:.0f} GB"
    except (OSError, StopIteration):
        memory = "? GB"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores, {cpu}, {memory}, load {load:.1f} at start"


def _env(home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    if home is not None:
        env["LORASTUDIO_HOME"] = str(home)
    return env


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; CPU time barely moves with other load on the machine."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, _cpu_seconds() - cpu


def time_help(runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `lorastudio --help` (an untimed run first warms the file cache)."""
    cmd = [sys.executable, "-m", "lorastudio", "--help"]
    env = _env()
    _timed(cmd, env)
    samples = [_timed(cmd, env) for _ in range(runs)]
    return statistics.median(w for w, _ in samples), statistics.median(c for _, c in samples)


def time_demo() -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak memory (MB) of `lorastudio demo` in a fresh workspace."""
    with tempfile.TemporaryDirectory(prefix="lorastudio-demo-") as tmp:
        cmd = [sys.executable, "-m", "lorastudio", "demo", "--json"]
        seconds, cpu = _timed(cmd, _env(Path(tmp) / "studio"), Path(tmp))
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return seconds, cpu, peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--help-runs", type=int, default=5)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    help_s, help_cpu = time_help(args.help_runs)
    print(
        f"lorastudio --help  {help_s:6.2f} s wall, {help_cpu:5.2f} s CPU "
        f"(median of {args.help_runs}; target < {HELP_TARGET_S:.0f} s)"
    )
    if not args.skip_demo:
        demo_s, demo_cpu, peak_mb = time_demo()
        print(
            f"lorastudio demo    {demo_s:6.1f} s wall, {demo_cpu:5.1f} s CPU, peak {peak_mb:.0f} MB "
            f"(target < {DEMO_TARGET_S:.0f} s)"
        )


if __name__ == "__main__":
    main()
