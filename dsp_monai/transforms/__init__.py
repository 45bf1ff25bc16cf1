"""MONAI dictionary transforms of dsp_monai.

- :class:`PointDistanceMapsd` (and its array form :class:`PointDistanceMaps`, helper :func:`points_from_mask`):
  per-class distance-map targets of the point branch, Euclidean or geodesic.
"""

from .distance_maps import (
    PointDistanceMaps,
    PointDistanceMapsD,
    PointDistanceMapsd,
    PointDistanceMapsDict,
    points_from_mask,
)

__all__ = [
    "PointDistanceMaps",
    "PointDistanceMapsD",
    "PointDistanceMapsDict",
    "PointDistanceMapsd",
    "points_from_mask",
]
