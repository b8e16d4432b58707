"""Training benchmark: lorastudio's trainer against a plain diffusers + peft LoRA loop.

    .venv/bin/python benchmarks/train.py [--model tiny-sd15] [--resolutions 64] [--rank 8]
                                         [--batch 4] [--steps 30] [--shapes sd15,sdxl] [--repeats 3]
    .venv/bin/python benchmarks/train.py --shapes sd15 --resolutions 64,256 --batch 1 \
                                         --steps 5 --warmup 1 --models-dir ~/.cache/lorastudio-bench
    .venv/bin/python benchmarks/train.py --variant train.gradient_checkpointing=true   # a second setting

Both loops train the same model, resolution, rank, batch and target layers (every Linear /
1x1 conv in the transformer blocks) on the same synthetic images, with latents and text
embeddings computed once up front, the gradient norm clipped to 1 (lorastudio's default and
diffusers' train_text_to_image_lora's). On a CPU (`--mode interleaved`, the default there)
both loops run in one process, a plain step after each of lorastudio's, so a shared machine's
slow spells hit both alike; on a GPU (`--mode processes`) each runs in its own process so peak
memory (CUDA max allocated, else peak RSS) is its own and nothing syncs between lorastudio's
steps. Steps/s skips the first `--warmup` steps.
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


def _train_lorastudio(args, on_event) -> None:
    from lorastudio.service.training import run_training
    from lorastudio.service.workspace import Workspace
    from lorastudio.train.config import load_train_config

    ws = Workspace.open(args.workspace)
    cfg = load_train_config(
        overrides=[
            f"model={args.model}", f"data.dir={args.data}", f"train.resolution={args.resolution}",
            f"train.steps={args.steps}", f"train.batch_size={args.batch}", f"lora.rank={args.rank}",
            f"lora.alpha={args.rank}", "train.save_every_steps=1000000", "lora.targets=kohya",
            f"output.name=bench-{os.getpid()}", *args.set,
        ]
    )  # fmt: skip
    run_training(ws, cfg, callback=on_event, progress=False)


def run_lorastudio(args) -> dict:
    times: list[float] = []
    cpu: list[float] = []

    def on_event(event: dict) -> None:
        if event.get("event") == "step":
            times.append(time.perf_counter())
            cpu.append(time.process_time())

    _train_lorastudio(args, on_event)
    return {"steps_per_s": _rate(times, args.warmup), "steps_per_cpu_s": _rate(cpu, args.warmup), "peak_mb": peak_memory_mb()}


class PlainLoop:
    """The reference: a minimal diffusers + peft LoRA loop, as in diffusers' train_text_to_image_lora.

    Set up once (model, adapter, cached latents and prompt embedding), then one `step()` at a time,
    so the interleaved mode can run a plain step between two of lorastudio's."""

    def __init__(self, args) -> None:
        import torch
        from diffusers import DDPMScheduler, DiffusionPipeline
        from peft import LoraConfig
        from PIL import Image

        from lorastudio.models.loading import pick_device, resolve_model
        from lorastudio.service.workspace import Workspace

        ws = Workspace.open(args.workspace)
        self.device, self.dtype = device, dtype = pick_device(None)
        self.batch, self.resolution = args.batch, args.resolution
        folder = resolve_model(args.model, ws.models).path
        pipe = DiffusionPipeline.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
            if module is not None:
                module.to(device).requires_grad_(False)
        torch.manual_seed(0)
        pipe.unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=PEFT_TARGETS))
        self.params = [p for p in pipe.unet.parameters() if p.requires_grad]
        for p in self.params:
            p.data = p.data.float()
        self.sdxl = hasattr(pipe, "text_encoder_2")
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
            self.latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
            if self.sdxl:
                self.embeds, _, self.pooled, _ = pipe.encode_prompt(
                    "bench", device=device, do_classifier_free_guidance=False
                )
            else:
                self.embeds, _ = pipe.encode_prompt("bench", device, 1, False)
        self.unet = pipe.unet
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4)
        self.done = 0

    def step(self) -> None:
        import torch
        import torch.nn.functional as F

        device, dtype, size = self.device, self.dtype, self.batch
        pick = torch.arange(self.done * size, (self.done + 1) * size) % len(self.latents)
        batch = self.latents[pick].float()
        noise = torch.randn_like(batch)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (size,), device=device)
        noisy = self.scheduler.add_noise(batch, noise, t)
        kwargs = {}
        if self.sdxl:
            px = float(self.resolution)
            time_ids = torch.tensor([[px, px, 0, 0, px, px]] * size, device=device, dtype=dtype)
            kwargs["added_cond_kwargs"] = {"text_embeds": self.pooled.expand(size, -1), "time_ids": time_ids}
        with torch.enable_grad():
            with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32):
                pred = self.unet(noisy.to(dtype), t, encoder_hidden_states=self.embeds.expand(size, -1, -1), **kwargs).sample
            loss = F.mse_loss(pred.float(), noise)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        self.done += 1


def run_plain(args) -> dict:
    loop = PlainLoop(args)
    times, cpu = [], []
    for _ in range(args.steps):
        loop.step()
        times.append(time.perf_counter())
        cpu.append(time.process_time())
    return {"steps_per_s": _rate(times, args.warmup), "steps_per_cpu_s": _rate(cpu, args.warmup), "peak_mb": peak_memory_mb()}


def run_interleaved(args) -> dict:
    """Both loops in this one process, a plain step after each of lorastudio's.

    A shared CPU slows or speeds whole minutes at a time; two steps a second apart see the same
    machine, so the ratio of their sums resolves what separate runs cannot. lorastudio's step =
    from the end of the previous plain step to its next `step` event (its bookkeeping included)."""
    plain = PlainLoop(args)
    mine: dict[str, list[float]] = {"wall": [], "cpu": []}
    theirs: dict[str, list[float]] = {"wall": [], "cpu": []}
    resumed: dict[str, float] = {}

    def clocks() -> dict[str, float]:
        return {"wall": time.perf_counter(), "cpu": time.process_time()}

    def plain_step_between(event: dict) -> None:
        if event.get("event") != "step":
            return
        now = clocks()
        if resumed:  # the first step's interval would include lorastudio's model load
            for key in mine:
                mine[key].append(now[key] - resumed[key])
        plain.step()
        after = clocks()
        for key in theirs:
            theirs[key].append(after[key] - now[key])
        resumed.update(clocks())

    _train_lorastudio(args, plain_step_between)
    # lorastudio's list starts at its second step; the plain loop's at its first: both skip the
    # same steps, and at least each one's first (a cold step would flatter the other side).
    first = max(args.warmup, 1)
    mine = {key: values[first - 1 :] for key, values in mine.items()}
    theirs = {key: values[first:][: len(mine["wall"])] for key, values in theirs.items()}
    pairs = [p / m for m, p in zip(mine["wall"], theirs["wall"], strict=True)]

    def per_s(values: list[float]) -> float:
        return len(values) / sum(values) if values else float("nan")

    return {
        "lorastudio": {"steps_per_s": per_s(mine["wall"]), "steps_per_cpu_s": per_s(mine["cpu"])},
        "plain": {"steps_per_s": per_s(theirs["wall"]), "steps_per_cpu_s": per_s(theirs["cpu"])},
        "pair_ratios": [round(r, 4) for r in pairs],
        "peak_mb": peak_memory_mb(),
    }


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
    if args.mode == "interleaved":
        return compare_interleaved(args, model, root, resolution, data, sides)
    for repeat in range(args.repeats):
        order = (*sides, "plain") if repeat % 2 == 0 else ("plain", *sides)
        for name in order:
            which = "plain" if name == "plain" else "lorastudio"
            samples[name].append(_child(args, which, model, root, resolution, data, sides.get(name, [])))
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


def _child(args, which: str, model: str, root: Path, resolution: int, data: Path, settings: list[str]) -> dict:
    """One measurement in a fresh process (its own peak memory, no state left by the other path)."""
    cmd = [sys.executable, __file__, "--which", which, "--model", model, "--data", str(data),
           "--workspace", str(root / "studio"), "--resolution", str(resolution), "--rank", str(args.rank),
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           *(f"--set={setting}" for setting in settings)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{which} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_interleaved(args, model: str, root: Path, resolution: int, data: Path, sides: dict) -> dict:
    """`--repeats` processes per side, each running both loops step by step (`run_interleaved`).
    Ratios: the median over runs of lorastudio's steps/s over the plain loop's in the same run."""
    row: dict = {"model": model, "resolution": resolution, "mode": "interleaved", "sides": {}}
    for name, settings in sides.items():
        runs = [_child(args, "interleaved", model, root, resolution, data, settings) for _ in range(args.repeats)]
        side = {
            key: statistics.median(r["lorastudio"][key] for r in runs) for key in ("steps_per_s", "steps_per_cpu_s")
        }
        plain = {key: statistics.median(r["plain"][key] for r in runs) for key in ("steps_per_s", "steps_per_cpu_s")}
        row["sides"][name] = {
            **side,
            "plain_steps_per_s": plain["steps_per_s"],
            "peak_mb": max(r["peak_mb"] for r in runs),
            "speed_ratio": statistics.median(r["lorastudio"]["steps_per_s"] / r["plain"]["steps_per_s"] for r in runs),
            "cpu_speed_ratio": statistics.median(
                r["lorastudio"]["steps_per_cpu_s"] / r["plain"]["steps_per_cpu_s"] for r in runs
            ),
            "median_pair_ratio": statistics.median(x for r in runs for x in r["pair_ratios"]),
            "all_speed_ratios": [round(r["lorastudio"]["steps_per_s"] / r["plain"]["steps_per_s"], 4) for r in runs],
        }
        row.setdefault("plain", {"steps_per_s": plain["steps_per_s"], "peak_mb": float("nan")})
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
    parser.add_argument(
        "--mode", choices=["auto", "interleaved", "processes"], default="auto",
        help="interleaved: both loops in one process, a plain step after each of lorastudio's (resolves a "
        "few %% on a shared CPU; peak memory is the two together); processes: each loop in its own process "
        "(peak memory each, no sync between steps: the GPU question). auto: processes on a GPU, else interleaved",
    )  # fmt: skip
    parser.add_argument("--which", choices=["lorastudio", "plain", "interleaved"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.which:
        runners = {"lorastudio": run_lorastudio, "plain": run_plain, "interleaved": run_interleaved}
        print(json.dumps(runners[args.which](args)))
        return
    import torch

    if args.mode == "auto":
        args.mode = "processes" if torch.cuda.is_available() else "interleaved"
    elif args.mode == "interleaved" and torch.cuda.is_available():
        # lorastudio reads each step's loss a step late (no host sync): its step events do not mark
        # when a step ended on the GPU, so steps cannot be timed one by one there.
        raise SystemExit("--mode interleaved times steps on a CPU only; use --mode processes on a GPU.")
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
                f"lorastudio {side['steps_per_s']:.3f} steps/s vs plain "
                f"{side.get('plain_steps_per_s', plain['steps_per_s']):.3f} steps/s; "
                f"ratio {side['speed_ratio']:.3f} (per CPU-second {side['cpu_speed_ratio']:.3f})"
                + (
                    f"; interleaved in one process, peak {side['peak_mb']:.0f} MB for both"
                    if row.get("mode") == "interleaved"
                    else f"; peak {side['peak_mb']:.0f} MB vs {plain['peak_mb']:.0f} MB"
                )
            )


if __name__ == "__main__":
    main()
