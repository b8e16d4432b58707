"""The built-in tiny models (`tiny-sd15`, `tiny-sd2`, `tiny-sdxl`, `tiny-kolors`): real class layout, a few MB.

They make no art. They exist so tests and the demo exercise every mechanism (tokenizer,
text encoders, UNet blocks, VAE, LoRA keys, single-file export) in seconds on a CPU.
Here each model is built offline into a diffusers folder, once, from a seed; the layouts are
`models.tiny_layouts`, and `models.tiny_colours` makes colours survive an encode/decode round
trip and teaches the UNet colour words, so "a LoRA trained on red images makes outputs redder"
can be measured in pixels. Everything is seeded: the same versions build the same weights.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lorastudio.models.tiny_colours import (
    COLOUR_WORDS,
    make_colour_passthrough,
    pretrain_unet_on_colours,
    train_colour_denoiser,
)
from lorastudio.models.tiny_layouts import (
    SCHEDULER_SD,
    TINY_SIZE,
    clip_like,
    clip_text_config,
    make_unet_sd2,
    make_unet_sd15,
    make_unet_sdxl,
    make_vae,
)
from lorastudio.models.tiny_widths import SD2_TEXT_WIDTH, SD15_WIDTH
from lorastudio.models.tokenizer import write_clip_tokenizer

__all__ = [
    "TINY_MODELS",
    "TINY_FAMILIES",
    "build_tiny_model",
    "ensure_tiny_model",
    "ensure_tiny_models",
    "is_tiny_name",
]

# tiny name -> the family (models/families) whose layout it copies
TINY_FAMILIES = {"tiny-sd15": "sd15", "tiny-sd2": "sd2", "tiny-sdxl": "sdxl", "tiny-kolors": "kolors"}
TINY_MODELS = tuple(TINY_FAMILIES)
BUILD_VERSION = 8  # bump when the recipe changes, so cached copies are rebuilt
# Fewer colour-pretraining steps than tiny-sd15's 300 keep the session's build short; the
# UNet still learns the colour words (tests/test_sd2.py measures it).
_SD2_PRETRAIN_STEPS = 220


def is_tiny_name(name: str) -> bool:
    return name in TINY_FAMILIES


def build_tiny_model(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Build a tiny model as a diffusers folder (weights + configs + tokenizers)."""

    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Writing model shards" bars per component
    with single_threaded_torch():  # also: the same weights on every machine (threads change float sums)
        return _build(name, folder, seed)


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Torch on one thread inside the block: tiny models' operations gain nothing from a second, and
    on a busy 2-core machine two OpenMP threads made a tiny training step up to 28x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _build(name: str, folder: Path, seed: int) -> Path:
    import torch

    builders = {"tiny-sd15": _build_sd15, "tiny-sd2": _build_sd2, "tiny-sdxl": _build_sdxl, "tiny-kolors": _build_kolors}
    with torch.random.fork_rng(), tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        torch.manual_seed(seed)
        work = Path(tmp) / "model"
        vae = make_vae()
        vae.register_to_config(scaling_factor=make_colour_passthrough(vae, seed=seed))
        vae.save_pretrained(work / "vae")
        torch.manual_seed(seed + 1)
        index = builders[name](work, vae, seed)
        (work / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        info = {"family": TINY_FAMILIES[name], "tiny": name, "build_version": BUILD_VERSION, "seed": seed}
        (work / "lorastudio.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)  # appears complete or not at all
    return folder


def _model_index(head: dict, scheduler, tail: dict) -> dict:
    """model_index.json in the order diffusers writes it for real checkpoints of the family."""
    shared = {
        "scheduler": ["diffusers", type(scheduler).__name__],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    return {**head, **shared, **tail}


def _build_one_encoder_model(
    work: Path, vae, unet, encoder, pad_token: str, scheduler, seed: int, steps: int
) -> dict:
    """SD 1.x and 2.x: one tokenizer and text encoder, a StableDiffusionPipeline folder."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer(work / "tokenizer", pad_token=pad_token)
    tokenizers = [CLIPTokenizer.from_pretrained(work / "tokenizer")]
    pretrain_unet_on_colours(
        unet, vae, tokenizers, [encoder], SCHEDULER_SD, sdxl=False, steps=steps, seed=seed
    )
    unet.save_pretrained(work / "unet")
    encoder.save_pretrained(work / "text_encoder")
    scheduler.save_pretrained(work / "scheduler")
    head = {
        "_class_name": "StableDiffusionPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    # SD 2.x folders, like SD 1.x ones saved without the checker, have no safety checker.
    tail = {
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "image_encoder": [None, None],
    }
    return _model_index(head, scheduler, tail)


def _build_sd15(work: Path, vae, seed: int) -> dict:
    from diffusers import PNDMScheduler
    from transformers import CLIPTextModel

    unet = make_unet_sd15()
    encoder = clip_like(CLIPTextModel(clip_text_config(SD15_WIDTH, SD15_WIDTH, "quick_gelu")), seed)
    scheduler = PNDMScheduler.from_config(SCHEDULER_SD)
    return _build_one_encoder_model(work, vae, unet, encoder, "<|endoftext|>", scheduler, seed, 300)


def _build_sd2(work: Path, vae, seed: int) -> dict:
    """SD 2.x: OpenCLIP ViT-H text encoder as diffusers stores it (CLIPTextModel, exact GELU),
    a tokenizer that pads with "!", and SD 2.1's DDIM scheduler predicting v."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextModel

    unet = make_unet_sd2()
    config = clip_text_config(SD2_TEXT_WIDTH, SD2_TEXT_WIDTH, "gelu")
    encoder = clip_like(CLIPTextModel(config), seed)
    scheduler = DDIMScheduler.from_config({k: v for k, v in SCHEDULER_SD.items() if k != "skip_prk_steps"})
    return _build_one_encoder_model(work, vae, unet, encoder, "!", scheduler, seed, _SD2_PRETRAIN_STEPS)


def _build_sdxl(work: Path, vae, seed: int) -> dict:
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    unet = make_unet_sdxl()
    text_encoders = [
        clip_like(CLIPTextModel(clip_text_config(32, 32, "quick_gelu")), seed),
        # A different width from encoder 1, as in real SDXL (768 vs 1280): loaders
        # such as diffusers' single-file code tell the two encoders apart by width.
        clip_like(CLIPTextModelWithProjection(clip_text_config(48, 48, "gelu")), seed + 1),
    ]
    write_clip_tokenizer(work / "tokenizer", pad_token="<|endoftext|>")
    write_clip_tokenizer(work / "tokenizer_2", pad_token="!")
    tokenizers = [
        CLIPTokenizer.from_pretrained(work / "tokenizer"),
        CLIPTokenizer.from_pretrained(work / "tokenizer_2"),
    ]
    pretrain_unet_on_colours(unet, vae, tokenizers, text_encoders, SCHEDULER_SD, sdxl=True, seed=seed)
    unet.save_pretrained(work / "unet")
    text_encoders[0].save_pretrained(work / "text_encoder")
    text_encoders[1].save_pretrained(work / "text_encoder_2")
    sched = dict(SCHEDULER_SD, _class_name="EulerDiscreteScheduler")
    for key in ("set_alpha_to_one", "skip_prk_steps", "clip_sample"):
        sched.pop(key)
    scheduler = EulerDiscreteScheduler.from_config(sched)
    scheduler.save_pretrained(work / "scheduler")
    head = {
        "_class_name": "StableDiffusionXLPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "force_zeros_for_empty_prompt": True,
    }
    return _model_index(head, scheduler, {"feature_extractor": [None, None], "image_encoder": [None, None]})


def _build_kolors(work: Path, vae, seed: int) -> dict:
    """tiny-kolors (see models/tiny_kolors.py), taught the colour words like the others."""
    from lorastudio.models.tiny_kolors import build_kolors

    def pretrain(unet, context, pooled, synonyms, scheduler_config: dict, steps: int) -> None:
        train_colour_denoiser(unet, vae, context, pooled, scheduler_config, True, steps, seed, synonyms=synonyms)

    return build_kolors(work, seed, TINY_SIZE, list(COLOUR_WORDS), pretrain)


def _is_current(folder: Path) -> bool:
    marker = folder / "lorastudio.json"
    if not marker.is_file():
        return False
    return json.loads(marker.read_text(encoding="utf-8")).get("build_version") == BUILD_VERSION


def ensure_tiny_model(name: str, models_dir: str | Path) -> Path:
    """The tiny model's folder in `models_dir`, built on first use (about a minute)."""
    folder = Path(models_dir) / name
    if _is_current(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    return build_tiny_model(name, folder)


def ensure_tiny_models(names: tuple[str, ...], models_dir: str | Path, processes: int | None = None) -> Path:
    """Build every missing tiny model, one process per core (each build is single-threaded).

    The builds are independent and deterministic, so building them side by side gives the
    same files as one after another, in less time on a multi-core machine.
    """
    import os
    import subprocess
    import sys
    import time

    models_dir = Path(models_dir)
    waiting = [n for n in names if not _is_current(models_dir / n)]
    slots = max(1, min(processes or os.cpu_count() or 1, len(waiting)))
    code = (
        "import sys; from lorastudio.models.tiny import ensure_tiny_model as e; e(sys.argv[1], sys.argv[2])"
    )
    running: dict[str, subprocess.Popen] = {}
    while waiting or running:
        while waiting and len(running) < slots:
            name = waiting.pop(0)
            running[name] = subprocess.Popen([sys.executable, "-c", code, name, str(models_dir)])
        for name, process in list(running.items()):
            if process.poll() is not None:
                del running[name]
                if process.returncode != 0:
                    raise RuntimeError(
                        f"building tiny model {name!r} failed (exit code {process.returncode})."
                    )
        time.sleep(0.2)
    return models_dir
