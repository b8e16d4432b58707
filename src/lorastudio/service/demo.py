"""`lorastudio demo`: the main job end to end on the built-in tiny model, in about two minutes.

1. generate one prompt with several samplers;
2. make a small data set of red pictures, train a LoRA with a trigger word on it;
3. generate before/after with the same seed and report how much redder the LoRA makes it.
The tiny model makes no art: the point is to see every step work and where files go.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from lorastudio.service.workspace import Workspace

__all__ = ["run_demo", "redness"]

DEMO_SAMPLERS = ("Euler a", "DPM++ 2M Karras", "DDIM", "UniPC")
TRIGGER = "zkdemo"
LEARNING_RATE = 1e-3


def redness(path: Path) -> float:
    """Mean of R - (G + B) / 2 over the image, in 0..255 units."""
    import numpy as np

    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return float((arr[..., 0] - (arr[..., 1] + arr[..., 2]) / 2).mean())


def mean_rgb(path: Path) -> list[int]:
    import numpy as np

    return [int(v) for v in np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).mean(axis=0).round()]


def _make_red_set(folder: Path, count: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shade = 200 + 6 * i
        Image.new("RGB", (64, 64), (shade, 20 + i, 25)).save(folder / f"red_{i:02d}.png")
        (folder / f"red_{i:02d}.txt").write_text(f"{TRIGGER}, a picture", encoding="utf-8")
    return folder


def run_demo(ws: Workspace, say: Callable[[str], None] = print, train_steps: int = 60) -> dict[str, Any]:
    """The demo with torch on one thread (tiny models: see `models.tiny.single_threaded_torch`)."""
    from lorastudio.models.tiny import single_threaded_torch

    with single_threaded_torch():
        return _run_demo(ws, say, train_steps)


def _run_demo(ws: Workspace, say: Callable[[str], None], train_steps: int) -> dict[str, Any]:
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.generate.series import contact_sheet
    from lorastudio.service.generation import run_generation
    from lorastudio.service.model_cache import ModelCache

    out = ws.outputs / "demo"
    cache = ModelCache(ws)
    summary: dict[str, Any] = {"workspace": str(ws.root), "outputs": str(out), "samplers": {}}
    say("1/3  generating 'a green picture' with several samplers on tiny-sd15 ...")
    images, labels = [], []
    for sampler in DEMO_SAMPLERS:
        cfg = GenerateConfig(
            model="tiny-sd15",
            prompt="a green picture",
            negative_prompt="blurry",
            steps=12,
            sampler=sampler,
            seed=42,
        )
        result = run_generation(ws, cfg, cache, out_dir=out)
        images.append(result.images[0].path)
        labels.append(sampler)
        summary["samplers"][sampler] = str(result.images[0].path)
    summary["sampler_sheet"] = str(contact_sheet(images, labels, out / "samplers.png", columns=4, cell=128))
    say(f"     -> {summary['sampler_sheet']}")

    try:
        from lorastudio.service.training import run_training
        from lorastudio.train.config import TrainConfig
    except ImportError:
        say("2/3  training is not available in this build; skipping the LoRA part.")
        return summary

    import shutil

    # The demo owns these names: a second `lorastudio demo` starts its run afresh.
    shutil.rmtree(ws.runs / "demo-red", ignore_errors=True)
    (ws.loras / "demo-red.safetensors").unlink(missing_ok=True)  # and its LoRA (a run never replaces another's)
    data = _make_red_set(ws.datasets / "demo-red")
    say(f"2/3  training a LoRA on {data} (8 red pictures, trigger '{TRIGGER}') ...")
    from lorastudio.config import load_config

    config = load_config(
        TrainConfig,
        None,
        {
            "model": "tiny-sd15",
            "data": {"dir": str(data)},
            "trigger": TRIGGER,
            "output": {"name": "demo-red"},
            "train": {
                "steps": train_steps,
                "batch_size": 4,
                "learning_rate": LEARNING_RATE,
                "resolution": 64,
                "save_every_steps": train_steps,
            },
            "lora": {"rank": 8, "alpha": 8},
            "seed": 1,
        },
    )
    trained = run_training(ws, config)
    summary["training"] = {k: str(v) if isinstance(v, Path) else v for k, v in trained.items()}  # JSON types kept
    say(f"     -> LoRA {trained.get('lora')}")

    say("3/3  before/after with the same seed ...")
    prompt = f"{TRIGGER}, a picture"
    before = (
        run_generation(
            ws, GenerateConfig(model="tiny-sd15", prompt=prompt, steps=12, seed=7), cache, out_dir=out
        )
        .images[0]
        .path
    )
    after = (
        run_generation(
            ws,
            GenerateConfig(model="tiny-sd15", prompt=f"{prompt} <lora:demo-red:1>", steps=12, seed=7),
            cache,
            out_dir=out,
        )
        .images[0]
        .path
    )
    summary["before"], summary["after"] = str(before), str(after)
    summary["redness_before"], summary["redness_after"] = redness(before), redness(after)
    summary["before_after_sheet"] = str(
        contact_sheet(
            [before, after],
            ["without LoRA", "with <lora:demo-red:1>"],
            out / "before-after.png",
            columns=2,
            cell=128,
        )
    )
    summary["mean_rgb_before"], summary["mean_rgb_after"] = mean_rgb(before), mean_rgb(after)
    say(f"     mean RGB: before {summary['mean_rgb_before']}, after {summary['mean_rgb_after']}")
    say(
        f"     redness (R-(G+B)/2): before {summary['redness_before']:.1f}, after {summary['redness_after']:.1f}"
    )
    say(f"     -> {summary['before_after_sheet']}")
    return summary
