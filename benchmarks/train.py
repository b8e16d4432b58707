"""Training benchmark: lorastudio's trainer against a plain diffusers + peft LoRA loop.

    .venv/bin/python benchmarks/train.py [--model tiny-sd15] [--resolutions 64] [--rank 8]
                                         [--batch 4] [--steps 30] [--shapes sd15,sdxl] [--repeats 3]
    .venv/bin/python benchmarks/train.py --shapes sd15 --resolutions 64,256 --batch 1 \
                                         --steps 5 --warmup 1 --models-dir ~/.cache/lorastudio-bench
    .venv/bin/python benchmarks/train.py --variant train.gradient_checkpointing=true   # a second setting

Both loops train the same model, resolution, rank, batch and target layers (every Linear /
1x1 conv in the transformer blocks) on the same synthetic images, with latents and text
embeddings computed once up front, the gradient norm clipped to 1 (lorastudio's default and
diffusers' train_text_to_image_lora's), and each runs in its own process so peak memory
(CUDA max allocated, else peak RSS) is its own. Steps/s skips the first `--warmup` steps.
`--shapes sd15,sdxl` adds SD1.5- and SDXL-shaped models with random weights, written once
to `--models-dir` (default: a temporary folder); on a CPU an SD1.5 step takes seconds at
64 px, so keep `--steps` small there.
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

# benchmarks/queue.py would hide the stdlib `queue` (torch imports it): keep this folder off sys.path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

PEFT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]


def make_images(folder: Path, count: int, resolution: int) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        colour = rng.integers(0, 255, 3, dtype=np.uint8)
        Image.fromarray(np.broadcast_to(colour, (resolution, resolution, 3)).copy()).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("bench", encoding="utf-8")
    return folder


def random_model(family_name: str, folder: Path) -> Path:
    """A full-size diffusers folder with random weights, from the family's shipped configs."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lorastudio.models.families import get_family
    from lorastudio.models.loading import config_folder

    family = get_family(family_name)
    configs = config_folder(family, folder.parent / "configs")
    target = folder / family_name
    if (target / "model_index.json").is_file():
        return target
    torch.manual_seed(0)
    for sub in configs.iterdir():
        if sub.is_dir():
            (target / sub.name).mkdir(parents=True, exist_ok=True)
            for f in sub.iterdir():
                (target / sub.name / f.name).write_bytes(f.read_bytes())
        else:
            target.mkdir(parents=True, exist_ok=True)
            (target / sub.name).write_bytes(sub.read_bytes())
    UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(configs / "unet"))).save_pretrained(
        target / "unet"
    )
    AutoencoderKL.from_config(AutoencoderKL.load_config(str(configs / "vae"))).save_pretrained(target / "vae")
    for name in family.text_encoders:
        config = CLIPTextConfig.from_pretrained(str(configs / name))
        cls = CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel
        cls(config).save_pretrained(target / name)
    (target / "lorastudio.json").write_text(json.dumps({"family": family.name}), encoding="utf-8")
    return target


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_lorastudio(args) -> dict:
    from lorastudio.service.training import run_training
    from lorastudio.service.workspace import Workspace
    from lorastudio.train.config import load_train_config

    ws = Workspace.open(args.workspace)
    times: list[float] = []
    cpu: list[float] = []

    def on_event(event: dict) -> None:
        if event.get("event") == "step":
            times.append(time.perf_counter())
            cpu.append(time.process_time())

    cfg = load_train_config(
        overrides=[
            f"model={args.model}", f"data.dir={args.data}", f"train.resolution={args.resolution}",
            f"train.steps={args.steps}", f"train.batch_size={args.batch}", f"lora.rank={args.rank}",
            f"lora.alpha={args.rank}", "train.save_every_steps=1000000", "lora.targets=kohya",
            f"output.name=bench-{os.getpid()}", *args.set,
        ]
    )  # fmt: skip
    run_training(ws, cfg, callback=on_event, progress=False)
    return {"steps_per_s": _rate(times, args.warmup), "steps_per_cpu_s": _rate(cpu, args.warmup), "peak_mb": peak_memory_mb()}


def run_plain(args) -> dict:
    """The reference: a minimal diffusers + peft LoRA loop, as in diffusers' train_text_to_image_lora."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, DiffusionPipeline
    from peft import LoraConfig
    from PIL import Image

    from lorastudio.models.loading import pick_device, resolve_model
    from lorastudio.service.workspace import Workspace

    ws = Workspace.open(args.workspace)
    device, dtype = pick_device(None)
    folder = resolve_model(args.model, ws.models).path
    pipe = DiffusionPipeline.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.to(device).requires_grad_(False)
    torch.manual_seed(0)
    pipe.unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=PEFT_TARGETS))
    params = [p for p in pipe.unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    sdxl = hasattr(pipe, "text_encoder_2")
    with torch.no_grad():
        pixels = []
        for path in sorted(Path(args.data).glob("*.png")):
            image = Image.open(path).convert("RGB").resize((args.resolution, args.resolution))
            pixels.append(
                torch.tensor(list(image.getdata()), dtype=torch.float32).view(
                    args.resolution, args.resolution, 3
                )
            )
        pixels = torch.stack(pixels).permute(0, 3, 1, 2).to(device, dtype) / 127.5 - 1
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        if sdxl:
            embeds, _, pooled, _ = pipe.encode_prompt(
                "bench", device=device, do_classifier_free_guidance=False
            )
        else:
            embeds, _ = pipe.encode_prompt("bench", device, 1, False)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    times, cpu = [], []
    for step in range(args.steps):
        pick = torch.arange(step * args.batch, (step + 1) * args.batch) % len(latents)
        batch = latents[pick].float()
        noise = torch.randn_like(batch)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), device=device)
        noisy = scheduler.add_noise(batch, noise, t)
        kwargs = {}
        if sdxl:
            size = float(args.resolution)
            time_ids = torch.tensor([[size, size, 0, 0, size, size]] * args.batch, device=device, dtype=dtype)
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled.expand(args.batch, -1), "time_ids": time_ids}
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
            pred = pipe.unet(
                noisy.to(dtype), t, encoder_hidden_states=embeds.expand(args.batch, -1, -1), **kwargs
            ).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter())
        cpu.append(time.process_time())
    return {"steps_per_s": _rate(times, args.warmup), "steps_per_cpu_s": _rate(cpu, args.warmup), "peak_mb": peak_memory_mb()}


def _rate(times: list[float], warmup: int) -> float:
    timed = times[warmup:]
    if len(timed) < 2:
        return float("nan")
    return (len(timed) - 1) / (timed[-1] - timed[0])


def compare(args, model: str, root: Path, resolution: int) -> dict:
    """`--repeats` rounds of runs, alternating which goes first (ABBA...): a slow spell of a shared
    machine hits both alike. Each `--variant` is one more lorastudio run per round, measured against
    the same plain run. Steps/s: the median of each side; ratios: lorastudio / plain (> 1: faster)."""
    sides = {"lorastudio": list(args.set), **{f"lorastudio+{v}": [*args.set, v] for v in args.variant}}
    samples: dict[str, list[dict]] = {name: [] for name in (*sides, "plain")}
    data = make_images(root / f"data-{resolution}", args.images, resolution)
    for repeat in range(args.repeats):
        order = (*sides, "plain") if repeat % 2 == 0 else ("plain", *sides)
        for name in order:
            which = "plain" if name == "plain" else "lorastudio"
            cmd = [sys.executable, __file__, "--which", which, "--model", model, "--data", str(data),
                   "--workspace", str(root / "studio"), "--resolution", str(resolution), "--rank", str(args.rank),
                   "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
                   *(f"--set={setting}" for setting in sides.get(name, []))]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            samples[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    results = {
        name: {
            "steps_per_s": statistics.median(r["steps_per_s"] for r in runs),
            "steps_per_cpu_s": statistics.median(r["steps_per_cpu_s"] for r in runs),
            "peak_mb": max(r["peak_mb"] for r in runs),
            "all_steps_per_s": [round(r["steps_per_s"], 4) for r in runs],
        }
        for name, runs in samples.items()
    }
    plain = results["plain"]
    row: dict = {"model": model, "resolution": resolution, "plain": plain, "sides": {}}
    for name in sides:
        mine = results[name]
        # Steps per CPU-second (all threads): on a CPU shared with other work, wall time counts the
        # waits for a core; the CPU time a step needs does not, which is what "overhead" asks about.
        row["sides"][name] = {
            **mine,
            "speed_ratio": mine["steps_per_s"] / plain["steps_per_s"],
            "cpu_speed_ratio": mine["steps_per_cpu_s"] / plain["steps_per_cpu_s"],
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny-sd15")
    parser.add_argument("--resolution", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--resolutions", default="64", help="comma list of square sizes (px), e.g. 64,256")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of runs (lorastudio, its variants, plain), alternating which goes first")
    parser.add_argument("--shapes", default="", help="comma list of sd15,sdxl random-weight models")
    parser.add_argument("--models-dir", default=None, help="keep the random-weight models here between runs")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a training setting for lorastudio's run only, e.g. train.gradient_checkpointing=true (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--variant", action="append", default=[], metavar="KEY=VALUE",
        help="one more lorastudio run per round with this setting too, against the same plain run (repeatable)",
    )  # fmt: skip
    parser.add_argument("--which", choices=["lorastudio", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.which:
        runner = run_lorastudio if args.which == "lorastudio" else run_plain
        print(json.dumps(runner(args)))
        return
    resolutions = [int(r) for r in args.resolutions.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shapes_dir = Path(args.models_dir).expanduser() if args.models_dir else root / "models"
        models = ([args.model] if args.model else []) + [str(random_model(s, shapes_dir)) for s in args.shapes.split(",") if s]
        rows = [compare(args, model, root, r) for model in models for r in resolutions]
    for row in rows:
        print(json.dumps(row))
        plain = row["plain"]
        for name, side in row["sides"].items():
            settings = [*args.set, name.partition("+")[2]] if "+" in name else list(args.set)
            print(
                f"{Path(row['model']).name} {row['resolution']} px (median of {args.repeats})"
                f"{' with ' + ', '.join(s for s in settings if s) if any(settings) else ''}: "
                f"lorastudio {side['steps_per_s']:.2f} steps/s ({side['peak_mb']:.0f} MB) "
                f"vs plain {plain['steps_per_s']:.2f} steps/s ({plain['peak_mb']:.0f} MB); "
                f"ratio {side['speed_ratio']:.2f} (per CPU-second {side['cpu_speed_ratio']:.3f})"
            )


if __name__ == "__main__":
    main()
