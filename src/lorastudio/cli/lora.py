"""`lorastudio lora list | import | export | merge | delete | rename`: the LoRA library and its formats."""

from __future__ import annotations

import typer

from lorastudio.cli import app
from lorastudio.cli.common import padded, print_json, workspace

lora_app = typer.Typer(
    help="LoRA files: list the library, import, convert, merge into a model, delete.", no_args_is_help=True
)
app.add_typer(lora_app, name="lora")

_FAMILY_HELP = "Model family (sd15, sd2, sdxl, kolors) when the file does not tell."


def _print(info: dict, json_out: bool) -> None:
    if json_out:
        print_json(info)
        return
    for key, value in info.items():
        typer.echo(f"{key:>14}: {value}")


@lora_app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """LoRAs in the workspace with their type (lora, loha, lokr, ia3, oft, full, dora), family, trigger, base model and run."""
    from lorastudio.service.loras import list_loras

    rows = list_loras(workspace())
    if json_out:
        print_json({"loras": rows})
        return
    if not rows:
        typer.echo("no LoRAs yet: train one (`lorastudio train`) or `lorastudio lora import FILE`.")
    for row in rows:
        run = f"run {row['run']} step {row['step']}" if row["run"] else "not trained here"
        typer.echo(
            f"{padded(row['name'], 24)} type={row.get('type') or '-':<10} family={row.get('family') or '-':<6} "
            f"trigger={padded(row['trigger'] or '-', 12)} "
            f"base={row['base_model'] or '-':<14} {run}" + (f"  ! {row['error']}" if row.get("error") else "")
        )


@lora_app.command("import")
def import_cmd(
    path: str = typer.Argument(..., help="A LoRA file (kohya, LyCORIS LoCon/LoHa/LoKr/(IA)3/OFT/full/DoRA, ComfyUI, diffusers, HCP) or peft folder."),
    name: str = typer.Option(None, "--name", help="Library name (default: file stem)."),
    family: str = typer.Option(None, "--family", help=_FAMILY_HELP),
    model: str = typer.Option(
        None, "--model", help="Library model name, diffusers folder or single file whose UNet layout the LoRA uses (SDXL, Kolors)."
    ),
    alpha: float = typer.Option(
        None,
        "--alpha",
        help="Alpha of a DiffSynth-Studio .ckpt LoRA (the file has none; default 4.0, or the rank for "
        "a lorastudio --to diffsynth .safetensors, whose factors hold it).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Copy a LoRA into the workspace `loras/` as a kohya file that A1111 and ComfyUI read."""
    from lorastudio.service.loras import import_lora

    _print(import_lora(workspace(), path, name, family, model, alpha), json_out)


@lora_app.command("export")
def export_cmd(
    path: str = typer.Argument(..., help="A LoRA name `lora list` shows, or a LoRA file or peft folder."),
    to: str = typer.Option(
        ...,
        "--to",
        help="kohya | diffusers | peft | diffsynth (Kolors/SDXL/SD1: attention projections only, alpha baked in)",
    ),
    out: str = typer.Option(
        None,
        "--out",
        help="Output file (kohya, diffusers: .safetensors; diffsynth: .safetensors or .ckpt) or folder (peft); default "
        "studio/exports/NAME-FORMAT (only a kohya file may go into studio/loras).",
    ),
    family: str = typer.Option(None, "--family", help=_FAMILY_HELP),
    model: str = typer.Option(
        None,
        "--model",
        help="Library model name, diffusers folder or single file whose UNet layout the LoRA uses (SDXL, "
        "Kolors); default: the model the LoRA's metadata names, when the library has it.",
    ),
    no_embeddings: bool = typer.Option(
        False,
        "--no-embeddings",
        help="kohya: leave bundled trigger embeddings out of the LoRA (diffusers' load_lora_weights "
        "refuses them, ComfyUI ignores them) and write each as <token>.safetensors next to it (in "
        "studio/loras: into studio/embeddings). diffusers/peft/diffsynth always do.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Write a LoRA in another layout (default into studio/exports/), keeping alpha; bundled embeddings go to <token>.safetensors."""
    from lorastudio.service.loras import export_lora

    info = export_lora(path, to, out, family, model, no_embeddings=no_embeddings, ws=workspace())
    for line in info.get("warnings") or []:
        typer.echo(f"warning: {line}", err=True)
    _print(info if json_out else {k: v for k, v in info.items() if k != "warnings"}, json_out)


@lora_app.command("merge")
def merge_cmd(
    model: str = typer.Option(
        ..., "--model", help="Library model name (`models list`), diffusers folder or single-file checkpoint."
    ),
    lora: list[str] = typer.Option(
        ..., "--lora", help="NAME:WEIGHT (a name `lora list` shows) or FILE:WEIGHT; repeatable."
    ),
    out: str = typer.Option(
        ..., "--out", help="Output folder (diffusers) or .safetensors file (single-file)."
    ),
    fmt: str = typer.Option(
        None,
        "--format",
        help="diffusers | single-file (default: single-file for a single-file model or a .safetensors --out).",
    ),
    vae: str = typer.Option(
        None,
        "--vae",
        help="A VAE file or folder (a name in models/ or a path), as `generate --vae` takes it, for a "
        "single-file model without one (or to replace its own); the merged file holds it.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Bake LoRAs into a model and save it (a single-file model as a single file A1111 loads); a pivotal
    LoRA's trigger embedding goes beside it, into OUT-embeddings/TRIGGER.safetensors."""
    from lorastudio.service.loras import merge_model

    info = merge_model(model, lora, out, fmt, ws=workspace(), vae=vae)
    if json_out:
        print_json(info)
        return
    _print({k: v for k, v in info.items() if k not in ("embeddings", "notes")}, False)
    for line in info.get("notes") or []:  # one per trigger embedding: where it went, where it must go
        typer.echo(line)


@lora_app.command("delete")
def delete_cmd(
    name: str = typer.Argument(..., help="LoRA name, as `lora list` shows it."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Remove a LoRA file from studio/loras and what the library recorded for it (run, trigger, samples)."""
    from lorastudio.service.loras import delete_lora

    info = delete_lora(workspace(), name)
    if json_out:
        print_json(info)
    else:
        typer.echo(f"deleted LoRA {info['name']}")


# The top-level spellings (`lorastudio import|export|merge`), kept beside the group.
app.command("import", help="Import a LoRA into the workspace (same as `lora import`).")(import_cmd)
app.command("export", help="Convert a LoRA to kohya, diffusers, peft or diffsynth (same as `lora export`).")(export_cmd)
app.command("merge", help="Bake LoRAs into a checkpoint (same as `lora merge`).")(merge_cmd)


@lora_app.command("rename")
def rename_cmd(
    name: str = typer.Argument(..., help="The current name, as `lora list` shows it."),
    new_name: str = typer.Argument(..., help="The new name (letters of any script, digits, '.', '-', '_')."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Give a LoRA a new name; its run, trigger and samples follow it (prompts using the old name stop finding it)."""
    from lorastudio.service.loras import rename_lora

    info = rename_lora(workspace(), name, new_name)
    if json_out:
        print_json(info)
    else:
        typer.echo(f"renamed LoRA {info['renamed_from']} -> {info['name']}")
