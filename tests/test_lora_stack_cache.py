"""LoRA stacks that stay on the model until the stack changes, and parsed LoRA files kept by content."""

from __future__ import annotations

import os

import pytest
import torch

from lorastudio.adapters import LohaModule, LoraFile, LoraModule, applied_loras, save_kohya
from lorastudio.adapters.lora_stack import add_module_update, patcher_for
from lorastudio.adapters.patch import lingering_loras
from lorastudio.errors import LorastudioError
from lorastudio.service.lora_cache import LoraFileCache


@pytest.fixture
def components(tiny_models_dir):
    """A private tiny-sd15 (UNet + text encoder): these tests change its weights."""
    from lorastudio.models.loading import load_model

    model = load_model("tiny-sd15", tiny_models_dir, tiny_models_dir / ".cache")
    return {"unet": model.unet, "text_encoder": model.text_encoders[0]}


def layers(components, component: str, suffix: str) -> list[tuple[str, torch.nn.Module]]:
    return [(p, m) for p, m in components[component].named_modules() if p.endswith(suffix)]


def lora_on(components, suffixes: tuple[str, ...], seed: int, rank: int = 4) -> LoraFile:
    """A random LoRA (linear or conv, alpha = rank / 2) on the layers whose paths end with `suffixes`."""
    g = torch.Generator().manual_seed(seed)
    lora = LoraFile()
    for component in ("unet", "text_encoder"):
        for suffix in suffixes:
            for path, layer in layers(components, component, suffix):
                weight = layer.weight
                if weight.dim() == 4:  # LoCon: a k x k down, a 1x1 up
                    down = torch.randn(rank, *weight.shape[1:], generator=g) * 0.1
                    up = torch.randn(weight.shape[0], rank, 1, 1, generator=g) * 0.1
                    lora.add(component, path, LoraModule(down, up, rank / 2, "conv"))
                else:
                    down = torch.randn(rank, weight.shape[1], generator=g) * 0.1
                    up = torch.randn(weight.shape[0], rank, generator=g) * 0.1
                    lora.add(component, path, LoraModule(down, up, rank / 2, "linear"))
    return lora


def weights(components) -> dict:
    return {(c, k): v.detach().clone() for c, m in components.items() for k, v in m.state_dict().items()}


def assert_bit_exact(components, before) -> None:
    now = {(c, k): v for c, m in components.items() for k, v in m.state_dict().items()}
    changed = [key for key, value in before.items() if not torch.equal(now[key], value)]
    assert not changed, f"not restored: {changed[:3]}"


def count_layers(lora: LoraFile) -> int:
    return len(lora.modules)


def test_switching_stacks_touches_only_the_difference_and_none_restores_bit_exact(components):
    a = lora_on(components, ("attn1.to_q",), seed=1)
    b = lora_on(components, ("attn2.to_k",), seed=2)
    c = lora_on(components, ("to_v", "q_proj"), seed=3)
    before = weights(components)
    with lingering_loras(components, [(a, 1.0, 1.0), (b, 1.0, 1.0)]) as patcher:
        assert patcher.touched == count_layers(a) + count_layers(b)
    with_ab = weights(components)
    with lingering_loras(components, [(a, 1.0, 1.0), (b, 1.0, 1.0)]) as patcher:
        assert patcher.touched == 0  # the same stack again: nothing to do
    assert_bit_exact(components, with_ab)
    with lingering_loras(components, [(a, 1.0, 1.0), (c, 1.0, 1.0)]) as patcher:
        assert patcher.touched == count_layers(b) + count_layers(c)  # b restored, c patched, a kept
    with lingering_loras(components, [(a, 0.5, 0.5), (c, 1.0, 1.0)]) as patcher:
        assert patcher.touched == count_layers(a)  # a strength changed
    with lingering_loras(components, []) as patcher:
        assert patcher.touched == count_layers(a) + count_layers(c)
        assert patcher.patched_layers == 0
    assert_bit_exact(components, before)


def test_failure_mid_patch_restores_every_weight(components):
    good = lora_on(components, ("to_q", "fc1"), seed=1)
    before = weights(components)
    with lingering_loras(components, [(good, 1.0, 1.0)]):
        pass
    broken = lora_on(components, ("to_k",), seed=2)
    path, layer = layers(components, "unet", "to_k")[-1]
    broken.add("unet", path, LoraModule(torch.ones(2, 3), torch.ones(layer.weight.shape[0], 2)))  # 3 inputs: wrong
    with pytest.raises(LorastudioError, match="does not fit"):
        with lingering_loras(components, [(good, 1.0, 1.0), (broken, 1.0, 1.0)]):
            pass
    assert patcher_for(components).patched_layers == 0
    assert_bit_exact(components, before)
    with pytest.raises(RuntimeError, match="boom"), applied_loras(components, [(good, 1.0, 1.0)]):
        raise RuntimeError("boom")
    assert_bit_exact(components, before)


def test_applied_loras_inside_a_lingering_stack_is_refused_not_hung(components):
    lora = lora_on(components, ("to_q",), seed=1)
    with lingering_loras(components, [(lora, 1.0, 1.0)]):
        with pytest.raises(LorastudioError, match="already applied"), applied_loras(components, []):
            pass
    with lingering_loras(components, []):
        pass


def plain_weight(layer, contributions) -> torch.Tensor:
    """What the plain path (one module at a time, in place) makes of a layer's weight."""
    copy = torch.nn.Module()
    copy.weight = torch.nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
    copy.bias = None
    for module, strength in contributions:
        add_module_update(module, copy, strength, "test")
    return copy.weight.detach()


@pytest.mark.parametrize("suffix", ["attn2.to_k", "proj_in", "resnets.0.conv1", "fc2"])
def test_fused_stack_equals_the_plain_path(components, suffix):
    """LoRA (Linear), 1x1 and 3x3 LoCon convs: one GEMM per layer matches the module-by-module sum."""
    first, second = lora_on(components, (suffix,), seed=1), lora_on(components, (suffix,), seed=2)
    component = "text_encoder" if suffix == "fc2" else "unet"
    path, layer = layers(components, component, suffix)[0]
    key = (component, path)
    expected = plain_weight(layer, [(first.modules[key], 0.7), (second.modules[key], -1.3)])
    with applied_loras(components, [(first, 0.7, 0.7), (second, -1.3, -1.3)]):
        fused = layer.weight.detach().clone()
    assert not torch.equal(fused, layer.weight)  # it did change the layer
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)


def test_lycoris_modules_keep_their_own_path_in_a_lingering_stack(components):
    path, layer = layers(components, "unet", "attn1.to_out.0")[0]
    out_features, in_features = layer.weight.shape
    g = torch.Generator().manual_seed(0)
    loha = LoraFile()
    loha.add(
        "unet",
        path,
        LohaModule(
            torch.randn(out_features, 2, generator=g) * 0.3,
            torch.randn(2, in_features, generator=g) * 0.3,
            torch.randn(out_features, 2, generator=g) * 0.3,
            torch.randn(2, in_features, generator=g) * 0.3,
            alpha=1.0,
        ),
    )
    plain = lora_on(components, ("attn1.to_out.0",), seed=4)
    before = weights(components)
    expected = plain_weight(layer, [(plain.modules[("unet", path)], 1.0), (loha.modules[("unet", path)], 0.8)])
    with lingering_loras(components, [(plain, 1.0, 1.0), (loha, 0.8, 0.8)]):
        torch.testing.assert_close(layer.weight.detach(), expected, rtol=0, atol=0)
    with lingering_loras(components, [(plain, 1.0, 1.0)]) as patcher:  # LoHa gone: that layer back to LoRA only
        assert patcher.touched == 1
    with lingering_loras(components, []):
        pass
    assert_bit_exact(components, before)


def write_lora(components, path, seed: int):
    return save_kohya(lora_on(components, ("to_q",), seed=seed), path, family="sd15")


def test_parsed_files_are_kept_by_content_and_a_replaced_file_is_read_again(components, tmp_path):
    cache = LoraFileCache()
    first = write_lora(components, tmp_path / "a.safetensors", seed=1)
    parsed = cache.load(first)
    assert cache.load(first) is parsed and cache.reads == 1  # a stat and a lookup
    twin = tmp_path / "twin.safetensors"
    twin.write_bytes(first.read_bytes())
    assert cache.load(twin).lora is parsed.lora  # same bytes under another name: one parsed copy
    write_lora(components, first, seed=2)
    os.utime(first, ns=(1, 1))  # even with an old mtime: the size or inode tells
    replaced = cache.load(first)
    assert replaced.lora is not parsed.lora and replaced.key != parsed.key
    assert cache.reads == 3
    small = LoraFileCache(max_bytes=first.stat().st_size + 1)  # room for one file
    small.load(first)
    small.load(write_lora(components, tmp_path / "b.safetensors", seed=3))
    assert len(small) == 1
    small.load(first)
    assert small.reads == 3  # `first` was evicted, least recently used


@pytest.mark.slow
def test_same_lora_twice_patches_once_and_no_lora_is_a_fresh_model(tiny_workspace, one_torch_thread):
    import numpy as np
    from PIL import Image

    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import run_generation
    from lorastudio.service.model_cache import ModelCache

    cache = ModelCache(tiny_workspace)
    model = cache.get("tiny-sd15", "cpu", None)
    write_lora({"unet": model.unet, "text_encoder": model.text_encoders[0]}, tiny_workspace.loras / "q.safetensors", 1)

    def generate(prompt, model_cache):
        request = GenerateConfig(model="tiny-sd15", prompt=prompt, steps=2, width=64, height=64, seed=5, device="cpu")
        with Image.open(run_generation(tiny_workspace, request, model_cache).images[0].path) as image:
            return np.asarray(image.convert("RGB"))

    patcher = patcher_for(model.components)
    once = generate("red <lora:q:1>", cache)
    assert patcher.touched > 0
    twice = generate("red <lora:q:1>", cache)
    assert patcher.touched == 0 and np.array_equal(once, twice)
    without = generate("red", cache)
    assert patcher.patched_layers == 0
    assert not np.array_equal(without, once)
    assert np.array_equal(without, generate("red", ModelCache(tiny_workspace)))  # a freshly loaded model


def test_underscored_names_resolve_through_one_index(components):
    from lorastudio.adapters import find_module

    unet = components["unet"]
    wanted = unet.get_submodule("down_blocks.0.attentions.0.proj_in")
    assert find_module(unet, "down.blocks.0.attentions.0.proj.in") is wanted  # split at every underscore
    assert find_module(unet, "down.blocks.0.attentions.0.proj.nope") is None
    replacement = torch.nn.Linear(1, 1)
    unet.get_submodule("down_blocks.0.attentions.0").proj_in = replacement  # the tree changed: noticed
    assert find_module(unet, "down.blocks.0.attentions.0.proj.in") is replacement


def test_in_place_stacks_keep_every_weight_at_its_address_and_equal_swapped_ones(components):
    """Compiled models read weights where they are (CUDA graphs): in place gives the swapped values."""
    a = lora_on(components, ("attn1.to_q", "conv1"), seed=1)
    b = lora_on(components, ("attn2.to_k", "fc1"), seed=2)
    g = torch.Generator().manual_seed(4)
    loha = LoraFile()
    for path, layer in layers(components, "unet", "attn1.to_v"):
        rows, cols = layer.weight.shape
        parts = [torch.randn(rows, 2, generator=g) * 0.1, torch.randn(2, cols, generator=g) * 0.1] * 2
        loha.add("unet", path, LohaModule(*parts, alpha=2.0))
    before = weights(components)
    addresses = {(c, k): v.data_ptr() for c, m in components.items() for k, v in m.state_dict().items()}
    swapped = {}
    for stack in ([(a, 1.0, 0.8)], [(a, 1.0, 0.8), (b, 0.5, 1.0), (loha, 1.0, 1.0)]):
        with lingering_loras(components, stack):
            swapped[len(stack)] = weights(components)
    with lingering_loras(components, []):
        pass
    for stack in ([(a, 1.0, 0.8)], [(a, 1.0, 0.8), (b, 0.5, 1.0), (loha, 1.0, 1.0)]):
        with lingering_loras(components, stack, in_place=True) as patcher:
            assert patcher.touched > 0
        assert_bit_exact(components, swapped[len(stack)])
        moved = [k for c, m in components.items() for k, v in m.state_dict().items() if v.data_ptr() != addresses[(c, k)]]
        assert not moved, f"moved: {moved[:3]}"
    with lingering_loras(components, [], in_place=True):
        pass
    assert_bit_exact(components, before)
    # Switching modes while patched goes through the originals: nothing is lost either way.
    with lingering_loras(components, [(a, 1.0, 1.0)], in_place=True):
        pass
    with lingering_loras(components, [(a, 1.0, 1.0)]):
        pass
    with applied_loras(components, [(b, 1.0, 1.0)]):
        pass
    assert_bit_exact(components, before)


def test_a_new_stack_after_a_restore_reuses_the_patch_memory_and_gives_the_same_weights(components):
    """Fresh pages cost a CPU more than the merge itself: a restored patch's tensor is the next one's."""
    a = lora_on(components, ("attn1.to_q", "conv1"), seed=1)
    b = lora_on(components, ("attn2.to_k", "conv1"), seed=2)
    before = weights(components)
    conv = next(layer for path, layer in layers(components, "unet", "conv1"))
    with applied_loras(components, [(a, 1.0, 1.0)]):
        first_address = conv.weight.data_ptr()
    patcher = patcher_for(components)
    assert_bit_exact(components, before)
    spare_bytes = patcher.held_bytes()
    assert spare_bytes > 0 and patcher.patched_layers == 0  # the spares, nothing patched
    with applied_loras(components, [(b, 1.0, 1.0), (a, 0.5, 0.5)]):
        assert conv.weight.data_ptr() == first_address  # the spare's memory, no fresh pages
        reused = weights(components)
        assert patcher.held_bytes() > 0
    patcher.release_spares()
    assert patcher.held_bytes() == 0
    with applied_loras(components, [(b, 1.0, 1.0), (a, 0.5, 0.5)]):
        assert_bit_exact(components, reused)  # new memory, the same weights
    assert_bit_exact(components, before)


def test_model_bytes_count_what_the_patcher_holds(tiny_workspace):
    from lorastudio.service.model_cache import ModelCache, model_bytes

    model = ModelCache(tiny_workspace).get("tiny-sd15", "cpu", None)
    components = {"unet": model.unet, "text_encoder": model.text_encoders[0]}
    plain = model_bytes(model)
    a = lora_on(components, ("to_q",), seed=1)
    with lingering_loras(components, [(a, 1.0, 1.0)]) as patcher:
        held = patcher.held_bytes()
    originals = sum(layer.weight.numel() * 4 for c in ("unet", "text_encoder") for _, layer in layers(components, c, "to_q"))
    assert held == originals and model_bytes(model) == plain + held
    with lingering_loras(components, [], in_place=True) as patcher:
        assert patcher.held_bytes() == 0  # in place keeps no spares


def test_load_many_reads_each_new_file_once_in_order_with_the_hashes_a1111_prints(components, tmp_path):
    from safetensors.torch import load_file, save_file

    from lorastudio.adapters.hashing import lora_short_hash

    files = [write_lora(components, tmp_path / f"{i}.safetensors", seed=i) for i in range(3)]
    bare = tmp_path / "bare.safetensors"  # no sshs_model_hash stored: the tensor bytes are hashed
    save_file(load_file(files[0]), bare)
    cache = LoraFileCache()
    parsed = cache.load_many([files[2], bare, files[0], files[2]])
    assert cache.reads == 3  # files[2] asked twice, read once
    assert parsed[0] is parsed[3]
    for path, entry in zip([files[2], bare, files[0]], parsed, strict=False):
        assert entry.short_hash == lora_short_hash(path) and entry.size == path.stat().st_size
    # bare holds files[0]'s tensors under another header: another file, another key
    assert len({entry.key for entry in parsed}) == 3
    assert parsed[1].lora.modules.keys() == parsed[2].lora.modules.keys()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 7)
    with pytest.raises(LorastudioError, match="broken.safetensors"):
        cache.load_many([files[1], broken, tmp_path / "missing.safetensors"])


def test_merging_into_a_model_that_holds_a_request_stack_adds_to_the_true_weights(components):
    from lorastudio.adapters.merge import merge_loras

    a = lora_on(components, ("to_q",), seed=1)
    b = lora_on(components, ("to_q", "to_k"), seed=2)
    before = weights(components)
    merge_loras(components, [(b, 1.0, 1.0)])
    merged_alone = weights(components)
    for (component, key), value in before.items():  # back to the originals, by value
        components[component].state_dict()[key].copy_(value)
    with lingering_loras(components, [(a, 1.0, 1.0)]):
        pass  # a request's stack stays on the model
    merge_loras(components, [(b, 1.0, 1.0)])
    assert_bit_exact(components, merged_alone)  # a is gone, b is merged into the originals
    with lingering_loras(components, []) as patcher:
        assert patcher.touched == 0  # nothing left for the request patcher to restore
    assert_bit_exact(components, merged_alone)


def test_a_model_cache_over_budget_lets_spare_patch_memory_go_first(tiny_workspace):
    from lorastudio.service.model_cache import ModelCache, model_bytes

    cache = ModelCache(tiny_workspace)
    model = cache.get("tiny-sd15", "cpu", None)
    components = {"unet": model.unet, "text_encoder": model.text_encoders[0]}
    with applied_loras(components, [(lora_on(components, ("to_q",), seed=1), 1.0, 1.0)]):
        pass
    patcher = patcher_for(components)
    spare = patcher.held_bytes()
    assert spare > 0
    cache.memory_budget_bytes = model_bytes(model) - 1  # over budget by the spares alone
    with lingering_loras(components, []):  # this thread holds the model: nothing released, no hang
        cache._evict_over_budget()
    assert patcher.held_bytes() == spare
    cache._evict_over_budget()
    assert patcher.held_bytes() == 0 and cache.loaded_names() == {"tiny-sd15"}  # the model stays


def test_dyn_keeps_the_first_ranks_and_is_part_of_the_stack(components):
    lora = lora_on(components, ("attn1.to_q",), seed=4, rank=8)
    (path, layer), *_ = layers(components, "unet", "attn1.to_q")
    module = lora.modules[("unet", path)]
    original = layer.weight.detach().clone()
    with lingering_loras(components, [(lora, 1.0, 1.0, 3)]) as patcher:
        assert patcher.touched == count_layers(lora)
        delta = layer.weight.detach() - original
    # A1111's dyn: up[:, :3] @ down[:3] at the whole file's alpha / rank (4 / 8)
    torch.testing.assert_close(delta, 0.5 * module.up[:, :3] @ module.down[:3])
    with lingering_loras(components, [(lora, 1.0, 1.0, 3)]) as patcher:
        assert patcher.touched == 0  # the same dyn again: nothing to do
    with lingering_loras(components, [(lora, 1.0, 1.0, 5)]) as patcher:
        assert patcher.touched == count_layers(lora)  # another dyn is another patch
    with lingering_loras(components, [(lora, 1.0, 1.0)]) as patcher:
        assert patcher.touched == count_layers(lora)
        torch.testing.assert_close(layer.weight.detach() - original, 0.5 * module.up @ module.down)
    with lingering_loras(components, []):
        pass


def with_bias_differences(components, lora: LoraFile, seed: int) -> LoraFile:
    """The same pairs, each with a ComfyUI `diff_b` beside it (LoraSave writes one for every bias)."""
    from lorastudio.adapters.lycoris import BiasDiffModule

    g = torch.Generator().manual_seed(seed)
    wrapped = LoraFile()
    for (component, path), module in lora.modules.items():
        bias = components[component].get_submodule(path).bias
        wrapped.add(component, path, BiasDiffModule(module, torch.randn(bias.shape, generator=g) * 0.1))
    return wrapped


def test_pairs_with_a_bias_difference_take_the_fused_path_and_add_their_bias_as_the_plain_path(components):
    """A `diff_b` beside a pair: the weight is the fused GEMM's, bit for bit the weight of the pair alone
    (not the module-by-module sum's rounding), the bias the plain path's bit for bit, swapped or in place."""
    suffixes = ("attn1.to_out.0", "resnets.0.conv1", "fc2")
    pairs, other = lora_on(components, suffixes, seed=5), lora_on(components, suffixes, seed=6)
    wrapped = with_bias_differences(components, pairs, seed=7)
    before = weights(components)
    with applied_loras(components, [(pairs, 0.7, 0.9), (other, -1.1, 0.4)]):
        fused = weights(components)
    results = {}
    for in_place in (False, True):
        with lingering_loras(components, [(wrapped, 0.7, 0.9), (other, -1.1, 0.4)], in_place=in_place):
            results[in_place] = weights(components)
        with lingering_loras(components, [], in_place=in_place):
            pass
        assert_bit_exact(components, before)
    assert all(torch.equal(results[True][key], value) for key, value in results[False].items())
    patched = results[False]
    for component, path in wrapped.modules:
        key = (component, f"{path}.weight")
        assert torch.equal(patched[key], fused[key]), key  # the fused GEMM's weight
        copy = torch.nn.Module()  # the plain path, one module at a time, on copies of the originals
        copy.weight = torch.nn.Parameter(before[key].clone(), requires_grad=False)
        copy.bias = torch.nn.Parameter(before[(component, f"{path}.bias")].clone(), requires_grad=False)
        strengths = (0.9, 0.4) if component == "unet" else (0.7, -1.1)
        for lora, strength in zip((wrapped, other), strengths, strict=True):
            add_module_update(lora.modules[(component, path)], copy, strength, path)
        bias = patched[(component, f"{path}.bias")]
        assert not torch.equal(bias, before[(component, f"{path}.bias")])
        assert torch.equal(bias, copy.bias.detach()), key
        torch.testing.assert_close(patched[key], copy.weight.detach(), rtol=1e-5, atol=1e-6)
    # the plain pairs' layers without a bias difference: their bias is the original one
    with lingering_loras(components, [(wrapped, 1.0, 1.0)]):
        pass
    with lingering_loras(components, [(pairs, 1.0, 1.0)]) as patcher:
        assert patcher.touched == count_layers(pairs)
    assert all(torch.equal(components[c].state_dict()[k], v) for (c, k), v in before.items() if k.endswith("bias"))
    with lingering_loras(components, []):
        pass


def test_dyn_cuts_a_pair_with_a_bias_difference_and_keeps_the_bias(components):
    """A1111's `<lora:x:1:dyn=N>` on a pair wrapped with a `diff_b`: the first N ranks, the whole bias difference."""
    lora = with_bias_differences(components, lora_on(components, ("attn1.to_out.0",), seed=8, rank=8), seed=9)
    (path, layer), *_ = layers(components, "unet", "attn1.to_out.0")
    module = lora.modules[("unet", path)]
    original, original_bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    with lingering_loras(components, [(lora, 1.0, 1.0, 3)]):
        delta, bias = layer.weight.detach() - original, layer.bias.detach().clone()
    torch.testing.assert_close(delta, 0.5 * module.inner.up[:, :3] @ module.inner.down[:3])
    assert torch.equal(bias, original_bias + module.diff_b)
    with lingering_loras(components, []):
        pass


def lone_bias_differences(components, suffixes: tuple[str, ...], seed: int) -> LoraFile:
    """A `diff_b` alone on each layer ending with `suffixes` (ComfyUI's LoraSave, a layer whose weight it left)."""
    from lorastudio.adapters.lycoris import BiasDiffModule

    g = torch.Generator().manual_seed(seed)
    lora = LoraFile()
    for component in ("unet", "text_encoder"):
        for suffix in suffixes:
            for path, layer in layers(components, component, suffix):
                lora.add(component, path, BiasDiffModule(None, torch.randn(layer.bias.shape, generator=g) * 0.1))
    return lora


def test_a_lone_bias_difference_takes_the_fast_path_with_the_plain_paths_weights(components, monkeypatch):
    """A `diff_b` without a pair sent its layer (and every LoRA's pair on it) down the plain path, module by
    module: now the weight is the original (or the fused pairs'), the bias the plain path's, bit for bit."""
    from lorastudio.adapters.lora_stack import LoraPatcher

    slow = []
    plain = LoraPatcher._patch_in_order
    monkeypatch.setattr(LoraPatcher, "_patch_in_order", lambda self, state, c: (slow.append(c), plain(self, state, c)))
    lone = lone_bias_differences(components, ("attn1.to_out.0", "resnets.0.conv1", "fc2"), seed=10)
    pairs = lora_on(components, ("attn1.to_out.0", "fc2", "attn2.to_k"), seed=11)
    before = weights(components)
    with applied_loras(components, [(pairs, 0.6, -0.8)]):
        fused = weights(components)
    for in_place in (False, True):
        with lingering_loras(components, [(lone, 0.7, 0.9)], in_place=in_place) as patcher:
            assert patcher.touched == count_layers(lone) and not slow
            alone = weights(components)
        with lingering_loras(components, [(pairs, 0.6, -0.8), (lone, 0.7, 0.9)], in_place=in_place) as patcher:
            assert patcher.touched == count_layers(pairs) and not slow  # the lone differences' layers kept
            mixed = weights(components)
        with lingering_loras(components, [(pairs, 0.6, -0.8), (lone, 0.7, 0.9)], in_place=in_place) as patcher:
            assert patcher.touched == 0  # the same stack again: nothing to do
        with lingering_loras(components, [(lone, 0.7, 0.9)], in_place=in_place):  # the pairs' weights go back
            assert_bit_exact(components, alone)
        with lingering_loras(components, [], in_place=in_place):
            pass
        assert_bit_exact(components, before)
        for (component, path), module in lone.modules.items():
            weight, bias = (component, f"{path}.weight"), (component, f"{path}.bias")
            copy = torch.nn.Module()  # the plain path the layer took before, on copies of the originals
            copy.weight = torch.nn.Parameter(before[weight].clone(), requires_grad=False)
            copy.bias = torch.nn.Parameter(before[bias].clone(), requires_grad=False)
            add_module_update(module, copy, 0.9 if component == "unet" else 0.7, path)
            assert torch.equal(alone[weight], before[weight]) and torch.equal(alone[weight], copy.weight)
            assert torch.equal(alone[bias], copy.bias) and not torch.equal(alone[bias], before[bias])
            assert torch.equal(mixed[bias], copy.bias), bias  # the pairs change no bias
            assert torch.equal(mixed[weight], fused[weight]), weight  # the fused GEMM's weight of the pairs
    shared = [key for key in pairs.modules if key in lone.modules]  # a pair and a lone difference on a layer
    assert shared and all(not torch.equal(fused[(c, f"{p}.weight")], before[(c, f"{p}.weight")]) for c, p in shared)


def test_dyn_cuts_a_doras_pair_before_the_weight_is_decomposed(components):
    """A1111's `<lora:x:1:1:N>` on a DoRA file keeps the first N ranks of its up/down (at the whole file's
    alpha / rank) and decomposes W + that cut delta with the file's `dora_scale`; the DoRA stayed whole."""
    from lorastudio.adapters.lycoris import DoraModule

    pairs = lora_on(components, ("attn1.to_q",), seed=12, rank=8)
    (path, layer), *_ = layers(components, "unet", "attn1.to_q")
    original = layer.weight.detach().clone()
    magnitude = original.norm(dim=1, keepdim=True) * 1.1  # LyCORIS' wd_on_out: one magnitude per output row
    lora = LoraFile()
    for (component, where), module in pairs.modules.items():
        weight = components[component].get_submodule(where).weight.detach()
        lora.add(component, where, DoraModule(module, weight.norm(dim=1, keepdim=True) * 1.1))
    pair = pairs.modules[("unet", path)]

    def decomposed(delta):
        merged = original + delta
        return magnitude * merged / (merged.norm(dim=1, keepdim=True) + torch.finfo(torch.float32).eps)

    with lingering_loras(components, [(lora, 1.0, 1.0, 3)]):
        cut = layer.weight.detach().clone()
    torch.testing.assert_close(cut, decomposed(0.5 * pair.up[:, :3] @ pair.down[:3]), rtol=1e-5, atol=1e-6)
    with lingering_loras(components, [(lora, 1.0, 1.0, 8)]):  # every rank: the whole DoRA
        whole = layer.weight.detach().clone()
    torch.testing.assert_close(whole, decomposed(0.5 * pair.up @ pair.down), rtol=1e-5, atol=1e-6)
    assert (cut - whole).abs().max() > 1e-3
    with lingering_loras(components, []):
        pass
    assert torch.equal(layer.weight, original)
