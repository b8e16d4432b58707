"""OFT files (kohya's `oft_unet_*`, LyCORIS' diag-OFT): the weight's output rows rotated, not added to.

The expected weights are the definition written out here: per block of output rows
W' = Rᵀ W with R = (I + Q)(I − Q)⁻¹, Q = B − Bᵀ with its norm capped at alpha · out_rows,
moved to at strength s as W + s (W' − W); LyCORIS' own `diag_oft.diff_weight` checks the rescale.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lorastudio.adapters import applied_loras, load_lora_file
from lorastudio.errors import LorastudioError

EPS = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def components(sd15):
    return {k: v for k, v in sd15.components.items() if k in ("unet", "text_encoder")}


def _targets(unet) -> list[str]:
    """A Linear (to_q) and a 3x3 conv of the tiny UNet."""
    linear = next(p for p, m in unet.named_modules() if p.endswith("attn1.to_q"))
    conv = next(p for p, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and ".resnets." in p)
    return [linear, conv]


def _cayley(blocks: torch.Tensor, cap: float) -> torch.Tensor:
    q = blocks - blocks.transpose(1, 2)
    if cap > 0 and float(q.norm()) > cap:
        q = q * (cap / q.norm())
    eye = torch.eye(q.shape[1]).expand_as(q)
    # R (I - Q) = I + Q, solved for R rather than inverted
    return torch.linalg.solve((eye - q).transpose(1, 2), (eye + q).transpose(1, 2)).transpose(1, 2)


def _rotated(weight: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Rᵀ W for each block of output rows, block by block."""
    size = r.shape[1]
    rows = [r[k].T @ weight[k * size : (k + 1) * size].reshape(size, -1) for k in range(r.shape[0])]
    return torch.cat(rows).reshape(weight.shape)


def _save(tmp_path, name, state):
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _patched(components, lora, strength, paths):
    unet = components["unet"]
    with applied_loras(components, [(lora, 1.0, strength)]):
        return {path: unet.get_submodule(path).weight.detach().clone() for path in paths}


@pytest.mark.parametrize("alpha", [1.0, 1e-3])  # a cap far above Q's norm, and one that scales Q down
def test_kohya_oft_rotates_each_block_of_output_rows(components, tmp_path, alpha):
    unet = components["unet"]
    gen = torch.Generator().manual_seed(0)
    state, blocks = {}, {}
    for path in _targets(unet):
        out = unet.get_submodule(path).weight.shape[0]
        blocks[path] = torch.randn(4, out // 4, out // 4, generator=gen) * 0.2
        name = "oft_unet_" + path.replace(".", "_")
        state |= {f"{name}.oft_blocks": blocks[path], f"{name}.alpha": torch.tensor(alpha)}
    lora = load_lora_file(_save(tmp_path, "oft", state))
    originals = {path: unet.get_submodule(path).weight.detach().clone() for path in blocks}
    for strength in (1.0, 0.6):
        patched = _patched(components, lora, strength, blocks)
        for path, weight in originals.items():
            r = _cayley(blocks[path], alpha * weight.shape[0])
            capped = alpha < 1  # the cap changes R: without it the rotation is another one
            assert capped != torch.allclose(r, _cayley(blocks[path], 0.0), atol=1e-4)
            want = weight + strength * (_rotated(weight, r) - weight)
            tolerance = 64 * EPS * weight[0].numel() ** 0.5 * float(weight.abs().max())
            assert torch.allclose(patched[path], want, rtol=0, atol=tolerance), (path, strength)
            if strength == 1.0:  # a rotation: each block's rows keep their norm, which no sum would
                norms = [weight.reshape(4, -1).norm(dim=1), patched[path].reshape(4, -1).norm(dim=1)]
                assert torch.allclose(*norms, rtol=1e-5) and not torch.allclose(patched[path], weight)
    assert all(torch.equal(unet.get_submodule(p).weight, w) for p, w in originals.items())


def test_lycoris_diag_oft_with_rescale_and_old_oft_diag(components, tmp_path):
    from lycoris.functional import diag_oft

    unet = components["unet"]
    linear, conv = _targets(unet)
    gen = torch.Generator().manual_seed(1)
    weight = unet.get_submodule(linear).weight.detach().clone()
    out = weight.shape[0]
    blocks, rescale = torch.randn(2, out // 2, out // 2, generator=gen) * 0.2, 1 + torch.rand(out, 1, generator=gen)
    conv_weight = unet.get_submodule(conv).weight.detach().clone()
    r_conv = _cayley(torch.randn(8, conv_weight.shape[0] // 8, conv_weight.shape[0] // 8, generator=gen), 0.0)
    lin_name, conv_name = ("lora_unet_" + p.replace(".", "_") for p in (linear, conv))
    state = {f"{lin_name}.oft_blocks": blocks, f"{lin_name}.alpha": torch.tensor(0.01), f"{lin_name}.rescale": rescale}
    state[f"{conv_name}.oft_diag"] = r_conv  # old LyCORIS: R itself, as A1111 reads it
    lora = load_lora_file(_save(tmp_path, "lyco", state))
    patched = _patched(components, lora, 0.5, [linear, conv])
    reference = diag_oft.diff_weight(weight, blocks, rescale, constraint=0.01 * out, backend="torch")
    assert torch.allclose(patched[linear], weight + 0.5 * reference, rtol=0, atol=1e-5)
    assert torch.allclose(patched[conv], conv_weight + 0.5 * (_rotated(conv_weight, r_conv) - conv_weight), atol=1e-5)


def test_sdxl_kohya_oft_names_ldm_blocks(sdxl, tmp_path):
    from lorastudio.adapters.ldm import unet_diffusers_to_ldm_path

    unet = sdxl.unet
    path = next(p for p, m in unet.named_modules() if p.endswith("attn2.to_k"))
    name = "oft_unet_" + unet_diffusers_to_ldm_path(path, unet.config).replace(".", "_")
    assert name.startswith("oft_unet_input_blocks_") or name.startswith("oft_unet_output_blocks_")
    weight = unet.get_submodule(path).weight.detach().clone()
    blocks = torch.randn(4, weight.shape[0] // 4, weight.shape[0] // 4, generator=torch.Generator().manual_seed(2))
    lora = load_lora_file(_save(tmp_path, "xl", {f"{name}.oft_blocks": blocks, f"{name}.alpha": torch.tensor(0.0)}))
    patched = _patched({"unet": unet}, lora, 1.0, [path])
    assert torch.allclose(patched[path], _rotated(weight, _cayley(blocks, 0.0)), atol=1e-5)


def test_oft_imports_lists_and_round_trips(components, workspace, tmp_path):
    from safetensors import safe_open

    from lorastudio.service.loras import import_lora, list_loras

    unet = components["unet"]
    linear, _ = _targets(unet)
    out = unet.get_submodule(linear).weight.shape[0]
    name = "oft_unet_" + linear.replace(".", "_")
    blocks = torch.randn(4, out // 4, out // 4, generator=torch.Generator().manual_seed(3))
    source = _save(tmp_path, "rot", {f"{name}.oft_blocks": blocks, f"{name}.alpha": torch.tensor(0.002)})
    info = import_lora(workspace, source, family="sd15")
    assert (info["types"], info["ranks"], info["family"]) == (["oft"], [4], "sd15")
    assert {row["name"]: row["type"] for row in list_loras(workspace)}["rot"] == "oft"
    with safe_open(info["path"], framework="pt") as handle:  # LyCORIS' layout, which A1111 and ComfyUI read
        kohya = "lora_unet_" + linear.replace(".", "_")
        assert set(handle.keys()) == {f"{kohya}.oft_blocks", f"{kohya}.alpha"}
        assert torch.equal(handle.get_tensor(f"{kohya}.oft_blocks"), blocks)
        assert handle.metadata()["ss_network_module"] == "lycoris.kohya"
    first = _patched(components, load_lora_file(source), 0.7, [linear])
    assert torch.equal(_patched(components, load_lora_file(info["path"]), 0.7, [linear])[linear], first[linear])


def test_boft_and_misfit_blocks_are_refused_in_one_line(components, tmp_path):
    unet = components["unet"]
    linear, _ = _targets(unet)
    name = "lora_unet_" + linear.replace(".", "_")
    boft = _save(tmp_path, "boft", {f"{name}.oft_blocks": torch.zeros(2, 4, 8, 8), f"{name}.alpha": torch.tensor(0.0)})
    with pytest.raises(LorastudioError, match=rf"^boft.safetensors: module {name} is BOFT .*cannot apply"):
        load_lora_file(boft)
    out = unet.get_submodule(linear).weight.shape[0]
    misfit = load_lora_file(_save(tmp_path, "misfit", {f"{name}.oft_blocks": torch.zeros(3, out // 4, out // 4)}))
    before = unet.get_submodule(linear).weight.detach().clone()
    with pytest.raises(LorastudioError, match=r"attn1.to_q: does not fit the model's"):
        with applied_loras(components, [(misfit, 1.0, 1.0)]):
            pass
    assert torch.equal(unet.get_submodule(linear).weight, before)
