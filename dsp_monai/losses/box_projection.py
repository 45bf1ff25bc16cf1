"""Box supervision as in BoxInst (Tian et al., CVPR 2021; the box-projection baseline, docs/methods.md), for
semantic classes in 2D and 3D.

- :class:`BoxProjectionLoss`: for each (image, class) with boxes, the Dice loss between the max-projection of the
  predicted class probability onto each axis and the max-projection of the union of that class's boxes, summed over
  the axes and averaged over the (image, class) pairs.
- :class:`BoxPairwiseLoss`: ``-log P(i and j have the same class)``, ``P = sum_c p_c(i) p_c(j)``, over the 8 (2D) or
  26 (3D) neighbours ``j`` of a pixel ``i`` at a dilation, counted where ``i`` lies inside a box and the intensities
  are similar: ``exp(-similarity_scale * |I(i) - I(j)|) >= threshold`` (BoxInst: colour distance in LAB, scale 0.5,
  threshold 0.3; for grey images scaled to [0, 1], scale 50 is the same distance in L units).

Padding pixels take no part in either term.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from .online_pseudo_label import log_ignored_annotations

__all__ = ["BoxPairwiseLoss", "BoxProjectionLoss", "box_masks", "neighbour_offsets", "neighbour_weights"]


def box_masks(annotations) -> torch.Tensor:
    """(B, C, *spatial) bool: True inside the union of the boxes of class c of image b (valid pixels only)."""
    shape = (annotations.batch_size, annotations.num_classes, *annotations.spatial_shape)
    masks = torch.zeros(math.prod(shape), dtype=torch.bool, device=annotations.device)
    masks[annotations.box_pixel_index[annotations.box_pixel_valid]] = True
    return masks.view(shape)


def _check_number(owner, name, value, low, high=math.inf):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{owner}: {name} must be a number in [{low}, {high}]; got {value!r}")
    return float(value)


class BoxProjectionLoss:
    """The BoxInst projection term (module docstring); a constant 0 for a batch without boxes. Tags and points are
    not used (logged once).

    Args:
        eps: added to the Dice denominator.
        view: the view whose logits are scored (``"weak"``: the boxes' geometry).
    """

    outputs = ("logits",)

    def __init__(self, eps: float = 1e-5, view: str = "weak") -> None:
        self.eps = _check_number("BoxProjectionLoss", "eps", eps, 0.0)
        self.view, self.views = view, (view,)
        self._logged: set = set()

    def __call__(self, context) -> torch.Tensor:
        logits, annotations = context.logits(self.view), context.annotations
        log_ignored_annotations(self, annotations, ("boxes",), self._logged)
        masks = box_masks(annotations)
        groups = masks.flatten(2).any(dim=2)
        if not bool(groups.any()):
            return logits.new_zeros((), dtype=torch.float32)
        valid = annotations.valid.unsqueeze(1)
        probs = torch.softmax(logits.float(), dim=1) * valid
        target = masks.float()
        spatial = tuple(range(2, logits.dim()))
        loss = torch.zeros(groups.shape, dtype=torch.float32, device=logits.device)
        for axis in spatial:
            others = tuple(a for a in spatial if a != axis)
            p, m = probs.amax(dim=others), target.amax(dim=others)
            dice = 2 * (p * m).sum(-1) / ((p * p).sum(-1) + (m * m).sum(-1) + self.eps)
            loss = loss + (1 - dice)
        return loss[groups].mean()


def neighbour_offsets(spatial_dims: int, dilation: int) -> list:
    """The 3**d - 1 neighbour offsets (in array order) at ``dilation``."""
    steps = itertools.product((-1, 0, 1), repeat=spatial_dims)
    return [tuple(dilation * s for s in step) for step in steps if any(step)]


def _pair_slices(offset, spatial_shape):
    """Slices of pixel i and of its neighbour j = i + offset, both inside the image."""
    first, second = [], []
    for o, n in zip(offset, spatial_shape):
        first.append(slice(max(0, -o), n - max(0, o)))
        second.append(slice(max(0, o), n + min(0, o)))
    return (Ellipsis, *first), (Ellipsis, *second)


@torch.no_grad()
def neighbour_weights(image: torch.Tensor, inside: torch.Tensor, valid: torch.Tensor, dilation: int,
                      similarity_scale: float, threshold: float) -> torch.Tensor:
    """(K, B, *spatial) float 0 / 1: the weight of the pair (pixel i, its k-th neighbour) stored at i.

    1 where i lies inside a box (``inside``), both i and its neighbour are valid pixels of the image, and
    ``exp(-similarity_scale * |I(i) - I(j)|) >= threshold`` (the intensity distance is the Euclidean norm over
    channels); 0 otherwise. The neighbours are :func:`neighbour_offsets` in order.

    Args:
        image: (B, channels, *spatial) intensities.
        inside: (B, *spatial) bool.
        valid: (B, *spatial) bool.
    """
    offsets = neighbour_offsets(image.dim() - 2, dilation)
    weights = torch.zeros((len(offsets), *inside.shape), dtype=torch.float32, device=image.device)
    image = image.float()
    for k, offset in enumerate(offsets):
        at_i, at_j = _pair_slices(offset, inside.shape[1:])
        distance = (image[at_i] - image[at_j]).norm(dim=1)
        similar = torch.exp(-similarity_scale * distance) >= threshold
        weights[k][at_i] = (similar & inside[at_i] & valid[at_i] & valid[at_j]).float()
    return weights


class BoxPairwiseLoss:
    """The BoxInst pairwise term (module docstring): the mean of ``-log sum_c p_c(i) p_c(j)`` over the pairs of
    weight 1 (:func:`neighbour_weights`); a constant 0 when there is none. Tags and points are not used.

    Args:
        dilation: the neighbours' distance in pixels along each axis (BoxInst: 2).
        similarity_scale: ``s`` of the similarity ``exp(-s |I(i) - I(j)|)``.
        threshold: minimum similarity of a counted pair, in [0, 1].
        view: the view (its logits and image; ``"weak"``).
    """

    outputs = ("logits",)

    def __init__(self, dilation: int = 2, similarity_scale: float = 50.0, threshold: float = 0.3,
                 view: str = "weak") -> None:
        if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
            raise ValueError(f"BoxPairwiseLoss: dilation must be an integer >= 1; got {dilation!r}")
        self.dilation = dilation
        self.similarity_scale = _check_number("BoxPairwiseLoss", "similarity_scale", similarity_scale, 0.0)
        self.threshold = _check_number("BoxPairwiseLoss", "threshold", threshold, 0.0, 1.0)
        self.view, self.views = view, (view,)

    def __call__(self, context) -> torch.Tensor:
        logits, annotations = context.logits(self.view), context.annotations
        inside = box_masks(annotations).any(dim=1)
        if not bool(inside.any()):
            return logits.new_zeros((), dtype=torch.float32)
        weights = neighbour_weights(context.views[self.view], inside, annotations.valid, self.dilation,
                                    self.similarity_scale, self.threshold)
        count = weights.sum()
        if not bool(count > 0):
            return logits.new_zeros((), dtype=torch.float32)
        log_p = F.log_softmax(logits.float(), dim=1)
        total = log_p.new_zeros(())
        for k, offset in enumerate(neighbour_offsets(logits.dim() - 2, self.dilation)):
            at_i, at_j = _pair_slices(offset, logits.shape[2:])
            log_same = torch.logsumexp(log_p[at_i] + log_p[at_j], dim=1)
            total = total - (weights[k][at_i] * log_same).sum()
        return total / count
