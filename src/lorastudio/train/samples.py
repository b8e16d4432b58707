"""The sample images of a training step (`samples/step-N/NN.png`), each with the infotext that redraws it.

Each `samples.prompts` line may carry kohya's options (`train.sample_prompts`); what it leaves out
takes the `samples.*` values. Every PNG gets A1111 infotext as a generation with the step's
checkpoint would write: the prompt with `<lora:NAME:1>` and `Lora hashes` for a LoRA or trigger
run (its checkpoint file bundles the trigger), the checkpoint as `Model` for a DreamBooth or
fine-tune run; so PNG info, `generate --recipe` and A1111 redraw the sample from that checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorastudio.train.config import TrainConfig
from lorastudio.train.sample_prompts import SamplePrompt, parse_sample_prompt

__all__ = ["draw_samples", "sample_request"]


def sample_request(cfg: TrainConfig, sample: SamplePrompt, prompt: str) -> Any:
    """The generation request of one sample line: its options over `samples.*` and `train.resolution`."""
    from lorastudio.train.sampling import sampling_request

    section = cfg.samples
    request = sampling_request(
        cfg,
        section,
        prompt,
        section.negative if sample.negative is None else sample.negative,
        seed=sample.seed,
    )
    update = {
        key: value
        for key, value in {
            "width": sample.width,
            "height": sample.height,
            "steps": sample.steps,
            "cfg_scale": sample.cfg_scale,
            "sampler": sample.sampler,
        }.items()
        if value is not None
    }
    return request.model_copy(update=update) if update else request


def draw_samples(
    cfg: TrainConfig, model: Any, embedding: Any, folder: Path, checkpoint: Path | None, name: str
) -> list[Path]:
    """Draw every sample prompt with the live model into `folder`; `checkpoint` is the step's saved
    checkpoint folder (None when this step saved none: the infotext then names no hash)."""
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.infotext import save_png
    from lorastudio.generate.pipeline import build_plan
    from lorastudio.train.sampling import render

    folder.mkdir(parents=True, exist_ok=True)
    network = _checkpoint_network(cfg, checkpoint, name)
    paths = []
    for index, line in enumerate(cfg.samples.prompts):
        sample = parse_sample_prompt(line)
        text = embedding.expand(sample.prompt) if embedding is not None else sample.prompt
        request = sample_request(cfg, sample, text)
        plan = build_plan(request, model, request.prompt, request.negative_prompt)
        image = render(model, request, PromptEncoder(model, cfg.clip_skip), plan)[0]
        path = folder / f"{index:02d}.png"
        save_png(image.image, path, _infotext(request, sample.prompt, plan, model, image.seed, network))
        paths.append(path)
    return paths


def _checkpoint_network(cfg: TrainConfig, checkpoint: Path | None, name: str) -> dict[str, Any]:
    """How a generation names this step's weights: a LoRA tag and hash, or a model name and hash."""
    file = checkpoint / f"{name}.safetensors" if checkpoint is not None else None
    found = file is not None and file.is_file()
    if cfg.trains_full_unet:
        from lorastudio.adapters.hashing import model_short_hash

        return {"model": name, "model_hash": model_short_hash(file) if found else None}
    from lorastudio.adapters.hashing import lora_short_hash

    return {"lora": name, "lora_hash": lora_short_hash(file) if found else None}


def _infotext(request: Any, prompt: str, plan: Any, model: Any, seed: int, network: dict[str, Any]) -> str:
    """A1111 infotext of one sample: the prompt as the user wrote it, the checkpoint named as a generation would."""
    from lorastudio.generate.a1111_fields import InfotextFacts, infotext_params
    from lorastudio.generate.infotext import format_infotext

    lora = network.get("lora")
    shown = request.model_copy(update={"prompt": f"{prompt} <lora:{lora}:1>" if lora else prompt})
    facts = InfotextFacts.of_image(
        plan,
        model,
        seed,
        model_hash=network["model_hash"] if "model" in network else model.short_hash,
        model_name=network.get("model") or model.name,
        lora_hashes=[(lora, network["lora_hash"])] if lora and network.get("lora_hash") else [],
    )
    return format_infotext(shown.prompt, shown.negative_prompt, infotext_params(shown, facts))
