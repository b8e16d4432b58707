"""What a model family is: the facts every other module asks about SD1, SD2 or SDXL."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    """One Stable Diffusion architecture, described once.

    Adding a family (e.g. Kolors) means one new module in this package that builds a
    `Family` and a folder under `models/configs/` with its diffusers configs.
    """

    name: str  # short id used in configs and the library: "sd15", "sd2", "sdxl"
    label: str  # what users call it
    pipeline_class: str  # diffusers pipeline used for loading single files
    config_dir: str  # folder under lorastudio/models/configs with diffusers JSON configs
    text_encoders: tuple[str, ...]  # component names, in order
    tokenizer_pad_tokens: tuple[str, ...]  # pad token per tokenizer (SD1: EOS, OpenCLIP: "!")
    default_size: int  # native training/generation resolution in pixels
    prediction_type: str  # "epsilon" or "v_prediction"
    kohya_te_prefixes: tuple[str, ...]  # "lora_te" or ("lora_te1", "lora_te2")
    kohya_unet_ldm_names: bool  # SDXL kohya files name UNet modules after LDM blocks
    ss_base_model_version: str  # what A1111 reads to decide a LoRA's base
    modelspec_architecture: str  # SAI model-spec architecture id (without "/lora")
    embedding_keys: tuple[str, ...]  # tensor names in TI files per text encoder
    uses_pooled_text: bool = False  # SDXL: pooled text embeds + size/crop time ids
    # keys that identify an LDM single-file checkpoint of this family
    single_file_markers: tuple[str, ...] = field(default_factory=tuple)
    # How prompts become conditioning: "clip" (A1111's 75-token chunks, clip skip) or
    # "chatglm" (one left-padded window of `max_prompt_tokens`, no clip skip).
    text_encoder_kind: str = "clip"
    max_prompt_tokens: int = 75  # per chunk for CLIP; the whole prompt for ChatGLM
    supports_clip_skip: bool = True
    # What a request that does not name them gets (GenerateConfig's own defaults are SD's).
    default_guidance: float = 7.0
    default_sampler: str = "Euler a"
    # Training on a GPU when the config leaves them at their defaults: "auto" precision means
    # bf16-else-fp16, "bf16" means bf16-else-fp32 (fp16 overflows in Kolors' UNet, DiffSynth notes).
    train_precision: str = "auto"
    train_gradient_checkpointing: bool = False
    # model_index.json `_class_name`s that name this family's diffusers folders
    pipeline_names: tuple[str, ...] = field(default_factory=tuple)
    # a UNet tensor (diffusers name) whose presence marks a UNet-only file of this family
    unet_marker: str | None = None
    # diffusers scheduler config of the family's reference model (None: the folder's own)
    scheduler_config: dict | None = None

    @property
    def lora_te_count(self) -> int:
        return len(self.text_encoders)
