"""`lorastudio portrait make` and `portrait templates`: a person's face painted into template photos.

Registers on the shared `portrait_app` group (cli/portrait.py). Thin: options in, service out.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lorastudio.cli.common import print_json, workspace
from lorastudio.cli.portrait import portrait_app
from lorastudio.errors import LorastudioError

templates_app = typer.Typer(help="The template library (studio/templates): photos whose faces portraits fill.", no_args_is_help=True)
portrait_app.add_typer(templates_app, name="templates")


def _face_options(texts: list[str]) -> dict[int, str]:
    """`--face 2=B` -> {2: 'B'}."""
    faces = {}
    for text in texts:
        number, sep, name = text.partition("=")
        if not sep or not number.strip().isdigit() or not name.strip():
            raise LorastudioError(f"--face {text!r}: write FACE=PERSON, e.g. --face 2=anna (faces count from 1, left to right).")
        faces[int(number)] = name.strip()
    return faces


@portrait_app.command("make")
def make_cmd(
    person: list[str] = typer.Option(None, "--person", "-p", help="Person (repeat: mapped to the faces left to right)."),
    face: list[str] = typer.Option(None, "--face", help="FACE=PERSON: the person of face FACE (1 = leftmost)."),
    template: list[str] = typer.Option(None, "--template", "-t", help="Template name (studio/templates) or photo (repeat)."),
    count: int = typer.Option(None, "--count", "-n", help="Results per template (seeds seed, seed+1, ...); default 1."),
    seed: int = typer.Option(None, "--seed", help="Seed of the first result (-1 = random)."),
    model: str = typer.Option(None, "--model", help="Base model (default: the person's)."),
    steps: int = typer.Option(None, "--steps", help="Sampling steps of each inpaint pass."),
    canny: str = typer.Option(None, "--canny", help="Canny ControlNet name ('none' = off; default: found by name)."),
    openpose: str = typer.Option(None, "--openpose", help="OpenPose ControlNet name ('none' = off; default: found by name)."),
    tile: str = typer.Option(None, "--tile", help="Tile ControlNet for pass 2 ('none' = off; default: found by name)."),
    backend: str = typer.Option(None, "--backend", help="Face backend (default: dlib)."),
    prompt: str = typer.Option(None, "--prompt", help="Prompt of each face's passes ({trigger} = the person's trigger)."),
    skin_retouch: bool = typer.Option(
        None, "--skin-retouch/--no-skin-retouch", help="Retouch each painted face's skin (default: on)."
    ),
    retouch_strength: float = typer.Option(
        None, "--skin-retouch-strength", min=0, max=1, help="Skin retouch strength 0..1 (default 0.7)."
    ),
    settings: list[str] = typer.Option(
        None, "--set", help="Any portrait setting KEY=VALUE (first_strength=0.6, lora_weight=0.8, ...); repeatable."
    ),
    device: str = typer.Option(None, "--device", help="cuda or cpu (default: cuda when present)."),
    recipe: Path = typer.Option(None, "--recipe", help="Make a portrait again from its .yaml recipe or PNG."),
    out: Path = typer.Option(None, "--out", help="Output folder (default studio/outputs/portraits/<date>)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: images, scores, seeds, faces."),
) -> None:
    """Paint each person's face into the template photos; results best identity score first."""
    from lorastudio.config import load_config
    from lorastudio.service.names import LENIENT
    from lorastudio.service.portrait_make import (
        PortraitMakeConfig,
        config_from_portrait_recipe,
        make_portraits,
    )

    given = {
        "persons": list(person or []) or None,
        "faces": _face_options(list(face or [])) or None,
        "templates": list(template or []) or None,
        "count": count, "seed": seed, "model": model, "steps": steps,
        "canny": canny, "openpose": openpose, "tile": tile, "backend": backend, "prompt": prompt, "device": device,
        "skin_retouch": skin_retouch, "skin_retouch_strength": retouch_strength,
    }  # fmt: skip
    overrides = {key: value for key, value in given.items() if value is not None}
    base = config_from_portrait_recipe(recipe).model_dump() if recipe else None
    if base is None and "templates" not in overrides:
        raise LorastudioError("portrait make: give --template IMG (or --recipe FILE); see `lorastudio portrait templates list`.")
    if settings:  # --set under the named options: `--steps 30 --set steps=10` means 30
        base = load_config(PortraitMakeConfig, None, list(settings), base={**(base or {}), **overrides}).model_dump()
    cfg = load_config(PortraitMakeConfig, None, overrides, base=base)
    result = make_portraits(workspace(), cfg, out_dir=out, names=LENIENT)
    if json_out:
        print_json(result.as_json())
        return
    for image in result.images:
        score = "n/a" if image.score is None else f"{image.score:.3f}"
        typer.echo(f"{image.path}  (template {image.template}, seed {image.seed}, score {score})")


@templates_app.command("list")
def templates_list_cmd(json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """The templates in the library with their number of faces."""
    from lorastudio.service.templates import list_templates

    rows = list_templates(workspace())
    if json_out:
        print_json({"templates": rows})
        return
    if not rows:
        typer.echo("no templates yet: `lorastudio portrait templates add FILE` copies a photo into studio/templates.")
    for row in rows:
        faces = "faces not detected yet" if row["faces"] is None else f"{row['faces']} face(s)"
        typer.echo(f"{row['name']}  {row['file']}  {faces}")


@templates_app.command("add")
def templates_add_cmd(
    file: Path = typer.Argument(..., help="Template photo (PNG, JPEG, WebP)."),
    name: str = typer.Option(None, "--name", help="Name in the library (default: the file's name)."),
    backend: str = typer.Option(None, "--backend", help="Face backend (default: dlib)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Copy a photo into the library; its faces are found and cached beside it."""
    from lorastudio.service.templates import add_template

    row = add_template(workspace(), file, name, backend)
    if json_out:
        print_json(row)
        return
    typer.echo(f"{row['name']}: {row['faces']} face(s) -> {row['path']}")


@templates_app.command("delete")
def templates_delete_cmd(
    name: str = typer.Argument(..., help="Template name."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Remove a template (and its face cache) from the library."""
    from lorastudio.service.templates import delete_template

    result = delete_template(workspace(), name)
    if json_out:
        print_json(result)
        return
    typer.echo(f"deleted {result['deleted']}")
