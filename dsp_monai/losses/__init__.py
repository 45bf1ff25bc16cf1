"""Losses of dsp_monai: the DSP loss, pseudo-label filtering and the loss terms that make up a training method
(docs/method.md, docs/methods.md).

- :func:`dsp_loss` / :class:`DSPLoss`: the decoupled prototype loss of every annotation type (supplement S.3-S.8),
  built on the fused operator :func:`dsp_monai.ops.prototype_logsumexp`; optionally reduced over a process group.
- :func:`filter_pseudo_labels` / :class:`PseudoLabelFilter`: weak-view pseudo-labels restricted to the classes the
  annotations allow.
- :mod:`~dsp_monai.losses.terms`: a method as named loss terms (:class:`LossTerm`, :class:`BatchContext`,
  :class:`LinearWarmup`); the terms: :class:`MaskCrossEntropy`, :class:`PseudoLabelCrossEntropy`,
  :class:`DSPTerm`, :class:`PointDistanceLoss`.

Losses never read files: they take tensors and annotation records (or a collated
:class:`~dsp_monai.annotations.AnnotationBatch`).
"""

from .box_projection import BoxPairwiseLoss, BoxProjectionLoss, box_masks, neighbour_weights
from .con2r import Con2RLoss, con2r_graph_loss, con2r_target_graph
from .cross_entropy import SUPERVISED_LOSSES, MaskCrossEntropy, PseudoLabelCrossEntropy
from .dsp import (
    DSPLoss,
    DSPTerm,
    dsp_loss,
    dsp_loss_from_scores,
    positive_sums,
    prepare_annotations,
    prototype_scores,
)
from .point_distance import PointDistanceLoss, point_distance_targets
from .online_pseudo_label import OnlinePseudoLabelCrossEntropy
from .pseudo_labels import PseudoLabelFilter, filter_pseudo_labels
from .tag_classification import TagBinaryCrossEntropy, tag_targets
from .terms import (
    VIEWS,
    BatchContext,
    LinearWarmup,
    LossTerm,
    build_loss_terms,
    loss_weights,
    required_outputs,
    required_views,
)

__all__ = [
    "SUPERVISED_LOSSES",
    "VIEWS",
    "BatchContext",
    "BoxPairwiseLoss",
    "BoxProjectionLoss",
    "Con2RLoss",
    "DSPLoss",
    "DSPTerm",
    "LinearWarmup",
    "LossTerm",
    "MaskCrossEntropy",
    "OnlinePseudoLabelCrossEntropy",
    "PointDistanceLoss",
    "PseudoLabelCrossEntropy",
    "PseudoLabelFilter",
    "TagBinaryCrossEntropy",
    "box_masks",
    "build_loss_terms",
    "con2r_graph_loss",
    "con2r_target_graph",
    "dsp_loss",
    "dsp_loss_from_scores",
    "filter_pseudo_labels",
    "loss_weights",
    "neighbour_weights",
    "point_distance_targets",
    "positive_sums",
    "prepare_annotations",
    "prototype_scores",
    "required_outputs",
    "required_views",
    "tag_targets",
]
