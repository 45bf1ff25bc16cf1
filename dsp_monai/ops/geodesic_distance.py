"""Distance maps from seed points: exact geodesic distances on the image grid and exact Euclidean distances.

``geodesic_distance`` computes, for every seed map of every image, the length of the shortest path from each pixel
to the map's seeds on the 8-connected (2D) or 26-connected (3D) grid, where a step between neighbours p and q costs

    (1 - lamb) * |p - q|_spacing + lamb * |I(p) - I(q)|

(|I(p) - I(q)| is the Euclidean norm over the image channels; docs/ops.md §2). lamb = 1 gives the discrete
geodesic distance of DeepIGeoS (Wang et al. 2019), lamb = 0 the chamfer distance. By default the result is exact:
it equals Dijkstra's shortest paths on that graph, computed in float32. ``euclidean_distance`` is the exact
Euclidean distance transform (Felzenszwalb & Huttenlocher 2012), which the 8-connected chamfer distance
over-estimates by up to 8% (13% in 3D).

Both compute all the maps of a batch in one call (CPU: in parallel over maps and, for few large maps, over slabs
of a map, with results independent of the number of threads; CUDA: all maps in one launch), and neither is
differentiable: their outputs never require grad. A map without any seed is +inf everywhere.
"""

import itertools
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from . import _library  # noqa: F401  (registers torch.ops.dsp_monai.*)

__all__ = [
    "euclidean_distance",
    "euclidean_distance_reference",
    "geodesic_distance",
    "geodesic_distance_reference",
    "normalise_distance",
]

_GEODESIC = "geodesic_distance: "
_EUCLIDEAN = "euclidean_distance: "
_IMAGE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _shape(sizes: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in sizes) + "]"


def _values(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _check_seeds(op: str, seeds: torch.Tensor) -> None:
    if seeds.dim() not in (4, 5):
        raise RuntimeError(
            f"{op}seeds must have shape (B, S, H, W) or (B, S, D, H, W); got shape {_shape(seeds.shape)}"
        )
    if seeds.dtype != torch.bool:
        raise RuntimeError(
            f"{op}seeds must be a bool mask (True at the seed points); got dtype {seeds.dtype} (convert with seeds > 0)"
        )


def _check_spacing(op: str, seeds: torch.Tensor, spacing: Optional[Sequence[float]]) -> None:
    if spacing is None:
        return
    dims = seeds.dim() - 2
    if len(spacing) != dims:
        raise RuntimeError(f"{op}spacing must hold one value per spatial dim ({dims}); got {_values(spacing)}")
    if not all(math.isfinite(v) and v > 0 for v in spacing):
        raise RuntimeError(f"{op}spacing must hold finite values > 0; got {_values(spacing)}")


def _check_geodesic(image, seeds, spacing, lamb, iterations) -> None:
    """The checks of the C++ kernels (csrc/ops/geodesic_distance.cpp), with the same messages, for fake tensors."""
    if image.dim() not in (4, 5):
        raise RuntimeError(
            f"{_GEODESIC}image must have shape (B, C, H, W) or (B, C, D, H, W); got shape {_shape(image.shape)}"
        )
    if image.dtype not in _IMAGE_DTYPES:
        raise RuntimeError(
            f"{_GEODESIC}image must be torch.float32, torch.float64, torch.float16 or torch.bfloat16; got {image.dtype}"
        )
    if image.shape[1] < 1:
        raise RuntimeError(
            f"{_GEODESIC}image must have at least one channel (dim 1); got shape {_shape(image.shape)}"
        )
    _check_seeds(_GEODESIC, seeds)
    if seeds.device != image.device:
        raise RuntimeError(f"{_GEODESIC}seeds must be on the device of image ({image.device}); got {seeds.device}")
    expected = [image.shape[0], seeds.shape[1], *image.shape[2:]]
    if list(seeds.shape) != expected:
        raise RuntimeError(
            f"{_GEODESIC}seeds must have shape (B, S, *spatial) with the batch size and spatial shape of image "
            f"{_shape(image.shape)}, i.e. {_shape(expected)}; got {_shape(seeds.shape)}"
        )
    _check_spacing(_GEODESIC, seeds, spacing)
    if not (math.isfinite(lamb) and 0.0 <= lamb <= 1.0):
        raise RuntimeError(f"{_GEODESIC}lamb must be in [0, 1]; got {lamb:g}")
    if iterations is not None and iterations < 1:
        raise RuntimeError(f"{_GEODESIC}iterations must be None (exact) or an int >= 1; got {iterations}")


@torch.library.register_fake("dsp_monai::geodesic_distance")
def _geodesic_distance_fake(image, seeds, spacing=None, lamb=1.0, iterations=None):
    _check_geodesic(image, seeds, spacing, lamb, iterations)
    return seeds.new_empty(seeds.shape, dtype=torch.float32)


@torch.library.register_fake("dsp_monai::euclidean_distance")
def _euclidean_distance_fake(seeds, spacing=None):
    _check_seeds(_EUCLIDEAN, seeds)
    _check_spacing(_EUCLIDEAN, seeds, spacing)
    return seeds.new_empty(seeds.shape, dtype=torch.float32)


def _spacing_list(spacing: Optional[Sequence[float]]) -> Optional[list]:
    return None if spacing is None else [float(v) for v in spacing]


def geodesic_distance(
    image: torch.Tensor,
    seeds: torch.Tensor,
    spacing: Optional[Sequence[float]] = None,
    lamb: float = 1.0,
    iterations: Optional[int] = None,
) -> torch.Tensor:
    """Geodesic distance from every pixel to the seeds of each seed map, on the image's intensities.

    The distance is the length of the shortest 8-connected (2D) or 26-connected (3D) path, where a step between
    neighbours p and q costs ``(1 - lamb) * |p - q|_spacing + lamb * |I(p) - I(q)|``, |I(p) - I(q)| being the
    Euclidean norm over the C channels (the FastGeodis convention; lamb = 1 is the discrete geodesic distance of
    DeepIGeoS, lamb = 0 the chamfer distance). Steps whose cost is not a number (NaN in the image) are never taken.

    Args:
        image: (B, C, H, W) or (B, C, D, H, W) intensities, float32 / float64 / float16 / bfloat16 (computed in
            float32).
        seeds: (B, S, *spatial) bool, S seed maps per image (for example one per class), True at the seeds.
        spacing: physical size of a pixel along each spatial dim, e.g. ``(2.5, 0.8, 0.8)``; None means 1.
        lamb: weight of the intensity term, in [0, 1].
        iterations: None (default) for the exact distances. An int k >= 1 asks for the approximation of k rounds
            of raster passes (per round, a forward and a backward pass along each axis, outermost first, each
            pixel taking the best of its neighbours in the previous row / plane), stopping early once a round
            changes nothing; CPU and CUDA give the same values.

    Returns:
        (B, S, *spatial) float32 distances, 0 at the seeds; a map without any seed is +inf everywhere. Not
        differentiable: the result never requires grad.

    Raises:
        RuntimeError: on a wrong rank, dtype, device or shape of image or seeds (seeds must match the image's
            batch size and spatial shape), a spacing of the wrong length or with values <= 0, lamb outside [0, 1]
            or iterations < 1; the message names the argument, what was expected and what arrived.

    Example:
        >>> import torch
        >>> from dsp_monai.ops import geodesic_distance
        >>> image = torch.rand(2, 1, 64, 64)
        >>> seeds = torch.zeros(2, 3, 64, 64, dtype=torch.bool)
        >>> seeds[:, 0, 10, 10] = True
        >>> dist = geodesic_distance(image, seeds, lamb=1.0)
        >>> dist.shape, bool(dist[:, 1].isinf().all())
        (torch.Size([2, 3, 64, 64]), True)
    """
    return torch.ops.dsp_monai.geodesic_distance(
        image, seeds, _spacing_list(spacing), float(lamb), None if iterations is None else int(iterations)
    )


def euclidean_distance(seeds: torch.Tensor, spacing: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Exact Euclidean distance from every pixel to the nearest seed of each seed map.

    The separable transform of Felzenszwalb & Huttenlocher (2012), one pass per axis; equal, up to float32
    rounding, to ``scipy.ndimage.distance_transform_edt(~seeds, sampling=spacing)`` on each map.

    Args:
        seeds: (B, S, H, W) or (B, S, D, H, W) bool, True at the seeds.
        spacing: physical size of a pixel along each spatial dim; None means 1.

    Returns:
        (B, S, *spatial) float32 distances, 0 at the seeds; a map without any seed is +inf everywhere. Not
        differentiable.

    Raises:
        RuntimeError: on a wrong rank or dtype of seeds, or a spacing of the wrong length or with values <= 0.

    Example:
        >>> import torch
        >>> from dsp_monai.ops import euclidean_distance
        >>> seeds = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
        >>> seeds[0, 0, 0, 0] = True
        >>> round(float(euclidean_distance(seeds, spacing=(2.0, 1.0))[0, 0, 4, 3]), 4)  # sqrt(8^2 + 3^2)
        8.544
    """
    return torch.ops.dsp_monai.euclidean_distance(seeds, _spacing_list(spacing))


def normalise_distance(
    dist: torch.Tensor, truncation: Optional[float] = None, sigma: Optional[float] = None
) -> torch.Tensor:
    """Distances as a regression target: ``min(d, truncation)`` when ``truncation`` is set, then ``exp(-d / sigma)``
    when ``sigma`` is set (1 at the seeds, towards 0 far away); unchanged when neither is. +inf (a map without
    seeds) becomes ``truncation``, 0, or ``exp(-truncation / sigma)``.

    Args:
        dist: distances (any shape), e.g. of :func:`euclidean_distance` or :func:`geodesic_distance`.
        truncation: None or > 0.
        sigma: None or > 0.

    Raises:
        ValueError: for a truncation or sigma that is not > 0.

    Example:
        >>> import torch
        >>> normalise_distance(torch.tensor([0.0, 2.0, float("inf")]), truncation=4.0).tolist()
        [0.0, 2.0, 4.0]
    """
    for name, value in (("truncation", truncation), ("sigma", sigma)):
        if value is not None and not value > 0:
            raise ValueError(f"normalise_distance: {name} must be None or > 0; got {value}")
    if truncation is not None:
        dist = dist.clamp_max(truncation)
    if sigma is not None:
        dist = torch.exp(-dist / sigma)
    return dist


def _offsets(dims: int):
    return [o for o in itertools.product((-1, 0, 1), repeat=dims) if any(o)]


def _shifted(tensor: torch.Tensor, offset: Sequence[int], fill: float) -> torch.Tensor:
    """``out[..., p] = tensor[..., p + offset]``, ``fill`` where p + offset leaves the grid."""
    dims = len(offset)
    padded = F.pad(tensor, [1, 1] * dims, value=fill)
    index = [slice(None)] * (tensor.dim() - dims)
    for a, o in enumerate(offset):
        index.append(slice(1 + o, 1 + o + tensor.shape[tensor.dim() - dims + a]))
    return padded[tuple(index)]


def geodesic_distance_reference(
    image: torch.Tensor,
    seeds: torch.Tensor,
    spacing: Optional[Sequence[float]] = None,
    lamb: float = 1.0,
) -> torch.Tensor:
    """Reference for :func:`geodesic_distance` (exact mode), in float64 pure PyTorch: Bellman-Ford relaxation
    ``d(p) = min(d(p), d(q) + cost(q, p))`` over all neighbours at once, repeated until nothing changes.

    Slow (one sweep per step of the longest shortest path); meant for small inputs in tests.

    Args:
        image: (B, C, *spatial) intensities, 2 or 3 spatial dims.
        seeds: (B, S, *spatial) bool.
        spacing: pixel size per spatial dim; None means 1.
        lamb: weight of the intensity term, in [0, 1].

    Returns:
        (B, S, *spatial) float64 distances, +inf for maps without seeds.
    """
    dims = image.dim() - 2
    spacing = [1.0] * dims if spacing is None else [float(v) for v in spacing]
    intensities = image.to(torch.float64)
    inf = float("inf")
    dist = torch.where(seeds, 0.0, inf).to(torch.float64)
    costs = []
    for offset in _offsets(dims):
        length = math.sqrt(sum((o * h) ** 2 for o, h in zip(offset, spacing)))
        neighbour = _shifted(intensities, offset, math.nan)
        change = (neighbour - intensities).pow(2).sum(1).sqrt()
        cost = (1.0 - lamb) * length + lamb * change
        costs.append((offset, torch.nan_to_num(cost, nan=inf).unsqueeze(1)))
    while True:
        best = dist
        for offset, cost in costs:
            best = torch.minimum(best, _shifted(dist, offset, inf) + cost)
        if torch.equal(best, dist):
            return dist
        dist = best


def euclidean_distance_reference(seeds: torch.Tensor, spacing: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Reference for :func:`euclidean_distance` in float64 pure PyTorch: the distance to every seed, minimised.

    Args:
        seeds: (B, S, *spatial) bool.
        spacing: pixel size per spatial dim; None means 1.

    Returns:
        (B, S, *spatial) float64 distances, +inf for maps without seeds.
    """
    spatial = seeds.shape[2:]
    spacing = [1.0] * len(spatial) if spacing is None else [float(v) for v in spacing]
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) * h for n, h in zip(spatial, spacing)], indexing="ij")
    points = torch.stack([g.reshape(-1) for g in grids], dim=1).to(seeds.device)
    flat = seeds.reshape(seeds.shape[0] * seeds.shape[1], -1)
    out = torch.full(flat.shape, float("inf"), dtype=torch.float64, device=seeds.device)
    for m in range(flat.shape[0]):
        sites = points[flat[m]]
        if len(sites):
            out[m] = torch.cdist(points, sites).amin(dim=1)
    return out.reshape(seeds.shape)
