"""``prototype_logsumexp``: cosine prototype scores fused with the decoupled log-sum-exp of the DSP loss.

The compiled kernels (``csrc/ops/cpu``, ``csrc/ops/cuda``) never materialise the (B, C*K, *spatial) similarities
or the (C, C, pixels) weights: the mean of K cosines collapses to one vector per class, and Z_c is accumulated
with a running maximum. The backward pass is its own operator and recomputes the scores from the inputs and
log Z (like FlashAttention), so only C numbers are kept between the passes.
"""

import math
from typing import List, Optional, Sequence, Tuple

import torch

from . import _library  # noqa: F401  (registers torch.ops.dsp_monai.*)

__all__ = ["MAX_CLASSES", "cpu_paths", "pack_allowed", "prototype_logsumexp", "set_cpu_path", "unpack_allowed"]

MAX_CLASSES = 63
"""Most classes the bit-mask form of ``allowed`` (int64, one bit per class) can hold."""

_OP = "prototype_logsumexp: "
_EMBEDDING_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape(sizes: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in sizes) + "]"


def _check_mask(mask, name, dtype, dtype_text, embeddings):
    if mask is None:
        return
    if mask.dtype != dtype:
        raise RuntimeError(f"{_OP}{name} must be {dtype_text}; got dtype {mask.dtype}")
    if mask.device != embeddings.device:
        raise RuntimeError(
            f"{_OP}{name} must be on the device of embeddings ({embeddings.device}); got {mask.device}"
        )
    expected = [embeddings.shape[0], *embeddings.shape[2:]]
    if list(mask.shape) != expected:
        raise RuntimeError(
            f"{_OP}{name} must have shape (B, *spatial) = {_shape(expected)} to match embeddings; "
            f"got {_shape(mask.shape)}"
        )


def _check_arguments(embeddings, prototypes, temperature, allowed, valid):
    """The checks of the C++ kernels (csrc/ops/prototype_logsumexp.cpp), with the same messages, for fake tensors."""
    if embeddings.dim() < 3:
        raise RuntimeError(
            f"{_OP}embeddings must have shape (B, D, *spatial) with at least one spatial dim; got shape "
            f"{_shape(embeddings.shape)}"
        )
    if embeddings.dtype not in _EMBEDDING_DTYPES:
        raise RuntimeError(
            f"{_OP}embeddings must be torch.float16, torch.bfloat16, torch.float32 or torch.float64; "
            f"got {embeddings.dtype}"
        )
    if prototypes.dim() != 3:
        raise RuntimeError(f"{_OP}prototypes must have shape (C, K, D); got shape {_shape(prototypes.shape)}")
    if prototypes.shape[0] < 1 or prototypes.shape[1] < 1:
        raise RuntimeError(
            f"{_OP}prototypes must hold at least one class and one prototype per class; got shape "
            f"{_shape(prototypes.shape)}"
        )
    if prototypes.shape[0] > MAX_CLASSES:
        raise RuntimeError(
            f"{_OP}prototypes has C={prototypes.shape[0]} classes but at most {MAX_CLASSES} are supported "
            "(allowed is an int64 bit mask)"
        )
    if prototypes.shape[2] != embeddings.shape[1]:
        raise RuntimeError(
            f"{_OP}prototypes has D={prototypes.shape[2]} but embeddings has D={embeddings.shape[1]} channels "
            "(dim 1); they must agree"
        )
    if prototypes.device != embeddings.device:
        raise RuntimeError(
            f"{_OP}prototypes must be on the device of embeddings ({embeddings.device}); got {prototypes.device}"
        )
    reduced = embeddings.dtype in (torch.float16, torch.bfloat16)
    if not (prototypes.dtype == embeddings.dtype or (reduced and prototypes.dtype == torch.float32)):
        extra = " or torch.float32" if reduced else ""
        raise RuntimeError(
            f"{_OP}prototypes must have dtype {embeddings.dtype} (that of embeddings){extra}; got {prototypes.dtype}"
        )
    if not (math.isfinite(temperature) and temperature > 0):
        raise RuntimeError(f"{_OP}temperature must be a finite number > 0; got {temperature}")
    _check_mask(allowed, "allowed", torch.int64, "an int64 bit mask (bit c set = class c possible)", embeddings)
    _check_mask(valid, "valid", torch.bool, "a bool mask (False = padding)", embeddings)


def _acc_dtype(embeddings: torch.Tensor) -> torch.dtype:
    return torch.float64 if embeddings.dtype == torch.float64 else torch.float32


@torch.library.register_fake("dsp_monai::prototype_logsumexp")
def _prototype_logsumexp_fake(embeddings, prototypes, temperature, allowed=None, valid=None):
    _check_arguments(embeddings, prototypes, temperature, allowed, valid)
    classes = prototypes.shape[0]
    logits = embeddings.new_empty((embeddings.shape[0], classes, *embeddings.shape[2:]))
    log_z = embeddings.new_empty((classes,), dtype=_acc_dtype(embeddings))
    return logits, log_z


@torch.library.register_fake("dsp_monai::prototype_logsumexp_backward")
def _prototype_logsumexp_backward_fake(
    grad_logits, grad_log_z, embeddings, prototypes, temperature, allowed, valid, log_z
):
    _check_arguments(embeddings, prototypes, temperature, allowed, valid)
    return torch.empty_like(embeddings, memory_format=torch.contiguous_format), torch.empty_like(
        prototypes, memory_format=torch.contiguous_format
    )


def _setup_context(ctx, inputs, output):
    embeddings, prototypes, temperature, allowed, valid = inputs
    _, log_z = output
    ctx.temperature = temperature
    ctx.save_for_backward(embeddings, prototypes, allowed, valid, log_z)


def _backward(ctx, grad_logits, grad_log_z):
    embeddings, prototypes, allowed, valid, log_z = ctx.saved_tensors
    grad_embeddings, grad_prototypes = torch.ops.dsp_monai.prototype_logsumexp_backward(
        grad_logits, grad_log_z, embeddings, prototypes, ctx.temperature, allowed, valid, log_z
    )
    return grad_embeddings, grad_prototypes, None, None, None


torch.library.register_autograd("dsp_monai::prototype_logsumexp", _backward, setup_context=_setup_context)


def _no_double_backward(ctx, grad_embeddings, grad_prototypes):
    raise RuntimeError(
        "prototype_logsumexp: double backward (gradients of gradients) is not supported; compute the first "
        "gradient without create_graph=True"
    )


torch.library.register_autograd(
    "dsp_monai::prototype_logsumexp_backward", _no_double_backward, setup_context=lambda ctx, inputs, output: None
)


def prototype_logsumexp(
    embeddings: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float,
    allowed: Optional[torch.Tensor] = None,
    valid: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cosine prototype logits and the decoupled log-normalisers of the DSP loss, in one fused pass.

    For pixel embedding f_j and class c, ``s_c(j) = mean_k cos(f_j, P[c, k]) / temperature`` and

        log Z_c = log sum_{valid j} [ sum_{k != c} exp s_k(j) + [c not in A_j] exp s_c(j) ]

    (docs/method.md §2, §4 and §5; supplement S.3), where A_j is the set of classes possible at pixel j.

    Args:
        embeddings: (B, D, *spatial) float16 / bfloat16 / float32 / float64, any number (>= 1) of spatial dims;
            normalised inside (x / max(|x|, 1e-12), like ``torch.nn.functional.normalize``).
        prototypes: (C, K, D), C <= 63, of the embeddings' dtype (or float32 with float16 / bfloat16 embeddings);
            each vector normalised inside, the K scores of a class averaged.
        temperature: tau, a finite float > 0.
        allowed: (B, *spatial) int64 bit mask, bit c set = class c possible at that pixel (see
            :func:`pack_allowed`); None = every class possible everywhere.
        valid: (B, *spatial) bool, False pixels (padding) take no part in log Z; None = all valid.

    Returns:
        ``(logits, log_z)``: logits (B, C, *spatial) in the embeddings' dtype (accumulated in float32), and
        log_z (C,) float32 (float64 for float64 inputs); ``log_z[c]`` is ``-inf`` when no pixel contributes to Z_c.
        Both are differentiable with respect to ``embeddings`` and ``prototypes`` (not twice).

    Raises:
        RuntimeError: on a wrong rank, dtype, device or shape of any argument, C > 63 or temperature <= 0; the
            message names the argument, what was expected and what arrived.

    Example:
        >>> import torch
        >>> from dsp_monai.ops import prototype_logsumexp, pack_allowed
        >>> f = torch.randn(2, 16, 32, 32, requires_grad=True)
        >>> protos = torch.randn(3, 5, 16, requires_grad=True)
        >>> possible = torch.ones(2, 3, 32, 32, dtype=torch.bool)
        >>> logits, log_z = prototype_logsumexp(f, protos, 0.1, pack_allowed(possible))
        >>> logits.shape, log_z.shape
        (torch.Size([2, 3, 32, 32]), torch.Size([3]))
    """
    return torch.ops.dsp_monai.prototype_logsumexp(embeddings, prototypes, float(temperature), allowed, valid)


def pack_allowed(possible: torch.Tensor) -> torch.Tensor:
    """Packs a (B, C, *spatial) bool mask of possible classes into the (B, *spatial) int64 bit mask.

    Args:
        possible: bool tensor, ``possible[b, c, ...]`` True where class c is possible; C <= 63.

    Returns:
        int64 tensor of shape (B, *spatial) with bit c set where class c is possible.
    """
    if possible.dtype != torch.bool:
        raise TypeError(f"pack_allowed: possible must be a bool tensor; got dtype {possible.dtype}")
    if possible.dim() < 2:
        raise ValueError(f"pack_allowed: possible must have shape (B, C, *spatial); got shape {_shape(possible.shape)}")
    classes = possible.shape[1]
    if classes > MAX_CLASSES:
        raise ValueError(f"pack_allowed: at most {MAX_CLASSES} classes fit an int64 bit mask; got C={classes}")
    weights = torch.ones(1, dtype=torch.int64, device=possible.device) << torch.arange(
        classes, dtype=torch.int64, device=possible.device
    )
    weights = weights.view(1, classes, *([1] * (possible.dim() - 2)))
    return (possible.to(torch.int64) * weights).sum(dim=1)


def unpack_allowed(allowed: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Unpacks a (B, *spatial) int64 bit mask into a (B, C, *spatial) bool mask of possible classes.

    Args:
        allowed: int64 bit mask, bit c set where class c is possible.
        num_classes: C, between 1 and 63.

    Returns:
        bool tensor of shape (B, num_classes, *spatial).
    """
    if allowed.dtype != torch.int64:
        raise TypeError(f"unpack_allowed: allowed must be an int64 bit mask; got dtype {allowed.dtype}")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"unpack_allowed: num_classes must be in [1, {MAX_CLASSES}]; got {num_classes}")
    if allowed.dim() < 1:
        raise ValueError("unpack_allowed: allowed must have shape (B, *spatial); got a 0-dim tensor")
    shifts = torch.arange(num_classes, dtype=torch.int64, device=allowed.device)
    shifts = shifts.view(1, num_classes, *([1] * (allowed.dim() - 1)))
    return ((allowed.unsqueeze(1) >> shifts) & 1).bool()


def cpu_paths() -> List[str]:
    """The CPU kernel builds this processor can run, narrowest first: ``"baseline"`` (any x86-64 or other CPU),
    ``"avx2"`` (AVX2 + FMA), ``"avx512"`` (AVX-512 F/BW/DQ/VL). The widest is used unless :func:`set_cpu_path` or
    the environment variable ``DSP_MONAI_CPU_PATH`` (read when the first CPU kernel runs) picks another."""
    return torch.ops.dsp_monai._prototype_logsumexp_cpu_paths().split(",")


def set_cpu_path(path: str) -> str:
    """Makes every later CPU call of :func:`prototype_logsumexp` use ``path`` (one of :func:`cpu_paths`, or
    ``"auto"`` for the widest); returns the path used before. Meant for tests and benchmarks: every path computes
    the same function, to float rounding.

    Raises:
        RuntimeError: when the path is unknown or this processor lacks its instructions (the message lists the
            paths it supports).
    """
    previous = torch.ops.dsp_monai._prototype_logsumexp_cpu_path("")
    torch.ops.dsp_monai._prototype_logsumexp_cpu_path(path)
    return previous
