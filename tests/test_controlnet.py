"""ControlNets on the tiny models: every file layout loads the same weights, bad files are refused
before any work, and the units steer generation as the A1111 extension's do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from controlnet_files import diffusers_to_original, make_controlnet
from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig


@pytest.fixture(scope="module")
def cn15(sd15):
    return make_controlnet(sd15)


@pytest.fixture(scope="module")
def cnxl(sdxl):
    return make_controlnet(sdxl)


def edges(kind: str = "square", size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), "black")
    draw = ImageDraw.Draw(image)
    if kind == "square":
        draw.rectangle((16, 16, 48, 48), outline="white", width=3)
    else:
        draw.line((0, 0, size, size), fill="white", width=3)
        draw.line((0, size, size, 0), fill="white", width=3)
    return image


def unit(controlnet, image=None, **kw):
    from lorastudio.generate.control import PreparedUnit

    return PreparedUnit("ControlNet unit 0", controlnet, image or edges(), **kw)


def run(model, units=(), **kw):
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.control import ControlStack
    from lorastudio.generate.pipeline import build_plan, generate_images

    kw.setdefault("steps", 5)
    kw.setdefault("seed", 3)
    kw.setdefault("prompt", "red")
    cfg = GenerateConfig(model=model.name, **kw)
    plan = build_plan(cfg, model, cfg.prompt, cfg.negative_prompt)
    if units:
        plan.extra["control"] = ControlStack(list(units), model.device, model.dtype)
    return [np.asarray(g.image, dtype=np.float32) for g in generate_images(model, cfg, plan, PromptEncoder(model))]


def differs(a, b) -> float:
    return float(np.abs(a - b).mean())


# -- every layout loads the same weights ----------------------------------------------------


def _save_every_layout(controlnet, folder):
    state = {k: v.contiguous() for k, v in controlnet.state_dict().items()}
    original = diffusers_to_original(state, dict(controlnet.config))
    controlnet.save_pretrained(folder / "diffusers-folder")
    save_file(state, folder / "diffusers-keys.safetensors")
    save_file(original, folder / "original.safetensors")
    save_file({f"control_model.{k}": v for k, v in original.items()}, folder / "prefixed.safetensors")
    save_file({f"control_model.{k}": v.half() for k, v in original.items()}, folder / "prefixed-fp16.safetensors")
    torch.save(original, folder / "original.pth")
    torch.save({"state_dict": {f"control_model.{k}": v for k, v in original.items()}}, folder / "prefixed.ckpt")
    return state


@pytest.mark.parametrize("fixture", ["sd15", "sd2"])
def test_every_layout_loads_the_same_weights(fixture, request, tmp_path, tiny_models_dir):
    from lorastudio.models.controlnet import load_controlnet, sniff_controlnet
    from lorastudio.models.loading import load_model

    model = request.getfixturevalue(fixture) if fixture == "sd15" else load_model(
        "tiny-sd2", tiny_models_dir, tiny_models_dir / ".cache"
    )
    family = model.family.name
    state = _save_every_layout(make_controlnet(model), tmp_path)
    for path in sorted(tmp_path.iterdir()):
        kind = sniff_controlnet(path)
        assert kind.family == family, path.name
        assert kind.layout == ("diffusers" if "diffusers" in path.name else "original"), path.name
        loaded = load_controlnet(path, family, torch.float32, "cpu", model.unet.config).state_dict()
        assert set(loaded) == set(state), path.name
        tolerance = 2e-3 if "fp16" in path.name else 0.0
        worst = max(float((loaded[k] - state[k]).abs().max()) for k in state)
        assert worst <= tolerance, (path.name, worst)


def test_fp16_file_loads_in_the_requested_dtype(sd15, cn15, tmp_path):
    from lorastudio.models.controlnet import load_controlnet

    original = diffusers_to_original(cn15.state_dict(), dict(cn15.config))
    save_file({k: v.half().contiguous() for k, v in original.items()}, tmp_path / "cn.safetensors")
    loaded = load_controlnet(tmp_path / "cn.safetensors", "sd15", torch.bfloat16, "cpu", sd15.unet.config)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}


def test_sdxl_diffusers_file_and_folder_load(sdxl, cnxl, tmp_path):
    from lorastudio.models.controlnet import load_controlnet, sniff_controlnet

    cnxl.save_pretrained(tmp_path / "folder")
    save_file({k: v.contiguous() for k, v in cnxl.state_dict().items()}, tmp_path / "cn.safetensors")
    for path in (tmp_path / "folder", tmp_path / "cn.safetensors"):
        assert sniff_controlnet(path)[:2] == ("sdxl", "diffusers")
        loaded = load_controlnet(path, "sdxl", torch.float32, "cpu", sdxl.unet.config).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in cnxl.state_dict().items())


@pytest.mark.parametrize("family,width", [("sd15", 768), ("sd2", 1024)])
def test_shipped_configs_name_the_real_original_keys(family, width):
    """The shipped configs build the real networks, whose keys map to lllyasviel's names and back."""
    from diffusers import ControlNetModel

    from lorastudio.models.controlnet import original_to_diffusers, shipped_config

    config = shipped_config(family)
    assert config["cross_attention_dim"] == width
    with torch.device("meta"):
        model = ControlNetModel.from_config(config)
    state = model.state_dict()
    original = diffusers_to_original(state, config)
    for key in ("input_hint_block.14.weight", "zero_convs.11.0.weight", "middle_block_out.0.bias",
                "input_blocks.11.0.out_layers.3.weight", "middle_block.1.proj_in.weight", "time_embed.2.weight"):
        assert key in original, key
    assert set(original_to_diffusers(original, config)) == set(state)


def test_sdxl_variants_by_transformer_depth(tmp_path):
    from lorastudio.models.controlnet import shipped_config, sniff_controlnet

    for variant in ("full", "mid", "small"):
        config = shipped_config("sdxl", variant)
        folder = tmp_path / variant
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        assert sniff_controlnet(folder) == ("sdxl", "diffusers", variant)


# -- refusals before any work ---------------------------------------------------------------


def _fake(tmp_path, name: str, keys: dict, metadata: dict | None = None):
    path = tmp_path / name
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, path, metadata=metadata)
    return path


ORIGINAL_SD15 = {
    "input_hint_block.0.weight": (16, 3, 3, 3),
    "zero_convs.0.0.weight": (320, 320, 1, 1),
    "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
}


@pytest.mark.parametrize(
    "name,keys,metadata,said",
    [
        ("lora.safetensors", {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}, None, "a LoRA"),
        ("model.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}, None, "checkpoint"),
        ("esrgan.safetensors", {"conv_first.weight": (64, 3, 3, 3), "body.0.rdb1.conv1.weight": (32, 64, 3, 3)}, None, "upscaler"),
        ("old-esrgan.pth.safetensors", {"model.0.weight": (64, 3, 3, 3)}, None, "upscaler"),
        ("control-lora.safetensors", {"lora_controlnet": (1,), "input_blocks.0.0.weight": (320, 4, 3, 3)}, None, "Control-LoRA"),
        ("control-lora-meta.safetensors", {"input_hint_block.0.weight": (16, 3, 3, 3)}, {"lora_controlnet": "true"}, "Control-LoRA"),
        ("t2i.safetensors", {"adapter.body.0.resnets.0.block1.weight": (320, 320, 3, 3)}, None, "T2I-Adapter"),
        ("t2i-old.safetensors", {"body.0.block1.weight": (320, 320, 3, 3), "conv_in.weight": (320, 192, 3, 3)}, None, "T2I-Adapter"),
        ("random.safetensors", {"foo.weight": (3, 3)}, None, "no ControlNet keys"),
        ("sdxl-original.safetensors", {**ORIGINAL_SD15, "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
                                       "label_emb.0.0.weight": (1280, 2816)}, None, "diffusers-format"),
    ],
)
def test_files_that_are_no_usable_controlnet_are_refused_by_name(tmp_path, name, keys, metadata, said):
    from lorastudio.models.controlnet import sniff_controlnet

    path = _fake(tmp_path, name, keys, metadata)
    with pytest.raises(LorastudioError) as err:
        sniff_controlnet(path)
    message = str(err.value)
    assert name in message and said in message and "\n" not in message


def test_a_controlnet_for_another_family_is_refused_before_loading(tmp_path, sd15):
    from lorastudio.models.controlnet import load_controlnet, sniff_controlnet

    sdxl_like = _fake(tmp_path, "xl.safetensors", {
        "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
        "add_embedding.linear_1.weight": (1280, 2816),
    })
    assert sniff_controlnet(sdxl_like).family == "sdxl"
    with pytest.raises(LorastudioError, match=r"xl\.safetensors: a ControlNet for SDXL, the model is SD 1\.x"):
        load_controlnet(sdxl_like, "sd15", torch.float32, "cpu", sd15.unet.config)
    real_sd15 = _fake(tmp_path, "real15.safetensors", ORIGINAL_SD15)
    with pytest.raises(LorastudioError, match=r"real15\.safetensors: made for a text width of 768, the model's is 32"):
        load_controlnet(real_sd15, "sd15", torch.float32, "cpu", sd15.unet.config)


def test_pickles_load_only_weights(tmp_path):
    import pickle

    from lorastudio.errors import UnsafeFileError
    from lorastudio.models.controlnet import sniff_controlnet

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"input_hint_block.0.weight": Evil()}, f)
    with pytest.raises(UnsafeFileError):
        sniff_controlnet(path)


# -- sampling -------------------------------------------------------------------------------


def test_weight_zero_reproduces_plain_generation_exactly(sd15, cn15):
    plain = run(sd15)
    assert np.array_equal(run(sd15, [unit(cn15, weight=0.0)]), plain)
    assert differs(run(sd15, [unit(cn15, weight=1.0)])[0], plain[0]) > 1.0


def test_two_control_images_give_different_outputs(sd15, cn15):
    square = run(sd15, [unit(cn15, edges("square"))])
    cross = run(sd15, [unit(cn15, edges("cross"))])
    assert differs(square[0], cross[0]) > 1.0


def test_second_unit_at_weight_zero_equals_the_single_unit(sd15, cn15):
    single = run(sd15, [unit(cn15, weight=0.8)])
    pair = run(sd15, [unit(cn15, weight=0.8), unit(cn15, edges("cross"), weight=0.0)])
    assert np.allclose(pair[0], single[0], atol=1)  # float sums in another order: at most 1 level
    both = run(sd15, [unit(cn15, weight=0.8), unit(cn15, edges("cross"), weight=0.8)])
    assert differs(both[0], single[0]) > 1.0


def test_guidance_window_limits_the_steps_a_unit_acts_in(sd15, cn15):
    from lorastudio.generate.control import step_is_active

    plain = run(sd15)
    assert np.array_equal(run(sd15, [unit(cn15, guidance_start=1.0, guidance_end=1.0)]), plain)  # never reached
    full = run(sd15, [unit(cn15)])
    early = run(sd15, [unit(cn15, guidance_end=0.4)])
    assert differs(early[0], plain[0]) > 0.5 and differs(early[0], full[0]) > 0.5
    # the extension's window: sampling_step / steps with both ends in, sampling_step one step behind
    assert [step_is_active(i, 10, 0.2, 0.6) for i in range(10)] == [False] * 3 + [True] * 5 + [False] * 2
    assert [step_is_active(i, 20, 0.0, 0.5) for i in range(20)] == [True] * 12 + [False] * 8
    assert [step_is_active(i, 20, 0.0, 0.0) for i in range(20)] == [True] * 2 + [False] * 18
    assert [step_is_active(i, 20, 0.5, 1.0) for i in range(20)] == [False] * 11 + [True] * 9


def test_mask_keeps_the_control_where_it_is_white(sd15, cn15):
    plain = run(sd15)[0]
    half = Image.new("L", (64, 64), 0)
    half.paste(255, (0, 0, 32, 64))
    masked = run(sd15, [unit(cn15, mask=half)])[0]
    unmasked = run(sd15, [unit(cn15)])[0]
    black = run(sd15, [unit(cn15, mask=Image.new("L", (64, 64), 0))])[0]
    assert np.array_equal(black, plain)
    assert differs(masked, plain) > 0.3 and differs(masked, unmasked) > 0.3


def test_control_modes_differ(sd15, cn15):
    outs = {mode: run(sd15, [unit(cn15, control_mode=mode)])[0]
            for mode in ("Balanced", "My prompt is more important", "ControlNet is more important")}
    modes = list(outs)
    for i in range(3):
        for j in range(i + 1, 3):
            assert differs(outs[modes[i]], outs[modes[j]]) > 0.3, (modes[i], modes[j])


def test_soft_scales_follow_the_extension():
    from lorastudio.generate.control import soft_scales

    sd = soft_scales(1.0, 13)
    assert sd[-1] == 1.0 and sd[0] == pytest.approx(0.825**12) and sd == sorted(sd)
    assert soft_scales(0.5, 10) == [0.5 * 0.825 ** (12 - i) for i in range(10)]  # SDXL: the first 10


def test_img2img_inpaint_and_hires_run_with_a_unit(sd15, cn15, tmp_path):
    src, mask = tmp_path / "src.png", tmp_path / "mask.png"
    Image.new("RGB", (64, 64), (30, 200, 30)).save(src)
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (16, 16, 48, 48))
    m.save(mask)
    for kw in ({"init_image": str(src), "strength": 0.7},
               {"init_image": str(src), "mask": str(mask), "strength": 1.0, "mask_blur": 0},
               {"hires_scale": 2.0, "hires_steps": 2, "hires_strength": 0.5, "steps": 3}):
        plain = run(sd15, **kw)[0]
        controlled = run(sd15, [unit(cn15)], **kw)[0]
        assert controlled.shape == plain.shape and differs(controlled, plain) > 0.3, kw
    low_only = run(sd15, [unit(cn15, hr_option="Low res only")], hires_scale=2.0, hires_steps=2, steps=3)[0]
    high_only = run(sd15, [unit(cn15, hr_option="High res only")], hires_scale=2.0, hires_steps=2, steps=3)[0]
    assert differs(low_only, high_only) > 0.3


def test_sdxl_runs_with_a_unit(sdxl, cnxl):
    plain = run(sdxl)[0]
    controlled = run(sdxl, [unit(cnxl)])[0]
    assert np.isfinite(controlled).all() and differs(controlled, plain) > 0.3


def test_nine_channel_inpainting_unet_gives_the_controlnet_four_channels(sd15, cn15):
    from lorastudio.generate.control import ControlStack

    stack = ControlStack([unit(cn15)], "cpu", torch.float32)
    stack.begin_pass(64, 64, 4, 1, False)
    latents = torch.randn(2, 9, 8, 8)
    context = torch.randn(2, 77, sd15.unet.config.cross_attention_dim)
    out = stack.residuals(latents, torch.tensor(500), context, {}, 1)
    assert out["mid_block_additional_residual"].shape[0] == 2
    assert np.array_equal(
        stack.residuals(latents[:, :4], torch.tensor(500), context, {}, 1)["mid_block_additional_residual"],
        out["mid_block_additional_residual"],
    )


# -- control images -------------------------------------------------------------------------


def test_resize_modes_stretch_crop_or_fill():
    from lorastudio.generate.control import fit_control_image

    wide = Image.new("RGB", (200, 100), (10, 20, 30))
    wide.paste((250, 0, 0), (0, 0, 50, 100))  # a red band on the left
    stretched = fit_control_image(wide, 64, 64, "Just Resize")
    cropped = fit_control_image(wide, 64, 64, "Crop and Resize")
    filled = fit_control_image(wide, 64, 64, "Resize and Fill")
    assert stretched.size == cropped.size == filled.size == (64, 64)
    assert stretched.getpixel((2, 32))[0] > 200  # the band survives a stretch
    assert cropped.getpixel((2, 32))[0] < 50  # the centre crop cut the band away
    assert filled.getpixel((32, 2)) == (10, 20, 30)  # padding: the border's median colour
    assert filled.getpixel((2, 32))[0] > 200


def test_pixel_perfect_resolution_follows_the_resize_mode():
    from lorastudio.generate.control import pixel_perfect_resolution

    assert pixel_perfect_resolution((1024, 512), 512, 512, "Crop and Resize") == 512
    assert pixel_perfect_resolution((1024, 512), 512, 512, "Resize and Fill") == 256
    assert pixel_perfect_resolution((300, 300), 768, 512, "Just Resize") == 768


@pytest.mark.parametrize("layers,variant", [([1, 0, 2], "mid"), ([0, 0, 0], "small")])
def test_sdxl_single_files_of_other_depths_load_with_a_config_fitted_to_their_keys(sdxl, tmp_path, layers, variant):
    """diffusers' mid/small SDXL ControlNets have fewer transformer blocks (some attentions hold none)."""
    from diffusers import ControlNetModel

    from lorastudio.models.controlnet import load_controlnet, sniff_controlnet

    config = {k: v for k, v in make_controlnet(sdxl).config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    shallow = ControlNetModel.from_config(dict(config, transformer_layers_per_block=layers))
    state = {k: v.contiguous() for k, v in shallow.state_dict().items()}
    save_file(state, tmp_path / "shallow.safetensors")
    assert sniff_controlnet(tmp_path / "shallow.safetensors") == ("sdxl", "diffusers", variant)
    loaded = load_controlnet(tmp_path / "shallow.safetensors", "sdxl", torch.float32, "cpu", sdxl.unet.config)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_a_folder_with_only_fp16_weights_loads(sd15, cn15, tmp_path):
    from lorastudio.models.controlnet import load_controlnet

    cn15.save_pretrained(tmp_path / "cn", variant="fp16")
    assert not (tmp_path / "cn" / "diffusion_pytorch_model.safetensors").exists()
    loaded = load_controlnet(tmp_path / "cn", "sd15", torch.float32, "cpu", sd15.unet.config)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in cn15.state_dict().items())


def test_a_truncated_original_file_is_one_line(sd15, cn15, tmp_path):
    from lorastudio.models.controlnet import load_controlnet

    original = diffusers_to_original(cn15.state_dict(), dict(cn15.config))
    partial = {k: v for k, v in original.items() if not k.startswith("middle_block.")}
    save_file(partial, tmp_path / "partial.safetensors")
    with pytest.raises(LorastudioError, match=r"^partial\.safetensors: .*is it complete\?$"):
        load_controlnet(tmp_path / "partial.safetensors", "sd15", torch.float32, "cpu", sd15.unet.config)


def test_the_inpaint_hint_is_the_picture_with_its_hole_at_minus_one(cn15):
    from lorastudio.generate.control import ControlStack

    picture = Image.new("RGB", (64, 64), (255, 128, 0))
    hole = Image.new("L", (64, 64), 0)
    hole.paste(255, (16, 16, 48, 48))
    stack = ControlStack([unit(cn15, picture, hole=hole, module="inpaint_only")], "cpu", torch.float32)
    stack.begin_pass(64, 64, 4, 1, False)
    cond = stack._pass[0].cond[0]
    assert torch.all(cond[:, 20:44, 20:44] == -1)  # the hole: what the inpaint ControlNet fills
    assert torch.allclose(cond[:, 2, 2], torch.tensor([1.0, 128 / 255, 0.0]), atol=1e-3)  # the picture in 0..1
