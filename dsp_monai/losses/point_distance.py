"""The point-distance branch (the Euclidean and geodesic point baselines, docs/methods.md): an auxiliary head
regresses, per class, a normalised distance map to that class's points in the image.

The targets are computed inside the training step, on the training device, after augmentation, for every map of
the batch in one call of :func:`dsp_monai.ops.euclidean_distance` or :func:`dsp_monai.ops.geodesic_distance` (the
geodesic one on the augmented image's intensities). Maps of classes without points in an image, and padding
pixels, take no part in the loss.
"""

from __future__ import annotations

import math

import torch

from ..annotations import AnnotationBatch
from ..ops import euclidean_distance, geodesic_distance, normalise_distance

__all__ = ["PointDistanceLoss", "point_distance_targets"]

METRICS = ("euclidean", "geodesic")
REDUCTIONS = ("l1", "l2")


def point_seeds(annotations: AnnotationBatch) -> torch.Tensor:
    """(B, C, *spatial) bool: True at the points of class c of image b."""
    shape = (annotations.batch_size, annotations.num_classes, *annotations.spatial_shape)
    seeds = torch.zeros(math.prod(shape), dtype=torch.bool, device=annotations.device)
    seeds[annotations.point_index] = True
    return seeds.view(shape)


def point_distance_targets(
    annotations: AnnotationBatch,
    image: torch.Tensor | None = None,
    metric: str = "euclidean",
    sigma: float | None = None,
    truncation: float | None = None,
    lamb: float = 1.0,
    spacing=None,
) -> tuple:
    """Per-class distance-map targets of a batch and the maps that have points.

    Args:
        annotations: the batch's annotations (their points and classes).
        image: (B, channels, *spatial) intensities; needed for the geodesic metric.
        metric: ``"euclidean"`` (exact EDT) or ``"geodesic"`` (exact, step cost
            ``(1 - lamb) |p - q| + lamb |I(p) - I(q)|``).
        sigma, truncation: the normalisation of :func:`dsp_monai.ops.normalise_distance`.
        lamb: the geodesic intensity weight in [0, 1].
        spacing: pixel size per spatial dim; None means 1.

    Returns:
        ``(targets, has_points)``: (B, C, *spatial) float32 normalised distances (maps without points hold the
        normalised +inf) and (B, C) bool.

    Raises:
        ValueError: for an unknown metric or a geodesic metric without image.
    """
    if metric not in METRICS:
        raise ValueError(f"point_distance_targets: metric must be one of {METRICS}; got {metric!r}")
    seeds = point_seeds(annotations)
    has_points = seeds.flatten(2).any(2)
    unseeded = float(normalise_distance(torch.tensor(math.inf), truncation, sigma))
    targets = torch.full(seeds.shape, unseeded, dtype=torch.float32, device=seeds.device)
    images, classes = has_points.nonzero(as_tuple=True)
    if len(images):
        chosen = seeds[images, classes].unsqueeze(1)
        if metric == "geodesic":
            if image is None:
                raise ValueError("point_distance_targets: the geodesic metric needs the image intensities; got None")
            intensities = image.detach().float()
            dist = geodesic_distance(intensities[images], chosen, spacing, lamb)
        else:
            dist = euclidean_distance(chosen, spacing)
        targets[images, classes] = normalise_distance(dist[:, 0], truncation, sigma)
    return targets, has_points


class PointDistanceLoss:
    """Loss term (:mod:`dsp_monai.losses.terms`) of the point-distance branch: the mean L1 or L2 difference between
    an auxiliary head's prediction and the per-class distance-map targets of :func:`point_distance_targets`, over
    the (image, class) maps that have points and their valid pixels; a constant 0 for a batch without points.

    Args:
        metric: ``"euclidean"`` or ``"geodesic"`` (on the view's intensities).
        sigma: target ``exp(-d / sigma)`` when set (> 0).
        truncation: target ``min(d, truncation)`` (before the exponential) when set (> 0).
        reduction: ``"l1"`` (mean absolute difference) or ``"l2"`` (mean squared difference).
        lamb: geodesic intensity weight in [0, 1].
        spacing: pixel size per spatial dim; None means 1.
        output: the network output (auxiliary head) regressing the maps, (B, C, *spatial).
        view: the view whose points, intensities and prediction are used.

    Raises:
        ValueError: for an unknown metric or reduction, sigma / truncation not > 0, lamb outside [0, 1].
    """

    def __init__(self, metric: str = "euclidean", sigma: float | None = None, truncation: float | None = None,
                 reduction: str = "l1", lamb: float = 1.0, spacing=None, output: str = "point_distance",
                 view: str = "weak") -> None:
        if metric not in METRICS:
            raise ValueError(f"PointDistanceLoss: metric must be one of {METRICS}; got {metric!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"PointDistanceLoss: reduction must be one of {REDUCTIONS}; got {reduction!r}")
        for name, value in (("sigma", sigma), ("truncation", truncation)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"PointDistanceLoss: {name} must be null or a finite number > 0; got {value!r}")
        if not 0.0 <= lamb <= 1.0:
            raise ValueError(f"PointDistanceLoss: lamb must be in [0, 1]; got {lamb!r}")
        self.metric, self.sigma, self.truncation, self.reduction = metric, sigma, truncation, reduction
        self.lamb, self.spacing, self.view = float(lamb), spacing, view
        self.outputs = (output,)
        self.views = (view,)

    def __call__(self, context) -> torch.Tensor:
        prediction = context.outputs[self.view][self.outputs[0]]
        annotations = context.annotations
        if prediction.shape[:2] != (annotations.batch_size, annotations.num_classes):
            raise ValueError(
                f"PointDistanceLoss: the output '{self.outputs[0]}' must have shape (B, C, *spatial) = "
                f"{[annotations.batch_size, annotations.num_classes, *annotations.spatial_shape]}; got "
                f"{list(prediction.shape)}"
            )
        targets, has_points = point_distance_targets(
            annotations, context.views[self.view], self.metric, self.sigma, self.truncation, self.lamb, self.spacing
        )
        mask = has_points.reshape(*has_points.shape, *([1] * len(annotations.spatial_shape)))
        mask = mask & annotations.valid.unsqueeze(1)
        if not bool(mask.any()):
            return prediction.new_zeros((), dtype=torch.float32)
        difference = prediction.float() - targets
        per_pixel = difference.abs() if self.reduction == "l1" else difference.square()
        return per_pixel[mask].mean()
