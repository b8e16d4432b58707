"""Built-in tiny models (`tiny-sd15`, `tiny-sd2`, `tiny-sdxl`): real class layout, a few MB, built offline.

They make no art. They exist so tests and the demo exercise every mechanism (tokenizer,
text encoders, UNet blocks, VAE, LoRA keys, single-file export) in seconds on a CPU.
The VAE is trained for a few seconds on colour fields when built, so colours survive an
encode/decode round trip and "a LoRA trained on red images makes outputs redder" can be
measured in pixels. Everything is seeded: the same versions build the same weights.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lorastudio.models.tiny_widths import SD2_TEXT_WIDTH as _SD2_TEXT_WIDTH
from lorastudio.models.tiny_widths import SD15_WIDTH, SDXL_CROSS_WIDTH
from lorastudio.models.tokenizer import write_clip_tokenizer

__all__ = [
    "TINY_MODELS",
    "TINY_FAMILIES",
    "build_tiny_model",
    "ensure_tiny_model",
    "ensure_tiny_models",
    "is_tiny_name",
]

# tiny name -> the family (models/families) whose layout it copies
TINY_FAMILIES = {"tiny-sd15": "sd15", "tiny-sd2": "sd2", "tiny-sdxl": "sdxl", "tiny-kolors": "kolors"}
TINY_MODELS = tuple(TINY_FAMILIES)
BUILD_VERSION = 8  # bump when the recipe changes, so cached copies are rebuilt
TINY_SIZE = 64  # native pixel size of the tiny models (latents are 8x8)
# Fewer colour-pretraining steps than tiny-sd15's 300 keep the session's build short; the
# UNet still learns the colour words (tests/test_sd2.py measures it).
_SD2_PRETRAIN_STEPS = 220

_SCHEDULER_SD = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    # v-prediction (like SD 2.x 768-v): a few hundred CPU steps of training give a stable
    # denoiser; epsilon-prediction tiny UNets drift to black/white images at this budget.
    "prediction_type": "v_prediction",
    "timestep_spacing": "leading",
}


def is_tiny_name(name: str) -> bool:
    return name in TINY_FAMILIES


def _text_config(hidden: int, projection: int, act: str):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_attention_heads=4,
        num_hidden_layers=4,  # >= 2 so clip skip has layers to skip
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def _clip_like(encoder, seed: int):
    """Give the final layer norm a bias, as trained CLIP models have.

    A freshly initialised layer norm outputs vectors with mean exactly 0, which makes
    A1111's mean-restoring prompt emphasis ill-defined; real encoders never do that.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    norm = getattr(encoder, "text_model", encoder).final_layer_norm
    with torch.no_grad():
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=generator) * 0.5 + 0.2)
    return encoder


def _vae():
    from diffusers import AutoencoderKL

    # Four blocks -> 8x downsampling like the real VAE, so latent sizes match real models.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,  # groups wide enough for RGB + two reference channels
        sample_size=TINY_SIZE,
    )


def _unet_sd15():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=SD15_WIDTH,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def _unet_sd2():
    """SD 2.x's UNet layout, scaled down.

    Four blocks (three with cross-attention), linear projections in the transformers, and
    like SD2's (5, 10, 20, 20) heads over (320, 640, 1280, 1280) channels, more heads in
    deeper blocks at a constant head width: 16 here, 64 there.
    """
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(16, 32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=_SD2_TEXT_WIDTH,
        attention_head_dim=(1, 2, 4, 4),
        use_linear_projection=True,
        upcast_attention=True,  # as SD 2.1's config says (a no-op in fp32)
        norm_num_groups=8,
    )


def _unet_sdxl():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=TINY_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=SDXL_CROSS_WIDTH,  # 32 (CLIP-L stand-in) + 48 (bigG stand-in), concatenated
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 48,  # 6 time ids + pooled text
        norm_num_groups=8,
    )


def _colour_fields(generator, count: int, size: int):
    """Solid colours, two-colour gradients and blocks: what the tiny VAE must reproduce."""
    import torch

    colours = torch.rand(count, 2, 3, 1, 1, generator=generator)
    ramp = torch.linspace(0, 1, size).view(1, 1, 1, size)
    kind = torch.randint(0, 3, (count,), generator=generator).view(-1, 1, 1, 1)
    solid = colours[:, 0].expand(count, 3, size, size)
    gradient = (colours[:, 0] * (1 - ramp) + colours[:, 1] * ramp).expand(count, 3, size, size)
    blocks = torch.where(ramp.transpose(2, 3) < 0.5, colours[:, 0], colours[:, 1]).expand(
        count, 3, size, size
    )
    images = torch.where(kind == 0, solid, torch.where(kind == 1, gradient, blocks))
    return images * 2 - 1  # VAE range [-1, 1]


_REFERENCE = 100.0  # a constant channel that dominates GroupNorm statistics (see below)


def _set_identity(conv, channels: int | None = None) -> None:
    """Make a conv copy its first input channels to its first output channels (centre tap)."""
    import torch

    with torch.no_grad():
        conv.weight.zero_()
        centre = conv.kernel_size[0] // 2
        for c in range(channels if channels is not None else min(conv.in_channels, conv.out_channels)):
            conv.weight[c, c, centre, centre] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()


def _fit_output_conv(conv, features, targets) -> None:
    """Least-squares 1x1 map (centre tap of `conv`) from the RGB-carrying features to targets.

    Only channels 0-2 carry colour (the rest are constants), so fitting on them plus a
    bias keeps the system full-rank: a rank-deficient least-squares solve is not
    reproducible across runs, and the tiny models must build bit-identically.
    """
    import torch

    x = features[:, :3].permute(0, 2, 3, 1).reshape(-1, 3).double()
    y = targets.permute(0, 2, 3, 1).reshape(-1, targets.shape[1]).double()
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.solve(x1.T @ x1, x1.T @ y)  # (4, out), well conditioned
    solution = torch.round(solution * 1e9) / 1e9  # drop float noise below float32 precision
    with torch.no_grad():
        conv.weight.zero_()
        centre = conv.kernel_size[0] // 2
        conv.weight[:, :3, centre, centre] = solution[:-1].T.float()
        conv.bias.copy_(solution[-1].float())


def _make_colour_passthrough(vae, seed: int = 0) -> float:
    """Set the tiny VAE's weights so latents are the image's colours at 1/8 size.

    Trained tiny VAEs learn colours slowly on a CPU (GroupNorm flattens solid fields), so
    the weights are set instead: every ResNet and attention block becomes an identity
    through its residual path, down/upsamplers pick/copy pixels, and two constant
    reference channels (+K, -K) fix GroupNorm's statistics so it stays near-linear, so a least-squares fit of the two output convs
    maps features to RGB. Returns the latent scaling factor (unit-variance latents).
    """
    import torch
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, ResnetBlock2D):
                module.conv2.weight.zero_()
                module.conv2.bias.zero_()
                if module.conv_shortcut is not None:
                    _set_identity(module.conv_shortcut)
            elif isinstance(module, Attention):
                module.to_out[0].weight.zero_()
                module.to_out[0].bias.zero_()
            elif isinstance(module, (Downsample2D, Upsample2D)):
                _set_identity(module.conv)
        for conv_in in (vae.encoder.conv_in, vae.decoder.conv_in):
            _set_identity(conv_in, channels=3)
            conv_in.bias[3] = _REFERENCE
            conv_in.bias[4] = -_REFERENCE
        for norm in (vae.encoder.conv_norm_out, vae.decoder.conv_norm_out):
            norm.bias.fill_(5.0)  # keeps SiLU in its nearly linear range
        for quant in (vae.quant_conv, vae.post_quant_conv):
            if quant is not None:
                _set_identity(quant)

        generator = torch.Generator().manual_seed(seed)
        images = _colour_fields(generator, 48, 32)
        captured = {}
        hooks = [
            vae.encoder.conv_out.register_forward_hook(lambda m, a, o: captured.__setitem__("enc", a[0])),
            vae.decoder.conv_out.register_forward_hook(lambda m, a, o: captured.__setitem__("dec", a[0])),
        ]
        vae.encode(images)
        small = torch.nn.functional.avg_pool2d(images, 8)
        latent_target = torch.cat([small, torch.zeros_like(small[:, :1])], dim=1)
        logvar_target = torch.full_like(latent_target, -12.0)  # near-deterministic encoder
        _fit_output_conv(vae.encoder.conv_out, captured["enc"], torch.cat([latent_target, logvar_target], 1))
        vae.decode(latent_target)
        target = torch.nn.functional.interpolate(small, scale_factor=8, mode="nearest")
        _fit_output_conv(vae.decoder.conv_out, captured["dec"], target)
        for hook in hooks:
            hook.remove()
        latents = vae.encode(_colour_fields(generator, 32, TINY_SIZE)).latent_dist.mean
    # Like SD's 0.18215: scale latents to unit variance for the diffusion process.
    return float(1.0 / latents[:, :3].std().clamp(min=1e-3))


# Colour words the tiny UNets learn, so prompts have measurable effects in pixels.
COLOUR_WORDS = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.8, 0.2),
    "blue": (0.1, 0.2, 0.9),
    "yellow": (0.9, 0.9, 0.1),
    "white": (0.95, 0.95, 0.95),
    "black": (0.05, 0.05, 0.05),
    "purple": (0.6, 0.1, 0.7),
    "orange": (1.0, 0.55, 0.05),
    "grey": (0.5, 0.5, 0.5),
}


def _encode_captions(captions: list[str], tokenizers, text_encoders, pooled: bool):
    """Conditioning as generation computes it for short prompts (77 tokens, weights 1)."""
    import torch

    hidden, pooled_out = [], None
    for tokenizer, encoder in zip(tokenizers, text_encoders, strict=True):
        ids = tokenizer(
            captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        out = encoder(ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2] if pooled else out.last_hidden_state)
        if pooled and hasattr(out, "text_embeds"):
            pooled_out = out.text_embeds  # SDXL pools from its second (projection) encoder
    return torch.cat(hidden, dim=-1), pooled_out


def _pretrain_unet_on_colours(
    unet, vae, tokenizers, text_encoders, scheduler_config: dict, sdxl: bool, steps: int = 300, seed: int = 0
) -> None:
    """Teach the tiny UNet to denoise colour fields named by their caption.

    A random UNet drives samplers off to infinity (black or white images). A minute of
    CPU training makes it a real, if simple, text-conditioned denoiser: "red" gives red.
    """
    import torch

    captions = list(COLOUR_WORDS) + [""]  # "" teaches the unconditional prediction CFG needs
    with torch.no_grad():
        context, pooled = _encode_captions(captions, tokenizers, text_encoders, sdxl)
    train_colour_denoiser(unet, vae, context, pooled, scheduler_config, sdxl, steps, seed)


def train_colour_denoiser(
    unet, vae, context, pooled, scheduler_config: dict, sdxl: bool, steps: int, seed: int, synonyms=None
) -> None:
    """The training loop of `_pretrain_unet_on_colours`, on conditioning computed by the caller.

    `context`/`pooled` hold one row per colour word (COLOUR_WORDS' order) and a last row for
    "". `synonyms` (optional) are more rows in the same order, e.g. the words in Chinese:
    each sample then picks one of the two spellings.
    """
    import torch
    from diffusers import DDPMScheduler

    generator = torch.Generator().manual_seed(seed)
    words = list(COLOUR_WORDS)
    noise_scheduler = DDPMScheduler.from_config(
        {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    )
    colours = torch.tensor([COLOUR_WORDS[w] for w in words])
    # Latents of jittered colour fields, encoded once: the VAE is the slow part on a CPU.
    variants = 12
    jitter = (torch.rand(len(words) * variants, 3, generator=generator) - 0.5) * 0.1
    rgb = (colours.repeat_interleave(variants, 0) + jitter).clamp(0, 1)
    with torch.no_grad():
        fields = rgb.view(-1, 3, 1, 1).expand(-1, 3, TINY_SIZE, TINY_SIZE) * 2 - 1
        pool = (
            torch.cat([vae.encode(part).latent_dist.mean for part in fields.split(27)])
            * vae.config.scaling_factor
        )
    pool_words = torch.arange(len(words)).repeat_interleave(variants)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-3, weight_decay=0.0)
    unet.train()
    batch = 16
    for _ in range(steps):
        pick = torch.randint(0, len(pool), (batch,), generator=generator)
        latents, which = pool[pick], pool_words[pick]
        drop = torch.rand(batch, generator=generator) < 0.15
        caption_index = torch.where(drop, torch.full_like(which, len(words)), which)
        rows_context, rows_pooled = context, pooled
        if synonyms is not None and bool(torch.rand(1, generator=generator) < 0.5):
            rows_context, rows_pooled = synonyms
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator
        )
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        kwargs = {}
        if sdxl:
            time_ids = torch.tensor(
                [[TINY_SIZE, TINY_SIZE, 0, 0, TINY_SIZE, TINY_SIZE]] * batch, dtype=torch.float32
            )
            kwargs["added_cond_kwargs"] = {"text_embeds": rows_pooled[caption_index], "time_ids": time_ids}
        prediction = unet(noisy, timesteps, encoder_hidden_states=rows_context[caption_index], **kwargs).sample
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        loss = torch.nn.functional.mse_loss(prediction, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    unet.eval()


def build_tiny_model(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Build a tiny model as a diffusers folder (weights + configs + tokenizers)."""

    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {name!r}")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Writing model shards" bars per component
    with single_threaded_torch():  # also: the same weights on every machine (threads change float sums)
        return _build(name, folder, seed)


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Torch on one thread inside the block: tiny models' operations gain nothing from a second, and
    on a busy 2-core machine two OpenMP threads made a tiny training step up to 28x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _build(name: str, folder: Path, seed: int) -> Path:
    import torch

    builders = {"tiny-sd15": _build_sd15, "tiny-sd2": _build_sd2, "tiny-sdxl": _build_sdxl, "tiny-kolors": _build_kolors}
    with torch.random.fork_rng(), tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        torch.manual_seed(seed)
        work = Path(tmp) / "model"
        vae = _vae()
        vae.register_to_config(scaling_factor=_make_colour_passthrough(vae, seed=seed))
        vae.save_pretrained(work / "vae")
        torch.manual_seed(seed + 1)
        index = builders[name](work, vae, seed)
        (work / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        info = {"family": TINY_FAMILIES[name], "tiny": name, "build_version": BUILD_VERSION, "seed": seed}
        (work / "lorastudio.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)  # appears complete or not at all
    return folder


def _model_index(head: dict, scheduler, tail: dict) -> dict:
    """model_index.json in the order diffusers writes it for real checkpoints of the family."""
    shared = {
        "scheduler": ["diffusers", type(scheduler).__name__],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    return {**head, **shared, **tail}


def _build_one_encoder_model(
    work: Path, vae, unet, encoder, pad_token: str, scheduler, seed: int, steps: int
) -> dict:
    """SD 1.x and 2.x: one tokenizer and text encoder, a StableDiffusionPipeline folder."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer(work / "tokenizer", pad_token=pad_token)
    tokenizers = [CLIPTokenizer.from_pretrained(work / "tokenizer")]
    _pretrain_unet_on_colours(
        unet, vae, tokenizers, [encoder], _SCHEDULER_SD, sdxl=False, steps=steps, seed=seed
    )
    unet.save_pretrained(work / "unet")
    encoder.save_pretrained(work / "text_encoder")
    scheduler.save_pretrained(work / "scheduler")
    head = {
        "_class_name": "StableDiffusionPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }
    # SD 2.x folders, like SD 1.x ones saved without the checker, have no safety checker.
    tail = {
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "image_encoder": [None, None],
    }
    return _model_index(head, scheduler, tail)


def _build_sd15(work: Path, vae, seed: int) -> dict:
    from diffusers import PNDMScheduler
    from transformers import CLIPTextModel

    unet = _unet_sd15()
    encoder = _clip_like(CLIPTextModel(_text_config(SD15_WIDTH, SD15_WIDTH, "quick_gelu")), seed)
    scheduler = PNDMScheduler.from_config(_SCHEDULER_SD)
    return _build_one_encoder_model(work, vae, unet, encoder, "<|endoftext|>", scheduler, seed, 300)


def _build_sd2(work: Path, vae, seed: int) -> dict:
    """SD 2.x: OpenCLIP ViT-H text encoder as diffusers stores it (CLIPTextModel, exact GELU),
    a tokenizer that pads with "!", and SD 2.1's DDIM scheduler predicting v."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextModel

    unet = _unet_sd2()
    config = _text_config(_SD2_TEXT_WIDTH, _SD2_TEXT_WIDTH, "gelu")
    encoder = _clip_like(CLIPTextModel(config), seed)
    scheduler = DDIMScheduler.from_config({k: v for k, v in _SCHEDULER_SD.items() if k != "skip_prk_steps"})
    return _build_one_encoder_model(work, vae, unet, encoder, "!", scheduler, seed, _SD2_PRETRAIN_STEPS)


def _build_sdxl(work: Path, vae, seed: int) -> dict:
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    unet = _unet_sdxl()
    text_encoders = [
        _clip_like(CLIPTextModel(_text_config(32, 32, "quick_gelu")), seed),
        # A different width from encoder 1, as in real SDXL (768 vs 1280): loaders
        # such as diffusers' single-file code tell the two encoders apart by width.
        _clip_like(CLIPTextModelWithProjection(_text_config(48, 48, "gelu")), seed + 1),
    ]
    write_clip_tokenizer(work / "tokenizer", pad_token="<|endoftext|>")
    write_clip_tokenizer(work / "tokenizer_2", pad_token="!")
    tokenizers = [
        CLIPTokenizer.from_pretrained(work / "tokenizer"),
        CLIPTokenizer.from_pretrained(work / "tokenizer_2"),
    ]
    _pretrain_unet_on_colours(unet, vae, tokenizers, text_encoders, _SCHEDULER_SD, sdxl=True, seed=seed)
    unet.save_pretrained(work / "unet")
    text_encoders[0].save_pretrained(work / "text_encoder")
    text_encoders[1].save_pretrained(work / "text_encoder_2")
    sched = dict(_SCHEDULER_SD, _class_name="EulerDiscreteScheduler")
    for key in ("set_alpha_to_one", "skip_prk_steps", "clip_sample"):
        sched.pop(key)
    scheduler = EulerDiscreteScheduler.from_config(sched)
    scheduler.save_pretrained(work / "scheduler")
    head = {
        "_class_name": "StableDiffusionXLPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "force_zeros_for_empty_prompt": True,
    }
    return _model_index(head, scheduler, {"feature_extractor": [None, None], "image_encoder": [None, None]})


def _build_kolors(work: Path, vae, seed: int) -> dict:
    """tiny-kolors (see models/tiny_kolors.py), taught the colour words like the others."""
    from lorastudio.models.tiny_kolors import build_kolors

    def pretrain(unet, context, pooled, synonyms, scheduler_config: dict, steps: int) -> None:
        train_colour_denoiser(unet, vae, context, pooled, scheduler_config, True, steps, seed, synonyms=synonyms)

    return build_kolors(work, seed, TINY_SIZE, list(COLOUR_WORDS), pretrain)


def _is_current(folder: Path) -> bool:
    marker = folder / "lorastudio.json"
    if not marker.is_file():
        return False
    return json.loads(marker.read_text(encoding="utf-8")).get("build_version") == BUILD_VERSION


def ensure_tiny_model(name: str, models_dir: str | Path) -> Path:
    """The tiny model's folder in `models_dir`, built on first use (about a minute)."""
    folder = Path(models_dir) / name
    if _is_current(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    return build_tiny_model(name, folder)


def ensure_tiny_models(names: tuple[str, ...], models_dir: str | Path, processes: int | None = None) -> Path:
    """Build every missing tiny model, one process per core (each build is single-threaded).

    The builds are independent and deterministic, so building them side by side gives the
    same files as one after another, in less time on a multi-core machine.
    """
    import os
    import subprocess
    import sys
    import time

    models_dir = Path(models_dir)
    waiting = [n for n in names if not _is_current(models_dir / n)]
    slots = max(1, min(processes or os.cpu_count() or 1, len(waiting)))
    code = (
        "import sys; from lorastudio.models.tiny import ensure_tiny_model as e; e(sys.argv[1], sys.argv[2])"
    )
    running: dict[str, subprocess.Popen] = {}
    while waiting or running:
        while waiting and len(running) < slots:
            name = waiting.pop(0)
            running[name] = subprocess.Popen([sys.executable, "-c", code, name, str(models_dir)])
        for name, process in list(running.items()):
            if process.poll() is not None:
                del running[name]
                if process.returncode != 0:
                    raise RuntimeError(
                        f"building tiny model {name!r} failed (exit code {process.returncode})."
                    )
        time.sleep(0.2)
    return models_dir
