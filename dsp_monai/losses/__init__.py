"""Losses of dsp_monai: the DSP loss and pseudo-label filtering (method.md §4-5).

- :func:`dsp_loss` / :class:`DSPLoss`: the decoupled prototype loss of every annotation type (supplement S.3-S.8),
  built on the fused operator :func:`dsp_monai.ops.prototype_logsumexp`; optionally reduced over a process group.
- :func:`filter_pseudo_labels` / :class:`PseudoLabelFilter`: weak-view pseudo-labels restricted to the classes the
  annotations allow.

Losses never read files: they take tensors and annotation records (or a collated
:class:`~dsp_monai.annotations.AnnotationBatch`).
"""

from .dsp import DSPLoss, dsp_loss, positive_sums, prepare_annotations
from .pseudo_labels import PseudoLabelFilter, filter_pseudo_labels

__all__ = [
    "DSPLoss",
    "PseudoLabelFilter",
    "dsp_loss",
    "filter_pseudo_labels",
    "positive_sums",
    "prepare_annotations",
]
