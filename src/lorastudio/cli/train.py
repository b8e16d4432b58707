"""`lorastudio train` verbs: start or resume a run, list presets, score and pick checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer
from typer.core import TyperCommand

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace

# `train presets|score|pick` are words of train's arguments, not subcommands (train itself takes
# key=value words), so their --help is answered here instead of train's.
WORD_HELP = {
    "presets": """Usage: lorastudio train presets [--json]

  List the training presets (YAML files you can copy and edit).

Options:
  --json  Print one JSON object.
""",
    "score": """Usage: lorastudio train score RUN [--tagger-model DIR] [--device cuda|cpu] [--json]

  Score every checkpoint of run RUN with the run's scorers (validation loss; clip_similarity with
  scoring.clip_model; tag_agreement with a tagger), mark the best in scores.json and write a contact sheet.

Options:
  --tagger-model DIR  A local WD14 tagger folder (adds tag_agreement).
  --device TEXT       cuda or cpu (default: cuda when present).
  --json              Print one JSON object: the score table.
""",
    "pick": """Usage: lorastudio train pick RUN STEP [--json]

  Make checkpoint STEP of run RUN (its folder's name, step-20, or the step, 20) the run's result:
  its files are copied into the library (loras/, embeddings/ or models/) and recorded in studio.db.

Options:
  --json  Print one JSON object with the library files.
""",
}


class _TrainCommand(TyperCommand):
    """`train score --help` (and `pick`, `presets`) prints that word's usage, not train's."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] in WORD_HELP and "--help" in args[1:]:
            typer.echo(WORD_HELP[args[0]], nl=False)
            ctx.exit(0)
        return super().parse_args(ctx, args)


@app.command("train", cls=_TrainCommand)
def train_cmd(
    overrides: list[str] = typer.Argument(
        None,
        help="key=value settings (e.g. train.steps=1000 data.dir=./imgs); or `presets`;"
        " `score RUN` to score a run's checkpoints; `pick RUN STEP` to make a checkpoint the result.",
    ),
    config: list[Path] = typer.Option(
        None, "--config", "-c", help="YAML or TOML config file; repeat to layer files (a later one wins)."
    ),
    preset: str = typer.Option(
        None, "--preset", help="Preset name (see `lorastudio train presets`) or YAML path."
    ),
    resume: str = typer.Option(None, "--resume", help="Continue run RUN from its last checkpoint."),
    num_processes: int = typer.Option(
        1, "--num-processes", help="Processes (GPUs) for data-parallel training."
    ),
    device: str = typer.Option(None, "--device", help="cuda or cpu (default: cuda when present)."),
    tagger_model: str = typer.Option(
        None, "--tagger-model", help="train score: a local WD14 tagger folder (enables tag_agreement)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object with the run folder and files."
    ),
    kohya_config: Path = typer.Option(
        None, "--kohya-config", help="A kohya sd-scripts / kohya_ss training TOML to import."
    ),
    dataset_config: Path = typer.Option(
        None, "--dataset-config", help="A kohya sd-scripts dataset TOML (\\[\\[datasets.subsets]])."
    ),
    diffsynth_args: str = typer.Option(
        None,
        "--diffsynth-args",
        help="A DiffSynth-Studio training command line (train_kolors_lora.py --lora_rank 16 ...), or a file"
        " holding one, to import.",
    ),
    write_yaml: Path = typer.Option(
        None,
        "--write-yaml",
        help="With --kohya-config or --diffsynth-args: write the equivalent lorastudio YAML here.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="With --kohya-config or --diffsynth-args: print the mapping and the YAML, do not train.",
    ),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="Print the resolved config and where each value came from (default, preset, file, override); do not train.",
    ),
) -> None:
    """Train a LoRA, trigger embedding, DreamBooth or fine-tune; `train presets|score RUN|pick RUN STEP`."""
    from lorastudio.service.training import run_name_for, run_training
    from lorastudio.train.config import resolve_train_config

    if overrides == ["presets"]:
        _print_presets(as_json)
        return
    if overrides and overrides[0] in ("score", "pick"):
        _score_or_pick(overrides, device, as_json, tagger_model)
        return
    if explain and resume:
        raise typer.BadParameter("--explain: not with --resume (the run's config.yaml is its resolved config).")
    if resume and (overrides or config or preset):
        given = " ".join([*(overrides or []), *(f"--config {c}" for c in config or []), *([f"--preset {preset}"] if preset else [])])
        raise typer.BadParameter(
            f"--resume {resume} continues the run with its own config.yaml, so {given!r} would be ignored;"
            " drop them, or start a new run with them (another output.name)."
        )
    ws = workspace()
    kohya_yaml = None
    config = list(config or [])
    if kohya_config or dataset_config or diffsynth_args:
        if resume or config:
            raise typer.BadParameter("--kohya-config/--dataset-config/--diffsynth-args: not with --resume or --config.")
        if diffsynth_args and (kohya_config or dataset_config):
            raise typer.BadParameter("--diffsynth-args: not with --kohya-config or --dataset-config; import one.")
        tool = "diffsynth" if diffsynth_args else "kohya"
        resolved, kohya_yaml = _import_foreign(
            kohya_config, dataset_config, diffsynth_args, overrides or [], preset, write_yaml
        )
        if explain:
            _print_explain(ws, resolved)
            return
        cfg = resolved.config
        if dry_run:
            typer.echo(kohya_yaml, nl=False)
            return
        name = run_name_for(ws, cfg)
        cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"name": name})})
        if write_yaml is None:
            write_yaml = ws.runs / name / f"{tool}_import.yaml"
            write_yaml.parent.mkdir(parents=True, exist_ok=True)
            write_yaml.write_text(kohya_yaml, encoding="utf-8")
            typer.echo(f"{tool}: lorastudio config written to {write_yaml}", err=True)
        config, overrides, preset = [write_yaml], [f"output.name={name}"], None  # what a relaunch reads
    elif dry_run or write_yaml:
        raise typer.BadParameter("--dry-run and --write-yaml go with --kohya-config, --dataset-config or --diffsynth-args.")
    else:
        resolved = None if resume else resolve_train_config(config or None, overrides or [], preset)
        if explain:
            _print_explain(ws, resolved)
            return
        cfg = resolved.config if resolved is not None else None
        for line in resolved.dropped if resolved is not None else ():
            typer.echo(f"config: {line}", err=True)  # a preset's budget the user replaced
    if num_processes > 1 and "WORLD_SIZE" not in os.environ:
        name = None if resume else run_name_for(ws, cfg)
        raise typer.Exit(
            _relaunch(num_processes, config, preset, resume, overrides or [], name, device, as_json)
        )
    run = resume or run_name_for(ws, cfg)  # before the run's folder exists (a new run takes a free name)
    try:
        result = run_training(ws, cfg, resume=resume, device=device, progress=True)
    except KeyboardInterrupt:  # Ctrl-C: say how to go on (from the last checkpoint, when there is one)
        from lorastudio.service.training import has_checkpoint

        if has_checkpoint(ws, run):
            typer.echo(f"\ninterrupted; continue from the last checkpoint with: lorastudio train --resume {run}", err=True)
        else:
            typer.echo("\ninterrupted before the first checkpoint; run the same command again to start over.", err=True)
        raise typer.Exit(130) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        print_json(result)
    else:
        typer.echo(f"run: {result['run_dir']}")
        summary = checkpoint_summary(result)
        if summary:
            typer.echo(summary)
        for key in ("library_lora", "library_embedding", "library_model"):
            if result.get(key):
                typer.echo(f"{key.replace('library_', '')}: {result[key]}")


def checkpoint_summary(result: dict) -> str | None:
    """Which checkpoint became the library file: the best-scored one (and by what), else the last step."""
    if result.get("best_step") is not None:
        how = f" by {result['decided_by']}" if result.get("decided_by") else ""
        scores = f" ({result['scores']})" if result.get("scores") else ""
        return f"best checkpoint: step {result['best_step']}{how}{scores}"
    if result.get("result_step") is not None:
        return f"checkpoint: step {result['result_step']} (the final weights; no checkpoint was scored)"
    return None


def _print_explain(ws, resolved) -> None:
    from lorastudio.service.training import explain_training

    for line in explain_training(ws, resolved):
        typer.echo(line)


def _import_foreign(kohya_config, dataset_config, diffsynth_args, overrides: list[str], preset, write_yaml):
    """Map the kohya files or DiffSynth command line, print every key's fate, write the YAML.

    Returns (resolved config, YAML text).
    """
    from lorastudio.service.training import import_diffsynth, import_kohya

    def report(line: str) -> None:
        typer.echo(line, err=True)

    if diffsynth_args:
        resolved, text = import_diffsynth(diffsynth_args, overrides, preset, report=report)
    else:
        resolved, text = import_kohya(kohya_config, dataset_config, overrides, preset, report=report)
    if write_yaml is not None:
        Path(write_yaml).write_text(text, encoding="utf-8")
        tool = "diffsynth" if diffsynth_args else "kohya"
        typer.echo(f"{tool}: lorastudio config written to {write_yaml}", err=True)
    return resolved, text


def _relaunch(
    n: int, configs: list[Path], preset, resume, overrides: list[str], name, device, as_json: bool
) -> int:
    """Start the same command under `accelerate launch` with N processes (gloo on the CPU)."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(n),
        "--num_machines",
        "1",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "lorastudio",
        "train",
    ]
    for config in configs:
        cmd += ["--config", str(config)]
    if preset:
        cmd += ["--preset", preset]
    if resume:
        cmd += ["--resume", resume]
    if device:
        cmd += ["--device", device]
    if as_json:
        cmd.append("--json")
    cmd += list(overrides)
    if name and not any(o.startswith("output.name=") for o in overrides):
        cmd.append(f"output.name={name}")  # every rank must agree on the run folder
    return subprocess.call(cmd)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _print_presets(as_json: bool) -> None:
    from lorastudio.service.training import list_presets

    presets = list_presets()
    if as_json:
        print_json({"presets": presets})
        return
    for item in presets:
        typer.echo(f"{item['name']:<16} {item['description']}")


def _score_or_pick(
    words: list[str], device: str | None, as_json: bool, tagger_model: str | None = None
) -> None:
    from lorastudio.service.training import pick_training_checkpoint, score_training_run

    verb, args = words[0], words[1:]
    usage = "lorastudio train score RUN" if verb == "score" else "lorastudio train pick RUN step-N"
    if len(args) != (1 if verb == "score" else 2):
        raise typer.BadParameter(f"usage: {usage}")
    ws = workspace()
    if verb == "pick":  # step-20 (the checkpoint folder's name) or 20; another word names the run's checkpoints
        result = pick_training_checkpoint(ws, args[0], args[1])
        if as_json:
            print_json(result)
        else:
            typer.echo(
                f"step {result['step']} -> {result.get('library_lora') or result.get('library_model')}"
            )
        return
    table = score_training_run(ws, args[0], device=device, tagger_model=tagger_model)
    if as_json:
        print_json(table)
        return
    names = list(table["scorers"])
    typer.echo("step".rjust(8) + "".join(n.rjust(18) for n in names))
    for row in table["rows"]:
        cells = "".join(f"{row['scores'][n]:18.6f}" for n in names)
        typer.echo(f"{row['step']:8d}{cells}{'  <- best' if row['best'] else ''}")
    for name, reason in table["skipped"].items():
        typer.echo(f"skipped {name}: {reason}")
    typer.echo(f"validation set: {table['validation_set']}")
    typer.echo(f"contact sheet: {table['contact_sheet']}")
