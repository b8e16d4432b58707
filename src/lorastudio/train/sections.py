"""The sections of a training config beside `train:`: data, lora, embedding, prior, output, samples, scoring.

Each is one typed model with a description per key (the API schema and `--help` show them);
`TrainConfig` in train.config puts them together.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lorastudio.config import StrictModel
from lorastudio.errors import LorastudioError
from lorastudio.generate.config import CfgScale, SamplerName, SamplingSeed, SamplingSteps

__all__ = [
    "DataConfig",
    "EmbeddingConfig",
    "LoraConfig",
    "OutputConfig",
    "PriorConfig",
    "SamplesConfig",
    "ScoringConfig",
]


def _known_sampler(value: str) -> str:
    """A sampler the samples, class images and contact sheet can draw with: checked here, before a run
    starts, not at the first image (`generate.samplers.parse_sampler`: A1111's names and aliases)."""
    from lorastudio.generate.samplers import parse_sampler

    try:
        parse_sampler(value)
    except LorastudioError as exc:
        raise ValueError(str(exc)) from None
    return value


class DataConfig(StrictModel):
    """The training images and how their captions are read."""

    dir: str = Field(
        "",
        description="An imported data set name, or a folder / metadata file path (kohya train_data_dir, in_json).",
    )
    default_caption: str = Field(
        "",
        description="Caption for images without one (EasyPhoto: the trigger; kohya: the NN_name folder's name).",
    )
    caption_prefix_trigger: bool = Field(
        True, description="Put the trigger first in every caption that lacks it."
    )
    shuffle_tags: bool = Field(
        False,
        description="Shuffle comma-separated caption tags each step, keeping the first `keep_tokens` in place"
        " (kohya shuffle_caption).",
    )
    keep_tokens: int = Field(
        1,
        ge=0,
        description="Leading caption tags kept in place by shuffling and never dropped by tag dropout"
        " (kohya keep_tokens).",
    )
    caption_dropout: float = Field(
        0.0, ge=0.0, le=1.0, description="Chance that an exposure trains on an empty caption (kohya caption_dropout_rate)."
    )
    flip: bool = Field(
        False, description="Random horizontal flip; cached as a second latent per image (kohya flip_aug)."
    )
    max_upscale: float = Field(
        1.0, ge=1.0, description="Refuse images that would need more upscaling than this to fill their bucket."
    )
    # kohya parity (caption_tag_dropout_rate, color_aug, bucket options, subset num_repeats).
    tag_dropout: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Drop each caption tag with this chance, except the first keep_tokens"
        " (kohya caption_tag_dropout_rate).",
    )
    color_aug: bool = Field(
        False,
        description="Small hue/brightness jitter per exposure (kohya color_aug); latents are then encoded"
        " every step instead of cached.",
    )
    repeats: int | None = Field(
        None,
        ge=1,
        description="Exposures of every image per epoch (kohya num_repeats / dataset_repeats);"
        " default: the NN_ prefix of the image folder, else 1.",
    )
    min_bucket_reso: int | None = Field(
        None,
        ge=64,
        description="Smallest aspect-ratio bucket side in pixels (kohya min_bucket_reso);"
        " default: half the resolution, at most 256.",
    )
    max_bucket_reso: int | None = Field(
        None,
        ge=64,
        description="Largest aspect-ratio bucket side in pixels (kohya max_bucket_reso); default: 2 x resolution.",
    )
    bucket_reso_steps: int = Field(
        64, ge=8, multiple_of=8, description="Bucket sides are multiples of this, in pixels (kohya bucket_reso_steps)."
    )
    bucket_no_upscale: bool = Field(
        False,
        description="Small images keep their size, rounded down to bucket_reso_steps, instead of being"
        " upscaled (kohya bucket_no_upscale).",
    )
    max_token_length: Literal[75, 150, 225] = Field(
        75,
        description="Caption tokens the text encoder reads (kohya max_token_length): 150 or 225 encode a long"
        " caption in 75-token chunks and join them, as A1111 reads a long prompt; a caption past it is cut"
        " (the run says how many). Kolors reads 256.",
    )
    caption_extension: str | None = Field(
        None,
        description="A folder's caption files: read only this one beside each image, e.g. '.caption' for BLIP"
        " captions (kohya caption_extension); default: '.txt', else '.caption'.",
    )

    @field_validator("caption_extension")
    @classmethod
    def _known_caption_extension(cls, value: str | None) -> str | None:
        from lorastudio.data.sources import caption_extension_of  # PIL: not at import (`lorastudio --help`)

        try:
            return caption_extension_of(value)
        except LorastudioError as exc:
            raise ValueError(str(exc)) from None


class LoraConfig(StrictModel):
    """The LoRA network (methods lora and pivotal)."""

    rank: int = Field(16, ge=1, description="LoRA rank: size of the low-rank matrices (kohya network_dim).")
    alpha: float = Field(
        8.0,
        gt=0,
        description="LoRA alpha: the update is scaled by alpha / rank, so alpha = rank means no scaling"
        " (kohya network_alpha).",
    )
    targets: Literal["attn", "kohya", "locon"] = Field(
        "kohya",
        description="Layers that get a LoRA: attn (attention only), kohya (attention and transformer"
        " projections, as sd-scripts' networks.lora), locon (kohya plus the 3x3 convs).",
    )
    conv_rank: int | None = Field(
        None, ge=1, description="locon: rank of the 3x3 convs (kohya conv_dim); default: rank."
    )
    type: Literal["lora", "loha", "lokr"] = Field(
        "lora",
        description="Network type: plain LoRA, or LyCORIS LoHa / LoKr saved in LyCORIS' layout (kohya"
        " network_module lycoris.kohya, network_args algo).",
    )
    train_text_encoder: bool = Field(
        False,
        description="Also train LoRA layers on the text encoder(s) (kohya: network_train_unet_only false).",
    )
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA down-projection output (kohya network_dropout)."
    )
    conv_alpha: float | None = Field(
        None,
        gt=0,
        description="locon: alpha of the 3x3 convs, whose update is scaled by conv_alpha / conv_rank"
        " (kohya conv_alpha); default: alpha.",
    )


class EmbeddingConfig(StrictModel):
    """The trigger embedding (textual inversion; methods embedding and pivotal)."""

    num_vectors: int = Field(
        1, ge=1, le=75, description="Tokens the trigger stands for (vectors per token of the embedding)."
    )
    init_text: str = Field(
        "person", description="Words whose token embeddings start the trigger's vectors."
    )
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="Learning rate of the embedding vectors; default: train.text_encoder_lr, else"
        " train.learning_rate.",
    )


class OutputConfig(StrictModel):
    """What the run saves and under which name."""

    name: str = Field(
        "",
        description="File name of the LoRA / model in the library, without suffix (kohya output_name);"
        " default: the run name.",
    )
    save_precision: Literal["fp16", "bf16", "fp32"] = Field(
        "fp16",
        description="Precision of saved LoRA / LyCORIS files and dreambooth/finetune checkpoints"
        " (kohya save_precision; fp16 as its guide recommends).",
    )
    keep_last: int | None = Field(
        None,
        ge=1,
        description="Step checkpoints kept, newest first (kohya save_last_n_epochs); the final and the"
        " best-scored one always stay. Default: all.",
    )


class PriorConfig(StrictModel):
    """Prior preservation (DreamBooth): class images keep the model's idea of the class.

    Set `class_prompt` to enable it with any method. Missing class images are generated
    with the base model before training and kept for later runs.
    """

    class_prompt: str = Field(
        "",
        description="Prompt of the class images, e.g. 'a photo of a dog'; empty = no prior preservation"
        " (kohya class_tokens of the reg subset).",
    )
    class_dir: str = Field(
        "",
        description="Folder or data set of class images (kohya reg_data_dir); default: lorastudio's own"
        " datasets/class-<prompt>-<settings>-<model>-<resolution>.",
    )
    num_images: int = Field(
        100, ge=1, description="Class images wanted: missing ones are generated until the folder holds this many."
    )
    loss_weight: float = Field(
        1.0, gt=0, description="Weight of the class-image loss beside the training loss (kohya prior_loss_weight)."
    )
    negative_prompt: str = Field("", description="Negative prompt of generated class images.")
    steps: SamplingSteps = Field(25, description="Sampling steps of generated class images.")
    cfg_scale: CfgScale = 7.0
    sampler: SamplerName = "Euler a"
    _sampler_known = field_validator("sampler")(_known_sampler)
    seed: SamplingSeed = Field(
        0,
        ge=0,
        description="Seed of the first class image; class image i uses seed + i (fixed, so the folder is reused).",
    )


class SamplesConfig(StrictModel):
    """Sample images drawn with the model being trained, saved in the run's samples/step-N/."""

    prompts: list[str] = Field(
        default_factory=list,
        description="Prompts drawn at every sample step (kohya sample_prompts); empty = no samples. Each may"
        " end in kohya's options: --n negative, --w/--h size, --d seed, --l CFG scale, --s steps, --ss sampler.",
    )
    every_steps: int | None = Field(
        None, ge=1, description="Draw samples every N steps (kohya sample_every_n_steps); default: at every checkpoint."
    )
    negative: str = Field("", description="Negative prompt of the samples.")
    steps: SamplingSteps = 20
    cfg_scale: CfgScale = 7.0
    sampler: SamplerName = Field("Euler a", description="A1111 sampler name of the samples (kohya sample_sampler).")
    _sampler_known = field_validator("sampler")(_known_sampler)
    seed: SamplingSeed = Field(0, description="Seed of every sample image (-1 = random).")

    @field_validator("prompts", mode="before")
    @classmethod
    def _one_prompt(cls, value):
        """`samples.prompts="red girl"` is one prompt (a prompt's commas are its own, never a list); "" none."""
        if value is None:
            return []
        if isinstance(value, str):
            return [value] if value.strip() else []
        return value

    @field_validator("prompts")
    @classmethod
    def _options_read(cls, value: list[str]) -> list[str]:
        """kohya's per-line options (`--n lowres --w 64`) are checked here, before a run starts."""
        from lorastudio.train.sample_prompts import parse_sample_prompt

        for line in value:
            parse_sample_prompt(line)
        return value


class ScoringConfig(StrictModel):
    """Checkpoint choice after training: score every checkpoint, copy the best to loras/."""

    enabled: bool = Field(True, description="Score the checkpoints after training and keep the best one.")
    prompts: list[str] = Field(
        default_factory=list,
        description="Prompts of the contact sheet and the image scorers; default: the trigger and one"
        " training caption.",
    )
    scorers: list[str] = Field(
        default_factory=lambda: ["validation_loss", "clip_similarity", "tag_agreement"],
        description="Scorers to run; the first one that can run decides the best checkpoint.",
    )
    clip_model: str = Field(
        "", description="A local CLIP-vision folder; enables the clip_similarity scorer."
    )
    tagger_model: str = Field(
        "", description="A local WD14 tagger folder; enables the tag_agreement scorer."
    )
    validation_dir: str = Field(
        "",
        description="Held-out images for validation_loss and the references; default: a few training images.",
    )
    steps: SamplingSteps = Field(20, description="Sampling steps of the contact sheet.")
    cfg_scale: CfgScale = 7.0
    sampler: SamplerName = "Euler a"
    _sampler_known = field_validator("sampler")(_known_sampler)
    seed: SamplingSeed = Field(0, description="Seed of every contact-sheet image (-1 = random).")
