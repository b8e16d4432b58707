"""LoRA formats and per-request patching on the tiny models, checked against diffusers."""

from __future__ import annotations

import json

import pytest
import torch

from lorastudio.adapters import (
    LoraFile,
    LoraModule,
    applied_loras,
    check_lora_family,
    detect_format,
    load_lora_file,
    merge_loras,
    safetensors_model_hash,
    save_diffusers,
    save_hcp,
    save_kohya,
    save_peft,
)
from lorastudio.errors import LorastudioError

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
PIPELINES = {
    "tiny-sd15": ("StableDiffusionPipeline", "sd15"),
    "tiny-sdxl": ("StableDiffusionXLPipeline", "sdxl"),
}


def load_pipeline(tiny_models_dir, name):
    import diffusers

    pipeline_class = getattr(diffusers, PIPELINES[name][0])
    pipe = pipeline_class.from_pretrained(str(tiny_models_dir / name), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def modules_of(pipe):
    return {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}


def random_lora(components, rank=4, alpha=2.0, seed=0) -> LoraFile:
    """Non-zero LoRA on every attention Linear of the UNet and q/k/v/out/fc of the text encoders."""
    generator = torch.Generator().manual_seed(seed)
    lora = LoraFile()
    for component in ("unet", "text_encoder", "text_encoder_2"):
        if component not in components:
            continue
        targets = UNET_TARGETS if component == "unet" else TE_TARGETS
        for path, module in components[component].named_modules():
            if isinstance(module, torch.nn.Linear) and path.endswith(targets):
                down = torch.randn(rank, module.in_features, generator=generator) * 0.2
                up = torch.randn(module.out_features, rank, generator=generator) * 0.2
                lora.add(component, path, LoraModule(down, up, alpha))
    return lora


def snapshot(components):
    return {(c, k): v.detach().clone() for c, m in components.items() for k, v in m.state_dict().items()}


def assert_same_weights(components, before):
    for (c, k), v in before.items():
        assert torch.equal(components[c].state_dict()[k], v), f"{c}.{k} changed"


def assert_same_lora(a: LoraFile, b: LoraFile):
    assert set(a.modules) == set(b.modules)
    for key, module in a.modules.items():
        other = b.modules[key]
        assert torch.equal(module.down, other.down), key
        assert torch.equal(module.up, other.up), key
        assert float(module.alpha) == float(other.alpha), key


def component_outputs(components, family):
    """Text-encoder hidden states and one UNet prediction for fixed inputs."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 1000, (1, 77), generator=generator)
    outputs = {}
    with torch.no_grad():
        for name in ("text_encoder", "text_encoder_2"):
            if name in components:
                outputs[name] = components[name](ids, output_hidden_states=True).hidden_states[-2]
        unet = components["unet"]
        sample = torch.randn(1, 4, 8, 8, generator=generator)
        context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
        kwargs = {}
        if family == "sdxl":
            pooled = (
                unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
            )
            kwargs["added_cond_kwargs"] = {
                "text_embeds": torch.randn(1, pooled, generator=generator),
                "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]),
            }
        outputs["unet"] = unet(sample, 500, encoder_hidden_states=context, **kwargs).sample
    return outputs


@pytest.mark.parametrize("name", list(PIPELINES))
def test_kohya_round_trip_is_exact(tiny_models_dir, tmp_path, name):
    pipe = load_pipeline(tiny_models_dir, name)
    components = modules_of(pipe)
    lora = random_lora(components, rank=4, alpha=2.0)
    family = PIPELINES[name][1]
    lora.unet_config = dict(pipe.unet.config)  # what a trainer records; no need to pass it again
    path = save_kohya(lora, tmp_path / "x.safetensors", {"ss_output_name": "x"}, family=family)

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
    te = "lora_te" if family == "sd15" else "lora_te1"
    assert f"{te}_text_model_encoder_layers_0_self_attn_q_proj.alpha" in keys
    assert f"{te}_text_model_encoder_layers_0_mlp_fc1.lora_down.weight" in keys
    if family == "sdxl":
        assert "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.alpha" in keys
        # down_blocks.1 is the first cross-attention block: LDM input block 1 + 1 * (1 + 1) = 3
        assert "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q.alpha" in keys
        assert not any(k.startswith("lora_unet_down_blocks") for k in keys)
    else:
        assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha" in keys
    assert metadata["sshs_model_hash"] == safetensors_model_hash(path)
    assert metadata["ss_base_model_version"] == ("sd_v1" if family == "sd15" else "sdxl_base_v1-0")

    back = load_lora_file(path)
    assert back.source_format == "kohya"
    assert_same_lora(lora, back.with_diffusers_unet(pipe.unet.config))


def test_kohya_peft_diffusers_kohya_is_exact(tiny_models_dir, tmp_path):
    pipe = load_pipeline(tiny_models_dir, "tiny-sdxl")
    config = pipe.unet.config
    lora = random_lora(modules_of(pipe), rank=4, alpha=3.0)
    # mixed ranks and alphas exercise peft's rank_pattern / alpha_pattern
    key = next(k for k in lora.modules if k[0] == "unet")
    lora.modules[key] = LoraModule(
        torch.randn(2, lora.modules[key].down.shape[1]), torch.randn(lora.modules[key].up.shape[0], 2), 7.0
    )
    te_key = next(k for k in lora.modules if k[0] == "text_encoder_2")
    lora.modules[te_key].alpha = 0.5

    kohya = save_kohya(lora, tmp_path / "a.safetensors", family="sdxl", unet_config=config)
    diffusers_file = save_diffusers(load_lora_file(kohya), tmp_path / "b.safetensors", unet_config=config)
    assert detect_format(_keys(diffusers_file)) == "diffusers"
    peft_folder = save_peft(load_lora_file(diffusers_file), tmp_path / "c")
    assert (peft_folder / "text_encoder_2" / "adapter_config.json").is_file()
    again = save_kohya(
        load_lora_file(peft_folder), tmp_path / "d.safetensors", family="sdxl", unet_config=config
    )
    assert_same_lora(lora, load_lora_file(again).with_diffusers_unet(config))


def _keys(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PIPELINES))
def test_applied_loras_matches_diffusers_and_restores(tiny_models_dir, tmp_path, name):
    family = PIPELINES[name][1]
    pipe = load_pipeline(tiny_models_dir, name)
    components = modules_of(pipe)
    lora = random_lora(components, rank=4, alpha=2.0)
    kohya = save_kohya(lora, tmp_path / "l.safetensors", family=family, unet_config=pipe.unet.config)
    diffusers_file = save_diffusers(lora, tmp_path / "l-diffusers.safetensors")

    before = snapshot(components)
    base = component_outputs(components, family)
    with applied_loras(components, [(load_lora_file(kohya), 0.8, 0.8)]):
        ours = component_outputs(components, family)
    assert_same_weights(components, before)  # bit-exact after the context

    for file in (kohya, diffusers_file):
        pipe.load_lora_weights(str(file), adapter_name="x")
        pipe.set_adapters(["x"], adapter_weights=[0.8])
        theirs = component_outputs(components, family)
        pipe.unload_lora_weights()
        for part in base:
            effect = (ours[part] - base[part]).abs().max()
            assert effect > 1e-2, f"{part}: LoRA had no effect"
            assert torch.allclose(ours[part], theirs[part], atol=1e-4, rtol=1e-4), (
                f"{part} differs from diffusers"
            )


def test_applied_loras_stacks_and_restores_on_exception(tiny_models_dir):
    pipe = load_pipeline(tiny_models_dir, "tiny-sd15")
    components = modules_of(pipe)
    a, b = random_lora(components, seed=1), random_lora(components, seed=2)
    before = snapshot(components)
    with applied_loras(components, [(a, 1.0, 1.0)]):
        only_a = component_outputs(components, "sd15")
    with pytest.raises(RuntimeError, match="boom"):
        with applied_loras(components, [(a, 1.0, 1.0), (b, 0.5, 0.0)]):
            both = component_outputs(components, "sd15")
            raise RuntimeError("boom")
    assert_same_weights(components, before)
    # b with te weight 0.5 and unet weight 0: text encoder changes, UNet output identical to a alone
    assert torch.equal(both["unet"], only_a["unet"])
    assert not torch.allclose(both["text_encoder"], only_a["text_encoder"])


def test_merge_equals_applied_loras(tiny_models_dir):
    pipe = load_pipeline(tiny_models_dir, "tiny-sdxl")
    components = modules_of(pipe)
    lora = random_lora(components)
    with applied_loras(components, [(lora, 0.7, 1.2)]):
        expected = component_outputs(components, "sdxl")
    merge_loras(components, [(lora, 0.7, 1.2)])
    merged = component_outputs(components, "sdxl")
    for part in expected:
        assert torch.equal(merged[part], expected[part])


def test_sdxl_lora_refused_on_sd15(tiny_models_dir, tmp_path):
    pipe = load_pipeline(tiny_models_dir, "tiny-sdxl")
    path = save_kohya(
        random_lora(modules_of(pipe)),
        tmp_path / "xl.safetensors",
        family="sdxl",
        unet_config=pipe.unet.config,
    )
    lora = load_lora_file(path)
    with pytest.raises(LorastudioError) as info:
        check_lora_family(lora, "sd15", name="xl.safetensors")
    message = str(info.value)
    assert "\n" not in message and "SDXL" in message and "SD 1.x" in message
    # without metadata the keys still tell (second text encoder, LDM UNet names)
    lora.metadata.clear()
    with pytest.raises(LorastudioError, match="SDXL"):
        check_lora_family(lora, "sd15")
    check_lora_family(lora, "sdxl")  # the right family passes


def test_locon_conv_layers_apply_like_lycoris(tiny_models_dir, tmp_path):
    """LoCon on 3x3 ResNet convs and 1x1 convs: patched conv == conv + scale * up(down(x))."""
    pipe = load_pipeline(tiny_models_dir, "tiny-sd15")
    unet = pipe.unet
    generator = torch.Generator().manual_seed(3)
    lora = LoraFile(metadata={"ss_network_module": "lycoris.kohya"})
    convs = {
        p: m
        for p, m in unet.named_modules()
        if isinstance(m, torch.nn.Conv2d) and p.endswith(("conv1", "proj_in"))
    }
    assert any(m.kernel_size == (3, 3) for m in convs.values()) and any(
        m.kernel_size == (1, 1) for m in convs.values()
    )
    for path, conv in convs.items():
        down = torch.randn(2, conv.in_channels, *conv.kernel_size, generator=generator) * 0.2
        up = torch.randn(conv.out_channels, 2, 1, 1, generator=generator) * 0.2
        lora.add("unet", path, LoraModule(down, up, 1.0, "conv"))
    path = save_kohya(lora, tmp_path / "locon.safetensors", family="sd15")
    loaded = load_lora_file(path)
    assert loaded.source_format == "lycoris"

    name, conv = next((p, m) for p, m in convs.items() if m.kernel_size == (3, 3))
    x = torch.randn(1, conv.in_channels, 8, 8, generator=generator)
    module = loaded.modules[("unet", name)]
    with torch.no_grad():
        lora_path = torch.nn.functional.conv2d(x, module.down, stride=conv.stride, padding=conv.padding)
        expected = conv(x) + module.scale * 0.5 * torch.nn.functional.conv2d(lora_path, module.up)
        with applied_loras({"unet": unet}, [(loaded, 1.0, 0.5)]):
            got = conv(x)
    assert torch.allclose(got, expected, atol=1e-5)


def test_hcp_round_trip_keeps_effect(tiny_models_dir, tmp_path):
    pipe = load_pipeline(tiny_models_dir, "tiny-sd15")
    lora = random_lora(modules_of(pipe), rank=4, alpha=2.0)
    unet_file, te_file = save_hcp(lora, tmp_path, "mine")
    assert unet_file.name == "unet-mine.safetensors" and te_file.name == "TE-mine.safetensors"
    keys = _keys(unet_file)
    assert any(k.startswith("lora:") and k.endswith(".___.layer.lora_down.weight") for k in keys)
    back = load_lora_file(unet_file)  # finds TE-mine next to it
    assert back.source_format == "hcp" and back.components() == {"unet", "text_encoder"}
    for key, module in lora.modules.items():
        other = back.modules[key]
        assert torch.allclose(other.scale * other.delta(), module.scale * module.delta(), atol=1e-6)


def test_old_diffusers_layouts_are_read(tmp_path):
    from safetensors.torch import save_file

    down, up = torch.randn(4, 32), torch.randn(32, 4)
    state = {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight": down,
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight": up,
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.down.weight": down.clone(),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora.up.weight": up.clone(),
    }
    save_file(state, str(tmp_path / "old.safetensors"))
    lora = load_lora_file(tmp_path / "old.safetensors")
    assert set(lora.modules) == {
        ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"),
        ("text_encoder", "encoder.layers.0.self_attn.q_proj"),
    }
    assert lora.modules[("text_encoder", "encoder.layers.0.self_attn.q_proj")].scale == 1.0


def test_unsupported_files_are_refused_clearly(tmp_path):
    from safetensors.torch import save_file

    save_file({"lora_unet_x.hada_w1_a": torch.zeros(2, 2)}, str(tmp_path / "loha.safetensors"))
    with pytest.raises(LorastudioError, match="LoHa"):
        load_lora_file(tmp_path / "loha.safetensors")
    (tmp_path / "x.pt").write_bytes(b"not really")
    with pytest.raises(LorastudioError, match="safetensors"):
        load_lora_file(tmp_path / "x.pt")
    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(tmp_path / "ckpt.safetensors"))
    with pytest.raises(LorastudioError, match="not a LoRA"):
        load_lora_file(tmp_path / "ckpt.safetensors")


def test_diffusers_file_keeps_alpha_in_adapter_metadata(tmp_path):
    lora = LoraFile()
    lora.add(
        "unet", "down_blocks.0.attentions.0.proj_in", LoraModule(torch.randn(4, 8), torch.randn(8, 4), 1.0)
    )
    lora.add("unet", "mid_block.attentions.0.proj_in", LoraModule(torch.randn(4, 8), torch.randn(8, 4), 8.0))
    path = save_diffusers(lora, tmp_path / "d.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        packed = json.loads(handle.metadata()["lora_adapter_metadata"])
    assert packed["unet.r"] == 4
    assert set(packed["unet.alpha_pattern"].values()) | {packed["unet.lora_alpha"]} == {1.0, 8.0}
    back = load_lora_file(path)
    assert {m.alpha for m in back.modules.values()} == {1.0, 8.0}


def test_peft_folders_load_into_components_with_peft(tiny_models_dir, tmp_path):
    """Each `save_peft` folder is a real peft adapter: PeftModel gives the applied_loras effect."""
    from peft import PeftModel

    pipe = load_pipeline(tiny_models_dir, "tiny-sdxl")
    components = modules_of(pipe)
    lora = random_lora(components, rank=4, alpha=6.0)
    folder = save_peft(lora, tmp_path / "peft")
    with applied_loras(components, [(lora, 1.0, 1.0)]):
        expected = component_outputs(components, "sdxl")
    for name in ("text_encoder", "text_encoder_2", "unet"):
        wrapped = PeftModel.from_pretrained(components[name], str(folder / name))
        got = component_outputs({**components, name: wrapped}, "sdxl")[name]
        assert torch.allclose(got, expected[name], atol=1e-4), name
        components[name] = wrapped.unload()


def test_hcp_sdxl_text_encoder_names(tmp_path):
    lora = LoraFile()
    lora.add(
        "text_encoder",
        "text_model.encoder.layers.0.mlp.fc1",
        LoraModule(torch.randn(2, 8), torch.randn(16, 2), 4.0),
    )
    lora.add(
        "text_encoder_2",
        "encoder.layers.1.self_attn.q_proj",
        LoraModule(torch.randn(2, 8), torch.randn(8, 2), 1.0),
    )
    lora.add("unet", "mid_block.attentions.0.proj_in", LoraModule(torch.randn(2, 8), torch.randn(8, 2), 2.0))
    _, te_file = save_hcp(lora, tmp_path, "xl", sdxl=True)
    keys = _keys(te_file)
    assert "lora:clip_B.text_model.encoder.layers.0.mlp.fc1.___.alpha" in keys
    assert "lora:clip_bigG.text_model.encoder.layers.1.self_attn.q_proj.___.alpha" in keys
    back = load_lora_file(te_file)  # from the TE file, the UNet partner is found too
    assert set(back.modules) == set(lora.modules)
    assert back.modules[("text_encoder", "encoder.layers.0.mlp.fc1")].alpha == pytest.approx(4.0)


def test_kohya_names_parse_back_to_module_paths():
    from lorastudio.adapters.kohya import kohya_to_module_path
    from lorastudio.adapters.lora_file import find_module

    names = {
        "down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj": "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",
        "up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0": "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0",
        "mid_block_attentions_0_proj_in": "mid_block.attentions.0.proj_in",
        "down_blocks_1_resnets_0_conv_shortcut": "down_blocks.1.resnets.0.conv_shortcut",
        "input_blocks_4_1_transformer_blocks_0_attn1_to_q": "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
        "output_blocks_2_0_in_layers_2": "output_blocks.2.0.in_layers.2",
        "text_model_encoder_layers_11_self_attn_out_proj": "text_model.encoder.layers.11.self_attn.out_proj",
        "text_model_encoder_layers_0_mlp_fc2": "text_model.encoder.layers.0.mlp.fc2",
    }
    for name, path in names.items():
        assert kohya_to_module_path(name) == path
    # a layer name outside the vocabulary still resolves against the model by its flat name
    model = torch.nn.Module()
    model.odd_layer_name = torch.nn.Linear(2, 2)
    assert find_module(model, kohya_to_module_path("odd_layer_name")) is model.odd_layer_name


def _ldm_named_unet_file(lora: LoraFile, unet_config, path, metadata=None):
    """A kohya file whose UNet keys use LDM block names (as some SD 1.x trainers write them)."""
    from safetensors.torch import save_file

    state = {}
    for (_, module_path), module in lora.with_ldm_unet(unet_config).modules.items():
        name = "lora_unet_" + module_path.replace(".", "_")
        state[f"{name}.lora_down.weight"] = module.down
        state[f"{name}.lora_up.weight"] = module.up
        state[f"{name}.alpha"] = torch.tensor(float(module.alpha))
    save_file(state, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("metadata", [{"ss_base_model_version": "sd_v1"}, None])
def test_sd15_lora_with_ldm_unet_names_applies_on_sd15(tiny_models_dir, tmp_path, metadata):
    pipe = load_pipeline(tiny_models_dir, "tiny-sd15")
    components = {"unet": pipe.unet}
    lora = random_lora(components)
    path = _ldm_named_unet_file(lora, pipe.unet.config, tmp_path / "ldm.safetensors", metadata)
    read = load_lora_file(path)
    assert read.unet_layout == "ldm" and any("input_blocks" in p for _, p in read.modules)
    check_lora_family(read, "sd15", name="ldm.safetensors", components=components)  # was refused
    base = component_outputs(components, "sd15")["unet"]
    with applied_loras(components, [(lora, 1.0, 1.0)]):
        expected = component_outputs(components, "sd15")["unet"]
    with applied_loras(components, [(read, 1.0, 1.0)]):
        got = component_outputs(components, "sd15")["unet"]
    assert (expected - base).abs().max() > 1e-3
    torch.testing.assert_close(got, expected)


def test_ldm_names_with_sdxl_only_blocks_still_tell_sdxl(tmp_path):
    from safetensors.torch import save_file

    from lorastudio.adapters import detect_lora_family

    key = "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q"  # depth 2: SDXL only
    save_file(
        {f"{key}.lora_down.weight": torch.ones(4, 640), f"{key}.lora_up.weight": torch.ones(640, 4)},
        str(tmp_path / "xl.safetensors"),
    )
    lora = load_lora_file(tmp_path / "xl.safetensors")
    assert detect_lora_family(lora).name == "sdxl"
    with pytest.raises(LorastudioError, match="made for SDXL but the model is SD 1.x"):
        check_lora_family(lora, "sd15")


def _without_metadata(path):
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(path))
    return path


@pytest.mark.parametrize(("name", "family"), [("tiny-sd15", "sd15"), ("tiny-sd2", "sd2")])
def test_a_tiny_models_lora_without_metadata_imports_without_family(tiny_models_dir, workspace, tmp_path, name, family):
    """`lora import` of a LoRA made on a tiny model, without metadata, said "cannot tell which model family it is
    for; pass --family": the tiny models' widths tell it now, as 768 / 1024 / 2048 tell real ones (still)."""
    from lorastudio.adapters import detect_lora_family
    from lorastudio.models.loading import load_model
    from lorastudio.service.loras import import_lora

    model = load_model(name, tiny_models_dir, tiny_models_dir / ".cache", device="cpu")
    lora = random_lora({"unet": model.unet, "text_encoder": model.text_encoders[0]})
    whole = _without_metadata(save_kohya(lora, tmp_path / f"{name}.safetensors", family=family))
    text_only = LoraFile(modules={k: v for k, v in lora.modules.items() if k[0] == "text_encoder"})
    te = _without_metadata(save_kohya(text_only, tmp_path / f"{name}-te.safetensors", family=family))
    for path in (whole, te):
        assert not load_lora_file(path).metadata
        assert import_lora(workspace, path, name=path.stem)["family"] == family
    path = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
    for width, real in ((768, "sd15"), (1024, "sd2"), (2048, "sdxl")):  # the real models' widths
        wide = LoraFile(modules={("unet", path): LoraModule(torch.zeros(1, width), torch.zeros(640, 1))})
        assert detect_lora_family(wide).name == real
    odd = LoraFile(modules={("unet", path): LoraModule(torch.zeros(1, 100), torch.zeros(640, 1))})
    odd_file = _without_metadata(save_kohya(odd, tmp_path / "odd.safetensors", family=family))
    with pytest.raises(LorastudioError, match=r"odd.safetensors: cannot tell .* pass --family sd15\|sd2\|sdxl\|kolors,"):
        import_lora(workspace, odd_file)  # a width no model has: the flag and every value it takes
