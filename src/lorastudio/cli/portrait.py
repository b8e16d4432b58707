"""`lorastudio portrait` verbs: train a person's LoRA from their photos (and, from helper
modules, make portraits from templates).

The group `portrait_app` is shared: other modules add their commands to it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace

portrait_app = typer.Typer(
    help="Personal portraits (EasyPhoto's workflow, offline): train a person, make portraits from templates.",
    no_args_is_help=True,
)
app.add_typer(portrait_app, name="portrait")


@portrait_app.command("train")
def train_cmd(
    photos: Path = typer.Option(..., "--photos", help="Folder with 5-20 photos of the person (one face each)."),
    name: str = typer.Option(..., "--name", help="The person's name: data set, LoRA and registry entry."),
    base: str = typer.Option(None, "--base", help="Base model (default: the workspace's default model)."),
    trigger: str = typer.Option(None, "--trigger", help="Word that calls the person in prompts (default: the name)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Training steps (default: the portrait preset's 800)."),
    white_background: bool = typer.Option(
        False, "--white-background", help="Put the person over a white background in every photo."
    ),
    skin_retouch: bool = typer.Option(
        True, "--skin-retouch/--no-skin-retouch", help="Retouch each crop's skin before training (EasyPhoto's default)."
    ),
    retouch_strength: float = typer.Option(
        None, "--skin-retouch-strength", min=0, max=1, help="Skin retouch strength 0..1 (default 0.7)."
    ),
    face_backend: str = typer.Option(
        None, "--face-backend", help="Face backend (a folder in studio/models/faces; default: dlib)."
    ),
    settings: list[str] = typer.Option(
        None, "--set", help="A training setting key=value on top of the portrait preset; repeatable."
    ),
    device: str = typer.Option(None, "--device", help="cuda or cpu (default: cuda when present)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the outcome."),
) -> None:
    """Train a person's LoRA from their photos; the best checkpoint by face identity is kept."""
    from lorastudio.service.portraits import PortraitTrainConfig, list_photos, train_person

    strength = {} if retouch_strength is None else {"skin_retouch_strength": retouch_strength}
    cfg = PortraitTrainConfig(
        name=name, base=base or "", trigger=trigger or "", steps=steps, white_background=white_background,
        face_backend=face_backend or "", skin_retouch=skin_retouch, **strength,
    )  # fmt: skip
    bar = _PhotoBar()
    try:
        result = train_person(
            workspace(), cfg, list_photos(photos), overrides=settings or [], callback=bar, device=device
        )
    finally:
        bar.close()
    if as_json:
        print_json(result)
        return
    for file in result["kept"]:
        typer.echo(f"kept     {file}{'  (reference)' if file == result['reference'] else ''}")
    for file, reason in result["left_out"].items():
        typer.echo(f"left out {file}: {reason}")
    typer.echo(f"data set: {result['dataset']}")
    for step, score in (result.get("identity") or {}).items():
        typer.echo(f"step {step:>6}: face identity {score:.3f}{'  <- best' if step == result.get('best_step') else ''}")
    if result.get("best_step") is not None:
        identity = list((result.get("identity") or {}).values())
        how = result.get("decided_by")
        if len(identity) > 1 and len(set(identity)) == 1:
            how = "the next scorer (face identity tied: no checkpoint drew the face yet)"
        typer.echo(f"best checkpoint: step {result['best_step']} by {how} ({result.get('scores')})")
    typer.echo(f"lora: {result.get('library_lora')}  (trigger: {result['trigger']})")


@portrait_app.command("people")
def people_cmd(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """The trained people: name, trigger, LoRA and photo count."""
    from lorastudio.service.portraits import list_people

    rows = list_people(workspace())
    if as_json:
        print_json({"people": rows})
        return
    if not rows:
        typer.echo("no people yet: `lorastudio portrait train --photos DIR --name NAME` trains one.")
    for row in rows:
        lora = row["lora"] or "(not trained yet)"
        typer.echo(f"{row['name']:<20} trigger {row['trigger']:<16} {row['photos']:>3} photos  {lora}")


class _PhotoBar:
    """A tqdm bar (with ETA) on stderr while photos are checked; the training draws its own."""

    def __init__(self):
        self.bar = None

    def __call__(self, event: dict) -> None:
        if event.get("event") != "photo":
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=event["total"], desc="photos", unit="photo", leave=False)
        self.bar.n = event["done"]
        self.bar.set_postfix_str(event["file"], refresh=True)
        if event["done"] >= event["total"]:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
