"""Checkpoint folders written atomically, so a kill while saving never breaks `--resume`.

A checkpoint is first written into a hidden sibling (`checkpoints/.step-N.partial/`): the
LoRA / embedding / model files and `accelerate`'s resumable state. When everything is on
disk, the files are fsynced, a `complete.json` marker listing every file and its size is
written last, and the folder is renamed to `step-N` in one step. A `step-N` folder is
therefore whole or absent; a partial one is removed at the next start. Resume also checks
the marker (a missing or truncated file makes the state unusable) and falls back to the
previous complete checkpoint, saying so.

No torch here: the service and scoring code import it cheaply.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from lorastudio.errors import LorastudioError
from lorastudio.train.steps import step_folders

__all__ = [
    "COMPLETE_MARKER",
    "partial_folder",
    "clean_partial_folders",
    "publish_checkpoint",
    "incomplete_reason",
    "complete_step_folders",
    "remove_folder",
    "prune_checkpoints",
    "latest_state",
    "saved_states",
    "prune_states",
    "check_checkpoint_space",
    "fsync_file",
    "refuse_unsafe_state",
]

COMPLETE_MARKER = "complete.json"
_PARTIAL_PREFIX = ".step-"
_PARTIAL_SUFFIX = ".partial"
_REMOVING_SUFFIX = ".removing"


def partial_folder(parent: Path, step: int) -> Path:
    """The hidden folder checkpoint `step` is written into before it is published."""
    return parent / f"{_PARTIAL_PREFIX}{step}{_PARTIAL_SUFFIX}"


def clean_partial_folders(parent: Path) -> list[Path]:
    """Remove checkpoints a kill left half-written (or half-deleted); returns what was removed."""
    if not parent.is_dir():
        return []
    removed = []
    folders = [*parent.iterdir(), *(p for _, step in step_folders(parent) for p in step.iterdir())]
    for folder in sorted(folders):
        name = folder.name
        leftover = name.startswith(".") and name.endswith((_PARTIAL_SUFFIX, _REMOVING_SUFFIX))
        if leftover and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _files_of(folder: Path) -> dict[str, int]:
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != COMPLETE_MARKER
    }


def publish_checkpoint(partial: Path, final: Path, step: int) -> Path:
    """fsync every file, write the `complete.json` marker last, then rename `partial` to `final`."""
    files = _files_of(partial)
    for relative in files:
        fsync_file(partial / relative)
    for folder in {partial, *(p for p in partial.rglob("*") if p.is_dir())}:
        _fsync_folder(folder)
    marker = partial / COMPLETE_MARKER
    marker.write_text(json.dumps({"step": step, "files": files}, indent=1), encoding="utf-8")
    fsync_file(marker)
    if final.exists():  # only a checkpoint whose marker did not check out: replace it
        remove_folder(final)
    os.replace(partial, final)
    _fsync_folder(final.parent)
    return final


# What the trainer's `accelerate` state holds: one optimizer, two registered objects (the
# trainable state and the LR scheduler) and the RNG states. Each is a torch zip archive.
_STATE_FILES = ("optimizer.bin", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl")


def _unmarked_state_problem(folder: Path) -> str | None:
    """A checkpoint from before the marker: its state must hold every file, each a whole zip archive."""
    import zipfile

    state = folder / "state"
    if not state.is_dir():
        return f"no {COMPLETE_MARKER} and no state"
    for name in _STATE_FILES:
        path = state / name
        if not path.is_file():
            return f"no {COMPLETE_MARKER}, and state/{name} is missing"
        if not zipfile.is_zipfile(path):
            return f"no {COMPLETE_MARKER}, and state/{name} is truncated"
    return None


def incomplete_reason(folder: Path) -> str | None:
    """Why checkpoint `folder` cannot be trusted (a file missing or of the wrong size), or None.

    A folder without a marker comes from an older lorastudio: its resumable state is checked
    file by file instead (all there, none truncated).
    """
    marker = folder / COMPLETE_MARKER
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return _unmarked_state_problem(folder)
    except (ValueError, KeyError, TypeError):
        return f"{COMPLETE_MARKER} is unreadable"
    for relative, size in files.items():
        path = folder / relative
        if not path.is_file():
            return f"{relative} is missing"
        if path.stat().st_size != size:
            return f"{relative} has {path.stat().st_size} bytes, {size} were written"
    return None


def complete_step_folders(
    parent: Path, say: Callable[[str], None] | None = None, needs: str | None = None
) -> list[tuple[int, Path]]:
    """`parent/step-N` folders whose marker checks out, oldest first; `say` hears about the others.

    needs: a sub-path that must exist too (e.g. "state" for resumable checkpoints).
    """
    found = []
    for step, folder in step_folders(parent):
        if needs is not None and not (folder / needs).exists():
            continue
        reason = incomplete_reason(folder)
        if reason is not None:
            if say is not None:
                say(f"checkpoint {folder.name}: skipped, incomplete: {reason}")
            continue
        found.append((step, folder))
    return found


def remove_folder(folder: Path) -> None:
    """Rename, then delete: a kill mid-delete leaves a hidden leftover, never a broken `step-N`."""
    doomed = folder.with_name(f".{folder.name}{_REMOVING_SUFFIX}")
    if doomed.exists():
        shutil.rmtree(doomed, ignore_errors=True)
    os.replace(folder, doomed)
    _fsync_folder(folder.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def prune_checkpoints(parent: Path, keep_last: int, protect: Iterable[int] = ()) -> list[int]:
    """`output.keep_last`: delete all but the newest `keep_last` step folders; `protect` steps stay."""
    keep = set(protect)
    folders = step_folders(parent)
    keep.update(step for step, _ in folders[-keep_last:])
    removed = []
    for step, folder in folders:
        if step not in keep:
            remove_folder(folder)
            removed.append(step)
    return removed


def saved_states(run_dir: Path, say: Callable[[str], None] | None = None) -> list[Path]:
    """Every complete `checkpoints/step-N/state` folder of a run, oldest first."""
    return [folder / "state" for _, folder in complete_step_folders(run_dir / "checkpoints", say, "state")]


def latest_state(run_dir: Path, say: Callable[[str], None] | None = None) -> Path | None:
    """The newest complete `checkpoints/step-N/state` folder of a run, if any.

    An incomplete checkpoint (a kill while it was saved) is skipped, and `say` hears why.
    """
    states = saved_states(run_dir, say)
    return states[-1] if states else None


def prune_states(run_dir: Path, keep: int | None) -> None:
    """Drop older resumable states beyond the newest `keep`; the LoRA/model files stay for scoring."""
    if keep is None:
        return
    for old in saved_states(run_dir)[:-keep]:
        remove_folder(old)


def check_checkpoint_space(run_dir: Path, trained: Iterable, everything: Iterable, ema: bool) -> None:
    """A whole-UNet checkpoint is gigabytes (model file + fp32 weights + optimizer state): check first.

    trained / everything: the trained parameters and all of the model's (anything with `numel()`).
    """
    trained_count = sum(p.numel() for p in trained)
    per_copy = 4 * trained_count * (3 + (1 if ema else 0))  # weights, Adam m and v, EMA
    needed = per_copy + 4 * sum(p.numel() for p in everything)  # + the model file (fp32 at most)
    run_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise LorastudioError(
            f"{run_dir}: {free >> 20} MiB free, but one checkpoint of a whole-UNet run needs about"
            f" {needed >> 20} MiB; free disk space or raise train.save_every_steps.",
            key="disk_space",
            params={"folder": run_dir, "free_mib": free >> 20, "needed_mib": needed >> 20},
        )


def refuse_unsafe_state(state: Path) -> None:
    """Every pickle of a resumable state read by torch's weights-only loader first, so a state that
    holds more than tensors and plain values (a run folder from someone else, edited to run code
    when unpickled) is refused before `accelerate` opens it: it loads its registered objects'
    `custom_checkpoint_N.pkl` with `weights_only=False`. Tensors of zip archives are mapped, not read."""
    import pickle
    import zipfile

    from accelerate.utils.other import load  # torch.load, weights only, numpy's RNG state allowed

    from lorastudio.models.checkpoint import unpickling_refusal, weights_only_load

    for path in sorted(state.iterdir()):
        if not path.is_file() or path.suffix.lower() in {".safetensors", ".json"}:
            continue
        try:
            weights_only_load(path, loader=load, mmap=zipfile.is_zipfile(path))  # never with others' allowances
        except pickle.UnpicklingError as exc:  # torch's own text: the line naming the refused global
            raise LorastudioError(
                f"{path}: holds more than tensors ({unpickling_refusal(exc)}); it was not loaded, because unpickling it could"
                " run code. Resume only runs made here, or delete this checkpoint."
            ) from None
        except (OSError, EOFError, RuntimeError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise LorastudioError(f"{path}: damaged ({reason}); delete this checkpoint to resume from an earlier one.") from None
