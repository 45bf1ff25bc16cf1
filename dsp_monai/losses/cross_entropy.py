"""Cross-entropy loss terms (:mod:`dsp_monai.losses.terms`): on the pixel masks, and on filtered pseudo-labels (PLF,
docs/method.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pseudo_labels import _check_threshold, filter_pseudo_labels

__all__ = ["MaskCrossEntropy", "PseudoLabelCrossEntropy"]


def _check_ignore_index(owner: str, ignore_index) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"{owner}: ignore_index must be an integer; got {ignore_index!r}")
    return ignore_index


class MaskCrossEntropy:
    """Cross-entropy of a view's logits against the pixel labels (pixels with ``ignore_index`` left out); a
    constant 0 for a batch without labelled pixels.

    Args:
        ignore_index: the label value of unlabelled pixels.
        view: the view whose logits are scored (its geometry must be the labels': ``"weak"``).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # (B=1, C=2, 1, 2)
        >>> context = SimpleNamespace(logits=lambda view: logits, labels=torch.tensor([[[0, 255]]]))
        >>> round(float(MaskCrossEntropy()(context)), 4)  # -log softmax(2, 0)[0], the second pixel ignored
        0.1269
    """

    outputs = ("logits",)

    def __init__(self, ignore_index: int = 255, view: str = "weak") -> None:
        self.ignore_index = _check_ignore_index("MaskCrossEntropy", ignore_index)
        self.view = view
        self.views = (view,)

    def __call__(self, context) -> torch.Tensor:
        logits, labels = context.logits(self.view), context.labels
        if not bool((labels != self.ignore_index).any()):
            return logits.new_zeros((), dtype=torch.float32)
        return F.cross_entropy(logits.float(), labels, ignore_index=self.ignore_index)


class PseudoLabelCrossEntropy:
    """Pseudo-label filtering (PLF): cross-entropy of the ``target`` view's logits against the argmax of the
    ``source`` view's prediction restricted to the classes the annotations allow
    (:func:`~dsp_monai.losses.filter_pseudo_labels`); a constant 0 when no pixel keeps a pseudo-label.

    The source prediction is the network's own (detached) or, with a ``teacher``, the teacher's on the source
    view's images (no gradient).

    Args:
        teacher: None (the student's own prediction) or a module mapping images to logits (an EMA teacher,
            :class:`dsp_monai.networks.EMATeacher`).
        threshold: minimum confidence of a pseudo-label in [0, 1] (0 keeps all).
        ignore_index: the label value of unlabelled pixels.
        source: the view the pseudo-labels come from (``"weak"``).
        target: the view trained on them (``"strong"``; its geometry must be the source's).
    """

    outputs = ("logits",)

    def __init__(self, teacher: torch.nn.Module | None = None, threshold: float = 0.0, ignore_index: int = 255,
                 source: str = "weak", target: str = "strong") -> None:
        if teacher is not None and not callable(teacher):
            raise TypeError(f"PseudoLabelCrossEntropy: teacher must be None or a module; got {type(teacher).__name__}")
        self.teacher, self.threshold = teacher, _check_threshold(threshold)
        self.ignore_index = _check_ignore_index("PseudoLabelCrossEntropy", ignore_index)
        self.source, self.target = source, target
        self.views = (source, target)

    def __call__(self, context) -> torch.Tensor:
        if self.teacher is not None:
            with torch.no_grad():
                source_logits = self.teacher(context.views[self.source])
        else:
            source_logits = context.logits(self.source).detach()
        pseudo = filter_pseudo_labels(source_logits, context.annotations, self.threshold, self.ignore_index)
        target_logits = context.logits(self.target)
        if not bool((pseudo != self.ignore_index).any()):
            return target_logits.new_zeros((), dtype=torch.float32)
        return F.cross_entropy(target_logits.float(), pseudo, ignore_index=self.ignore_index)
