"""Tiny SwinIR, SCUNet and pixel-shuffle ESRGAN files: random weights under the released key names.

The keys and shapes are written out from the published layouts (JingyunLiang/SwinIR's
`network_swinir.py`, cszn/SCUNet's `network_scunet.py`, BasicSR's old `architecture.py`), not
taken from lorastudio's networks, so a name or shape the networks get wrong fails the strict load.
"""

from __future__ import annotations


def _random(shapes: dict[str, tuple[int, ...]], seed: int, std: float = 0.1) -> dict:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) * std for key, shape in shapes.items()}


def _conv(shapes: dict, name: str, out_ch: int, in_ch: int, kernel: int = 3, bias: bool = True) -> None:
    shapes[f"{name}.weight"] = (out_ch, in_ch, kernel, kernel)
    if bias:
        shapes[f"{name}.bias"] = (out_ch,)


def _linear(shapes: dict, name: str, out_f: int, in_f: int) -> None:
    shapes[f"{name}.weight"] = (out_f, in_f)
    shapes[f"{name}.bias"] = (out_f,)


def _norm(shapes: dict, name: str, dim: int) -> None:
    shapes[f"{name}.weight"] = (dim,)
    shapes[f"{name}.bias"] = (dim,)


def old_esrgan_pixelshuffle_state(
    num_feat: int = 8, num_block: int = 1, grow: int = 4, seed: int = 0, scale: int = 4
) -> dict:
    """An old-layout ESRGAN whose upsampler is conv -> PixelShuffle(2) -> LeakyReLU, twice (4x).

    BasicSR's `sequential` flattens the blocks: model.2 conv (4*nf out), model.3 shuffle, model.4
    act, model.5 conv, ..., model.8 HR conv, model.10 the last conv. Its 2x and 3x files take one
    step (model.2: 4*nf or 9*nf out, PixelShuffle(2 or 3)): model.5 the HR conv, model.7 the last.
    """
    shapes: dict = {}
    _conv(shapes, "model.0", num_feat, 3)
    for n in range(num_block):
        for rdb in (1, 2, 3):
            for i in range(1, 6):
                out_ch = num_feat if i == 5 else grow
                _conv(shapes, f"model.1.sub.{n}.RDB{rdb}.conv{i}.0", out_ch, num_feat + (i - 1) * grow)
    _conv(shapes, f"model.1.sub.{num_block}", num_feat, num_feat)
    if scale == 4:
        _conv(shapes, "model.2", 4 * num_feat, num_feat)
        _conv(shapes, "model.5", 4 * num_feat, num_feat)
        _conv(shapes, "model.8", num_feat, num_feat)
        _conv(shapes, "model.10", 3, num_feat)
    else:
        _conv(shapes, "model.2", scale * scale * num_feat, num_feat)
        _conv(shapes, "model.5", num_feat, num_feat)
        _conv(shapes, "model.7", 3, num_feat)
    return _random(shapes, seed)


def old_esrgan_nearest_state(
    num_feat: int = 8, num_block: int = 1, grow: int = 4, upsamples: int = 2, plus: bool = False, seed: int = 0
) -> dict:
    """An old-layout ESRGAN with the nearest upsampler (old `architecture.py`'s `upconv_blcok`: Upsample,
    conv, act per step, so convs at model.3, model.6, ...; then the HR conv and the last conv two apart).
    `plus`: ESRGAN+'s dense blocks, each with a bias-free 1x1 conv `RDBk.conv1x1` (grow x num_feat)."""
    shapes: dict = {}
    _conv(shapes, "model.0", num_feat, 3)
    for n in range(num_block):
        for rdb in (1, 2, 3):
            for i in range(1, 6):
                out_ch = num_feat if i == 5 else grow
                _conv(shapes, f"model.1.sub.{n}.RDB{rdb}.conv{i}.0", out_ch, num_feat + (i - 1) * grow)
            if plus:
                _conv(shapes, f"model.1.sub.{n}.RDB{rdb}.conv1x1", grow, num_feat, kernel=1, bias=False)
    _conv(shapes, f"model.1.sub.{num_block}", num_feat, num_feat)
    for step in range(1, upsamples + 1):
        _conv(shapes, f"model.{3 * step}", num_feat, num_feat)
    _conv(shapes, f"model.{3 * upsamples + 2}", num_feat, num_feat)
    _conv(shapes, f"model.{3 * upsamples + 4}", 3, num_feat)
    return _random(shapes, seed)


def _relative_position_index(window: int):
    """SwinIR's buffer: the index into the bias table of every (query, key) pair in a window."""
    import torch

    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def swinir_state(
    embed_dim: int = 16,
    depths: tuple[int, ...] = (2, 2),
    heads: tuple[int, ...] = (2, 2),
    window: int = 4,
    img_size: int = 16,
    mlp_ratio: int = 2,
    upsampler: str = "nearest+conv",
    resi: str = "3conv",
    num_feat: int = 16,
    scale: int = 4,
    seed: int = 0,
    in_chans: int = 3,
    unshuffle: int = 1,
) -> dict:
    """A SwinIR state dict; the defaults are the real-SR x4 GAN model's layout (SwinIR-L: 240 dim,
    9 x 6 blocks of 8 heads, window 8, img_size 64, mlp ratio 2, 3conv, nearest+conv) made tiny;
    `in_chans=1` the greyscale denoisers' (004_grayDN); `unshuffle` > 1 DiffBIR v1's stage-1 model
    (`conv_first = Sequential(PixelUnshuffle(unshuffle), Conv2d)`: the conv at `conv_first.1`, taking
    in_chans * unshuffle^2 channels; general_swinir_v1 is unshuffle 8 with an 8x nearest+conv head)."""
    import torch

    shapes: dict = {}
    _conv(shapes, "conv_first.1" if unshuffle > 1 else "conv_first", embed_dim, in_chans * unshuffle * unshuffle)
    _norm(shapes, "patch_embed.norm", embed_dim)
    for i, (depth, head) in enumerate(zip(depths, heads, strict=True)):
        for j in range(depth):
            block = f"layers.{i}.residual_group.blocks.{j}"
            _norm(shapes, f"{block}.norm1", embed_dim)
            shapes[f"{block}.attn.relative_position_bias_table"] = ((2 * window - 1) ** 2, head)
            _linear(shapes, f"{block}.attn.qkv", 3 * embed_dim, embed_dim)
            _linear(shapes, f"{block}.attn.proj", embed_dim, embed_dim)
            _norm(shapes, f"{block}.norm2", embed_dim)
            _linear(shapes, f"{block}.mlp.fc1", mlp_ratio * embed_dim, embed_dim)
            _linear(shapes, f"{block}.mlp.fc2", embed_dim, mlp_ratio * embed_dim)
        _residual_conv(shapes, f"layers.{i}.conv", embed_dim, resi)
    _norm(shapes, "norm", embed_dim)
    _residual_conv(shapes, "conv_after_body", embed_dim, resi)
    if upsampler == "nearest+conv":
        _conv(shapes, "conv_before_upsample.0", num_feat, embed_dim)
        for i in range(1, scale.bit_length()):
            _conv(shapes, f"conv_up{i}", num_feat, num_feat)
        _conv(shapes, "conv_hr", num_feat, num_feat)
        _conv(shapes, "conv_last", in_chans, num_feat)
    elif upsampler == "pixelshuffle":
        _conv(shapes, "conv_before_upsample.0", num_feat, embed_dim)
        factors = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
        for i, factor in enumerate(factors):
            _conv(shapes, f"upsample.{2 * i}", factor * factor * num_feat, num_feat)
        _conv(shapes, "conv_last", in_chans, num_feat)
    elif upsampler == "pixelshuffledirect":
        _conv(shapes, "upsample.0", in_chans * scale * scale, embed_dim)
    else:
        _conv(shapes, "conv_last", in_chans, embed_dim)
    state = _random(shapes, seed)
    cells = (img_size // window) ** 2
    for i, depth in enumerate(depths):
        for j in range(depth):
            block = f"layers.{i}.residual_group.blocks.{j}"
            state[f"{block}.attn.relative_position_index"] = _relative_position_index(window)
            if j % 2:  # shifted blocks keep their mask for img_size as a buffer
                state[f"{block}.attn_mask"] = torch.zeros(cells, window * window, window * window)
    return state


def _residual_conv(shapes: dict, name: str, dim: int, resi: str) -> None:
    if resi == "1conv":
        _conv(shapes, name, dim, dim)
        return
    _conv(shapes, f"{name}.0", dim // 4, dim)
    _conv(shapes, f"{name}.2", dim // 4, dim // 4, kernel=1)
    _conv(shapes, f"{name}.4", dim, dim // 4)


def scunet_state(
    dim: int = 16, config: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 1), head_dim: int = 8, window: int = 2, seed: int = 0,
    std: float = 0.1, in_nc: int = 3,
) -> dict:
    """A SCUNet state dict (scunet_color_real_gan: dim 64, config 4,4,4,4,4,4,4, head_dim 32, window 8);
    `std` 0.05 keeps the random U-Net from amplifying its input into noise; `in_nc=1` scunet_gray_*."""
    shapes: dict = {}

    def blocks(stage: str, first: int, count: int, half: int) -> None:
        for b in range(first, first + count):
            name = f"{stage}.{b}"
            trans = f"{name}.trans_block"
            _norm(shapes, f"{trans}.ln1", half)
            _linear(shapes, f"{trans}.msa.embedding_layer", 3 * half, half)
            shapes[f"{trans}.msa.relative_position_params"] = (half // head_dim, 2 * window - 1, 2 * window - 1)
            _linear(shapes, f"{trans}.msa.linear", half, half)
            _norm(shapes, f"{trans}.ln2", half)
            _linear(shapes, f"{trans}.mlp.0", 4 * half, half)
            _linear(shapes, f"{trans}.mlp.2", half, 4 * half)
            _conv(shapes, f"{name}.conv1_1", 2 * half, 2 * half, kernel=1)
            _conv(shapes, f"{name}.conv1_2", 2 * half, 2 * half, kernel=1)
            _conv(shapes, f"{name}.conv_block.0", half, half, bias=False)
            _conv(shapes, f"{name}.conv_block.2", half, half, bias=False)

    _conv(shapes, "m_head.0", dim, in_nc, bias=False)
    for level, stage in enumerate(("m_down1", "m_down2", "m_down3")):
        width = dim * 2**level
        blocks(stage, 0, config[level], width // 2)
        _conv(shapes, f"{stage}.{config[level]}", 2 * width, width, kernel=2, bias=False)
    blocks("m_body", 0, config[3], 4 * dim)
    for level, stage in zip((2, 1, 0), ("m_up3", "m_up2", "m_up1"), strict=True):
        width = dim * 2**level
        shapes[f"{stage}.0.weight"] = (2 * width, width, 2, 2)  # ConvTranspose2d: (in, out, k, k)
        blocks(stage, 1, config[6 - level], width // 2)
    _conv(shapes, "m_tail.0", in_nc, dim, bias=False)
    return _random(shapes, seed, std)



def swin_relative_state(kind: str, seed: int = 0) -> dict:
    """A tiny HAT or Swin2SR state dict: SwinIR's key names plus the relative's own (XPixelGroup/HAT's
    `hat_arch.py`, mv-lab/swin2sr's `network_swin2sr.py`), made from `swinir_state`'s 2x layout."""
    import torch

    state = swinir_state(upsampler="pixelshuffle", resi="1conv", scale=2, seed=seed)
    blocks = [key[: -len(".norm1.weight")] for key in state if key.endswith(".norm1.weight")]
    shapes: dict = {}
    if kind == "HAT":  # channel-attention blocks beside the window attention, overlapping cross-attention per group
        for block in blocks:
            del state[f"{block}.attn.relative_position_index"]  # one shared index, below
            _conv(shapes, f"{block}.conv_block.cab.0", 5, 16)
            _conv(shapes, f"{block}.conv_block.cab.2", 16, 5)
            _conv(shapes, f"{block}.conv_block.cab.3.attention.1", 1, 16, kernel=1)
            _conv(shapes, f"{block}.conv_block.cab.3.attention.3", 16, 1, kernel=1)
        for group in sorted({block.rsplit(".blocks.", 1)[0] for block in blocks}):
            shapes[f"{group}.overlap_attn.relative_position_bias_table"] = (81, 2)
            _linear(shapes, f"{group}.overlap_attn.qkv", 48, 16)
            _linear(shapes, f"{group}.overlap_attn.proj", 16, 16)
        state["relative_position_index_SA"] = torch.zeros(16, 16, dtype=torch.long)
        state["relative_position_index_OCA"] = torch.zeros(16, 36, dtype=torch.long)
    else:  # Swin2SR: cosine attention with a logit scale and a position-bias MLP instead of the table
        _conv(shapes, "patch_embed.proj", 16, 16, kernel=1)
        for block in blocks:
            del state[f"{block}.attn.relative_position_bias_table"]
            shapes[f"{block}.attn.logit_scale"] = (2, 1, 1)
            _linear(shapes, f"{block}.attn.cpb_mlp.0", 512, 2)
            shapes[f"{block}.attn.cpb_mlp.2.weight"] = (2, 512)
            shapes[f"{block}.attn.q_bias"] = (16,)
            shapes[f"{block}.attn.v_bias"] = (16,)
    state.update(_random(shapes, seed + 1))
    return state
