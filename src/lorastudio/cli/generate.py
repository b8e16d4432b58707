"""`lorastudio generate`: txt2img, img2img, inpainting, hires fix, prompt series, recipes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace
from lorastudio.cli.options import config_options
from lorastudio.generate.config import GenerateConfig

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def progress_bar(desc: str) -> tuple[Any, Callable[[int, int], None]]:
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
@config_options(GenerateConfig, exclude=("controlnet",))  # units: --control below
def generate_cmd(
    prompts: Path = typer.Option(
        None, "--prompts", help="Prompt-list file (.txt lines or .yaml) for a series."
    ),
    seed_policy: str = typer.Option(
        "fixed", "--seed-policy", help="Series seeds: fixed, increment or random."
    ),
    recipe: Path = typer.Option(None, "--recipe", help="Reproduce an image from its .yaml recipe or PNG, or read an HCP-Diffusion infer .yaml."),
    out: Path = typer.Option(None, "--out", help="Output folder (default studio/outputs/<date>)."),
    json_out: bool = typer.Option(
        False, "--json", help="Print one JSON object with paths, seeds and hashes."
    ),
    controlnet: list[str] = typer.Option(
        None,
        "--control",
        help="A ControlNet unit as KEY=VALUE pairs, e.g. 'model=NAME,module=canny,image=PATH,weight=0.8,"
        "guidance_end=0.6' (repeat for up to 3 units; keys: the unit fields).",
    ),
    style: list[str] = typer.Option(
        None, "--style", help="A1111 prompt style from studio/styles.csv merged into the prompts (repeatable)."
    ),
    fields: dict | None = None,
) -> None:
    """Generate images; each PNG carries A1111 parameters and a .yaml recipe beside it.

    Every generation option (--steps, --sampler, --eta, ...) comes from GenerateConfig.
    """
    from lorastudio.service.generation import run_generation, run_series
    from lorastudio.service.names import LENIENT  # the CLI runs as the user: local paths are fine
    from lorastudio.service.recipes import read_recipe

    ws = workspace()
    overrides = dict(fields or {})
    if controlnet:
        from lorastudio.service.control import parse_control_option

        overrides["controlnet"] = [parse_control_option(text) for text in controlnet]
    bar, update = progress_bar("generate")
    try:
        if prompts is not None:
            result = run_series(
                ws, overrides, prompts, seed_policy, progress=update, out_dir=out, names=LENIENT, styles=list(style or [])
            )
        else:
            from lorastudio.config import load_config

            base, replay = None, None
            if recipe:  # --model picks the model where the image's is not here (or not named)
                read = read_recipe(recipe, ws, model=overrides.get("model"), given=overrides)
                for note in read.notes:  # what will not come back the same
                    typer.echo(f"recipe: {note.text}", err=True)
                base, replay = read.config.model_dump(), read.replay
            request = load_config(GenerateConfig, None, overrides, base=base)
            if style:  # merged into the prompts the image records, as A1111 does (once: a recipe's hold theirs)
                from lorastudio.service.styles import apply_styles, hires_styled

                merged = recipe is not None
                prompt, negative = apply_styles(ws, request.prompt, request.negative_prompt, list(style), merged)
                hires = hires_styled(ws, request.model_dump(), list(style), merged)
                request = request.model_copy(update={"prompt": prompt, "negative_prompt": negative, **hires})
            result = run_generation(ws, request, progress=update, out_dir=out, names=LENIENT, replay=replay)
    finally:
        bar.close()
    if json_out:
        print_json(result.as_json())
        return
    for image in result.images:
        typer.echo(f"{image.path}  (seed {image.seed})")
    for note in result.as_json()["notes"]:  # asked for and not done, or read otherwise (HCP's `{word:1.2}`)
        typer.echo(f"note: {note}", err=True)
    sheet = getattr(result, "contact_sheet", None)
    if sheet:
        typer.echo(f"contact sheet: {sheet}")
