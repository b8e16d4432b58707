"""Checkpoint choice: score every saved checkpoint of a run and mark the best.

A run saves `checkpoints/step-N/` every few steps; the last one is not always the best
(over-training burns the style in). Scorers are pluggable: `validation_loss` needs no
extra weights and is always available; `clip_similarity` needs a local CLIP-vision
folder; `tag_agreement` (tag_scoring.py) a local WD14 tagger; `face_identity`
(face_scoring.py) a face backend. Each registers itself (`register_scorer`, train/scorers.py).

Everything is seeded (noise, timesteps, generation seeds), so scoring the same run twice
gives the same table.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.image_modes import to_rgb
from lorastudio.train import (
    face_scoring,  # noqa: F401  registers face_identity
    tag_scoring,  # noqa: F401  registers tag_agreement
)
from lorastudio.train.runs import Checkpoint, RunFolder, StudioFolders, list_checkpoints
from lorastudio.train.scorers import SCORERS, Scorer, ScoringContext, register_scorer

if TYPE_CHECKING:
    from lorastudio.train.config import TrainConfig

__all__ = [
    "Scorer",
    "ScoringContext",
    "Checkpoint",
    "SCORERS",
    "register_scorer",
    "list_checkpoints",
    "score_run",
    "checkpoint_files",
    "checkpoint_step",
    "record_pick",
    "default_prompts",
]

VALIDATION_TIMESTEPS = 5  # evenly spaced over the noise schedule
VALIDATION_IMAGES = 4  # training images used when there is no held-out set
SHEET_CELL = 256


# -- validation loss -----------------------------------------------------------------------
def _held_out_images(datasets_dir: Path, cfg: TrainConfig) -> tuple[list[Any], str]:
    from lorastudio.train.plan import prepare_plan

    if cfg.scoring.validation_dir:
        held = cfg.model_copy(
            update={"data": cfg.data.model_copy(update={"dir": cfg.scoring.validation_dir})}
        )
        plan = prepare_plan(held, datasets_dir, held_out=True)
        return plan.images, f"{len(plan.images)} held-out images ({cfg.scoring.validation_dir})"
    plan = prepare_plan(cfg, datasets_dir)
    images = plan.images[:VALIDATION_IMAGES]
    return images, f"{len(images)} training images (no held-out set; set scoring.validation_dir)"


def _caption(cfg: TrainConfig, caption: str) -> str:
    import random

    from lorastudio.train.text import build_caption

    return build_caption(
        caption, cfg.trigger, cfg.data.caption_prefix_trigger, False, 0, 0.0, random.Random(0)
    )


def _embeddings_of(lora, model) -> dict[str, list[Any]]:
    from lorastudio.adapters import embeddings_from_lora

    return {e.name: [v.to(model.device, model.dtype) for v in e.vectors] for e in embeddings_from_lora(lora)}


def _validation_loss(ctx: ScoringContext, checkpoint: Checkpoint, lora) -> float:
    """Mean MSE over held-out images x fixed timesteps with fixed noise: lower is better."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from lorastudio.generate.conditioning import PromptEncoder

    cfg, model = ctx.cfg, ctx.model
    scheduler = DDPMScheduler.from_config(model.scheduler_config)
    total_t = scheduler.config.num_train_timesteps
    timesteps = torch.linspace(0, total_t - 1, VALIDATION_TIMESTEPS + 2)[1:-1].round().long()
    encoder = PromptEncoder(model, cfg.clip_skip, _embeddings_of(lora, model))
    losses = []
    with torch.no_grad():
        for index, image in enumerate(ctx.held_out):
            latent = ctx.latents.get(index, False).to(model.device)[None]
            text = encoder.encode(_caption(cfg, image.caption))
            generator = torch.Generator().manual_seed(cfg.seed * 7919 + index)
            for t in timesteps:
                noise = torch.randn(latent.shape, generator=generator).to(model.device)
                step = t.reshape(1).to(model.device)
                noisy = scheduler.add_noise(latent, noise, step)
                added = None
                if model.family.uses_pooled_text:
                    (w, h), (top, left), (bw, bh) = image.size, image.crop, image.bucket
                    time_ids = torch.tensor([[h, w, top, left, bh, bw]], device=model.device)
                    added = {"text_embeds": text.pooled.to(model.dtype), "time_ids": time_ids.to(model.dtype)}
                prediction = model.unet(
                    noisy.to(model.dtype),
                    step,
                    encoder_hidden_states=text.embeds.to(model.dtype),
                    added_cond_kwargs=added,
                    return_dict=False,
                )[0]
                if scheduler.config.prediction_type == "v_prediction":
                    target = scheduler.get_velocity(latent, noise, step)
                else:
                    target = noise
                losses.append(F.mse_loss(prediction.float(), target.float()).item())
    return float(sum(losses) / len(losses))


register_scorer(
    Scorer(
        "validation_loss",
        higher_is_better=False,
        score=_validation_loss,
        description="noise-prediction loss at fixed timesteps and noise on held-out images",
    )
)


# -- CLIP image similarity -------------------------------------------------------------------
_CLIP_CACHE: dict[str, tuple[Any, Any]] = {}


def _clip_unavailable(ctx: ScoringContext) -> str | None:
    folder = ctx.cfg.scoring.clip_model
    if not folder:
        return "no CLIP-vision model; set scoring.clip_model=<local CLIP-vision folder>"
    if not (Path(folder).expanduser() / "config.json").is_file():
        return f"scoring.clip_model {folder!r}: not a model folder (no config.json)"
    return None


def _clip(folder: str):
    if folder not in _CLIP_CACHE:
        from transformers import CLIPVisionModelWithProjection

        try:  # transformers 5: the PIL processor, since torchvision is never installed here
            from transformers import CLIPImageProcessorPil as Processor
        except ImportError:
            from transformers import CLIPImageProcessor as Processor

        path = str(Path(folder).expanduser())
        model = CLIPVisionModelWithProjection.from_pretrained(path, local_files_only=True).eval()
        _CLIP_CACHE[folder] = (model, Processor.from_pretrained(path, local_files_only=True))
    return _CLIP_CACHE[folder]


def _clip_embed(folder: str, paths: list[Path]):
    import torch
    from PIL import Image

    model, processor = _clip(folder)
    images = []
    for path in paths:
        with Image.open(path) as img:
            images.append(to_rgb(img))
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        embeds = model(pixel_values=pixels).image_embeds
    return torch.nn.functional.normalize(embeds.float(), dim=-1)


def _clip_similarity(ctx: ScoringContext, checkpoint: Checkpoint, lora) -> float:
    """Mean cosine similarity of this checkpoint's generations to the training images."""
    folder = ctx.cfg.scoring.clip_model
    reference = _clip_embed(folder, [img.path for img in ctx.held_out])
    generated = _clip_embed(folder, ctx.generated[checkpoint.step])
    return float((generated @ reference.T).mean())


register_scorer(
    Scorer(
        "clip_similarity",
        higher_is_better=True,
        score=_clip_similarity,
        unavailable=_clip_unavailable,
        description="CLIP-vision similarity of generated images to the training images",
    )
)


# -- contact sheet -------------------------------------------------------------------------
def default_prompts(cfg: TrainConfig, images: list[Any]) -> list[str]:
    """The trigger alone and one training caption (with the trigger)."""
    prompts = [cfg.trigger] if cfg.trigger else []
    if images:
        prompts.append(_caption(cfg, images[0].caption))
    prompts = [p for p in dict.fromkeys(prompts) if p]
    return prompts or ["a photo"]


def _generate_for(ctx: ScoringContext, checkpoint: Checkpoint, lora, out_dir: Path) -> list[Path]:
    """One contact-sheet cell per prompt, drawn with the checkpoint's LoRA and embeddings."""
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.train.sampling import render, sampling_request

    cfg, model = ctx.cfg, ctx.model
    encoder = PromptEncoder(model, cfg.clip_skip, _embeddings_of(lora, model))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, prompt in enumerate(ctx.prompts):
        request = sampling_request(cfg, cfg.scoring, prompt)
        image = render(model, request, encoder)[0].image
        path = out_dir / f"step-{checkpoint.step}-{index:02d}.png"
        image.save(path)
        paths.append(path)
    return paths


# -- the table -----------------------------------------------------------------------------
def _best_step(rows: list[dict], usable: list[Scorer]) -> int:
    """The first scorer decides; a tie on it (no checkpoint drew a face yet) goes to the next one."""

    def merit(row: dict) -> tuple[float, ...]:
        return tuple(row["scores"][s.name] * (1 if s.higher_is_better else -1) for s in usable)

    return max(rows, key=merit)["step"]


def _score_checkpoint(ctx: ScoringContext, checkpoint: Checkpoint, usable: list[Scorer], cells: Path) -> dict:
    """Generate the checkpoint's sheet row and run every usable scorer, LoRA applied."""
    from lorastudio.adapters import applied_loras, check_lora_family, load_lora_file
    from lorastudio.adapters.lora_file import LoraFile

    if ctx.cfg.trains_full_unet:
        _load_checkpoint_unet(ctx.model, checkpoint.lora)
        lora = LoraFile(source_format="lorastudio")  # nothing to apply on top
    else:
        lora = load_lora_file(checkpoint.lora)
    if lora.modules:
        check_lora_family(lora, ctx.model.family, name=str(checkpoint.lora))
    with applied_loras(ctx.model.components, [(lora, 1.0, 1.0)]):
        ctx.generated[checkpoint.step] = _generate_for(ctx, checkpoint, lora, cells)
        scores = {s.name: s.score(ctx, checkpoint, lora) for s in usable}
    return {"step": checkpoint.step, "lora": str(checkpoint.lora), "scores": scores, "best": False}


def _load_checkpoint_unet(model, path: Path) -> None:
    """Put a fine-tuned checkpoint's UNet weights into the scoring model (same layout)."""
    from safetensors import safe_open

    from lorastudio.adapters.ldm import UNET_PREFIX, unet_from_ldm

    with safe_open(str(path), framework="pt") as handle:  # the UNet only, not VAE + encoders
        state = {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(UNET_PREFIX)}
    model.unet.load_state_dict(unet_from_ldm(state, model.unet.config))


def score_run(
    ws: StudioFolders,
    run_name: str,
    scorers: list[str] | None = None,
    prompts: list[str] | None = None,
    device: str | None = None,
    clip_model: str | None = None,
    tagger_model: str | None = None,
    model_where: Any = None,
) -> dict[str, Any]:
    """Score every checkpoint; write `scores.json` and `checkpoints.png`; return the table.

    `model_where` is the base model already found (a `ModelRef`: a server resolves names
    with `service.names`, never against its working directory).

    The first usable scorer in the list decides the best checkpoint. `scorers`, `prompts`,
    `clip_model` and `tagger_model` override the run's `scoring.*` settings. `ws` is the
    workspace (`service.workspace.Workspace`): the run is `ws.runs/<run_name>`.
    """
    from lorastudio.generate.series import contact_sheet
    from lorastudio.models.loading import load_model
    from lorastudio.train.latents import LatentCache, vae_hash

    run = RunFolder.open(ws, run_name)
    run_dir, cfg = run.path, run.config
    overrides = {"clip_model": clip_model, "tagger_model": tagger_model}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if overrides:
        cfg = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update=overrides)})
    checkpoints = list_checkpoints(run_dir, cfg)
    if not checkpoints:
        raise LorastudioError(
            f"run {run_name!r}: no checkpoints in {run_dir / 'checkpoints'}; train with train.save_every_steps below train.steps."
        )
    names = scorers or cfg.scoring.scorers
    unknown = [n for n in names if n not in SCORERS]
    if unknown:
        raise LorastudioError(f"scorer {unknown[0]!r}: unknown; choose from: {', '.join(SCORERS)}.")

    model = load_model(cfg.model, ws.models, ws.cache, device=device, where=model_where)
    if cfg.train.vae_fp32:  # the held-out latents as the run's were encoded
        import torch

        model.vae.to(torch.float32)
    held_out, note = _held_out_images(ws.datasets, cfg)
    latents = LatentCache(ws.cache / "latents", model.vae, vae_hash(model.vae))
    latents.prepare(held_out, flip=False)
    ctx = ScoringContext(
        ws, run_dir, cfg, model, prompts or cfg.scoring.prompts or default_prompts(cfg, held_out),
        held_out, note, latents,
    )  # fmt: skip
    usable, skipped = [], {}
    for name in names:
        reason = SCORERS[name].unavailable(ctx)
        if reason:
            skipped[name] = reason
        else:
            usable.append(SCORERS[name])

    # Cell images live only as long as scoring: the run keeps the sheet, not 3 x N PNGs.
    with tempfile.TemporaryDirectory(prefix="lorastudio-score-") as cells:
        rows = [_score_checkpoint(ctx, c, usable, Path(cells)) for c in checkpoints]
        best = _best_step(rows, usable) if usable else checkpoints[-1].step
        sheet = contact_sheet(
            [p for c in checkpoints for p in ctx.generated[c.step]],
            [f"step {c.step}: {p}" for c in checkpoints for p in ctx.prompts],
            run_dir / "checkpoints.png",
            columns=len(ctx.prompts),
            cell=SHEET_CELL,
        )
    for row in rows:
        row["best"] = row["step"] == best
    table = {
        "run": run_dir.name,
        "scorers": {
            s.name: {"higher_is_better": s.higher_is_better, "description": s.description} for s in usable
        },
        "skipped": skipped,
        "decided_by": usable[0].name if usable else None,
        "validation_set": note,
        "prompts": ctx.prompts,
        "seed": cfg.scoring.seed,
        "rows": rows,
        "best_step": best,
        "result_step": None,  # the checkpoint now in loras/ (set by record_pick)
        "picked_by": None,
        "contact_sheet": str(sheet),
    }
    previous = run.scores  # re-scoring keeps the record of which checkpoint is in loras/
    table.update(result_step=previous.get("result_step"), picked_by=previous.get("picked_by"))
    run.write_scores(table)
    return table




def checkpoint_step(given: int | str) -> int | None:
    """A checkpoint named as its folder (`step-20`) or by its step (`20`); None for anything else."""
    if isinstance(given, int):
        return given
    text = str(given).strip().lower().removeprefix("step-")
    return int(text) if text.isdigit() else None


def checkpoint_files(ws: StudioFolders, run_name: str, step: int | str) -> dict[str, Path]:
    """The files of checkpoint `step` (`20` or `step-20`), by kind ("lora" or "model", and "embedding"
    when the run has one).

    `service.training.publish` copies them into the library; this module never writes there.
    """
    run = RunFolder.open(ws, run_name)
    checkpoints = {c.step: c for c in run.checkpoints}
    number = checkpoint_step(step)
    if number not in checkpoints:
        if not checkpoints:
            raise NotFoundError(f"run {run_name!r}: no checkpoint {str(step)!r}; the run has saved none yet.")
        steps = sorted(checkpoints)
        have = ", ".join(str(s) for s in steps)
        raise NotFoundError(
            f"run {run_name!r}: no checkpoint {str(step)!r}; saved steps: {have} (give step-{steps[-1]} or {steps[-1]})."
        )
    checkpoint = checkpoints[number]
    files = {"model" if run.config.trains_full_unet else "lora": checkpoint.lora}
    if checkpoint.embedding is not None:
        files["embedding"] = checkpoint.embedding
    return files


def record_pick(run_dir: Path, step: int, by: str) -> None:
    """Note in scores.json which checkpoint is the run's result and who chose it ("score" or "user")."""
    run = RunFolder(run_dir)
    table = run.scores
    table.update(result_step=step, picked_by=by)
    run.write_scores(table)
