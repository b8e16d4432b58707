"""Golden outputs: hashes of what the CLI makes on the tiny models, to diff before and after a refactor.

    python benchmarks/golden.py --out before.json            # on main
    python benchmarks/golden.py --out after.json --compare before.json

A restructuring step must not change a pixel, an infotext, a recipe or a LoRA tensor unless it
means to. This runs the user-facing commands (txt2img, img2img, inpaint, hires fix, variation
and seed resize, a LoRA and an embedding, a 2x2 grid, a short LoRA run with samples and scores)
in a temporary workspace and records a sha256 per artefact: image pixels and PNG text chunks
separately, recipe YAML, and LoRA tensors plus metadata (times left out). `--compare` lists every
artefact that differs, is new or is gone, and exits 1 when any does. CPU results are
deterministic on one machine; compare runs from the same machine only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# benchmarks/queue.py would shadow the standard library's `queue` (torch imports it).
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

# Metadata that records when or where a file was made, not what it holds.
_VOLATILE_METADATA = ("time", "date", "started", "finished", "elapsed", "session_id", "output_name_path")
# complete.json records the sizes of pickled random states, which vary from run to run.
_VOLATILE_FILES = {"log.jsonl", "events", "loss.png", "config.yaml", "run.log", "complete.json"}


# The temporary workspace's path shows in recipes and metadata; it is replaced before hashing.
_WORK_PATH = {"path": ""}


def _sha(data: bytes) -> str:
    if _WORK_PATH["path"]:
        data = data.replace(_WORK_PATH["path"].encode(), b"<work>")
    return hashlib.sha256(data).hexdigest()[:16]


def _hash_png(path: Path) -> dict[str, str]:
    from PIL import Image

    with Image.open(path) as image:
        texts = {k: v for k, v in sorted((image.text or {}).items())}
        return {
            "pixels": _sha(image.convert("RGBA").tobytes() + repr(image.size).encode()),
            "text": _sha(json.dumps(texts, sort_keys=True).encode()),
        }


def _hash_safetensors(path: Path) -> dict[str, str]:
    import torch
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(path), "pt") as f:
        metadata = {
            k: v for k, v in (f.metadata() or {}).items() if not any(w in k for w in _VOLATILE_METADATA)
        }
        for key in sorted(f.keys()):
            tensor = f.get_tensor(key).contiguous().reshape(-1)
            digest.update(key.encode() + str(tensor.dtype).encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return {"tensors": digest.hexdigest()[:16], "metadata": _sha(json.dumps(metadata, sort_keys=True).encode())}


def hash_tree(root: Path, label: str) -> dict[str, str]:
    """One entry per artefact under `root`, keyed by `label/relative path`."""
    hashes: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if path.name in _VOLATILE_FILES or any(part in _VOLATILE_FILES for part in path.parts):
            continue
        key = f"{label}/{rel}"
        if path.suffix == ".png":
            for part, value in _hash_png(path).items():
                hashes[f"{key}:{part}"] = value
        elif path.suffix == ".safetensors":
            for part, value in _hash_safetensors(path).items():
                hashes[f"{key}:{part}"] = value
        elif path.suffix in {".yaml", ".json", ".txt"}:
            hashes[key] = _sha(path.read_bytes())
    return hashes


def _cli(env: dict[str, str], *args: str) -> None:
    command = [sys.executable, "-c", "from lorastudio.cli import main; main()", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"golden: `lorastudio {' '.join(args)}` failed:\n{done.stderr[-2000:]}")


def _red_images(folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (64, 64), (200 + 10 * i, 20, 30)).save(folder / f"red{i}.png")
        (folder / f"red{i}.txt").write_text("a red picture, gold", encoding="utf-8")
    return folder


def _masks(folder: Path) -> tuple[Path, Path]:
    from PIL import Image, ImageDraw

    init = folder / "init.png"
    Image.new("RGB", (64, 64), (20, 40, 200)).save(init)
    mask = folder / "mask.png"
    image = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill=255)
    image.save(mask)
    return init, mask


def run_all(work: Path) -> dict[str, str]:
    home = work / "studio"
    env = dict(os.environ, LORASTUDIO_HOME=str(home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cached = Path(os.environ.get("LORASTUDIO_TEST_CACHE", Path.home() / ".cache" / "lorastudio-tests"))
    if (cached / "tiny-sd15").is_dir():
        shutil.copytree(cached / "tiny-sd15", home / "models" / "tiny-sd15")
    data = _red_images(work / "red")
    init, mask = _masks(work)
    hashes: dict[str, str] = {}

    _cli(env, "train", "model=tiny-sd15", f"data.dir={data}", "trigger=gold",
         "method=pivotal", "train.steps=4", "train.resolution=64", "train.save_every_steps=2",
         "train.batch_size=2", "seed=7")
    hashes.update(hash_tree(home / "runs" / "gold", "train"))
    hashes.update(hash_tree(home / "loras", "loras"))

    base = ["--model", "tiny-sd15", "--steps", "3", "--width", "64", "--height", "64", "--seed", "11"]
    jobs = {
        "txt2img": ["--prompt", "a red picture", "--negative", "blue", "--cfg", "6", "--batch", "2"],
        "sampler": ["--prompt", "green", "--sampler", "DPM++ 2M", "--schedule", "karras"],
        "img2img": ["--prompt", "red", "--init-image", str(init), "--strength", "0.6"],
        "inpaint": ["--prompt", "red", "--init-image", str(init), "--mask", str(mask), "--only-masked",
                    "--padding", "8", "--mask-blur", "2"],
        "hires": ["--prompt", "red", "--hires-scale", "1.5", "--hires-steps", "2", "--hires-strength", "0.5"],
        "variation": ["--prompt", "red", "--subseed", "5", "--subseed-strength", "0.3",
                      "--seed-resize-from-w", "48", "--seed-resize-from-h", "48"],
        "lora": ["--prompt", "a picture of gold <lora:gold:0.8>", "--clip-skip", "2"],
    }
    for name, args in jobs.items():
        out = work / "out" / name
        _cli(env, "generate", *base, *args, "--out", str(out))
        hashes.update(hash_tree(out, f"generate/{name}"))

    grid_out = work / "out" / "grid"
    _cli(env, "grid", "--model", "tiny-sd15", "--prompt", "red <lora:gold:1>", "--steps", "2",
         "--width", "64", "--height", "64", "--seed", "3", "--x", "lora_weight=0.5,1.0",
         "--y", "seed=1,2", "--out", str(grid_out))
    hashes.update(hash_tree(grid_out, "grid"))
    return hashes


def compare(now: dict[str, str], before: dict[str, str]) -> list[str]:
    lines = []
    for key in sorted(set(now) | set(before)):
        if key not in before:
            lines.append(f"new      {key}")
        elif key not in now:
            lines.append(f"gone     {key}")
        elif now[key] != before[key]:
            lines.append(f"changed  {key}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for this run's hashes")
    parser.add_argument("--compare", help="an earlier run's JSON: list what differs, exit 1 if anything does")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lorastudio-golden-"))
    _WORK_PATH["path"] = str(work)
    try:
        hashes = run_all(work)
    finally:
        if args.keep:
            print(f"workspace kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(hashes)} artefacts hashed -> {args.out}")
    if args.compare:
        differences = compare(hashes, json.loads(Path(args.compare).read_text(encoding="utf-8")))
        print("\n".join(differences) or "identical")
        raise SystemExit(1 if differences else 0)


if __name__ == "__main__":
    main()
