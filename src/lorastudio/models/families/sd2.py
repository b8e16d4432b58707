"""Stable Diffusion 2.x: OpenCLIP ViT-H text encoder; 768-v models predict v (512-base: epsilon)."""

from lorastudio.models.families.base import Family

FAMILY = Family(
    name="sd2",
    label="SD 2.x",
    pipeline_class="StableDiffusionPipeline",
    config_dir="sd2",
    text_encoders=("text_encoder",),
    tokenizer_pad_tokens=("!",),
    default_size=768,
    prediction_type="v_prediction",
    kohya_te_prefixes=("lora_te",),
    kohya_unet_ldm_names=False,
    ss_base_model_version="sd_v2_v",
    modelspec_architecture="stable-diffusion-v2-768-v",
    embedding_keys=("emb_params",),
    single_file_markers=("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight",),
)
