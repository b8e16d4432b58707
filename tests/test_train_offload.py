"""`ParkedEncoders`: the order of moves a GPU run makes (recorded here with stand-in encoders).

The real moves run in `tests/test_gpu_paths.py` on a GPU; on a CPU run nothing moves at all.
"""

from __future__ import annotations

import torch

from lorastudio.train.offload import ParkedEncoders


class _Encoder(torch.nn.Module):
    """A stand-in that records where it is sent instead of going (no CUDA here)."""

    def __init__(self, moves: list[str], name: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(256, 256, dtype=torch.float16), requires_grad=False)
        self.moves, self.name = moves, name

    def to(self, device):  # noqa: D102 — records the move
        self.moves.append(f"{self.name}->{device}")
        return self


def test_a_gpu_run_parks_clip_encoders_and_brings_them_back_for_each_sample_step():
    moves: list[str] = []
    encoders = [_Encoder(moves, "clip"), _Encoder(moves, "bigG")]
    parked = ParkedEncoders("cuda:0")
    assert parked.park(encoders, chatglm=False) == 2 * 256 * 256 * 2  # fp16 bytes freed on the GPU
    assert moves == ["clip->cpu", "bigG->cpu"]
    for _ in range(2):
        moves.clear()
        with parked.back_for_samples():
            assert moves == ["clip->cuda:0", "bigG->cuda:0"]
        assert moves[2:] == ["clip->cpu", "bigG->cpu"]


def test_chatglm_stays_in_cpu_memory_for_samples_too():
    moves: list[str] = []
    parked = ParkedEncoders("cuda")
    parked.park([_Encoder(moves, "chatglm")], chatglm=True)
    moves.clear()
    with parked.back_for_samples():
        pass
    assert moves == []  # its encode path runs where it is


def test_a_cpu_run_moves_nothing():
    moves: list[str] = []
    parked = ParkedEncoders("cpu")
    assert parked.park([_Encoder(moves, "clip")], chatglm=False) == 0
    with parked.back_for_samples():
        pass
    assert moves == []


def test_the_unet_waits_in_cpu_memory_while_the_caches_fill_on_a_gpu_run():
    from lorastudio.train.offload import unet_in_cpu_memory

    moves: list[str] = []
    unet = _Encoder(moves, "unet")
    with unet_in_cpu_memory(unet, "cuda") as waiting:
        assert waiting and moves == ["unet->cpu"]
    assert moves == ["unet->cpu", "unet->cuda"]
    moves.clear()
    try:
        with unet_in_cpu_memory(unet, "cuda:1"):
            raise RuntimeError("a cache failed")
    except RuntimeError:
        pass
    assert moves == ["unet->cpu", "unet->cuda:1"]  # back on its device all the same
    moves.clear()
    with unet_in_cpu_memory(unet, "cpu") as waiting:
        assert not waiting
    assert moves == []
