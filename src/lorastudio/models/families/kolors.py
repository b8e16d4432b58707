"""Kolors: an SDXL-class UNet conditioned by ChatGLM3-6B (Chinese prompts, 256 tokens).

The UNet is SDXL's layout plus a `text_proj` (`encoder_hid_proj`, 4096 -> 2048) that maps
ChatGLM's hidden states to the cross-attention width; pooled text (ChatGLM's last token)
and size/crop time ids go in like SDXL's. There is no single-file checkpoint: models are
diffusers folders, community fine-tunes are UNet-only files over one.
"""

from lorastudio.models.families.base import Family

# Kwai-Kolors/Kolors-diffusers scheduler/scheduler_config.json
SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.014,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1100,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "clip_sample": False,
    "set_alpha_to_one": False,
}

FAMILY = Family(
    name="kolors",
    label="Kolors",
    pipeline_class="KolorsPipeline",
    config_dir="kolors",  # nothing shipped: UNet-only files take their base folder's configs
    text_encoders=("text_encoder",),
    tokenizer_pad_tokens=("<unk>",),
    default_size=1024,
    prediction_type="epsilon",
    kohya_te_prefixes=(),  # LoRAs train the UNet only: a 6 B-parameter encoder is not adapted
    kohya_unet_ldm_names=True,  # the SDXL kohya layout
    ss_base_model_version="kolors",
    modelspec_architecture="kolors",
    embedding_keys=(),  # no textual-inversion format exists for ChatGLM
    uses_pooled_text=True,
    text_encoder_kind="chatglm",
    max_prompt_tokens=256,
    supports_clip_skip=False,
    default_guidance=5.0,
    train_precision="bf16",
    train_gradient_checkpointing=True,  # a 2.6 B-parameter UNet at 1024 px
    default_sampler="Euler",  # Kolors ships EulerDiscreteScheduler (not ancestral)
    pipeline_names=("KolorsPipeline", "KolorsImg2ImgPipeline"),
    unet_marker="encoder_hid_proj.weight",
    scheduler_config=SCHEDULER_CONFIG,
)
