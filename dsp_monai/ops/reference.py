"""Readable pure-PyTorch statements of the compiled operators; the oracles of the tests.

They materialise every intermediate (the K prototype similarities, a (C, C, pixels) weight tensor), so they are
slow and memory-hungry, and meant for float64 checks on small inputs.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["prototype_logsumexp_reference"]


def prototype_logsumexp_reference(
    embeddings: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float,
    allowed: Optional[torch.Tensor] = None,
    valid: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`dsp_monai.ops.prototype_logsumexp` (docs/method.md §2 and §5, supplement S.3).

    Args:
        embeddings: (B, D, *spatial) pixel embeddings.
        prototypes: (C, K, D) class prototypes.
        temperature: tau > 0.
        allowed: (B, *spatial) int64 bit mask of possible classes, or None (everything possible).
        valid: (B, *spatial) bool, False pixels take no part in log Z, or None (all valid).

    Returns:
        logits (B, C, *spatial) with s_c = mean_k cos(f, P_ck) / tau, and log_z (C,) with
        log Z_c = log sum_{valid j} [ sum_{k != c} exp s_k(j) + [c not in A_j] exp s_c(j) ].
    """
    batch, dim = embeddings.shape[:2]
    spatial = embeddings.shape[2:]
    classes = prototypes.shape[0]
    unit_f = F.normalize(embeddings, dim=1)
    unit_p = F.normalize(prototypes, dim=-1)
    cosines = torch.einsum("bdn,ckd->bckn", unit_f.reshape(batch, dim, -1), unit_p)  # (B, C, K, N)
    scores = cosines.mean(dim=2) / temperature  # (B, C, N)
    logits = scores.reshape(batch, classes, *spatial)

    pixels = scores.shape[-1]
    if allowed is None:
        possible = torch.ones(batch, classes, pixels, dtype=torch.bool, device=embeddings.device)
    else:
        shifts = torch.arange(classes, device=embeddings.device)
        possible = ((allowed.reshape(batch, 1, pixels) >> shifts.view(1, classes, 1)) & 1).bool()
    is_valid = torch.ones(batch, pixels, dtype=torch.bool, device=embeddings.device)
    if valid is not None:
        is_valid = valid.reshape(batch, pixels)

    # weight[c, b, k, j] = 1 when exp s_k(j) enters Z_c: k != c, or k == c and c is impossible at j.
    eye = torch.eye(classes, dtype=torch.bool, device=embeddings.device)
    weight = ~eye.view(classes, 1, classes, 1) | (eye.view(classes, 1, classes, 1) & ~possible.unsqueeze(0))
    weight = weight & is_valid.view(1, batch, 1, pixels)
    terms = scores.unsqueeze(0).expand(classes, -1, -1, -1).masked_fill(~weight, float("-inf"))
    log_z = torch.logsumexp(terms.reshape(classes, -1), dim=1)
    return logits, log_z
