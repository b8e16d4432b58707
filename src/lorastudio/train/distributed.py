"""Several processes, one set of weights: gradients averaged by hand, and a check that ranks agree.

Gradients of the trainable set are averaged across processes explicitly instead of wrapping
the UNet in DDP: for LoRA the UNet is frozen and never needs to be wrapped, and one code path
then serves LoRA and full fine-tuning alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["average_gradients", "ranks_agree"]

_REDUCE_BUCKET_ELEMENTS = 25_000_000


def _buckets(tensors: list[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    """Consecutive groups of same-dtype, same-device tensors of at most `limit` elements each."""
    groups: list[list[torch.Tensor]] = []
    size = 0
    for tensor in tensors:
        last = groups[-1][-1] if groups else None
        fits = last is not None and (last.dtype, last.device) == (tensor.dtype, tensor.device)
        if not fits or size + tensor.numel() > limit:
            groups.append([])
            size = 0
        groups[-1].append(tensor)
        size += tensor.numel()
    return groups


def average_gradients(params: list[torch.nn.Parameter], num_processes: int) -> None:
    """Replace every gradient by its mean over the processes (a no-op for one process)."""
    if num_processes == 1:
        return
    import torch.distributed as dist

    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    # One all-reduce per ~25M-element bucket, not per tensor (a whole UNet has ~700 tensors).
    for bucket in _buckets([p.grad for p in params], _REDUCE_BUCKET_ELEMENTS):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= num_processes
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def ranks_agree(accelerator: Accelerator, params: list[torch.nn.Parameter]) -> bool:
    """True when every process ends with the same trainable weights (checksums compared)."""
    if accelerator.num_processes == 1:
        return True
    sums = torch.stack([p.detach().double().sum() for p in params])
    gathered = accelerator.gather(sums[None].to(accelerator.device))
    return bool((gathered == gathered[0]).all())
