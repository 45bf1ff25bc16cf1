"""Differentiable reductions across the ranks of a process group, for losses whose normalisers span the global
batch (the DSP loss: Z_c sums over every rank's pixels, the positive means over every rank's positives).

Gradient convention: every rank computes the same global loss L, and the backward pass of a summing all-reduce sums
the ranks' incoming gradients, so each rank's local gradient is ``world_size`` times its share of dL. Averaging the
parameter gradients over the ranks (what DistributedDataParallel does) therefore yields exactly dL/dtheta, the
gradient of one process computing L on the concatenated batch.
"""

from typing import Optional

import torch
import torch.distributed as dist

__all__ = ["all_reduce_max", "all_reduce_sum", "check_option", "resolve_group"]

class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad = grad_total.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_reduce_sum(tensor: torch.Tensor, group) -> torch.Tensor:
    """Sum of ``tensor`` over the ranks of ``group``, differentiable (the backward pass sums the gradients too)."""
    return _AllReduceSum.apply(tensor, group)


def all_reduce_max(tensor: torch.Tensor, group) -> torch.Tensor:
    """Element-wise maximum of ``tensor`` over the ranks of ``group`` (not differentiable: a detached copy)."""
    result = tensor.detach().clone(memory_format=torch.contiguous_format)
    dist.all_reduce(result, op=dist.ReduceOp.MAX, group=group)
    return result


def check_option(distributed, name: str = "distributed") -> None:
    """Raises TypeError unless ``distributed`` is a bool or a ``torch.distributed.ProcessGroup``."""
    if isinstance(distributed, bool):
        return
    if dist.is_available() and isinstance(distributed, dist.ProcessGroup):
        return
    raise TypeError(f"{name} must be True, False or a torch.distributed.ProcessGroup; got {distributed!r}")


def resolve_group(distributed) -> Optional[object]:
    """The process group to reduce over: None for False, the default group for True, else ``distributed`` itself.

    Raises:
        TypeError: when ``distributed`` is neither a bool nor a ProcessGroup.
        RuntimeError: when a reduction is asked for but torch.distributed is not initialised.
    """
    check_option(distributed)
    if distributed is False:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "distributed reduction was asked for but torch.distributed is not initialised; call "
            "torch.distributed.init_process_group first, or pass distributed=False"
        )
    return dist.group.WORLD if distributed is True else distributed
