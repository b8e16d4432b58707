"""`serve --compile` against eager: seconds per image, the compile's cost, and a second launch's.

    python benchmarks/compile.py [--model tiny-sd15] [--size 64] [--steps 10] [--repeats 3] [--device cuda]

Three fresh processes generate the same request through the studio's `ModelCache`: eager,
compiled with an empty compile cache (the first image pays inductor's compile), and compiled
again with the cache the second left (what the next launch of a server pays). Prints the
first image's and the steady seconds per image of each, and eager / compiled (> 1: compiled
is faster). On a CPU inductor's compile of a full-size UNet takes many minutes: use a tiny
model here and `--model PATH --device cuda` on a GPU (mode "reduce-overhead": CUDA graphs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/queue.py vs stdlib


def child(args) -> dict:
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.models.tiny import is_tiny_name
    from lorastudio.service.generation import run_generation
    from lorastudio.service.model_cache import ModelCache
    from lorastudio.service.names import LENIENT
    from lorastudio.service.workspace import Workspace

    ws = Workspace.open(Path(args.work) / "studio")
    if is_tiny_name(args.model) and not (ws.models / args.model).exists():
        cached = Path(os.environ.get("LORASTUDIO_TEST_CACHE", Path.home() / ".cache" / "lorastudio-tests"))
        if (cached / args.model).is_dir():
            (ws.models / args.model).symlink_to(cached / args.model, target_is_directory=True)
    cache = ModelCache(ws, names=LENIENT, compile_backend=None if args.mode == "eager" else "inductor")
    cfg = GenerateConfig(
        model=args.model, prompt="a red cube, highly detailed", steps=args.steps, seed=1,
        width=args.size, height=args.size, device=args.device, sampler="Euler a",
    )  # fmt: skip
    times = []
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        run_generation(ws, cfg, cache, out_dir=Path(args.work) / "out", names=LENIENT, add_to_library=False)
        times.append(time.perf_counter() - start)
    return {"first_s": times[0], "steady_s": statistics.median(times[1:])}


def run(mode: str, args, compile_cache: Path) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(compile_cache))
    command = [
        sys.executable, __file__, "--child", mode, "--work", args.work, "--model", args.model,
        "--size", str(args.size), "--steps", str(args.steps), "--repeats", str(args.repeats),
    ] + (["--device", args.device] if args.device else [])  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-sd15")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--work", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        print(json.dumps(child(args)))
        return
    args.work = args.work or tempfile.mkdtemp(prefix="lorastudio-compile-")
    compile_cache = Path(args.work) / "torch-compile"
    rows = {
        "eager": run("eager", args, compile_cache),
        "compiled, cold cache": run("compiled", args, compile_cache),
        "compiled, second launch": run("compiled", args, compile_cache),
    }
    eager = rows["eager"]["steady_s"]
    print(f"{args.model} {args.size}px {args.steps} steps, device {args.device or 'default'}")
    for name, row in rows.items():
        print(f"  {name:<24} first image {row['first_s']:8.2f}s  steady {row['steady_s']:.3f}s/image  "
              f"speed-up {eager / row['steady_s']:.2f}x")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
