"""The LoRA a grid's weight and checkpoint axes act on (service.grid): `--lora`, a training run's
output, or the prompt's only `<lora:…>` tag; a run's `checkpoints/step-N/` files by step, `final`
or `best`, and their `train score` results as the cells' captions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.workspace import Workspace, safe_name

__all__ = ["LoraTarget", "lora_target"]

# --- the LoRA the weight and checkpoint axes act on ---------------------------------------

_LORA_TAG = re.compile(r"<(lora|lyco):([^:>]+)((?::[^>]*)?)>")


@dataclass
class LoraTarget:
    name: str | None
    run_dir: Path | None = None
    full_model: bool = False  # a DreamBooth / fine-tune run: checkpoints are whole models
    checkpoints: dict[int, Path] = field(default_factory=dict)
    final: Path | None = None
    scores: dict[str, Any] = field(default_factory=dict)

    def file_for(self, value: str) -> tuple[Path, int | None]:
        """The file of a checkpoint axis value (`step-500`, `500`, `final`, `best`) and its step."""
        if self.run_dir is None:
            raise LorastudioError(
                "grid: a checkpoint axis needs a training run; pass --run RUN (a folder in studio/runs)."
            )
        text = str(value).strip().lower()
        if text in {"final", "last"}:
            if self.final is not None:
                return self.final, self._step_of_final()
            if self.checkpoints:
                step = max(self.checkpoints)
                return self.checkpoints[step], step
        elif text == "best":
            best = self.scores.get("best_step")
            if best is None:
                raise LorastudioError(
                    f"run {self.run_dir.name!r}: no scores yet for 'best'; run `lorastudio train score {self.run_dir.name}`."
                )
            return self._step(int(best))
        else:
            digits = text.removeprefix("step-").removeprefix("step")
            if digits.isdigit():
                return self._step(int(digits))
        have = ", ".join(f"step-{s}" for s in self.checkpoints) or "none"
        raise LorastudioError(
            f"run {self.run_dir.name!r}: checkpoint {value!r} is not a step-N, final or best; saved: {have}."
        )

    def _step_of_final(self) -> int | None:
        """The checkpoint whose weights the final file holds (its scores apply to it), if any.

        Compared by kohya's model hash, which covers the tensors and not the metadata.
        """
        from lorastudio.adapters.hashing import lora_short_hash

        last = max(self.checkpoints, default=None)
        if last is not None and lora_short_hash(self.final) == lora_short_hash(self.checkpoints[last]):
            return last
        return None

    def _step(self, step: int) -> tuple[Path, int]:
        if step not in self.checkpoints:
            have = ", ".join(f"step-{s}" for s in self.checkpoints) or "none"
            raise NotFoundError(
                f"run {self.run_dir.name!r}: no checkpoint at step {step}; saved: {have}.",
                key="checkpoint_not_found",
                params={"run": self.run_dir.name, "step": step, "saved": have},
            )
        return self.checkpoints[step], step

    def caption(self, step: int | None) -> str | None:
        """The checkpoint's `train score` results, e.g. 'validation_loss 0.1234 (best)'."""
        row = next((r for r in self.scores.get("rows", []) if r.get("step") == step), None)
        if row is None:
            return None
        parts = [f"{name} {value:.4g}" for name, value in (row.get("scores") or {}).items()]
        if row.get("best"):
            parts.append("(best)")
        return " ".join(parts) or None


def _run_of_library_lora(ws: Workspace, name: str) -> str | None:
    from lorastudio.service.library import Library

    for row in Library(ws).loras():
        if row["name"] == name:
            return (json.loads(row.get("info") or "{}") or {}).get("run")
    return None


def lora_target(
    ws: Workspace, prompt: str, lora: str | None, run: str | None, needs_run: bool
) -> LoraTarget:
    """Which LoRA the axes act on: --lora, else the run's output, else the prompt's only LoRA tag."""
    tags = [m[2] for m in _LORA_TAG.finditer(prompt)]
    if run is None and needs_run:
        name = lora or (tags[0] if len(tags) == 1 else None)
        if name and (ws.runs / name / "config.yaml").is_file():
            run = name
        elif name:
            run = _run_of_library_lora(ws, name)
    if run is None:
        name = lora or (tags[0] if len(tags) == 1 else None)
        return LoraTarget(name)
    from lorastudio.train.runs import RunFolder

    folder = RunFolder.open(ws, safe_name(run, "run name"))
    final = folder.path / f"{folder.output_name}.safetensors"
    return LoraTarget(
        name=lora or folder.output_name,
        run_dir=folder.path,
        full_model=bool(folder.config.trains_full_unet),
        checkpoints={c.step: c.lora for c in folder.checkpoints},
        final=final if final.is_file() else None,
        scores=folder.scores,
    )
