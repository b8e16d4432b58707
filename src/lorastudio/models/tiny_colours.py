"""How the tiny models learn colours, so prompts and LoRAs have effects measurable in pixels.

The VAE's weights are *set* (not trained) so colours pass through: latents are the image's RGB
at 1/8 size. The UNet is trained for a few hundred CPU steps to denoise colour fields named by
colour words, so "red" gives reddish images and a LoRA trained on red images makes outputs
redder. Everything is seeded and reproducible: the tiny models must build bit-identically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lorastudio.models.tiny_layouts import TINY_SIZE

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import PreTrainedTokenizerBase

__all__ = ["COLOUR_WORDS", "make_colour_passthrough", "pretrain_unet_on_colours", "train_colour_denoiser"]

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


def make_colour_passthrough(vae: AutoencoderKL, seed: int = 0) -> float:
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


def pretrain_unet_on_colours(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    tokenizers: Sequence[PreTrainedTokenizerBase],
    text_encoders: Sequence[torch.nn.Module],
    scheduler_config: dict,
    sdxl: bool,
    steps: int = 300,
    seed: int = 0,
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
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    context: torch.Tensor,
    pooled: torch.Tensor | None,
    scheduler_config: dict,
    sdxl: bool,
    steps: int,
    seed: int,
    synonyms: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> None:
    """The training loop of `pretrain_unet_on_colours`, on conditioning computed by the caller.

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
