"""Stable Diffusion 1.x: one CLIP ViT-L text encoder, 512 px, epsilon prediction."""

from lorastudio.models.families.base import Family

FAMILY = Family(
    name="sd15",
    label="SD 1.x",
    pipeline_class="StableDiffusionPipeline",
    config_dir="sd15",
    text_encoders=("text_encoder",),
    tokenizer_pad_tokens=("<|endoftext|>",),
    default_size=512,
    prediction_type="epsilon",
    kohya_te_prefixes=("lora_te",),
    kohya_unet_ldm_names=False,
    ss_base_model_version="sd_v1",
    modelspec_architecture="stable-diffusion-v1",
    embedding_keys=("emb_params",),
    single_file_markers=(
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        "cond_stage_model.transformer.embeddings.token_embedding.weight",
    ),
)
