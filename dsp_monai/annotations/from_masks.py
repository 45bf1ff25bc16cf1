"""The one rule for points derived from masks: one point per connected component, at its medoid.

The medoid is the pixel of the component with the smallest summed Euclidean distance to the component's other
pixels (docs/method.md §9). Unlike the centroid it always lies inside the
component. Every part of the project that places points on a mask (the weak labels of an experiment, the targets of
the point-distance branches) calls :func:`component_medoids`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .vocabulary import IGNORE_VALUE

__all__ = ["component_medoids", "connectivity_structure", "medoid_index"]


def _pairwise_costs(coords: np.ndarray) -> np.ndarray:
    """Summed Euclidean distance from every row of ``coords`` to all rows (brute force, ``O(n^2)`` memory)."""
    diff = coords[:, None, :] - coords[None, :, :]
    return np.sqrt((diff * diff).sum(-1)).sum(1)


def medoid_index(
    coords: np.ndarray | Sequence[Sequence[float]],
    spacing: Sequence[float] | None = None,
    rtol: float = 1e-9,
    brute_force_below: int = 64,
) -> int:
    """Index of the medoid of a point set: the point with the smallest summed Euclidean distance to all others.

    The result is exact. Costs within a relative ``rtol`` of the minimum (floating-point ties, e.g. in symmetric
    components) count as equal, and the lowest index among them is returned, so the answer does not depend on the
    search path.

    Algorithm: the summed distance ``f(p) = sum_q ||p - q||`` is convex on R^d, so the tangent plane at any
    evaluated point ``r``, ``f(r) + g(r) . (p - r)`` with the subgradient ``g(r) = sum_{q != r} (r - q) / ||r - q||``,
    is a lower bound of ``f`` everywhere. Starting at the point nearest the centroid, the point with the smallest
    lower bound is evaluated next (Kelley's cutting planes over the finite set) until no unevaluated point's bound
    is within ``rtol`` of the best cost. Each evaluation costs ``O(n d)``; in 2D and 3D a few tens of evaluations
    suffice in practice (a 128 x 128 component takes milliseconds), and the worst case is the brute force
    ``O(n^2)``. Sets smaller than ``brute_force_below`` are solved by the brute force directly.

    Args:
        coords: ``(n, d)`` point coordinates, ``n >= 1``.
        spacing: optional per-axis scale (``d`` values, e.g. anisotropic voxel sizes) applied before measuring
            distances. ``None`` means unit spacing.
        rtol: relative tolerance under which two costs count as tied.
        brute_force_below: sets with fewer points are solved by computing all pairwise distances.

    Returns:
        The index (into ``coords``) of the medoid.

    Raises:
        ValueError: if ``coords`` is not a non-empty 2-D array, or ``spacing`` does not have ``d`` positive values.

    Example:
        >>> medoid_index([[0, 0], [0, 1], [0, 2], [5, 5]])
        1
    """
    points = np.asarray(coords, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"medoid_index expects a non-empty (n, d) coordinate array, got shape {points.shape}.")
    if spacing is not None:
        scale = np.asarray(spacing, dtype=np.float64)
        if scale.shape != (points.shape[1],) or not np.all(scale > 0):
            raise ValueError(
                f"spacing must hold {points.shape[1]} positive values (one per axis), got {tuple(np.ravel(scale))}."
            )
        points = points * scale
    count = points.shape[0]
    if count < max(brute_force_below, 3):
        costs = _pairwise_costs(points)
        return int(np.flatnonzero(costs <= costs.min() * (1.0 + rtol))[0])

    lower = np.full(count, -np.inf)
    costs = np.full(count, np.inf)
    evaluated = np.zeros(count, dtype=bool)
    best = np.inf
    current = int(np.argmin(((points - points.mean(0)) ** 2).sum(1)))
    while True:
        offsets = points - points[current]
        distances = np.sqrt((offsets * offsets).sum(1))
        cost = distances.sum()
        distances[current] = 1.0
        gradient = -(offsets / distances[:, None]).sum(0)
        np.maximum(lower, cost + offsets @ gradient, out=lower)
        costs[current] = cost
        evaluated[current] = True
        best = min(best, cost)
        bound = np.where(evaluated, np.inf, lower)
        current = int(np.argmin(bound))
        if bound[current] > best * (1.0 + rtol):
            break
    return int(np.flatnonzero(costs <= best * (1.0 + rtol))[0])


def connectivity_structure(ndim: int, connectivity: int | None = None) -> np.ndarray:
    """The neighbourhood of connected components: ``scipy.ndimage.generate_binary_structure(ndim, connectivity)``.

    Args:
        ndim: spatial dimensionality.
        connectivity: 1 = faces only (4-connectivity in 2D, 6 in 3D) up to ``ndim`` = faces, edges and corners
            (8 / 26); None means ``ndim`` (the default of ``skimage.measure.label``).

    Raises:
        ValueError: for a connectivity outside ``1..ndim``.
    """
    connectivity = ndim if connectivity is None else connectivity
    if isinstance(connectivity, bool) or int(connectivity) != connectivity or not 1 <= connectivity <= ndim:
        raise ValueError(
            f"connectivity must be in 1..{ndim} for a {ndim}D label (1 = faces only, {ndim} = full), "
            f"got {connectivity!r}."
        )
    return ndimage.generate_binary_structure(ndim, int(connectivity))


def component_medoids(
    mask: np.ndarray,
    classes: Sequence[int] | None = None,
    connectivity: int | None = None,
    spacing: Sequence[float] | None = None,
    ignore_value: int = IGNORE_VALUE,
) -> tuple[np.ndarray, np.ndarray]:
    """One point per connected component of each class of an integer mask, at the component's medoid.

    Args:
        mask: ``(*spatial)`` integer class ids (any number of spatial axes); ``ignore_value`` marks unknown pixels,
            which belong to no component.
        classes: the classes to place points for, in the order given; None means every class present, ascending.
        connectivity: see :func:`connectivity_structure`.
        spacing: per-axis pixel size used when measuring distances (None: isotropic).
        ignore_value: the label value of unknown pixels.

    Returns:
        ``(points, point_classes)``: ``(M, ndim)`` int64 pixel coordinates in array order and ``(M,)`` int64
        classes, ordered by class and then by the raster order of each component's first pixel.

    Example:
        >>> mask = np.zeros((5, 5), dtype=np.int64)
        >>> mask[1:4, 0:3] = 1
        >>> component_medoids(mask, classes=[1])
        (array([[2, 1]]), array([1]))
    """
    mask = np.asarray(mask)
    ndim = mask.ndim
    structure = connectivity_structure(ndim, connectivity)
    if classes is None:
        classes = [int(c) for c in np.unique(mask[mask != ignore_value])]
    points, point_classes = [], []
    for cls in classes:
        if int(cls) == ignore_value:
            continue
        components, _ = ndimage.label(mask == int(cls), structure=structure)
        for index, region in enumerate(ndimage.find_objects(components), start=1):
            starts = np.array([s.start for s in region], dtype=np.int64)
            coords = np.argwhere(components[region] == index)
            points.append(coords[medoid_index(coords, spacing)] + starts)
            point_classes.append(int(cls))
    return (
        np.asarray(points, dtype=np.int64).reshape(-1, ndim),
        np.asarray(point_classes, dtype=np.int64),
    )
