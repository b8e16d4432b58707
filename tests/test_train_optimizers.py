"""Optimizers kohya users choose, their typed arguments, and the LR scheduler shapes."""

from __future__ import annotations

import math

import pytest
import torch

from lorastudio.errors import LorastudioError
from lorastudio.train.config import ADAPTIVE_OPTIMIZERS, load_train_config
from lorastudio.train.optim import OPTIMIZERS, build_lr_scheduler, build_optimizer

CPU_OPTIMIZERS = [name for name, spec in OPTIMIZERS.items() if not spec.needs_cuda]


def _quadratic_run(name: str, lr: float, steps: int, args: dict | None = None) -> tuple[float, float]:
    """Loss before and after `steps` steps on ||W x - y||^2 from a fixed start."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(8, 8, generator=gen)
    # A non-zero start: relative-step Adafactor scales its steps by the weights' RMS.
    weight = torch.nn.Parameter(torch.randn(8, 8, generator=gen))
    inputs = torch.randn(32, 8, generator=gen)

    def loss_fn() -> torch.Tensor:
        return ((inputs @ weight.T - inputs @ target.T) ** 2).mean()

    opt = build_optimizer(name, [{"params": [weight], "lr": lr}], weight_decay=0.0, args=args)
    before = float(loss_fn().detach())
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    return before, float(loss_fn().detach())


@pytest.mark.parametrize("name", CPU_OPTIMIZERS)
def test_every_optimizer_lowers_a_quadratic_loss(name):
    cfg = load_train_config(overrides=[f"train.optimizer={name}"])
    # The learning rate each optimizer is used with: adaptive ones get 1.0 by default.
    lr = cfg.train.learning_rate if name in ADAPTIVE_OPTIMIZERS else 1e-2
    # 100 steps: Prodigy and D-Adaptation start from a tiny step-size estimate (d0 = 1e-6) and grow it.
    before, after = _quadratic_run(name, lr, steps=100, args=cfg.train.optimizer_args)
    assert after < 0.5 * before, (name, before, after)


def test_adaptive_optimizers_default_to_a_unit_learning_rate_unless_set():
    assert load_train_config(overrides=["train.optimizer=prodigy"]).train.learning_rate == 1.0
    assert load_train_config(overrides=["train.optimizer=Prodigy", "train.learning_rate=0.5"]).train.learning_rate == 0.5
    assert load_train_config(overrides=["train.optimizer=lion"]).train.learning_rate == 1e-4


def test_optimizer_args_reach_the_optimizer_and_unknown_ones_are_named():
    weight = torch.nn.Parameter(torch.zeros(2))
    opt = build_optimizer("lion", [{"params": [weight], "lr": 1e-3}], 0.0, {"betas": [0.8, 0.95]})
    assert opt.param_groups[0]["betas"] == (0.8, 0.95)
    with pytest.raises(LorastudioError, match=r"optimizer_args\.d_coeff: not an argument of prodigy .*d_coef"):
        build_optimizer("prodigy", [{"params": [weight], "lr": 1.0}], 0.0, {"d_coeff": 2.0})
    opt = build_optimizer("prodigy", [{"params": [weight], "lr": 1.0}], 0.0, {"d_coef": 2.0})
    assert opt.param_groups[0]["d_coef"] == 2.0


def test_adamw8bit_without_bitsandbytes_or_cuda_says_how_to_fix():
    weight = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(LorastudioError, match=r"adamw8bit.*(bitsandbytes|CUDA).*train.optimizer=adamw"):
        build_optimizer("adamw8bit", [{"params": [weight], "lr": 1e-3}], 0.0)


def test_relative_step_adafactor_uses_its_own_scheduler():
    cfg = load_train_config(overrides=["train.optimizer=adafactor"])
    assert cfg.train.lr_scheduler == "adafactor"  # picked, since the user did not choose one
    with pytest.raises(LorastudioError, match="lr_scheduler=adafactor"):
        load_train_config(overrides=["train.optimizer=adafactor", "train.lr_scheduler=cosine"])
    fixed = load_train_config(
        overrides=["train.optimizer=adafactor", "train.optimizer_args={relative_step: false}", "train.lr_scheduler=cosine"]
    )
    assert fixed.train.lr_scheduler == "cosine"
    with pytest.raises(LorastudioError, match="adafactor"):
        load_train_config(overrides=["train.lr_scheduler=adafactor"])

    weight = torch.nn.Parameter(torch.ones(4, 4))
    opt = build_optimizer("adafactor", [{"params": [weight], "lr": 1e-4}], 0.0)
    sched = build_lr_scheduler("adafactor", opt, 0, 100)
    reported = []
    for _ in range(300):
        opt.zero_grad()
        (weight**2).sum().backward()
        opt.step()
        sched.step()
        reported.append(sched.get_last_lr()[0])
    # Relative step: min(1e-2, 1/sqrt(step)): flat at 1e-2 until step 10000 ... here 1e-2 throughout.
    assert reported[0] == pytest.approx(1e-2) and reported[-1] == pytest.approx(min(1e-2, 1 / math.sqrt(300)))


def _lrs(name: str, steps: int, **kwargs) -> list[float]:
    weight = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([weight], lr=1.0)
    sched = build_lr_scheduler(name, opt, 0, steps, **kwargs)
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_cosine_with_restarts_has_num_cycles_restarts():
    for cycles in (1, 3):
        lrs = _lrs("cosine_with_restarts", 120, num_cycles=cycles)
        restarts = sum(1 for a, b in zip(lrs, lrs[1:], strict=False) if b > a + 0.5)
        assert restarts == cycles - 1
        assert lrs[0] == pytest.approx(1.0)


def test_polynomial_power_shapes_the_decay():
    # Halfway through, (1 - 1/2)**power of the range remains (diffusers' lr_end is 1e-7).
    for power in (1.0, 2.0, 0.5):
        lrs = _lrs("polynomial", 100, power=power)
        assert lrs[50] == pytest.approx(0.5**power, rel=1e-3)


def test_a_wrong_optimizer_argument_fails_before_the_model_loads(tmp_path):
    from lorastudio.train.plan import prepare_plan
    from training_helpers import write_images

    folder = write_images(tmp_path / "d", [((10, 10, 10), "x")], size=64)
    cfg = load_train_config(
        overrides=[
            "model=no-such-model",  # never loaded: the argument check comes first
            f"data.dir={folder}",
            "train.resolution=64",
            "train.optimizer=lion",
            "train.optimizer_args={betaz: [0.9, 0.99]}",
        ]
    )
    with pytest.raises(LorastudioError, match=r"optimizer_args\.betaz: not an argument of lion"):
        prepare_plan(cfg, tmp_path)


def test_adamw_on_a_gpu_is_fused_and_steps_like_the_plain_loop():
    """The fused kernel is chosen for CUDA parameters only; its step equals the CPU loop's (fp tolerance)."""
    from types import SimpleNamespace

    from lorastudio.train.optim import _device_defaults

    on_gpu = [{"params": [SimpleNamespace(device=torch.device("cuda"))]}]
    assert _device_defaults("adamw", on_gpu) == {"foreach": None, "fused": True}
    assert _device_defaults("adamw", [{"params": [torch.zeros(2)]}]) == {}
    assert _device_defaults("lion", on_gpu) == {}
    weights = []
    for kwargs in ({"foreach": False}, {"foreach": None, "fused": True}):  # torch runs fused AdamW on CPUs too
        torch.manual_seed(0)
        weight = torch.nn.Parameter(torch.randn(8, 8))
        opt = torch.optim.AdamW([weight], lr=1e-2, weight_decay=0.01, **kwargs)
        for _ in range(3):
            opt.zero_grad()
            (weight.square().sum()).backward()
            opt.step()
        weights.append(weight.detach())
    assert torch.allclose(weights[0], weights[1], atol=1e-6)
