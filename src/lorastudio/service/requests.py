"""Request resolution: every name a request carries must name a workspace file, checked before
the job is queued (a 404 or 422 now, not a failed job later).

Names stay names in the queued job: the worker resolves them again with the same strict
policy, so a file swapped in between is still only ever a workspace file. A client must not
make the worker read or write anywhere else on the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lorastudio.errors import InvalidRequest, LorastudioError
from lorastudio.service.job_kinds import CaptionJobConfig, ImportJobConfig
from lorastudio.service.names import NamePolicy, find_aux_model, find_dataset, find_lora, find_model, find_vae
from lorastudio.service.uploads import upload_path
from lorastudio.service.upscalers import check_hires_upscaler
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.train.config import TrainConfig

__all__ = ["RequestResolver"]


class RequestResolver:
    """Checks and resolves the names of generate, train, caption and import requests.

    `device` is the server's device (`lorastudio serve --device`): requests never choose one.
    """

    def __init__(self, workspace: Workspace, names: NamePolicy, device: str | None = None) -> None:
        self.workspace = workspace
        self.names = names
        self.device = device

    def check_model_name(self, name: str, what: str = "model") -> str:
        """`name` when it names a model in the workspace (or an allowed hub id); else the 404 of a missing one."""
        find_model(self.workspace, name, self.names, what=what, build=False)
        return name

    def check_lora_tags(self, *prompts: str, must_exist: bool = True) -> None:
        """Every `<lora:...>` tag of the prompts is well-formed and (`must_exist`) names a LoRA in
        loras/ (refused now, not in the queue)."""
        from lorastudio.generate.prompt_parser import extract_extra_networks

        for prompt in prompts:
            for net in extract_extra_networks(prompt or "")[1]:
                if net.kind in {"lora", "lyco"} and must_exist:
                    find_lora(self.workspace, net.name, self.names)

    def generate(self, cfg: GenerateConfig, default_model: str, missing_loras: str = "refuse") -> GenerateConfig:
        """A generation whose names all name workspace files (`default_model` where it names none);
        `missing_loras="skip"` lets `<lora:NAME>` tags name no file (A1111 generates without them)."""
        updates: dict[str, Any] = {"model": self.check_model_name(cfg.model or default_model)}
        if cfg.vae:
            find_vae(self.workspace, cfg.vae, self.names)
        prompts = (cfg.prompt, cfg.negative_prompt, cfg.hires_prompt, cfg.hires_negative_prompt)
        self.check_lora_tags(*prompts, must_exist=missing_loras != "skip")
        _check_hires_prompt_loras(cfg)  # refused now, not in the queue
        hires = check_hires_upscaler(self.workspace, cfg)  # a model upscaler in studio/models/upscalers
        if hires is not None:
            updates["hires_upscaler"] = hires["name"]  # its A1111 title, as the infotext writes it
        for key in ("init_image", "mask"):
            value = getattr(cfg, key)
            if value:
                updates[key] = str(upload_path(self.workspace, value))
        if cfg.controlnet:
            updates["controlnet"] = [self._control_unit(i, unit) for i, unit in enumerate(cfg.controlnet)]
        if cfg.device is not None and cfg.device != self.device:
            raise InvalidRequest(
                f"device {cfg.device!r}: the server chooses the device (lorastudio serve --device); "
                "leave device out of the request."
            )
        if self.device:
            updates["device"] = self.device
        return cfg.model_copy(update=updates)

    def _control_unit(self, index: int, unit):
        """A unit whose ControlNet is in studio/controlnet and whose image and mask are uploads."""
        from lorastudio.service.control import check_module
        from lorastudio.service.controlnets import find_controlnet

        check_module(unit, index)
        try:
            find_controlnet(self.workspace, unit.model, self.names)
            paths = {key: str(upload_path(self.workspace, getattr(unit, key))) for key in ("image", "mask") if getattr(unit, key)}
        except LorastudioError as exc:
            raise type(exc).wrap(f"ControlNet unit {index}: {exc}", exc) from None
        return unit.model_copy(update=paths)

    def train(self, cfg: TrainConfig) -> tuple[TrainConfig, str]:
        """A training run whose model, data sets and scorer models are workspace names, and its run
        folder, reserved now (two queued runs never share one): (config, run name)."""
        from lorastudio.service.training import run_name_for
        from lorastudio.service.training_family import with_native_resolution
        from lorastudio.train.config import request_train_config

        ws, names = self.workspace, self.names
        cfg = request_train_config(cfg)  # a request's keys beat its preset's, as on the command line
        self.check_model_name(cfg.model or "")
        cfg = with_native_resolution(ws, cfg, names)  # queued with the size it will train at
        find_dataset(ws, cfg.data.dir, "data.dir", names)
        if cfg.prior.class_dir:
            find_dataset(ws, cfg.prior.class_dir, "prior.class_dir", names)
        if cfg.scoring.validation_dir:
            find_dataset(ws, cfg.scoring.validation_dir, "scoring.validation_dir", names)
        scoring = cfg.scoring.model_copy(
            update={
                "clip_model": self._scorer_model(cfg.scoring.clip_model, "scoring.clip_model"),
                "tagger_model": self._scorer_model(cfg.scoring.tagger_model, "scoring.tagger_model"),
            }
        )
        cfg = cfg.model_copy(update={"scoring": scoring})
        run = run_name_for(ws, cfg)
        run_dir = ws.safe_child(ws.runs, run, "run name")
        if run_dir.exists() and any(run_dir.iterdir()):
            raise LorastudioError(
                f"run {run!r}: already exists; set output.name to a new name.", key="run_exists", params={"name": run}
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        if not cfg.output.name:
            cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"name": run})})
        return cfg, run

    def _scorer_model(self, value: str, key: str) -> str:
        """A scorer model for an API run: a folder name in models/ (made absolute here) or an allowed hub id."""
        if not value:
            return value
        return find_aux_model(self.workspace, value, key, self.names)

    def caption(self, cfg: CaptionJobConfig) -> CaptionJobConfig:
        """A caption job on a workspace data set with a cached captioner or tagger (no downloads)."""
        find_dataset(self.workspace, cfg.dataset, "dataset", self.names)
        key = "captioner" if cfg.captioner is not None else "tagger"
        labeller = cfg.captioner or cfg.tagger
        if labeller.allow_download:
            raise LorastudioError("caption job: allow_download is refused by the API; put the model in the cache.")
        model = find_aux_model(self.workspace, labeller.model, f"{key}.model", self.names)
        return cfg.model_copy(update={key: labeller.model_copy(update={"model": model})})

    def check_import(self, cfg: ImportJobConfig) -> None:
        """Every upload an import names was stored; a pickled .pt/.bin only for an embedding."""
        for name in cfg.uploads:
            upload_path(self.workspace, name, pickles=cfg.what == "embedding")


def _check_hires_prompt_loras(cfg: GenerateConfig) -> None:
    from lorastudio.generate.prompt_parser import extract_extra_networks
    from lorastudio.service.generation import check_hires_prompt_loras

    check_hires_prompt_loras(cfg, extract_extra_networks(cfg.prompt)[1])
