"""`lorastudio generate`: txt2img, img2img, inpainting, hires fix, prompt series, recipes."""

from __future__ import annotations

from pathlib import Path

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace


def progress_bar(desc: str):
    """A tqdm bar with ETA on stderr, fed by a (done, total) callback; created on first use."""
    from tqdm import tqdm

    state: dict = {}

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)
        bar.total = max(total, done)
        bar.n = done
        bar.refresh()

    class _Closer:
        def close(self) -> None:
            if "bar" in state:
                state["bar"].close()

    return _Closer(), update


@app.command("generate")
def generate_cmd(
    model: str = typer.Option(None, "--model", help="Model name, path or hub id (default tiny-sd15)."),
    prompt: str = typer.Option(None, "--prompt", "-p", help="Prompt (A1111 syntax, <lora:name:w> allowed)."),
    negative: str = typer.Option(None, "--negative", "-n", help="Negative prompt."),
    steps: int = typer.Option(None, "--steps"),
    cfg: float = typer.Option(None, "--cfg", help="CFG scale."),
    sampler: str = typer.Option(
        None, "--sampler", help="e.g. 'Euler a', 'DPM++ 2M Karras', 'DDIM', 'UniPC'."
    ),
    schedule: str = typer.Option(
        None, "--schedule", help="Schedule type: Automatic, Karras, Exponential, SGM Uniform."
    ),
    seed: int = typer.Option(None, "--seed", help="-1 = random."),
    subseed: int = typer.Option(None, "--subseed", help="Variation seed (-1 = random)."),
    subseed_strength: float = typer.Option(
        None, "--subseed-strength", help="0..1: how far to move towards the variation seed (0 = off)."
    ),
    seed_resize_from_w: int = typer.Option(
        None, "--seed-resize-from-w", help="Make the noise as for this width (with -h; 0 = off)."
    ),
    seed_resize_from_h: int = typer.Option(
        None, "--seed-resize-from-h", help="Make the noise as for this height (with -w; 0 = off)."
    ),
    width: int = typer.Option(None, "--width"),
    height: int = typer.Option(None, "--height"),
    batch: int = typer.Option(None, "--batch", help="Images per batch."),
    count: int = typer.Option(None, "--count", help="Number of batches."),
    clip_skip: int = typer.Option(None, "--clip-skip"),
    init_image: str = typer.Option(None, "--init-image", help="img2img / inpaint source."),
    strength: float = typer.Option(None, "--strength", help="img2img denoising strength."),
    resize_mode: int = typer.Option(
        None,
        "--resize-mode",
        help="Init image of another aspect: 0 just resize, 1 crop and resize, 2 resize and fill, "
        "3 latent upscale.",
    ),
    mask: str = typer.Option(None, "--mask", help="Inpainting mask (white = repaint)."),
    mask_blur: int = typer.Option(None, "--mask-blur"),
    inpainting_fill: int = typer.Option(
        None,
        "--inpainting-fill",
        help="Masked content: 0 fill, 1 original (default), 2 latent noise, 3 latent nothing.",
    ),
    only_masked: bool = typer.Option(None, "--only-masked/--whole-picture", help="Inpaint area."),
    padding: int = typer.Option(None, "--padding", help="Only-masked padding in pixels."),
    hires_scale: float = typer.Option(None, "--hires-scale", help="Hires fix factor (>1 enables)."),
    hires_steps: int = typer.Option(None, "--hires-steps"),
    hires_strength: float = typer.Option(None, "--hires-strength"),
    hires_upscaler: str = typer.Option(None, "--hires-upscaler", help="Latent or Lanczos."),
    vae: str = typer.Option(None, "--vae", help="Separate VAE file or folder."),
    device: str = typer.Option(None, "--device", help="cuda, cuda:N or cpu."),
    prompts: Path = typer.Option(
        None, "--prompts", help="Prompt-list file (.txt lines or .yaml) for a series."
    ),
    seed_policy: str = typer.Option(
        "fixed", "--seed-policy", help="Series seeds: fixed, increment or random."
    ),
    recipe: Path = typer.Option(None, "--recipe", help="Reproduce an image from its .yaml recipe or PNG."),
    out: Path = typer.Option(None, "--out", help="Output folder (default studio/outputs/<date>)."),
    json_out: bool = typer.Option(
        False, "--json", help="Print one JSON object with paths, seeds and hashes."
    ),
) -> None:
    """Generate images; each PNG carries A1111 parameters and a .yaml recipe beside it."""
    from lorastudio.service.generation import config_from_recipe, run_generation, run_series
    from lorastudio.service.names import LENIENT  # the CLI runs as the user: local paths are fine

    ws = workspace()
    given = {
        "model": model,
        "prompt": prompt,
        "negative_prompt": negative,
        "steps": steps,
        "cfg_scale": cfg,
        "sampler": sampler,
        "schedule": schedule,
        "seed": seed,
        "subseed": subseed,
        "subseed_strength": subseed_strength,
        "seed_resize_from_w": seed_resize_from_w,
        "seed_resize_from_h": seed_resize_from_h,
        "width": width,
        "height": height,
        "batch_size": batch,
        "count": count,
        "clip_skip": clip_skip,
        "init_image": init_image,
        "strength": strength,
        "resize_mode": resize_mode,
        "mask": mask,
        "mask_blur": mask_blur,
        "inpainting_fill": inpainting_fill,
        "inpaint_only_masked": only_masked,
        "inpaint_padding": padding,
        "hires_scale": hires_scale,
        "hires_steps": hires_steps,
        "hires_strength": hires_strength,
        "hires_upscaler": hires_upscaler,
        "vae": vae,
        "device": device,
    }
    overrides = {k: v for k, v in given.items() if v is not None}
    bar, update = progress_bar("generate")
    try:
        if prompts is not None:
            result = run_series(ws, overrides, prompts, seed_policy, progress=update, out_dir=out, names=LENIENT)
        else:
            from lorastudio.config import load_config
            from lorastudio.generate.config import GenerateConfig

            base = config_from_recipe(recipe, ws).model_dump() if recipe else None
            request = load_config(GenerateConfig, None, overrides, base=base)
            result = run_generation(ws, request, progress=update, out_dir=out, names=LENIENT)
    finally:
        bar.close()
    if json_out:
        print_json(result.as_json())
        return
    for image in result.images:
        typer.echo(f"{image.path}  (seed {image.seed})")
    sheet = getattr(result, "contact_sheet", None)
    if sheet:
        typer.echo(f"contact sheet: {sheet}")
