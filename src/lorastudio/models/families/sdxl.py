"""SDXL: CLIP ViT-L + OpenCLIP bigG, pooled text and size/crop conditioning, 1024 px."""

from lorastudio.models.families.base import Family

FAMILY = Family(
    name="sdxl",
    label="SDXL",
    pipeline_class="StableDiffusionXLPipeline",
    config_dir="sdxl",
    text_encoders=("text_encoder", "text_encoder_2"),
    tokenizer_pad_tokens=("<|endoftext|>", "!"),
    default_size=1024,
    prediction_type="epsilon",
    kohya_te_prefixes=("lora_te1", "lora_te2"),
    kohya_unet_ldm_names=True,
    ss_base_model_version="sdxl_base_v1-0",
    modelspec_architecture="stable-diffusion-xl-v1-base",
    embedding_keys=("clip_l", "clip_g"),
    uses_pooled_text=True,
    single_file_markers=("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",),
)
