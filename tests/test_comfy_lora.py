"""ComfyUI-layout LoRA files (`diffusion_model.<LDM path>`, `text_encoders.clip_l|clip_g.transformer.*`).

ComfyUI's LoraSave node writes, for every weight of the model it is given, a low-rank pair
(`lora_up.weight`/`lora_down.weight`, no alpha) or, for 1-D weights, a full `diff`, and a `diff_b`
beside every bias. The files here are built the same way from the tiny models' own parameter names.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lorastudio.adapters import LoraFile, LoraModule, applied_loras, load_lora_file, save_kohya
from lorastudio.adapters.ldm import unet_diffusers_to_ldm_path
from lorastudio.errors import LorastudioError

EPS = torch.finfo(torch.float32).eps
ENCODERS = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}


def _comfy_base(component: str, module_path: str, unet_config) -> str:
    """The ComfyUI name of a module: what LoraSave writes before the suffix."""
    if component == "unet":
        return "diffusion_model." + unet_diffusers_to_ldm_path(module_path, unet_config)
    if not module_path.startswith(("text_model.", "text_projection")):
        module_path = "text_model." + module_path  # transformers 5 flattened CLIPTextModel
    return f"text_encoders.{ENCODERS[component]}.transformer.{module_path}"


def _components(model) -> dict[str, torch.nn.Module]:
    return {k: v for k, v in model.components.items() if k in ("unet", *ENCODERS)}


def _lora_save_like(components, gen) -> tuple[dict[str, torch.Tensor], dict]:
    """Every parameter as LoraSave writes it (rank 2), and the change each one expects (before strength)."""
    state, expected = {}, {}
    config = components["unet"].config
    for component, module in components.items():
        for name, param in module.named_parameters():
            path, _, kind = name.rpartition(".")
            base = _comfy_base(component, path, config)
            r = lambda *shape: torch.randn(*shape, generator=gen) * 0.05  # noqa: E731
            if kind == "bias":
                state[f"{base}.diff_b"] = change = r(*param.shape)
            elif param.dim() == 1:
                state[f"{base}.diff"] = change = r(*param.shape)
            else:
                up, down = r(param.shape[0], 2), r(2, *param.shape[1:])
                state[f"{base}.lora_up.weight"] = up[:, :, None, None] if param.dim() == 4 else up
                state[f"{base}.lora_down.weight"] = down
                change = (up @ down.reshape(2, -1)).reshape(param.shape)
            expected[(component, name)] = change
    return state, expected


@pytest.fixture(params=["sd15", "sdxl"])
def model(request, sd15, sdxl):
    return {"sd15": sd15, "sdxl": sdxl}[request.param]


def test_a_lora_save_file_changes_every_weight_norm_and_bias_as_written(model, tmp_path):
    components = _components(model)
    state, expected = _lora_save_like(components, torch.Generator().manual_seed(0))
    # one pair with an alpha (1 / rank 2: half strength), and ComfyUI's identity text_projection of
    # clip_l, which transformers' CLIPTextModel does not have: skipped, as A1111 skips unknown layers
    to_k = next(name for name, _ in components["unet"].named_parameters() if name.endswith("attn2.to_k.weight"))
    alpha_base = _comfy_base("unet", to_k.removesuffix(".weight"), components["unet"].config)
    state[f"{alpha_base}.alpha"] = torch.tensor(1.0)
    expected[("unet", to_k)] = expected[("unet", to_k)] * 0.5
    state["text_encoders.clip_l.transformer.text_projection.lora_up.weight"] = torch.zeros(32, 2)
    state["text_encoders.clip_l.transformer.text_projection.lora_down.weight"] = torch.zeros(2, 32)
    path = tmp_path / "ComfyUI_extracted_lora_00001_.safetensors"
    save_file(state, str(path))

    lora = load_lora_file(path)
    assert lora.source_format == "comfy" and lora.unet_layout == "ldm"
    assert ("text_encoder_2" in lora.components()) == ("text_encoder_2" in components)
    params = {(c, n): p for c, m in components.items() for n, p in m.named_parameters()}
    originals = {key: p.detach().clone() for key, p in params.items()}
    with applied_loras(components, [(lora, 0.7, 0.5)]):
        for (component, name), change in expected.items():
            strength = 0.5 if component == "unet" else 0.7
            base, got = originals[(component, name)], params[(component, name)].detach()
            tolerance = 64 * EPS * (float(base.abs().max()) + float(change.abs().max()))
            assert not torch.equal(got, base), (component, name)
            assert torch.allclose(got, base + strength * change, rtol=0, atol=tolerance), (component, name)
    assert all(torch.equal(params[key], value) for key, value in originals.items())


def _random_pairs(components, gen) -> LoraFile:
    """LoRA pairs on attention, a 3x3 resnet conv, time embedding and text-encoder layers."""
    lora = LoraFile()
    for component, module in components.items():
        for path, layer in module.named_modules():
            conv3 = isinstance(layer, torch.nn.Conv2d) and layer.kernel_size == (3, 3) and ".resnets.0.conv1" in path
            linear = isinstance(layer, torch.nn.Linear) and path.endswith(
                ("to_k", "to_v", "to_out.0", "linear_1", "q_proj", "fc1")
            )
            if not (conv3 or linear):
                continue
            down = torch.randn(2, *layer.weight.shape[1:], generator=gen) * 0.3
            up = torch.randn(layer.weight.shape[0], 2, *([1, 1] if conv3 else []), generator=gen) * 0.3
            alpha = 1.0 if path.endswith(("to_v", "fc1")) else None  # alpha None: rank, as LoraSave's
            lora.add(component, path, LoraModule(down, up, alpha, "conv" if conv3 else "linear"))
    return lora


def _comfy_file(lora: LoraFile, unet_config, path) -> None:
    state = {}
    for (component, module_path), module in lora.modules.items():
        base = _comfy_base(component, module_path, unet_config)
        state[f"{base}.lora_up.weight"], state[f"{base}.lora_down.weight"] = module.up, module.down
        if module.alpha is not None:
            state[f"{base}.alpha"] = torch.tensor(module.alpha)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sdxl"])
def test_comfy_file_generates_as_the_kohya_file_and_imports(name, tiny_workspace, cli, one_torch_thread):
    from PIL import Image

    from lorastudio.generate.config import GenerateConfig
    from lorastudio.models.loading import load_model
    from lorastudio.service.generation import run_generation

    model = load_model(name, tiny_workspace.models, tiny_workspace.cache)
    lora = _random_pairs(_components(model), torch.Generator().manual_seed(1))
    save_kohya(lora, tiny_workspace.loras / "as_kohya.safetensors", family=model.family, unet_config=model.unet.config)
    _comfy_file(lora, model.unet.config, tiny_workspace.loras / "as_comfy.safetensors")

    def generate(prompt: str) -> np.ndarray:
        request = GenerateConfig(model=name, prompt=prompt, steps=4, width=64, height=64, seed=3, sampler="Euler a")
        with Image.open(run_generation(tiny_workspace, request).images[0].path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float32)

    kohya = generate("red <lora:as_kohya:0.8>")
    assert np.abs(kohya - generate("red")).max() > 8  # the factors change the picture
    assert np.array_equal(generate("red <lora:as_comfy:0.8>"), kohya)

    family = "sd15" if name == "tiny-sd15" else "sdxl"
    # SDXL's second encoder (clip_g) tells the family, the tiny SD 1.x model's widths (as real ones) SD 1.x
    args = ["lora", "import", tiny_workspace.loras / "as_comfy.safetensors", "--name", "imported", "--model", name]
    imported = cli(*args, "--json")
    assert imported.exit_code == 0, imported.output
    info = json.loads(imported.output)
    assert (info["source_format"], info["family"], info["types"]) == ("comfy", family, ["lora", "locon"])
    listed = json.loads(cli("lora", "list", "--json").output)["loras"]
    assert {row["name"]: row["family"] for row in listed}["imported"] == family
    assert f"family={family}" in cli("lora", "list").output
    assert np.array_equal(generate("red <lora:imported:0.8>"), kohya)


def test_comfy_file_exports_to_every_format_and_reads_back(sd15, tiny_models_dir, workspace, tmp_path):
    from lorastudio.service.loras import export_lora

    components = _components(sd15)
    lora = _random_pairs(components, torch.Generator().manual_seed(2))
    source = tmp_path / "comfy.safetensors"
    _comfy_file(lora, components["unet"].config, source)
    folder = tiny_models_dir / "tiny-sd15"
    for to, out in (("kohya", "k.safetensors"), ("diffusers", "d.safetensors"), ("peft", "p")):
        info = export_lora(source, to, tmp_path / out, family="sd15", model=folder, ws=workspace)
        back = load_lora_file(tmp_path / out)
        assert info["source_format"] == "comfy" and set(back.modules) == set(lora.modules), to
        for key, module in lora.modules.items():
            want, got = module.delta() * module.scale, back.modules[key].delta() * back.modules[key].scale
            assert torch.allclose(got, want, rtol=1e-6, atol=0), (to, key)


def test_diff_and_bias_differences_survive_a_kohya_export(sd15, tmp_path):
    """LoraSave's `diff`/`diff_b` go into the kohya file under LyCORIS' names, and read back the same."""
    from lorastudio.adapters.lycoris import network_types

    components = _components(sd15)
    state, _ = _lora_save_like({"unet": components["unet"]}, torch.Generator().manual_seed(3))
    save_file(state, str(tmp_path / "full.safetensors"))
    lora = load_lora_file(tmp_path / "full.safetensors")
    written = save_kohya(lora, tmp_path / "k.safetensors", family="sd15", unet_config=components["unet"].config)
    back = load_lora_file(written)
    assert back.source_format == "lycoris" and network_types(back) == network_types(lora) == ["lora", "locon", "full"]
    params = dict(components["unet"].named_parameters())
    with applied_loras(components, [(lora, 1.0, 0.6)]):
        first = {name: p.detach().clone() for name, p in params.items()}
    with applied_loras(components, [(back, 1.0, 0.6)]):
        assert all(torch.equal(p, first[name]) for name, p in params.items())


def test_unknown_comfy_keys_are_refused_in_one_line(tmp_path):
    def saved(name, state):
        save_file(state, str(tmp_path / name))
        return tmp_path / name

    glora = {"diffusion_model.input_blocks.1.1.proj_in.a1.weight": torch.zeros(2, 2)}
    with pytest.raises(LorastudioError, match=r"glora.safetensors: module diffusion_model.input_blocks.1.1.proj_in has a1.weight"):
        load_lora_file(saved("glora.safetensors", glora))
    t5 = {"text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.lora_up.weight": torch.zeros(2, 2)}
    with pytest.raises(LorastudioError, match=r"t5.safetensors: has layers of a 't5xxl' text encoder"):
        load_lora_file(saved("t5.safetensors", t5))
    with pytest.raises(LorastudioError, match=r"^other.safetensors: no kohya, LyCORIS, ComfyUI, .* not a LoRA file"):
        load_lora_file(saved("other.safetensors", {"model.some.weight": torch.zeros(2, 2)}))
    flux = {
        "diffusion_model.double_blocks.0.img_attn.qkv.lora_up.weight": torch.zeros(2, 2),
        "diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight": torch.zeros(2, 2),
    }
    with pytest.raises(LorastudioError, match=r"flux.safetensors: has layers of a 'double_blocks' diffusion model"):
        load_lora_file(saved("flux.safetensors", flux))


def test_lora_merge_bakes_a_comfy_file_as_the_kohya_file(sd15, tiny_models_dir, cli, tmp_path):
    """`lora merge` of a ComfyUI-layout file (LDM UNet paths, text_encoders.clip_l) writes the same
    weights, bit for bit, as merging the kohya file of the same factors."""
    from safetensors.torch import load_file

    folder = tiny_models_dir / "tiny-sd15"
    components = _components(sd15)
    lora = _random_pairs(components, torch.Generator().manual_seed(4))
    kohya = save_kohya(lora, tmp_path / "k.safetensors", family="sd15", unet_config=components["unet"].config)
    _comfy_file(lora, components["unet"].config, tmp_path / "c.safetensors")
    for source, out in ((kohya, "from_kohya"), (tmp_path / "c.safetensors", "from_comfy")):
        result = cli("lora", "merge", "--model", folder, "--lora", f"{source}:0.7", "--out", tmp_path / out, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["modules_changed"] == len(lora.modules)
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        base, want = load_file(folder / part), load_file(tmp_path / "from_kohya" / part)
        got = load_file(tmp_path / "from_comfy" / part)
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), part
        assert any(not torch.equal(want[k], base[k]) for k in base), part  # the merge changed this part
