"""Pseudo-label filtering (PLF, docs/method.md): the weak view's prediction restricted to the classes the annotations
allow, as the cross-entropy target of the strong view."""

import math

import torch

from .dsp import prepare_annotations

__all__ = ["PseudoLabelFilter", "filter_pseudo_labels"]


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1]; got {threshold!r}")
    return float(threshold)


@torch.no_grad()
def filter_pseudo_labels(
    logits: torch.Tensor,
    annotations,
    threshold: float = 0.0,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Pseudo-labels from weak-view logits, filtered by the annotations' possible classes (docs/method.md).

    At every pixel the scores of the impossible classes are set to -inf and the argmax is the pseudo-label;
    labelled pixels take their label. Pixels where no class is possible, padding, and (with ``threshold`` > 0)
    pixels whose confidence, the largest softmax probability over the possible classes, is below ``threshold``
    get ``ignore_index``. No gradient flows.

    Args:
        logits: (B, C, *spatial) class scores of the weak view (e.g. ``dsp_loss(...)["logits"]``).
        annotations: per-image records, a batch dict, or the :class:`~dsp_monai.annotations.AnnotationBatch` of
            the batch.
        threshold: minimum confidence in [0, 1]; 0 (the default, as the supplement found best) keeps every pixel
            that has a possible class.
        ignore_index: the value of unlabelled pixels, in the annotations and in the result.

    Returns:
        (B, *spatial) int64 pseudo-labels, ``ignore_index`` where filtered out; the target layout of
        ``torch.nn.functional.cross_entropy(..., ignore_index=ignore_index)``.

    Raises:
        ValueError: for a threshold outside [0, 1], logits of fewer than 3 dims, or annotations that do not match
            the logits.

    Example:
        >>> import torch
        >>> from dsp_monai.losses import filter_pseudo_labels
        >>> logits = torch.tensor([[[[3.0, 0.0]], [[2.0, 5.0]], [[1.0, 1.0]]]])  # (B=1, C=3, 1, 2)
        >>> filter_pseudo_labels(logits, [{"tags": torch.tensor([1, 2])}]).tolist()
        [[[1, 1]]]
    """
    threshold = _check_threshold(threshold)
    if logits.dim() < 3:
        raise ValueError(f"logits must have shape (B, C, *spatial); got shape {list(logits.shape)}")
    batch = prepare_annotations(
        annotations, logits.shape[1], logits.shape[2:], logits.shape[0], logits.device, ignore_index
    )
    scores = logits.detach().float().masked_fill(~batch.possible(), -math.inf)
    best, pseudo = scores.max(dim=1)
    keep = batch.allowed != 0
    pseudo = torch.where(batch.label != ignore_index, batch.label, pseudo)
    if threshold > 0:
        shifted = scores - torch.where(keep, best, torch.zeros_like(best)).unsqueeze(1)
        confidence = torch.exp(-torch.logsumexp(shifted, dim=1))
        keep &= confidence >= threshold
    return torch.where(keep, pseudo, torch.full_like(pseudo, ignore_index))


class PseudoLabelFilter:
    """Transform-style pseudo-label filtering (docs/method.md); see :func:`filter_pseudo_labels`.

    Args:
        threshold: minimum confidence (largest softmax probability over the possible classes) in [0, 1]; default 0.
        ignore_index: the value of unlabelled pixels, in the annotations and in the result.

    Raises:
        ValueError: for a threshold outside [0, 1] or a non-integer ignore_index.

    Example:
        >>> import torch
        >>> from dsp_monai.losses import PseudoLabelFilter
        >>> plf = PseudoLabelFilter(threshold=0.9)
        >>> logits = torch.tensor([[[[3.0, 0.0]], [[2.0, 5.0]]]])  # (B=1, C=2, 1, 2)
        >>> plf(logits, [None]).tolist()  # softmax(3, 2) = 0.73 < 0.9, softmax(0, 5) = 0.993
        [[[255, 1]]]
    """

    def __init__(self, threshold: float = 0.0, ignore_index: int = 255) -> None:
        self.threshold = _check_threshold(threshold)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"ignore_index must be an integer; got {ignore_index!r}")
        self.ignore_index = ignore_index

    def __call__(self, logits: torch.Tensor, annotations) -> torch.Tensor:
        """Filters ``logits`` (B, C, *spatial) against ``annotations``; returns (B, *spatial) int64 pseudo-labels."""
        return filter_pseudo_labels(logits, annotations, self.threshold, self.ignore_index)
