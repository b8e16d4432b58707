"""Bring a DiffSynth-Studio LoRA training command line (`train_kolors_lora.py` and its siblings).

The Kolors walk-through trains with `python .../train_kolors_lora.py --lora_rank 16 ...`.
`import_diffsynth_args(text)` reads that command line (a pasted shell command with `\\`
continuations and `#` comments is fine) and maps every argument to lorastudio's typed keys,
saying what each became, which need no setting and which cannot be mapped, as the kohya
import does (`train.kohya_config`). Arguments the command leaves out take DiffSynth's
defaults (rank 4, alpha 4, 500 steps per epoch, 1 epoch, 1024 px, 16-mixed), so the run
is the one DiffSynth would have made.

A DiffSynth "epoch" is `steps_per_epoch` batches (500 by default) drawn at random from the data,
not a pass over it: `train.steps = max_epochs x steps_per_epoch` (divided by
`accumulate_grad_batches`), with one checkpoint per DiffSynth epoch as its trainer saves them.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from lorastudio.config import read_text_file
from lorastudio.errors import LorastudioError
from lorastudio.train.kohya_mapping import KohyaImport

if TYPE_CHECKING:
    from lorastudio.config import ResolvedConfig
    from lorastudio.train.config import TrainConfig

__all__ = [
    "DIFFSYNTH_DEFAULTS",
    "DIFFSYNTH_FLAGS",
    "DiffSynthImport",
    "diffsynth_resolved_config",
    "import_diffsynth_args",
    "parse_arguments",
    "split_command_line",
]

# Arguments that take no value (argparse store_true).
DIFFSYNTH_FLAGS = ("center_crop", "random_flip", "use_gradient_checkpointing", "use_swanlab")
# argparse defaults of DiffSynth-Studio's general training arguments that shape the run.
DIFFSYNTH_DEFAULTS: dict[str, Any] = {
    "lora_rank": 4,
    "lora_alpha": 4.0,
    "lora_target_modules": "to_q,to_k,to_v,to_out",
    "learning_rate": 1e-4,
    "steps_per_epoch": 500,
    "max_epochs": 1,
    "height": 1024,
    "width": 1024,
    "precision": "16-mixed",
}
_VALUED = (
    *DIFFSYNTH_DEFAULTS,
    "pretrained_unet_path",
    "pretrained_text_encoder_path",
    "pretrained_fp16_vae_path",
    "dataset_path",
    "output_path",
    "batch_size",
    "dataloader_num_workers",
    "init_lora_weights",
    "accumulate_grad_batches",
    "training_strategy",
    "modelscope_model_id",
    "modelscope_access_token",
    "pretrained_lora_path",
    "swanlab_project",
    "swanlab_name",
    "swanlab_mode",
    "swanlab_logdir",
)
_ATTENTION_MODULES = {"to_q", "to_k", "to_v", "to_out"}
_PRECISIONS = {"32": "no", "16-mixed": "fp16", "16": "fp16", "bf16": "bf16"}
_NO_EFFECT = {
    "output_path": "runs are written to studio/runs/<output.name>/ and the LoRA copied to studio/loras/",
    "dataloader_num_workers": "lorastudio trains from cached latents",
    "use_swanlab": "lorastudio logs to log.jsonl and TensorBoard (studio/runs/<name>/tensorboard/)",
    "swanlab_project": "lorastudio logs to log.jsonl and TensorBoard",
    "swanlab_name": "lorastudio logs to log.jsonl and TensorBoard",
    "swanlab_mode": "lorastudio logs to log.jsonl and TensorBoard",
    "swanlab_logdir": "lorastudio logs to log.jsonl and TensorBoard",
}
_NOT_MAPPED = {
    "modelscope_model_id": "lorastudio uploads nothing; the LoRA is in studio/loras/",
    "modelscope_access_token": "lorastudio uploads nothing; the LoRA is in studio/loras/",
    "pretrained_lora_path": "starting from an existing LoRA file is not supported",
    "pretrained_fp16_vae_path": "a separate VAE for training is not supported: latents are encoded with the"
    " model folder's vae/; choose the fp16-fix VAE for generation instead",
}


@dataclass
class DiffSynthImport(KohyaImport):
    """A DiffSynth command line turned into lorastudio keys; `notes` explain what differs."""

    def lines(self) -> list[str]:
        """What the import did, one line each: mapped arguments, those with nothing to do, those not mapped."""

        def arg(name: str) -> str:
            return name if name.startswith("(") else f"--{name}"

        out = [f"diffsynth {arg(k)} -> {t} = {json.dumps(v, ensure_ascii=False)}" for k, t, v in self.mapped]
        out += [f"diffsynth --{k}: no setting needed ({why})" for k, why in self.no_effect]
        out += [f"diffsynth --{k}: NOT MAPPED ({why})" for k, why in self.unmapped]
        return out + [f"diffsynth note: {note}" for note in self.notes]

    def to_yaml(self) -> str:
        return super().to_yaml().replace("# not mapped: ", "# not mapped: --")


def split_command_line(text: str) -> list[str]:
    """A pasted shell command -> its words: `\\` line continuations and `# comments` dropped."""
    text = re.sub(r"\\[ \t]*(?=#|\r?\n|$)", " ", text)  # a continuation, also one followed by a comment
    try:
        return shlex.split(text, comments=True)
    except ValueError as exc:
        raise LorastudioError(f"--diffsynth-args: cannot split the command line ({exc}); check its quotes.") from None


def parse_arguments(words: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Words -> ({argument: value or True}, unknown argument names); `python script.py` is skipped."""
    values: dict[str, Any] = {}
    unknown: list[str] = []
    index = next((i for i, word in enumerate(words) if word.startswith("--")), len(words))
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("--"):
            unknown.append(word)  # a stray value: nothing reads it
            continue
        name, has_value, value = word[2:].partition("=")
        name = name.replace("-", "_")
        if name in DIFFSYNTH_FLAGS:
            values[name] = True
            continue
        if not has_value and index < len(words) and not words[index].startswith("--"):
            value, has_value = words[index], True
            index += 1
        if name not in _VALUED:
            unknown.append(name)
        elif not has_value:
            raise LorastudioError(f"--diffsynth-args: --{name} needs a value; write --{name} VALUE.")
        else:
            values[name] = value
    return values, unknown


def _number(name: str, value: Any, kind: type) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise LorastudioError(f"--diffsynth-args: --{name} {value!r} is not a {kind.__name__}; give a number.") from None


def _label(name: str, given: dict[str, Any]) -> str:
    return name if name in given else f"{name} (DiffSynth default)"


def _map_model(values: dict[str, Any], out: DiffSynthImport) -> None:
    """The UNet file of a Kolors-diffusers folder -> that folder; a loose UNet file stays a file."""
    unet = values.get("pretrained_unet_path")
    folder = None
    if unet:
        path = PurePosixPath(str(unet).replace("\\", "/"))
        folder = str(path.parent.parent) if path.parent.name == "unet" else None
        out.set("pretrained_unet_path", "model", folder or str(path))
    encoder = values.get("pretrained_text_encoder_path")
    if encoder:
        wanted = f"{folder}/text_encoder" if folder else None
        if wanted and str(encoder).replace("\\", "/").rstrip("/") == wanted:
            out.no_effect.append(("pretrained_text_encoder_path", "read from the model folder's text_encoder/"))
        else:
            out.skip(
                "pretrained_text_encoder_path",
                "the text encoder is read from the model folder; give --pretrained_unet_path inside a"
                " Kolors-diffusers folder (…/Kolors/unet/…)",
            )


def _map_budget(values: dict[str, Any], given: dict[str, Any], out: DiffSynthImport) -> None:
    """max_epochs x steps_per_epoch batches, counted in optimizer steps; one checkpoint per DiffSynth epoch."""
    per_epoch = _number("steps_per_epoch", values["steps_per_epoch"], int)
    epochs = _number("max_epochs", values["max_epochs"], int)
    accumulate = _number("accumulate_grad_batches", values.get("accumulate_grad_batches", 1), int)
    if min(per_epoch, epochs, accumulate) < 1:
        raise LorastudioError("--diffsynth-args: steps_per_epoch, max_epochs and accumulate_grad_batches must be >= 1.")
    steps_per_epoch = math.ceil(per_epoch / accumulate)
    out.set("max_epochs x steps_per_epoch", "train.steps", epochs * steps_per_epoch)
    out.set(_label("steps_per_epoch", given), "train.save_every_steps", steps_per_epoch)
    if accumulate != 1:
        out.set("accumulate_grad_batches", "train.grad_accum", accumulate)
    out.notes.append(
        f"a DiffSynth epoch is steps_per_epoch={per_epoch} batches drawn at random, not a pass over the data:"
        f" {epochs} x {per_epoch}" + (f" / {accumulate} accumulated" if accumulate != 1 else "")
        + f" = {epochs * steps_per_epoch} steps, a checkpoint every {steps_per_epoch}"
    )


def _map_image_handling(values: dict[str, Any], given: dict[str, Any], out: DiffSynthImport) -> None:
    height, width = _number("height", values["height"], int), _number("width", values["width"], int)
    if height == width:
        out.set(_label("height", given), "train.resolution", height)
        out.no_effect.append(("width", "the same as height"))
    else:
        out.skip("height", f"non-square {width}x{height}; lorastudio buckets by one side: set train.resolution=N")
        out.skip("width", f"non-square {width}x{height}")
    if values.get("center_crop"):
        out.no_effect.append(
            ("center_crop", "lorastudio centre-crops too, to the aspect-ratio bucket nearest each image")
        )
    else:
        out.skip("center_crop", "not given: DiffSynth crops at random; lorastudio always centre-crops to a bucket")
    if values.get("random_flip"):
        out.set("random_flip", "data.flip", True)


def _map_lora(values: dict[str, Any], given: dict[str, Any], out: DiffSynthImport) -> None:
    out.set(_label("lora_rank", given), "lora.rank", _number("lora_rank", values["lora_rank"], int))
    out.set(_label("lora_alpha", given), "lora.alpha", _number("lora_alpha", values["lora_alpha"], float))
    modules = {m.strip().removesuffix(".0") for m in str(values["lora_target_modules"]).split(",") if m.strip()}
    if modules == _ATTENTION_MODULES:
        out.set(_label("lora_target_modules", given), "lora.targets", "attn")
    else:
        out.skip(
            "lora_target_modules",
            f"{','.join(sorted(modules))}: lorastudio trains attn (to_q,to_k,to_v,to_out), kohya (every"
            " transformer Linear) or locon; set lora.targets",
        )
    init = values.get("init_lora_weights", "kaiming")
    if init == "kaiming":
        out.no_effect.append(("init_lora_weights", "lorastudio initialises LoRA down weights kaiming-uniform, up zero"))
    else:
        out.skip("init_lora_weights", f"{init!r}: lorastudio initialises kaiming-uniform (DiffSynth's default)")


def _map_training(values: dict[str, Any], given: dict[str, Any], out: DiffSynthImport) -> None:
    out.set(
        _label("learning_rate", given),
        "train.learning_rate",
        _number("learning_rate", values["learning_rate"], float),
    )
    out.set("(DiffSynth's optimizer)", "train.optimizer", "adamw")
    out.set("(DiffSynth's constant rate)", "train.lr_scheduler", "constant")
    out.set("(DiffSynth clips no gradients)", "train.max_grad_norm", None)
    precision = str(values["precision"])
    if precision not in _PRECISIONS:
        out.skip("precision", f"{precision!r} is not one of 32, 16, 16-mixed, bf16")
    else:
        out.set(_label("precision", given), "train.mixed_precision", _PRECISIONS[precision])
        if _PRECISIONS[precision] == "fp16":
            out.notes.append(
                "fp16 can overflow in the Kolors UNet; on a GPU with bf16 prefer train.mixed_precision=bf16"
            )
    if "batch_size" in values:
        out.set("batch_size", "train.batch_size", _number("batch_size", values["batch_size"], int))
    if values.get("use_gradient_checkpointing"):
        out.set("use_gradient_checkpointing", "train.gradient_checkpointing", True)
    strategy = values.get("training_strategy", "auto")
    if strategy == "auto":
        out.no_effect.append(("training_strategy", "one process; --num-processes N for data-parallel training"))
    else:
        out.skip("training_strategy", f"{strategy!r}: DeepSpeed is not supported; use --num-processes N")


def import_diffsynth_args(command: str, source: str = "command line") -> DiffSynthImport:
    """Map a DiffSynth-Studio training command line (or a file holding one) to lorastudio keys."""
    if "\n" not in command and "--" not in command:  # no arguments: the name of a file holding them
        path = Path(command.strip()).expanduser()
        if not path.is_file():
            raise LorastudioError(f"--diffsynth-args {command!r}: no such file; give the command line or its file.")
        command, source = read_text_file(path, "command file"), str(path)
    given, unknown = parse_arguments(split_command_line(command))
    if not given and not unknown:
        raise LorastudioError("--diffsynth-args: no --arguments found; paste the train_kolors_lora.py command line.")
    values = {**DIFFSYNTH_DEFAULTS, **given}
    out = DiffSynthImport(sources=[f"DiffSynth-Studio {source}"])
    _map_model(values, out)
    if values.get("dataset_path"):
        dataset = str(values["dataset_path"]).replace("\\", "/").rstrip("/")
        out.set("dataset_path", "data.dir", f"{dataset}/train/metadata.csv")  # where DiffSynth reads it
    _map_budget(values, given, out)
    _map_image_handling(values, given, out)
    _map_lora(values, given, out)
    _map_training(values, given, out)
    for name in given:
        if name in _NO_EFFECT:
            out.no_effect.append((name, _NO_EFFECT[name]))
        elif name in _NOT_MAPPED:
            out.skip(name, _NOT_MAPPED[name])
    for name in unknown:
        out.skip(name, "not an argument of DiffSynth-Studio's training scripts")
    return out


def diffsynth_resolved_config(
    imported: DiffSynthImport, overrides: Any = (), preset: str | None = None
) -> ResolvedConfig[TrainConfig]:
    """preset < the DiffSynth arguments < `key=value` overrides, with every value's source."""
    from lorastudio.config import ConfigLayer
    from lorastudio.train.config import resolve_train_config

    layer = ConfigLayer(imported.sources[0], imported.config)
    try:
        return resolve_train_config(None, overrides, preset, imported=[layer])
    except LorastudioError as exc:
        raise LorastudioError.wrap(f"imported from {imported.sources[0]}: {exc}", exc) from None
