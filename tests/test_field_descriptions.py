"""Every job config field carries its own description: CLI help, OpenAPI docs and UI forms read it.

Also guards what the descriptions must not change: the order of TrainConfig's keys (it is
part of every LoRA file's `ss_lorastudio_config` and of `config.yaml`) and the name of the
class-image folder (a changed name would regenerate cached class images).
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from lorastudio.config import flatten_keys
from lorastudio.data.config import CaptionerConfig, CleanConfig, TaggerConfig
from lorastudio.generate.config import GenerateConfig
from lorastudio.service.grid_request import AxisRequest, GridRequest
from lorastudio.service.job_kinds import CaptionJobConfig, ImportJobConfig
from lorastudio.service.portrait_make import PortraitMakeConfig
from lorastudio.train.config import TrainConfig

JOB_CONFIGS = [
    GenerateConfig,
    TrainConfig,
    CaptionJobConfig,
    ImportJobConfig,
    GridRequest,
    AxisRequest,
    CleanConfig,
    CaptionerConfig,
    TaggerConfig,
    PortraitMakeConfig,
]


def _nested_models(annotation: typing.Any) -> list[type[BaseModel]]:
    """The pydantic models inside a field's type (`X`, `X | None`, `list[X]`...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested_models(arg)]


def _undescribed(model: type[BaseModel], prefix: str = "") -> list[str]:
    missing = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        if not (info.description or "").strip():
            missing.append(key)
        for nested in _nested_models(info.annotation):
            missing += _undescribed(nested, f"{key}.")
    return missing


@pytest.mark.parametrize("model", JOB_CONFIGS, ids=lambda m: m.__name__)
def test_every_field_of_every_job_config_is_described(model):
    assert _undescribed(model) == []


def test_the_checker_sees_a_field_without_description():
    class Section(BaseModel):
        described: int = 1
        inner: GenerateConfig | None = None

    assert _undescribed(Section) == ["described", "inner"]


def test_train_sampling_fields_share_the_generation_descriptions_and_keep_their_bounds():
    fields = TrainConfig.model_fields
    for section in ("samples", "prior", "scoring"):
        model = fields[section].annotation
        assert model.model_fields["cfg_scale"].description == GenerateConfig.model_fields["cfg_scale"].description
        assert "A1111 sampler name" in model.model_fields["sampler"].description
    # Saved configs must still load: training samples take what they always took.
    cfg = TrainConfig.model_validate({"samples": {"steps": 900, "cfg_scale": 80.0, "seed": -5}})
    assert (cfg.samples.steps, cfg.samples.cfg_scale, cfg.samples.seed) == (900, 80.0, -5)
    with pytest.raises(ValueError):
        GenerateConfig(steps=900)  # generation keeps its own, tighter bounds
    with pytest.raises(ValueError):
        TrainConfig.model_validate({"prior": {"seed": -1}})  # class images need a fixed seed


def test_openapi_shows_the_training_field_descriptions(workspace):
    from lorastudio.api.app import create_app
    from lorastudio.service.studio import Studio, StudioSettings

    studio = Studio(workspace, StudioSettings())
    try:
        schema = create_app(studio).openapi()
    finally:
        studio.close()
    body = schema["paths"]["/api/v1/jobs/train"]["post"]["requestBody"]["content"]["application/json"]
    components = schema["components"]["schemas"]

    def resolve(node: dict) -> dict:
        ref = node.get("$ref") or next((n["$ref"] for n in node.get("allOf", []) if "$ref" in n), None)
        return components[ref.rsplit("/", 1)[1]] if ref else node

    train = resolve(resolve(body["schema"])["properties"]["train"])
    assert train["properties"]["steps"]["description"] == TrainConfig.model_fields[
        "train"
    ].annotation.model_fields["steps"].description
    assert "max_train_steps" in train["properties"]["steps"]["description"]


# The key order of `TrainConfig().model_dump()`: LoRA metadata (`ss_lorastudio_config`) and
# config.yaml are written in it, so reordering fields changes every trained file's bytes.
TRAIN_CONFIG_KEYS = [
    "model", "family", "method", "trigger", "seed", "clip_skip",
    "data.dir", "data.default_caption", "data.caption_prefix_trigger", "data.shuffle_tags",
    "data.keep_tokens", "data.caption_dropout", "data.flip", "data.max_upscale", "data.tag_dropout",
    "data.color_aug", "data.repeats", "data.min_bucket_reso", "data.max_bucket_reso",
    "data.bucket_reso_steps", "data.bucket_no_upscale", "data.max_token_length",
    "data.caption_extension",
    "train.steps", "train.epochs_per_image", "train.max_epochs", "train.max_steps_per_image",
    "train.batch_size", "train.grad_accum", "train.learning_rate", "train.text_encoder_lr",
    "train.weight_decay", "train.optimizer", "train.optimizer_args", "train.lr_scheduler",
    "train.lr_warmup_steps", "train.lr_scheduler_num_cycles", "train.lr_scheduler_power",
    "train.resolution", "train.mixed_precision", "train.vae_fp32", "train.gradient_checkpointing", "train.torch_compile",
    "train.dynamo_backend", "train.min_snr_gamma",
    "train.noise_offset", "train.multires_noise_iterations", "train.multires_noise_discount",
    "train.attention", "train.max_grad_norm", "train.save_every_steps", "train.save_every_epochs",
    "train.keep_states", "train.ema_decay", "train.cache_text_encoder_outputs", "train.lr_warmup_ratio",
    "lora.rank", "lora.alpha", "lora.targets", "lora.conv_rank", "lora.type",
    "lora.train_text_encoder", "lora.dropout", "lora.conv_alpha",
    "embedding.num_vectors", "embedding.init_text", "embedding.learning_rate",
    "prior.class_prompt", "prior.class_dir", "prior.num_images", "prior.loss_weight",
    "prior.negative_prompt", "prior.steps", "prior.cfg_scale", "prior.sampler", "prior.seed",
    "output.name", "output.save_precision", "output.keep_last",
    "samples.prompts", "samples.every_steps", "samples.negative", "samples.steps",
    "samples.cfg_scale", "samples.sampler", "samples.seed",
    "scoring.enabled", "scoring.prompts", "scoring.scorers", "scoring.clip_model",
    "scoring.tagger_model", "scoring.validation_dir", "scoring.steps", "scoring.cfg_scale",
    "scoring.sampler", "scoring.seed",
    "preset",
]  # fmt: skip


def test_train_config_key_order_is_unchanged():
    assert list(flatten_keys(TrainConfig().model_dump(mode="json"))) == TRAIN_CONFIG_KEYS


def test_class_images_folder_name_is_unchanged():
    """Cached class images are found by this name: the same settings must give the same folder."""
    from lorastudio.train.prior import class_images_folder

    cfg = TrainConfig.model_validate(
        {
            "model": "tiny-sd15",
            "method": "dreambooth",
            "clip_skip": 2,
            "train": {"resolution": 256},
            "prior": {
                "class_prompt": "a photo of a dog",
                "negative_prompt": "blurry",
                "steps": 12,
                "cfg_scale": 6.5,
                "sampler": "DPM++ 2M Karras",
                "seed": 5,
            },
        }
    )
    folder = class_images_folder(cfg, Path("/ds"), "f00dfeedcafe0123")
    assert folder == Path("/ds/class-a_photo_of_a_dog-2e0596-f00dfeed-256")
    default = TrainConfig.model_validate({"prior": {"class_prompt": "a photo of a dog"}})
    assert class_images_folder(default, Path("/ds"), "f00dfeedcafe0123").name == (
        "class-a_photo_of_a_dog-ed1708-f00dfeed-512"
    )
