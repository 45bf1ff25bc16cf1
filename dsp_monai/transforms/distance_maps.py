"""Distance-map targets of the point branch: per class, the distance from every pixel to that class's points.

The Euclidean and geodesic point-branch baselines (docs/methods.md) regress, for each class, the
distance map to the class's clicked points, usually normalised (``exp(-d / sigma)``) or truncated; classes without
points in an image are ignored by the loss. :class:`PointDistanceMapsd` builds those targets inside a MONAI
pipeline from ``points`` / ``point_classes`` or from the connected components of a label mask (simulated clicks),
with the exact operators of :mod:`dsp_monai.ops`.
"""

from collections.abc import Hashable, Mapping, Sequence
from typing import Optional, Tuple, Union

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from ..annotations.from_masks import component_medoids
from ..ops import euclidean_distance, geodesic_distance, normalise_distance

__all__ = [
    "PointDistanceMaps",
    "PointDistanceMapsD",
    "PointDistanceMapsDict",
    "PointDistanceMapsd",
    "points_from_mask",
]

METRICS = ("euclidean", "geodesic")


def _as_points(points, dims: int) -> torch.Tensor:
    points = torch.as_tensor(points, dtype=torch.float64, device="cpu")
    if points.numel() == 0:
        return points.reshape(0, dims)
    if points.dim() != 2 or points.shape[1] != dims:
        raise ValueError(
            f"points must have shape (N, {dims}): one row of {dims} pixel coordinates per point; "
            f"got shape {list(points.shape)}"
        )
    return points


def points_from_mask(
    mask: Union[torch.Tensor, np.ndarray],
    num_classes: int,
    classes: Optional[Sequence[int]] = None,
    spacing: Optional[Sequence[float]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One point per connected component of each class of a label mask, at the component's medoid.

    The project's one rule for points from masks (:func:`dsp_monai.annotations.from_masks.component_medoids`, the
    rule the simulated clicks of an experiment follow too): the pixel of the component with the smallest summed
    Euclidean distance (with ``spacing``) to its other pixels; it always lies inside the component. Components are
    8-connected in 2D and 26-connected in 3D.

    Args:
        mask: (*spatial) or (1, *spatial) integer labels, 2D or 3D.
        num_classes: labels are expected in [0, num_classes); other values are ignored.
        classes: the classes to place points for; None means all of 0 .. num_classes - 1.
        spacing: pixel size per spatial dim for the distances; None means 1.

    Returns:
        ``(points, point_classes)``: (N, dims) float32 pixel coordinates and (N,) int64 classes, ordered by class
        and then by the components' raster order.

    Raises:
        ValueError: if the mask is not 2D or 3D (after dropping a leading channel of 1).
    """
    labels = torch.as_tensor(mask).detach().cpu()
    if labels.dim() in (3, 4) and labels.shape[0] == 1:
        labels = labels[0]
    if labels.dim() not in (2, 3):
        raise ValueError(f"mask must have shape (*spatial) or (1, *spatial) with 2 or 3 spatial dims; got shape "
                         f"{list(torch.as_tensor(mask).shape)}")
    wanted = range(num_classes) if classes is None else classes
    points, point_classes = component_medoids(labels.numpy(), [int(c) for c in wanted], spacing=spacing)
    return torch.from_numpy(points).to(torch.float32), torch.from_numpy(point_classes)


class PointDistanceMaps(Transform):
    """Per-class distance maps to annotated points, normalised for regression.

    For each class c in [0, num_classes), the distance from every pixel to the nearest point of class c:
    Euclidean (exact, :func:`dsp_monai.ops.euclidean_distance`) or geodesic on the image intensities (exact by
    default, :func:`dsp_monai.ops.geodesic_distance`, step cost ``(1 - lamb) |p - q| + lamb |I(p) - I(q)|``, so
    scale the intensities first, e.g. with ScaleIntensity). The distance d then becomes, in this order,
    ``min(d, truncation)`` when ``truncation`` is set, and ``exp(-d / sigma)`` when ``sigma`` is set.

    A class without points has d = +inf everywhere, normalised like any distance: +inf without normalisation,
    ``truncation`` when truncated, 0 with ``sigma`` (``exp(-truncation / sigma)`` with both), or ``fill`` when
    given. The second output marks which classes have points, so that the loss can ignore the others.

    Args:
        num_classes: number of maps (classes) to produce.
        metric: ``"euclidean"`` or ``"geodesic"``.
        lamb: weight of the intensity term of the geodesic cost, in [0, 1].
        spacing: pixel size per spatial dim; None means 1.
        truncation: if set (> 0), distances are clipped to it.
        sigma: if set (> 0), the target is ``exp(-d / sigma)``: 1 at the points, towards 0 far away.
        fill: value of the maps of classes without points; None means the normalised +inf (see above).
        iterations: geodesic only: None for exact distances, or the number of raster-pass rounds of the
            approximation (see :func:`dsp_monai.ops.geodesic_distance`).

    Raises:
        ValueError: on an unknown metric, num_classes < 1, or truncation / sigma <= 0.

    Example:
        >>> import torch
        >>> maps, has_points = PointDistanceMaps(num_classes=2, sigma=4.0)(
        ...     torch.tensor([[3.0, 4.0]]), torch.tensor([1]), spatial_shape=(8, 8))
        >>> maps.shape, has_points.tolist(), float(maps[1, 3, 4])
        (torch.Size([2, 8, 8]), [False, True], 1.0)
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        num_classes: int,
        metric: str = "euclidean",
        lamb: float = 1.0,
        spacing: Optional[Sequence[float]] = None,
        truncation: Optional[float] = None,
        sigma: Optional[float] = None,
        fill: Optional[float] = None,
        iterations: Optional[int] = None,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}; got {metric!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        for name, value in (("truncation", truncation), ("sigma", sigma)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be None or > 0; got {value}")
        self.num_classes = num_classes
        self.metric = metric
        self.lamb = lamb
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.truncation = truncation
        self.sigma = sigma
        self.fill = fill
        self.iterations = iterations

    def normalise(self, dist: torch.Tensor) -> torch.Tensor:
        """Applies the truncation and the exponential, in this order, to distances."""
        return normalise_distance(dist, self.truncation, self.sigma)

    def __call__(
        self,
        points,
        point_classes,
        image: Optional[torch.Tensor] = None,
        spatial_shape: Optional[Sequence[int]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Distance maps of one image.

        Args:
            points: (N, dims) pixel coordinates (rounded to the nearest pixel), in the order of the spatial dims.
            point_classes: (N,) class of each point, in [0, num_classes).
            image: (C, *spatial) image; required for the geodesic metric, otherwise it only gives the shape and
                device (a MetaTensor image gives its affine to the maps).
            spatial_shape: the spatial shape when no image is given.

        Returns:
            ``(maps, has_points)``: (num_classes, *spatial) float32 targets on the image's device, and a
            (num_classes,) bool tensor, True for the classes with at least one point.

        Raises:
            ValueError: on missing image / shape, points of the wrong shape, outside the image, or of a class
                outside [0, num_classes).
        """
        if image is None:
            if self.metric == "geodesic":
                raise ValueError("geodesic distance maps need the image (its intensities); got image=None")
            if spatial_shape is None:
                raise ValueError("euclidean distance maps need the image or spatial_shape; got neither")
        elif not isinstance(image, torch.Tensor):
            image = torch.as_tensor(image)
        shape = tuple(int(s) for s in (image.shape[1:] if image is not None else spatial_shape))
        device = image.device if image is not None else torch.device("cpu")
        dims = len(shape)
        coords = _as_points(points, dims)
        classes = torch.as_tensor(point_classes, dtype=torch.int64, device="cpu").reshape(-1)
        if len(classes) != len(coords):
            raise ValueError(f"point_classes must hold one class per point ({len(coords)}); got {len(classes)}")
        if len(classes) and (classes.min() < 0 or classes.max() >= self.num_classes):
            raise ValueError(f"point_classes must be in [0, {self.num_classes}); got values from "
                             f"{int(classes.min())} to {int(classes.max())}")
        pixels = coords.round().long()
        outside = ((pixels < 0) | (pixels >= torch.tensor(shape))).any(1)
        if outside.any():
            raise ValueError(f"points must lie inside the image of spatial shape {list(shape)}; got "
                             f"{coords[outside].tolist()}")
        seeds = torch.zeros(1, self.num_classes, *shape, dtype=torch.bool)
        seeds[(torch.zeros_like(classes), classes, *pixels.unbind(1))] = True
        seeds = seeds.to(device)
        has_points = torch.zeros(self.num_classes, dtype=torch.bool)
        has_points[classes] = True
        if self.metric == "geodesic":
            intensities = torch.as_tensor(image).as_subclass(torch.Tensor)
            if not intensities.is_floating_point():
                intensities = intensities.float()
            dist = geodesic_distance(intensities[None], seeds, self.spacing, self.lamb, self.iterations)[0]
        else:
            dist = euclidean_distance(seeds, self.spacing)[0]
        maps = self.normalise(dist)
        if self.fill is not None:
            maps[~has_points.to(device)] = self.fill
        if isinstance(image, MetaTensor):
            maps = MetaTensor(maps, affine=image.affine)
        return maps, has_points


class PointDistanceMapsd(MapTransform):
    """Dictionary wrapper of :class:`PointDistanceMaps`: writes per-class distance-map targets and the mask of the
    classes that have points.

    The points come from ``data[keys]`` (one key: (N, dims) pixel coordinates) with their classes in
    ``data[classes_key]``; or, when ``mask_key`` is set, from the connected components of the label mask
    ``data[mask_key]`` (one point per component, at its medoid, see :func:`points_from_mask`), in
    which case the derived points and classes are also written to ``data[keys]`` and ``data[classes_key]``.

    Args:
        keys: the key of the points (a single key).
        num_classes: number of maps (classes).
        classes_key: key of the (N,) point classes.
        image_key: key of the (C, *spatial) image (intensities for the geodesic metric; shape and device).
        output_key: key of the (num_classes, *spatial) float32 targets.
        valid_key: key of the (num_classes,) bool mask of the classes with points (None: not written).
        mask_key: if set, derive the points from this label mask instead of reading them.
        mask_classes: with mask_key, the classes to place points for; None means all.
        metric, lamb, spacing, truncation, sigma, fill, iterations: see :class:`PointDistanceMaps`.
        allow_missing_keys: skip the transform when the points (or the mask) are missing.

    Example:
        >>> import torch
        >>> t = PointDistanceMapsd("points", num_classes=3, metric="geodesic", sigma=10.0)
        >>> out = t({"image": torch.rand(1, 32, 32), "points": torch.tensor([[4, 5], [20, 9]]),
        ...          "point_classes": torch.tensor([0, 2])})
        >>> out["point_distance"].shape, out["point_distance_valid"].tolist()
        (torch.Size([3, 32, 32]), [True, False, True])
    """

    backend = PointDistanceMaps.backend

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int,
        classes_key: str = "point_classes",
        image_key: str = "image",
        output_key: str = "point_distance",
        valid_key: Optional[str] = "point_distance_valid",
        mask_key: Optional[str] = None,
        mask_classes: Optional[Sequence[int]] = None,
        metric: str = "euclidean",
        lamb: float = 1.0,
        spacing: Optional[Sequence[float]] = None,
        truncation: Optional[float] = None,
        sigma: Optional[float] = None,
        fill: Optional[float] = None,
        iterations: Optional[int] = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"keys must name a single points key; got {list(self.keys)}")
        self.maps = PointDistanceMaps(num_classes, metric, lamb, spacing, truncation, sigma, fill, iterations)
        self.classes_key = classes_key
        self.image_key = image_key
        self.output_key = output_key
        self.valid_key = valid_key
        self.mask_key = mask_key
        self.mask_classes = mask_classes

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        points_key = self.keys[0]
        source = self.mask_key if self.mask_key is not None else points_key
        if source not in d:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"PointDistanceMapsd: key {source!r} is missing; the data holds {sorted(map(str, d))}")
        if self.mask_key is not None:
            d[points_key], d[self.classes_key] = points_from_mask(
                d[self.mask_key], self.maps.num_classes, self.mask_classes, self.maps.spacing
            )
        maps, has_points = self.maps(d[points_key], d[self.classes_key], image=d.get(self.image_key))
        d[self.output_key] = maps
        if self.valid_key is not None:
            d[self.valid_key] = has_points
        return d


PointDistanceMapsD = PointDistanceMapsDict = PointDistanceMapsd
