"""Cross-entropy loss terms (:mod:`dsp_monai.losses.terms`): on the pixel masks (optionally with a Dice loss, the
class balancing of nnU-Net), and on filtered pseudo-labels (PLF, docs/method.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pseudo_labels import _check_threshold, filter_pseudo_labels

__all__ = ["SUPERVISED_LOSSES", "MaskCrossEntropy", "PseudoLabelCrossEntropy"]

SUPERVISED_LOSSES = ("ce", "ce_dice")
"""The losses of the masks' term (:class:`MaskCrossEntropy`; the bundle's ``supervised_loss``): cross-entropy, or
cross-entropy + soft Dice."""


def _check_ignore_index(owner: str, ignore_index) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"{owner}: ignore_index must be an integer; got {ignore_index!r}")
    return ignore_index


class MaskCrossEntropy:
    """The supervised term of every method: cross-entropy of a view's logits against the pixel labels (pixels with
    ``ignore_index`` left out), optionally plus a soft Dice loss; a constant 0 for a batch without labelled pixels.

    With ``loss="ce_dice"`` the term is ``CE + Dice`` with equal weights, the class balancing of nnU-Net: the Dice
    part is ``1 - mean_c (2 sum p_c y_c + s) / (sum p_c + sum y_c + s)`` over the classes ``c`` (every class of the
    datalist, class 0 included: all are scored, none is a background to leave out), with ``p`` the softmax of the
    logits, ``y`` the one-hot labels and the sums over the labelled pixels of the whole batch (nnU-Net's "batch
    Dice" of its 2D configuration), computed by MONAI's :class:`~monai.losses.DiceLoss`, whose ``ignore_index``
    zeroes both ``p`` and ``y`` at the unlabelled pixels. Each class then weighs as much as any other, whatever its
    pixel count. The parts are logged as ``<name>_ce`` and ``<name>_dice``.

    Args:
        ignore_index: the label value of unlabelled pixels.
        view: the view whose logits are scored (its geometry must be the labels': ``"weak"``).
        loss: one of :data:`SUPERVISED_LOSSES`: ``"ce"`` (default) or ``"ce_dice"``.
        dice_smooth: the Dice's smoothing ``s`` (numerator and denominator; nnU-Net's 1e-5).

    Raises:
        ValueError: for an unknown ``loss``, a non-integer ``ignore_index`` or a negative ``dice_smooth``.

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # (B=1, C=2, 1, 2)
        >>> context = SimpleNamespace(logits=lambda view: logits, labels=torch.tensor([[[0, 255]]]))
        >>> round(float(MaskCrossEntropy()(context)), 4)  # -log softmax(2, 0)[0], the second pixel ignored
        0.1269
        >>> parts = MaskCrossEntropy(loss="ce_dice", dice_smooth=0.0)(context)
        >>> # 1 - mean(Dice of class 0: 2p / (p + 1), of class 1: 0 / (1 - p)), p = softmax(2, 0)[0]; pixel 2 ignored
        >>> round(float(parts["dice"]), 4)
        0.5317
    """

    outputs = ("logits",)

    def __init__(self, ignore_index: int = 255, view: str = "weak", loss: str = "ce",
                 dice_smooth: float = 1e-5) -> None:
        self.ignore_index = _check_ignore_index("MaskCrossEntropy", ignore_index)
        if loss not in SUPERVISED_LOSSES:
            raise ValueError(f"MaskCrossEntropy: loss (the bundle's supervised_loss) must be one of "
                             f"{list(SUPERVISED_LOSSES)}; got {loss!r}")
        if not float(dice_smooth) >= 0.0:
            raise ValueError(f"MaskCrossEntropy: dice_smooth must be >= 0; got {dice_smooth!r}")
        self.view, self.loss = view, loss
        self.views = (view,)
        self.dice = None
        if loss == "ce_dice":
            # MONAI is imported here, not at the top: dsp_monai.losses must import without it (the GPU check runs
            # the loss where MONAI is not installed).
            from monai.losses import DiceLoss

            self.dice = DiceLoss(include_background=True, to_onehot_y=True, softmax=True, batch=True,
                                 smooth_nr=float(dice_smooth), smooth_dr=float(dice_smooth),
                                 ignore_index=self.ignore_index)

    def __call__(self, context):
        logits, labels = context.logits(self.view), context.labels
        if not bool((labels != self.ignore_index).any()):
            return logits.new_zeros((), dtype=torch.float32)
        logits = logits.float()
        cross_entropy = F.cross_entropy(logits, labels, ignore_index=self.ignore_index)
        if self.dice is None:
            return cross_entropy
        dice = self.dice(logits, labels.unsqueeze(1))
        return {"total": cross_entropy + dice, "ce": cross_entropy, "dice": dice}


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
