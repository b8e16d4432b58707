"""A training run's folder as other code reads it: its config, output name, checkpoints, scores.

A run folder (`runs/<name>/`) holds `config.yaml`, `checkpoints/step-N/<output>.safetensors`
and, once scored, `scores.json`. Scoring, checkpoint picking and the grid's checkpoint axis
all read it through `RunFolder`, so the layout is written down once.

Training code never imports the service layer: where it needs the workspace's folders it
takes any object with them (`StudioFolders`; `service.workspace.Workspace` is one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lorastudio.errors import NotFoundError

if TYPE_CHECKING:
    from lorastudio.train.config import TrainConfig

__all__ = ["StudioFolders", "TrainPaths", "Checkpoint", "RunFolder", "list_checkpoints"]


class StudioFolders(Protocol):
    """The workspace folders training reads and writes (`service.workspace.Workspace` has them)."""

    @property
    def runs(self) -> Path: ...
    @property
    def datasets(self) -> Path: ...
    @property
    def models(self) -> Path: ...
    @property
    def loras(self) -> Path: ...
    @property
    def embeddings(self) -> Path: ...
    @property
    def cache(self) -> Path: ...

    def safe_child(self, folder: Path, name: str, what: str = "name") -> Path: ...


@dataclass(frozen=True)
class TrainPaths:
    """The folders one training run uses: the service builds it, so the trainer needs no workspace."""

    run_dir: Path  # runs/<name>/: config, checkpoints, samples, log, final files
    models: Path  # where the base model is looked up
    datasets: Path  # where named class-image folders live (and lorastudio's own are made)
    cache: Path  # latent, text-encoder and downloaded-model caches


@dataclass
class Checkpoint:
    """One saved `checkpoints/step-N/` of a run."""

    step: int
    folder: Path
    lora: Path  # the LoRA file, or the whole model of a DreamBooth / fine-tune run
    embedding: Path | None


def list_checkpoints(run_dir: Path, cfg: TrainConfig) -> list[Checkpoint]:
    """Every `checkpoints/step-N/` holding the run's LoRA file, oldest first."""
    from lorastudio.train.outputs import find_embedding
    from lorastudio.train.steps import step_folders

    name = cfg.output.name or run_dir.name
    found = []
    for step, folder in step_folders(run_dir / "checkpoints"):
        lora = folder / f"{name}.safetensors"
        if not lora.is_file():
            continue
        embedding = find_embedding(folder, cfg.trigger, name) if cfg.trains_embedding else None
        found.append(Checkpoint(step, folder, lora, embedding))
    return found


class RunFolder:
    """`runs/<name>/` of one training run; the config is read once, on first use."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir)

    @classmethod
    def open(cls, folders: StudioFolders, run_name: str) -> RunFolder:
        """The run called `run_name` in the workspace; it must hold a `config.yaml`."""
        run_dir = folders.safe_child(folders.runs, run_name, "run")
        if not (run_dir / "config.yaml").is_file():
            raise NotFoundError(
                f"run {run_name!r}: no config.yaml in {run_dir}; give a run name from {folders.runs}."
            )
        return cls(run_dir)

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def config(self) -> TrainConfig:
        """The resolved config the run saved (`config.yaml`)."""
        from lorastudio.train.config import saved_train_config

        return saved_train_config(self.path / "config.yaml")

    @property
    def output_name(self) -> str:
        """File name (no suffix) of the run's LoRA or model: `output.name`, else the run name."""
        return self.config.output.name or self.path.name

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Saved checkpoints holding the run's file, oldest first."""
        return list_checkpoints(self.path, self.config)

    @property
    def scores_path(self) -> Path:
        return self.path / "scores.json"

    @property
    def scores(self) -> dict[str, Any]:
        """The score table (`scores.json`), or an empty one before scoring."""
        path = self.scores_path
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"rows": []}

    def write_scores(self, table: dict[str, Any]) -> None:
        """Whole or not at all: the Library and the Train tab read it while a run is scored."""
        from lorastudio.data.manifest import atomic_write_text

        atomic_write_text(self.scores_path, json.dumps(table, indent=2))

    @property
    def chosen_steps(self) -> set[int]:
        """The steps scores.json names: the best-scored one and the one picked as the result."""
        table = self.scores
        return {int(table[key]) for key in ("best_step", "result_step") if table.get(key) is not None}
