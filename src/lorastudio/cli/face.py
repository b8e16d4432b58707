"""`lorastudio face detect | compare | backends`: faces, identities and the face backends to pick from."""

from __future__ import annotations

from pathlib import Path

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace

face_app = typer.Typer(
    help="Faces: detect boxes and 5 points, compare identities, list the face backends (dlib or your own ONNX).",
    no_args_is_help=True,
)
app.add_typer(face_app, name="face")

BACKEND_HELP = "Face backend: 'dlib' (default) or a folder name in studio/models/faces (`lorastudio face backends`)."


@face_app.command("detect")
def detect_cmd(
    image: Path = typer.Argument(..., help="The photo (PNG, JPEG or WebP)."),
    backend: str | None = typer.Option(None, "--backend", "-b", help=BACKEND_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Faces in IMAGE, left to right: box, 5 points (image-left eye first), score."""
    from lorastudio.service.faces import detect_report

    report = detect_report(workspace(), image, backend)
    if json_out:
        print_json(report)
        return
    if not report["faces"]:
        typer.echo(f"{image}: no face found ({report['backend']}).")
    for index, face in enumerate(report["faces"]):
        x0, y0, x1, y1 = face["box"]
        typer.echo(f"face {index}: box {x0:.0f},{y0:.0f},{x1:.0f},{y1:.0f}  size {face['size']:.0f} px  "
                   f"roll {face['roll_degrees']:+.1f} deg  score {face['score']:.2f}")  # fmt: skip


@face_app.command("compare")
def compare_cmd(
    first: Path = typer.Argument(..., help="The first photo."),
    second: Path = typer.Argument(..., help="The second photo."),
    backend: str | None = typer.Option(None, "--backend", "-b", help=BACKEND_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Identity distance between the largest face in each photo, and whether it is the same person."""
    from lorastudio.service.faces import compare_faces

    result = compare_faces(workspace(), first, second, backend)
    if json_out:
        print_json(result)
        return
    verdict = "same person" if result["same_person"] else "different people"
    typer.echo(f"{verdict}: distance {result['distance']:.3f} ({result['metric']}, threshold {result['threshold']:.3f}, {result['backend']})")


@face_app.command("backends")
def backends_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The face backends: dlib (weights from PyPI) and each folder in studio/models/faces, with the weights' licence."""
    from lorastudio.service.faces import faces_folder, list_backends

    ws = workspace()
    rows = list_backends(ws)
    if json_out:
        print_json({"backends": rows, "folder": str(faces_folder(ws))})
        return
    for row in rows:
        state = f"error: {row['error']}" if row["error"] else f"ready (threshold {row['threshold']})"
        default = " (default)" if row["default"] else ""
        typer.echo(f"{row['name']}{default} [{row['kind'] or 'unknown'}]: {state}")
        if row["licence"]:
            typer.echo(f"    licence: {row['licence']}")
    if len(rows) == 1:
        typer.echo(f"bring your own weights: a folder in {faces_folder(ws)} with YuNet + SFace ONNX files, "
                   "or an insightface pack (buffalo_l, antelopev2).")  # fmt: skip
