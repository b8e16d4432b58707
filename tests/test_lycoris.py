"""LyCORIS files (LoHa, LoKr, (IA)^3, full, DoRA) in LyCORIS' own key layout: applied, restored, imported.

The expected weights come from the `lycoris` package's own functions (lycoris.functional), an
independent implementation of the same maths; (IA)^3 and full diffs are their one-line definitions.
"""

from __future__ import annotations

import pytest
import torch

from lorastudio.adapters import applied_loras, load_lora_file
from lorastudio.adapters.kohya import kohya_name
from lorastudio.models.families import get_family

SD15 = get_family("sd15")
EPS = torch.finfo(torch.float32).eps


def _targets(components):
    """One Linear and one 3x3 conv of the UNet, and a text-encoder q_proj."""
    unet = components["unet"]
    linear = next(p for p, m in unet.named_modules() if p.endswith("attn2.to_k"))
    conv = next(
        p for p, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and ".resnets." in p
    )
    te = next(p for p, m in components["text_encoder"].named_modules() if p.endswith("layers.0.self_attn.q_proj"))
    return [("unet", linear), ("unet", conv), ("text_encoder", te)]


def _weight(components, component, path):
    return components[component].get_submodule(path).weight


def _factor(n: int) -> tuple[int, int]:
    from lycoris.functional.general import factorization

    return factorization(n, -1)


def _loha(shape, gen, rank=2, tucker=False):
    out, inp, *k = shape
    r = lambda *s: torch.randn(*s, generator=gen) * 0.3  # noqa: E731
    if tucker:
        t = {"hada_t1": r(rank, rank, *k), "hada_t2": r(rank, rank, *k)}
        w = {"hada_w1_a": r(rank, out), "hada_w1_b": r(rank, inp), "hada_w2_a": r(rank, out), "hada_w2_b": r(rank, inp)}
        return {**w, **t}
    flat = inp * (k[0] * k[1] if k else 1)
    return {"hada_w1_a": r(out, rank), "hada_w1_b": r(rank, flat), "hada_w2_a": r(out, rank), "hada_w2_b": r(rank, flat)}


def _loha_reference(parts, shape, scale):
    from lycoris.functional import loha

    weights = (parts["hada_w1_b"], parts["hada_w1_a"], parts["hada_w2_b"], parts["hada_w2_a"])
    return loha.diff_weight(*weights, parts.get("hada_t1"), parts.get("hada_t2"), gamma=scale).reshape(shape)


def _lokr(shape, gen, rank=2, mode="w2_lowrank"):
    out, inp, *k = shape
    (a, b), (c, d) = _factor(out), _factor(inp)
    r = lambda *s: torch.randn(*s, generator=gen) * 0.3  # noqa: E731
    if mode == "full":  # both halves full matrices: scale 1 whatever alpha says
        return {"lokr_w1": r(a, c), "lokr_w2": r(b, d, *k)}
    if mode == "tucker":
        return {"lokr_w1_a": r(a, rank), "lokr_w1_b": r(rank, c), "lokr_t2": r(rank, rank, *k), "lokr_w2_a": r(rank, b), "lokr_w2_b": r(rank, d)}
    flat = d * (k[0] * k[1] if k else 1)
    return {"lokr_w1": r(a, c), "lokr_w2_a": r(b, rank), "lokr_w2_b": r(rank, flat)}


def _lokr_reference(parts, shape, alpha):
    from lycoris.functional import lokr

    names = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
    weights = [parts.get(n) for n in names]
    # lycoris.functional.lokr takes alpha and divides by the decomposed half's rank (w1_a's first)
    if parts.get("lokr_w1_a") is None and parts.get("lokr_w2_a") is None:
        alpha = 1.0
    return lokr.diff_weight(*weights, gamma=alpha).reshape(shape)


def _tolerance(*tensors) -> float:
    """float32 rounding of sums of a few dozen products: a few dozen ulps of the largest magnitude."""
    return 64 * EPS * sum(float(t.abs().max()) for t in tensors)


def _save(tmp_path, name, state, metadata=None):
    from safetensors.torch import save_file

    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata or {})
    return path


def _check_applied(components, file, expected_updates, te_weight, unet_weight):
    """Patched weights == W + expected update; every weight bit-exact again afterwards."""
    originals = {(c, n): p.detach().clone() for c, m in components.items() for n, p in m.named_parameters()}
    lora = load_lora_file(file)
    with applied_loras(components, [(lora, te_weight, unet_weight)]):
        for (component, path), (update, bias_update) in expected_updates.items():
            strength = unet_weight if component == "unet" else te_weight
            module = components[component].get_submodule(path)
            base = originals[(component, _param_name(components[component], module.weight))]
            want = base + strength * update
            got = module.weight.detach()
            assert not torch.equal(got, base)
            assert torch.allclose(got, want, rtol=0, atol=_tolerance(base, update)), (component, path)
            if bias_update is not None:
                base_b = originals[(component, _param_name(components[component], module.bias))]
                assert torch.allclose(module.bias, base_b + strength * bias_update, rtol=0, atol=_tolerance(base_b, bias_update))
    params = {c: dict(m.named_parameters()) for c, m in components.items()}
    for (c, n), before in originals.items():
        assert torch.equal(params[c][n], before), (c, n)
    return lora


def _param_name(module, param):
    return next(n for n, p in module.named_parameters() if p is param)


@pytest.fixture(scope="module")
def components(sd15):
    return {k: v for k, v in sd15.components.items() if k in ("unet", "text_encoder")}


@pytest.mark.parametrize("tucker", [False, True])
def test_loha_applies_and_restores(components, tmp_path, tucker):
    gen = torch.Generator().manual_seed(1)
    state, expected = {}, {}
    for component, path in _targets(components):
        shape = tuple(_weight(components, component, path).shape)
        parts = _loha(shape, gen, rank=2, tucker=tucker and len(shape) == 4)
        alpha = 1.0
        name = kohya_name(component, path, SD15)
        state.update({f"{name}.{k}": v for k, v in parts.items()}, **{f"{name}.alpha": torch.tensor(alpha)})
        expected[(component, path)] = (_loha_reference(parts, shape, alpha / 2), None)
    lora = _check_applied(components, _save(tmp_path, "loha", state), expected, 0.7, 0.6)
    assert lora.source_format == "lycoris"


@pytest.mark.parametrize("mode", ["w2_lowrank", "full", "tucker"])
def test_lokr_applies_and_restores(components, tmp_path, mode):
    gen = torch.Generator().manual_seed(2)
    state, expected = {}, {}
    for component, path in _targets(components):
        shape = tuple(_weight(components, component, path).shape)
        this_mode = mode if (mode != "tucker" or len(shape) == 4) else "w2_lowrank"
        parts = _lokr(shape, gen, rank=2, mode=this_mode)
        alpha = 4.0  # scale 2 for a decomposed half; a fully full LoKr ignores it (scale 1)
        name = kohya_name(component, path, SD15)
        state.update({f"{name}.{k}": v for k, v in parts.items()}, **{f"{name}.alpha": torch.tensor(alpha)})
        expected[(component, path)] = (_lokr_reference(parts, shape, alpha), None)
    _check_applied(components, _save(tmp_path, "lokr", state), expected, 1.0, 0.5)


def test_ia3_and_full_diff_apply_and_restore(components, tmp_path):
    gen = torch.Generator().manual_seed(3)
    (uc, linear), (_, conv), (tc, te) = _targets(components)
    state, expected = {}, {}
    w_lin = _weight(components, uc, linear).detach()
    ia3 = torch.randn(w_lin.shape[0], generator=gen) * 0.2
    state[kohya_name(uc, linear, SD15) + ".weight"] = ia3
    expected[(uc, linear)] = (w_lin * ia3[:, None], None)
    w_te = _weight(components, tc, te).detach()
    ia3_in = torch.randn(w_te.shape[1], generator=gen) * 0.2
    state[kohya_name(tc, te, SD15) + ".weight"] = ia3_in
    state[kohya_name(tc, te, SD15) + ".on_input"] = torch.tensor(1)
    expected[(tc, te)] = (w_te * ia3_in[None, :], None)
    path = _save(tmp_path, "ia3", state)
    _check_applied(components, path, expected, 0.5, 1.0)

    w_conv = _weight(components, uc, conv).detach()
    diff = torch.randn(w_conv.shape, generator=gen) * 0.05
    diff_b = torch.randn(w_conv.shape[0], generator=gen) * 0.05
    name = kohya_name(uc, conv, SD15)
    full = _save(tmp_path, "full", {f"{name}.diff": diff, f"{name}.diff_b": diff_b})
    _check_applied(components, full, {(uc, conv): (diff, diff_b)}, 1.0, 0.8)


def _dora_reference(weight, delta, dora_scale, on_out, strength):
    from lycoris.functional.general import weight_decompose

    merged = weight_decompose(weight + delta, dora_scale, 1, on_out, backend="torch")
    return merged - weight  # A1111 / ComfyUI then add strength * this


@pytest.mark.parametrize("on_out", [True, False])
def test_dora_on_lora_and_loha_applies_and_restores(components, tmp_path, on_out):
    gen = torch.Generator().manual_seed(4)
    state, expected = {}, {}
    for i, (component, path) in enumerate(_targets(components)):
        weight = _weight(components, component, path).detach()
        shape = tuple(weight.shape)
        name = kohya_name(component, path, SD15)
        if i % 2 == 0:  # kohya-style lora_down/lora_up + dora_scale
            down = torch.randn(4, *shape[1:], generator=gen) * 0.2
            up = torch.randn(shape[0], 4, *([1, 1] if len(shape) == 4 else []), generator=gen) * 0.2
            parts = {"lora_down.weight": down, "lora_up.weight": up}
            delta = 0.5 * (up.reshape(shape[0], 4) @ down.reshape(4, -1)).reshape(shape)
            alpha = 2.0
        else:  # LyCORIS LoHa + dora_scale (DoHa)
            parts = _loha(shape, gen, rank=2)
            alpha = 1.0
            delta = _loha_reference(parts, shape, alpha / 2)
        if on_out:
            magnitude = weight.reshape(shape[0], -1).norm(dim=1).reshape(shape[0], *[1] * (len(shape) - 1))
        else:
            magnitude = weight.transpose(0, 1).reshape(shape[1], -1).norm(dim=1)
            magnitude = magnitude.reshape(1, shape[1], *[1] * (len(shape) - 2))
        magnitude = magnitude * (1 + 0.1 * torch.rand(magnitude.shape, generator=gen))
        parts["dora_scale"] = magnitude
        state.update({f"{name}.{k}": v for k, v in parts.items()}, **{f"{name}.alpha": torch.tensor(alpha)})
        expected[(component, path)] = (_dora_reference(weight, delta, magnitude, on_out, 1.0), None)
    _check_applied(components, _save(tmp_path, "dora", state), expected, 0.9, 0.7)


def test_saved_lycoris_file_keeps_its_layout(components, tmp_path):
    """Read, written back (import does this) and read again: the same tensors under LyCORIS' names."""
    from safetensors import safe_open

    from lorastudio.adapters import save_kohya

    gen = torch.Generator().manual_seed(5)
    state = {}
    for component, path in _targets(components):
        shape = tuple(_weight(components, component, path).shape)
        name = kohya_name(component, path, SD15)
        state.update({f"{name}.{k}": v for k, v in _lokr(shape, gen).items()}, **{f"{name}.alpha": torch.tensor(2.0)})
    original = _save(tmp_path, "in", state)
    written = save_kohya(load_lora_file(original), tmp_path / "out.safetensors", family="sd15")
    with safe_open(str(written), framework="pt") as handle:
        assert set(handle.keys()) == set(state)
        for key in state:
            assert torch.equal(handle.get_tensor(key), state[key]), key
        assert handle.metadata()["ss_network_module"] == "lycoris.kohya"


def test_incomplete_or_unknown_modules_are_refused(tmp_path):
    from lorastudio.errors import LorastudioError

    incomplete = _save(tmp_path, "half", {"lora_unet_x.hada_w1_a": torch.zeros(2, 2)})
    with pytest.raises(LorastudioError, match="half.safetensors.*lora_unet_x lacks hada_w1_b"):
        load_lora_file(incomplete)
    glora = _save(tmp_path, "glora", {"lora_unet_x.a1.weight": torch.zeros(2, 2), "lora_unet_x.alpha": torch.tensor(1.0)})
    with pytest.raises(LorastudioError, match="glora.safetensors: module lora_unet_x has a1.weight"):
        load_lora_file(glora)


def test_import_and_list_show_the_type(components, workspace, tmp_path):
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app
    from lorastudio.errors import LorastudioError
    from lorastudio.service.loras import export_lora, import_lora, list_loras

    _register()

    gen = torch.Generator().manual_seed(6)
    state = {}
    for component, path in _targets(components):
        shape = tuple(_weight(components, component, path).shape)
        name = kohya_name(component, path, SD15)
        state.update({f"{name}.{k}": v for k, v in _loha(shape, gen).items()}, **{f"{name}.alpha": torch.tensor(1.0)})
    weight = _weight(components, "unet", _targets(components)[0][1])
    name = kohya_name("unet", _targets(components)[0][1], SD15)
    state[f"{name}.dora_scale"] = weight.detach().reshape(weight.shape[0], -1).norm(dim=1)[:, None]
    info = import_lora(workspace, _save(tmp_path, "doha", state), family="sd15")
    assert info["types"] == ["loha", "dora"]
    rows = {row["name"]: row for row in list_loras(workspace)}
    assert rows["doha"]["type"] == "loha+dora"
    result = CliRunner().invoke(app, ["lora", "list"])
    assert result.exit_code == 0 and "type=loha+dora" in result.output
    with pytest.raises(LorastudioError, match="loha/dora modules, which a diffusers file cannot hold"):
        export_lora(info["path"], "diffusers", tmp_path / "x.safetensors")


# -- training LoHa / LoKr ---------------------------------------------------------------------------
def test_factorization_matches_lycoris():
    from lycoris.functional.general import factorization as reference

    from lorastudio.train.lora_modules import factorization

    for n in range(1, 400):
        for factor in (-1, 4, 8):
            assert factorization(n, factor) == reference(n, factor), (n, factor)


@pytest.mark.parametrize("algo", ["loha", "lokr"])
@pytest.mark.parametrize("rank", [2, 8])
def test_training_layer_forward_equals_the_applied_file(algo, rank):
    """What a layer adds while training (op(x, scale·ΔW)) is what the exported module adds to W."""
    from lorastudio.adapters.lycoris import update
    from lorastudio.train.lora_modules import LohaLayer, LokrLayer

    gen = torch.Generator().manual_seed(7)
    for base, x in (
        (torch.nn.Linear(32, 48, bias=False), torch.randn(3, 32, generator=gen)),
        (torch.nn.Conv2d(16, 32, 3, padding=1, bias=False), torch.randn(1, 16, 8, 8, generator=gen)),
    ):
        layer = (LohaLayer if algo == "loha" else LokrLayer)(base, rank, 4.0, gen)
        with torch.no_grad():
            for p in layer.trainable_tensors().values():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)  # past init: every factor non-zero
            bypass = layer(x)
            patched = base.weight + update(layer.to_module(), base.weight.detach().clone(), 1.0)
            merged = (
                torch.nn.functional.linear(x, patched)
                if isinstance(base, torch.nn.Linear)
                else torch.nn.functional.conv2d(x, patched, padding=1)
            )
        # both sum in*k*k products of values of |W|+|ΔW| size in float32
        bound = 8 * EPS * base.weight[0].numel() * float((patched.abs().max()) * x.abs().max())
        assert torch.allclose(bypass, merged, rtol=0, atol=bound), (algo, type(base).__name__)
        assert not torch.allclose(bypass, base(x))


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_trained_lycoris_file_generates_like_the_training_samples(tiny_workspace, one_torch_thread, tmp_path, algo):
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from safetensors import safe_open

    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import run_generation
    from lorastudio.service.training import run_training
    from training_helpers import tiny_train_config, write_images

    red = write_images(tmp_path / "red", [((230, 20 + i, 25), f"zqx, square, {i % 4}") for i in range(4)])
    cfg = tiny_train_config(
        red, "zqx", "train.steps=4", "train.save_every_steps=4", "lora.rank=2", "lora.alpha=1",
        "lora.targets=locon", f"lora.type={algo}", f"output.name={algo}-run", "train.learning_rate=5e-2",
        "samples.prompts=[zqx]", "samples.steps=4", "scoring.enabled=false", "seed=3",
        "output.save_precision=fp32",  # the file holds exactly the tensors the samples used
    )  # fmt: skip
    result = run_training(tiny_workspace, cfg, progress=False)
    path = tiny_workspace.loras / f"{algo}-run.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    prefix = "hada_" if algo == "loha" else "lokr_"
    assert keys and all(k.split(".", 1)[1].startswith((prefix, "alpha")) for k in keys)
    assert any("_resnets_" in k for k in keys)  # 3x3 convs too (locon targets)
    assert metadata["ss_network_module"] == "lycoris.kohya"
    assert json.loads(metadata["ss_network_args"])["algo"] == algo
    assert load_lora_file(path).modules  # reads back through our own reader

    def generate(prompt):
        request = GenerateConfig(
            model="tiny-sd15", prompt=prompt, steps=4, width=64, height=64, seed=0, sampler="Euler a"
        )
        with Image.open(run_generation(tiny_workspace, request).images[0].path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float32)

    with Image.open(Path(result["run_dir"]) / "samples" / "step-4" / "00.png") as image:
        sample = np.asarray(image.convert("RGB"), dtype=np.float32)
    with_file = generate(f"zqx <lora:{algo}-run:1>")
    assert np.abs(generate("zqx") - with_file).max() > 8  # the file changes the picture
    # training samples run op(x, scale·ΔW) beside the frozen layer, generation adds ΔW to the
    # weight: float32 rounding apart (~1e-6 relative, far below one 8-bit level after 4 steps),
    # so pixels may differ by rounding at a level boundary only
    diff = np.abs(sample - with_file)
    assert diff.max() <= 1, (diff.mean(), diff.max())


def test_checkpoint_state_of_loha_and_lokr_layers_round_trips():
    """Resume states hold every LoHa/LoKr factor under its LyCORIS name and load back exactly."""
    from lorastudio.train.lora_modules import LoraSet, TargetSpec, inject_lora

    def build(seed):
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Conv2d(16, 32, 3))
        lora_set = LoraSet()
        for algo, path in (("loha", "0"), ("lokr", "1")):
            inject_lora(model, TargetSpec("unet", 2, 2, 1.0, "locon", algo), [path], lora_set, torch.Generator().manual_seed(seed))
        return lora_set

    first, second = build(1), build(2)
    state = first.lora_state_dict()
    assert {k.rsplit(".", 1)[1] for k in state} == {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "lokr_w1", "lokr_w2_a", "lokr_w2_b"}
    assert any(not torch.equal(state[k], v) for k, v in second.lora_state_dict().items())
    second.load_lora_state_dict(state)
    for key, value in second.lora_state_dict().items():
        assert torch.equal(value, state[key]), key


def test_family_is_told_from_lycoris_widths(tmp_path):
    """No metadata: the cross-attention input width (768 = SD 1.x, 2048 = SDXL) read from LoKr/LoHa factors."""
    from lorastudio.adapters import detect_lora_family

    to_k = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    lokr = {f"{to_k}.lokr_w1": torch.zeros(4, 24), f"{to_k}.lokr_w2_a": torch.zeros(80, 2), f"{to_k}.lokr_w2_b": torch.zeros(2, 32)}
    assert detect_lora_family(load_lora_file(_save(tmp_path, "lokr", lokr))).name == "sd15"
    loha = {f"{to_k}.hada_w1_a": torch.zeros(640, 2), f"{to_k}.hada_w1_b": torch.zeros(2, 1024)}
    loha |= {f"{to_k}.hada_w2_a": torch.zeros(640, 2), f"{to_k}.hada_w2_b": torch.zeros(2, 1024)}
    assert detect_lora_family(load_lora_file(_save(tmp_path, "loha", loha))).name == "sd2"


def test_sdxl_lycoris_names_ldm_unet_and_te2(sdxl, tmp_path):
    """SDXL LyCORIS files name UNet layers after LDM blocks and the second encoder `lora_te2_`."""
    from lorastudio.adapters.ldm import unet_diffusers_to_ldm_path

    components = {k: sdxl.components[k] for k in ("unet", "text_encoder", "text_encoder_2")}
    unet = components["unet"]
    linear = next(p for p, m in unet.named_modules() if p.endswith("attn2.to_k"))
    conv = next(p for p, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and ".resnets." in p)
    te2 = next(p for p, m in components["text_encoder_2"].named_modules() if p.endswith("layers.0.self_attn.q_proj"))
    gen = torch.Generator().manual_seed(8)
    state, expected = {}, {}
    for component, path in (("unet", linear), ("unet", conv), ("text_encoder_2", te2)):
        shape = tuple(_weight(components, component, path).shape)
        if component == "unet":
            name = "lora_unet_" + unet_diffusers_to_ldm_path(path, unet.config).replace(".", "_")
            assert "input_blocks" in name or "output_blocks" in name or "middle_block" in name
        else:
            name = "lora_te2_text_model_" + path.removeprefix("text_model.").replace(".", "_")
        parts = _lokr(shape, gen, rank=2)
        state.update({f"{name}.{k}": v for k, v in parts.items()}, **{f"{name}.alpha": torch.tensor(2.0)})
        expected[(component, path)] = (_lokr_reference(parts, shape, 2.0), None)
    _check_applied(components, _save(tmp_path, "xl", state), expected, 0.8, 1.0)


def test_wrong_shapes_are_refused_and_nothing_stays_patched(components, tmp_path):
    from lorastudio.errors import LorastudioError

    (uc, linear), _, (tc, te) = _targets(components)
    gen = torch.Generator().manual_seed(9)
    # lora_te_ sorts before lora_unet_: the good text-encoder diff is applied before the bad LoHa fails
    good = {f"{kohya_name(tc, te, SD15)}.diff": torch.randn(_weight(components, tc, te).shape, generator=gen)}
    out, inp = _weight(components, uc, linear).shape
    bad = {f"{kohya_name(uc, linear, SD15)}.{k}": v for k, v in _loha((out, inp + 3), gen).items()}
    before = {(c, n): p.detach().clone() for c, m in components.items() for n, p in m.named_parameters()}
    lora = load_lora_file(_save(tmp_path, "bad", {**good, **bad}))
    assert next(iter(lora.modules))[0] == "text_encoder"
    with pytest.raises(LorastudioError, match=r"attn2.to_k: .* do not fit the model's"):
        with applied_loras(components, [(lora, 1.0, 1.0)]):
            pass
    for (c, n), value in before.items():
        assert torch.equal(dict(components[c].named_parameters())[n], value), (c, n)
