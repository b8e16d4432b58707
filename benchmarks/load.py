"""Load time and peak memory: a single-file checkpoint to ready-to-sample, lorastudio against diffusers.

    python benchmarks/load.py [--families sd15,sdxl] [--repeats 2] [--device cpu]

For each family a full-size random-weight fp16 file in the original LDM layout is built once
(`benchmarks/full_size.py`). Each load runs in a fresh process (so its peak RSS is its own and
no cache helps), alternating lorastudio (`models.loading.load_model`: shipped config, weights
streamed into place) and diffusers (`<Pipeline>.from_single_file(path, config=folder)`, then the
components moved to the device as lorastudio does). The file's SHA-256 is cached in both cases
(lorastudio records it; the first run of the benchmark pays it once, outside the timings).
Prints the median seconds, the ratio (< 1: lorastudio is faster), peak RSS against the bytes of
the loaded weights, and how long a second `ModelCache.get` of the same model takes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/queue.py vs stdlib


def _benchmark_module(name: str):
    """A sibling script imported by path (this folder stays off sys.path: see above)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _weights_bytes(modules) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_bytes() -> int:
    """The resident set now (the libraries' own memory, before a load starts)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _import_libraries(family: str) -> None:
    """Import diffusers' and transformers' classes before the clock starts, for both paths alike.

    A server pays the imports once at start; a load that follows pays none of them.
    """
    import diffusers
    import transformers

    from lorastudio.models.families import get_family
    from lorastudio.models.loading import _quiet_library_logging

    fam = get_family(family)
    getattr(diffusers, fam.pipeline_class)
    for name in ("UNet2DConditionModel", "AutoencoderKL", "PNDMScheduler", "EulerDiscreteScheduler"):
        getattr(diffusers, name)
    for name in ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer"):
        getattr(transformers, name)
    _quiet_library_logging()


def run_lorastudio(path: str, family: str, device: str | None, work: str) -> dict:
    from lorastudio.models.loading import load_model

    _import_libraries(family)
    before = _rss_bytes()
    start = time.perf_counter()
    model = load_model(path, Path(work) / "models", Path(work) / "cache", device=device, family=family)
    seconds = time.perf_counter() - start
    weights = _weights_bytes(model.components.values())
    return {"seconds": seconds, "peak": _peak_rss_bytes(), "before": before, "weights": weights}


def run_diffusers(path: str, family: str, device: str | None, work: str) -> dict:
    import diffusers

    from lorastudio.models.families import get_family
    from lorastudio.models.loading import config_folder, pick_device

    fam = get_family(family)
    config = config_folder(fam, Path(work) / "cache")  # outside the timing, as lorastudio's is cached
    _import_libraries(family)
    device, dtype = pick_device(device)
    before = _rss_bytes()
    start = time.perf_counter()
    pipe = getattr(diffusers, fam.pipeline_class).from_single_file(
        path, config=str(config), dtype=dtype, local_files_only=True
    )
    modules = [pipe.unet, pipe.vae, *(getattr(pipe, name) for name in fam.text_encoders)]
    for module in modules:
        module.to(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak": _peak_rss_bytes(), "before": before, "weights": _weights_bytes(modules)}


def run_cached_get(path: str, family: str, device: str | None, work: str) -> dict:
    """The second `ModelCache.get` of a model the studio holds: what every later request pays."""
    import shutil

    from lorastudio.service.model_cache import ModelCache
    from lorastudio.service.workspace import Workspace

    ws = Workspace.open(Path(work) / "studio")
    ws.models.mkdir(parents=True, exist_ok=True)
    target = ws.models / Path(path).name
    if not target.exists():
        try:
            target.hardlink_to(path)
        except OSError:
            shutil.copy2(path, target)
    cache = ModelCache(ws)
    cache.get(target.stem, device)
    start = time.perf_counter()
    cache.get(target.stem, device)
    return {"seconds": time.perf_counter() - start, "peak": _peak_rss_bytes(), "weights": 0}


RUNNERS = {"lorastudio": run_lorastudio, "diffusers": run_diffusers, "cached": run_cached_get}


def in_child(runner: str, path: Path, family: str, device: str | None, work: Path) -> dict:
    command = [sys.executable, __file__, "--child", runner, str(path), family, str(device), str(work)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{runner} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_family(family: str, repeats: int, device: str | None, work: Path) -> dict:
    full_size_single_file = _benchmark_module("full_size").full_size_single_file

    from lorastudio.models.families import get_family
    from lorastudio.models.loading import config_folder, model_hash

    path = full_size_single_file(family)
    model_hash(path, work / "cache")  # both paths start with the hash known (lorastudio caches it)
    config_folder(get_family(family), work / "cache")  # and with the config folder written (cached)
    samples: dict[str, list[dict]] = {"lorastudio": [], "diffusers": []}
    for _ in range(repeats):
        for runner in samples:
            samples[runner].append(in_child(runner, path, family, device, work))
    cached = in_child("cached", path, family, device, work)
    row = {"family": family, "file_gb": path.stat().st_size / 1e9}
    for runner, runs in samples.items():
        row[f"{runner}_s"] = statistics.median(r["seconds"] for r in runs)
        row[f"{runner}_peak_gb"] = max(r["peak"] for r in runs) / 1e9
        row[f"{runner}_peak_ratio"] = max(r["peak"] for r in runs) / runs[0]["weights"]
        # What the load itself added at its peak (the process held the libraries before it started).
        row[f"{runner}_load_peak_ratio"] = max(r["peak"] - r["before"] for r in runs) / runs[0]["weights"]
    row["weights_gb"] = samples["lorastudio"][0]["weights"] / 1e9
    row["ratio"] = row["lorastudio_s"] / row["diffusers_s"]
    row["cached_get_s"] = cached["seconds"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="sd15", help="comma-separated: sd15, sdxl (7 GB file, ~15 GB RAM)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        runner, path, family, device, work = args.child
        print(json.dumps(RUNNERS[runner](path, family, None if device == "None" else device, work)))
        return
    work = Path(tempfile.mkdtemp(prefix="lorastudio-load-"))
    print("peak: the process's peak RSS / the loaded weights (in brackets: the load's own growth / weights)")
    print("family  file   weights  lorastudio                diffusers                 ratio  second get")
    for family in args.families.split(","):
        r = bench_family(family, args.repeats, args.device, work)
        print(
            f"{r['family']:<7} {r['file_gb']:.1f}GB {r['weights_gb']:.1f}GB  "
            f"{r['lorastudio_s']:6.2f}s peak {r['lorastudio_peak_ratio']:.2f}x ({r['lorastudio_load_peak_ratio']:.2f}x)  "
            f"{r['diffusers_s']:6.2f}s peak {r['diffusers_peak_ratio']:.2f}x ({r['diffusers_load_peak_ratio']:.2f}x)  "
            f"{r['ratio']:.2f}x  {r['cached_get_s'] * 1000:.1f} ms"
        )
        print(json.dumps(r))


if __name__ == "__main__":
    main()
