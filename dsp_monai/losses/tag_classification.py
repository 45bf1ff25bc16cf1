"""The classification branch's loss (Mlynarski et al. 2019; docs/methods.md): per-class sigmoid + binary cross-entropy
of image-level tag logits against each image's tags."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .online_pseudo_label import log_ignored_annotations

__all__ = ["TagBinaryCrossEntropy", "tag_targets"]


def tag_targets(labels: torch.Tensor, annotations, num_classes: int, ignore_index: int = 255) -> tuple:
    """The image-level targets of a batch: ``(targets, known)``.

    An image's tags are the classes of its labelled pixels (docs/method.md: tags derived from a mask) together with the
    tags it carries; an image with neither has no target.

    Args:
        labels: (B, *spatial) int64 pixel labels (``ignore_index`` where unlabelled).
        annotations: the batch's :class:`~dsp_monai.annotations.AnnotationBatch` (its ``tag_images`` /
            ``tag_classes``).
        num_classes: C.
        ignore_index: the value of unlabelled pixels.

    Returns:
        (B, C) float32 targets (1 for a present class, 0 otherwise) and (B,) bool, True for images with a target.
    """
    batch = labels.shape[0]
    flat = labels.reshape(batch, -1)
    labelled = flat != ignore_index
    present = torch.zeros(batch * num_classes, dtype=torch.bool, device=labels.device)
    image = torch.arange(batch, device=labels.device).unsqueeze(1).expand_as(flat)
    present[(image * num_classes + flat.clamp(0, num_classes - 1))[labelled]] = True
    tag_images = annotations.tag_images.to(labels.device)
    present[tag_images * num_classes + annotations.tag_classes.to(labels.device)] = True
    known = labelled.any(dim=1)
    known[tag_images] = True
    return present.view(batch, num_classes).float(), known


class TagBinaryCrossEntropy:
    """Binary cross-entropy of the network's ``tag_logits`` (B, C) against :func:`tag_targets`, averaged over the
    images with a target and the classes; a constant 0 for a batch without one. Boxes and points are not used
    (logged once).

    Args:
        ignore_index: the label value of unlabelled pixels.
        view: the view whose tag logits are scored (``"weak"``).
    """

    outputs = ("tag_logits",)

    def __init__(self, ignore_index: int = 255, view: str = "weak") -> None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"TagBinaryCrossEntropy: ignore_index must be an integer; got {ignore_index!r}")
        self.ignore_index, self.view, self.views = ignore_index, view, (view,)
        self._logged: set = set()

    def __call__(self, context) -> torch.Tensor:
        logits = context.outputs[self.view]["tag_logits"]
        log_ignored_annotations(self, context.annotations, ("tags",), self._logged)
        targets, known = tag_targets(context.labels, context.annotations, logits.shape[1], self.ignore_index)
        if not bool(known.any()):
            return logits.new_zeros((), dtype=torch.float32)
        return F.binary_cross_entropy_with_logits(logits[known].float(), targets[known])
