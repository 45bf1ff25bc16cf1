"""Online pseudo-labels on the images without masks: the pseudo-label baseline (Lee 2013) and FixMatch (Sohn et al.
2020), with or without pseudo-label filtering by the weak annotations (docs/methods.md).

Each step, the (detached) prediction of the current network on the ``source`` view of every image without a labelled
pixel gives a pseudo-label per pixel (its argmax), and the ``target`` view is trained on it with cross-entropy:

- ``pseudo_label``: source = target = the weak view (no strong view);
- ``pseudo_label_plf``: the same, the argmax taken over each pixel's possible classes only
  (:func:`~dsp_monai.losses.filter_pseudo_labels`, docs/method.md);
- ``fixmatch``: source = the weak view, target = the strong view, no filtering.

Images with masks are left to the mask cross-entropy. Padding is never pseudo-labelled.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn.functional as F

from .pseudo_labels import _check_threshold, filter_pseudo_labels

__all__ = ["OnlinePseudoLabelCrossEntropy", "log_ignored_annotations", "unfiltered_pseudo_labels"]

logger = logging.getLogger(__name__)


def log_ignored_annotations(owner, annotations, usable, seen: set) -> None:
    """Logs once per ``seen`` set (one per term) each weak annotation type of the batch that ``owner`` cannot use.

    Args:
        owner: the term (its class name is logged).
        annotations: the batch's :class:`~dsp_monai.annotations.AnnotationBatch`.
        usable: the weak types the term learns from, among ``"tags"``, ``"boxes"``, ``"points"``.
        seen: the types already logged; updated.
    """
    present = {"tags": annotations.tag_classes.numel(), "boxes": annotations.box_classes.numel(),
               "points": annotations.point_classes.numel()}
    for kind, count in present.items():
        if count and kind not in usable and kind not in seen:
            seen.add(kind)
            logger.info("%s does not learn from %s: it ignores them", type(owner).__name__, kind)


@torch.no_grad()
def unfiltered_pseudo_labels(logits: torch.Tensor, annotations, threshold: float = 0.0,
                             ignore_index: int = 255) -> torch.Tensor:
    """The argmax over every class at every valid pixel (``ignore_index`` at padding and, with ``threshold`` > 0,
    where the largest softmax probability is below it); the annotations' labels and weak types are not used.

    Built as :func:`~dsp_monai.losses.filter_pseudo_labels` of the same batch with every class possible at every valid
    pixel and no label, so the threshold has one definition.
    """
    full = (1 << annotations.num_classes) - 1
    open_batch = dataclasses.replace(
        annotations,
        allowed=torch.where(annotations.valid, torch.full_like(annotations.allowed, full),
                            torch.zeros_like(annotations.allowed)),
        label=torch.full_like(annotations.label, ignore_index),
    )
    return filter_pseudo_labels(logits, open_batch, threshold, ignore_index)


class OnlinePseudoLabelCrossEntropy:
    """Cross-entropy of the ``target`` view of the images without masks against the argmax of the network's own
    detached prediction on their ``source`` view; a constant 0 when the batch has no such pixel.

    Args:
        filtered: restrict the argmax to each pixel's possible classes (PLF); False ignores tags, boxes and points
            (logged once).
        threshold: minimum confidence in [0, 1] (largest softmax probability, over the possible classes when
            filtered); 0 keeps every pixel.
        ignore_index: the label value of unlabelled pixels.
        source: the view the pseudo-labels come from (``"weak"``).
        target: the view trained on them (``"weak"``: the pseudo-label baseline; ``"strong"``: FixMatch).

    Raises:
        ValueError: for a threshold outside [0, 1], a non-integer ignore_index or an unknown view.
    """

    outputs = ("logits",)

    def __init__(self, filtered: bool = False, threshold: float = 0.0, ignore_index: int = 255,
                 source: str = "weak", target: str = "weak") -> None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"OnlinePseudoLabelCrossEntropy: ignore_index must be an integer; got {ignore_index!r}")
        for name, view in (("source", source), ("target", target)):
            if view not in ("weak", "strong"):
                raise ValueError(f"OnlinePseudoLabelCrossEntropy: {name} must be 'weak' or 'strong'; got {view!r}")
        self.filtered, self.threshold = bool(filtered), _check_threshold(threshold)
        self.ignore_index, self.source, self.target = ignore_index, source, target
        self.views = (source,) if source == target else (source, target)
        self._logged: set = set()

    def pseudo_labels(self, logits: torch.Tensor, labels: torch.Tensor, annotations) -> torch.Tensor:
        """(B, *spatial) pseudo-labels of source logits (B, C, *spatial); ``ignore_index`` on every image holding a
        labelled pixel."""
        if self.filtered:
            pseudo = filter_pseudo_labels(logits, annotations, self.threshold, self.ignore_index)
        else:
            log_ignored_annotations(self, annotations, (), self._logged)
            pseudo = unfiltered_pseudo_labels(logits, annotations, self.threshold, self.ignore_index)
        masked = (labels != self.ignore_index).flatten(1).any(dim=1)
        return pseudo.masked_fill(masked.view(-1, *([1] * (pseudo.dim() - 1))), self.ignore_index)

    def __call__(self, context) -> torch.Tensor:
        source = context.logits(self.source).detach()
        pseudo = self.pseudo_labels(source, context.labels, context.annotations)
        target = context.logits(self.target)
        if not bool((pseudo != self.ignore_index).any()):
            return target.new_zeros((), dtype=torch.float32)
        return F.cross_entropy(target.float(), pseudo, ignore_index=self.ignore_index)
