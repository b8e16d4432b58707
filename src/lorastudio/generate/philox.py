"""NVIDIA's Philox4x32-10 normal numbers on the CPU: what `torch.randn` draws on a CUDA device.

torch's CUDA generator gives element i of a draw the Philox counter (offset, 0, i, 0) under the key
(seed's low 32 bits, seed's high 32 bits); ten rounds turn the counter into four 32-bit words, and
the first two make one normal value by Box-Muller (curand's `curand_normal`, its sine half). Each
draw moves the generator's offset on by one. This is A1111's "NV" random number source, which
makes on any machine the starting noise an NVIDIA GPU makes. Written from that description with
numpy's unsigned 64-bit arithmetic (a 32 x 32-bit product fits), one vector operation per step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["PhiloxGenerator", "philox_normal"]

_MASK32 = 0xFFFFFFFF
_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_WEYL = (0x9E3779B9, 0xBB67AE85)  # the key's increments between rounds
_ROUNDS = 10
# curand's Box-Muller scales, float32 constants as its header writes them: 2^-32 and 2^-32 * 2pi.
_TWO_POW32_INV = float(np.float32(2.3283064e-10))
_TWO_POW32_INV_2PI = float(np.float32(2.3283064e-10) * np.float32(6.2831855))


def _philox_words(counter: list[np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first two output words of Philox4x32-10 for each counter (four uint64 arrays < 2^32)."""
    c0, c1, c2, c3 = counter
    key0, key1 = seed & _MASK32, (seed >> 32) & _MASK32
    m0, m1 = np.uint64(_MULTIPLIERS[0]), np.uint64(_MULTIPLIERS[1])
    shift, mask = np.uint64(32), np.uint64(_MASK32)
    for round_index in range(_ROUNDS):
        if round_index:
            key0, key1 = (key0 + _WEYL[0]) & _MASK32, (key1 + _WEYL[1]) & _MASK32
        product0, product1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = (
            (product1 >> shift) ^ c1 ^ np.uint64(key0),
            product1 & mask,
            (product0 >> shift) ^ c3 ^ np.uint64(key1),
            product0 & mask,
        )
    return c0, c1


def philox_normal(seed: int, offset: int, count: int) -> np.ndarray:
    """`count` standard normal float32 values: element i from the counter (offset, 0, i, 0)."""
    seed &= 0xFFFFFFFFFFFFFFFF  # torch keeps a seed as its 64 unsigned bits
    index = np.arange(count, dtype=np.uint64)
    counter = [
        np.full(count, offset & _MASK32, dtype=np.uint64),
        np.full(count, (offset >> 32) & _MASK32, dtype=np.uint64),
        index & np.uint64(_MASK32),
        index >> np.uint64(32),
    ]
    x, y = _philox_words(counter, seed)
    u = x.astype(np.float64) * _TWO_POW32_INV + _TWO_POW32_INV / 2
    v = y.astype(np.float64) * _TWO_POW32_INV_2PI + _TWO_POW32_INV_2PI / 2
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


class PhiloxGenerator:
    """One seed's stream of draws, as a CUDA `torch.Generator` after `manual_seed(seed)`.

    Each `randn` is the next draw (the offset moves on by one), so the per-step noise of an
    ancestral sampler continues where the starting noise stopped, as it does on the GPU.
    """

    def __init__(self, seed: int, offset: int = 0) -> None:
        self.seed = int(seed)
        self.offset = int(offset)

    def randn(self, shape: tuple[int, ...]) -> Any:
        """A float32 CPU tensor of `shape` from the next draw."""
        import torch

        values = philox_normal(self.seed, self.offset, math.prod(shape))
        self.offset += 1
        return torch.from_numpy(values).reshape(shape)
