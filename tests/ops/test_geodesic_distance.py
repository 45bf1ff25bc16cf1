"""geodesic_distance / euclidean_distance against oracles built here: scipy's Dijkstra on the same graph and cost,
and scipy's exact Euclidean distance transform."""

import itertools
import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.sparse as sparse
import scipy.sparse.csgraph as csgraph
import torch

from dsp_monai.ops import (
    euclidean_distance,
    euclidean_distance_reference,
    geodesic_distance,
    geodesic_distance_reference,
)

RTOL = 1e-5


def dijkstra_oracle(image, seeds, spacing, lamb):
    """Exact distances of one seed map in float64: scipy's Dijkstra on the 8/26-connected grid graph, where the
    step p -> q costs (1 - lamb) * |p - q|_spacing + lamb * ||I(p) - I(q)||_2 (norm over channels).

    image: (C, *spatial) array; seeds: (*spatial) bool array. +inf everywhere when there is no seed.
    """
    spatial = seeds.shape
    index = np.arange(seeds.size).reshape(spatial)
    values = image.reshape(image.shape[0], -1).astype(np.float64)
    rows, cols, weights = [], [], []
    for offset in itertools.product((-1, 0, 1), repeat=len(spatial)):
        if not any(offset):
            continue
        src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, spatial))
        dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, spatial))
        a, b = index[src].ravel(), index[dst].ravel()
        length = math.sqrt(sum((o * h) ** 2 for o, h in zip(offset, spacing)))
        change = np.sqrt(((values[:, a] - values[:, b]) ** 2).sum(0))
        rows.append(a)
        cols.append(b)
        weights.append((1.0 - lamb) * length + lamb * change)
    weights, rows, cols = np.concatenate(weights), np.concatenate(rows), np.concatenate(cols)
    # Steps whose cost is not a number (NaN intensities) do not exist.
    keep = ~np.isnan(weights)
    # csgraph reads a stored zero as "no edge"; a zero-cost step becomes a negligible positive one.
    weights = np.where(weights[keep] == 0.0, 1e-300, weights[keep])
    graph = sparse.csr_matrix((weights, (rows[keep], cols[keep])), shape=(seeds.size,) * 2)
    sources = np.flatnonzero(seeds.ravel())
    if len(sources) == 0:
        return np.full(spatial, np.inf)
    return csgraph.dijkstra(graph, directed=True, indices=sources, min_only=True).reshape(spatial)


def assert_close_to(actual, expected):
    """actual (float32 tensor) equals expected (float64 array) to RTOL, with +inf in the same places."""
    actual = actual.cpu().double().numpy()
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=RTOL, atol=1e-6)


def random_problem(shape, channels, maps, generator, density=0.01):
    """Random image (B=2) and seed maps: sparse random seeds, seeds on the border (corners and an edge pixel) of
    map 0 of image 0, and a map without any seed (map 1 of image 1)."""
    image = torch.rand(2, channels, *shape, generator=generator)
    seeds = torch.rand(2, maps, *shape, generator=generator) < density
    corner = (0, 0) + (0,) * len(shape)
    seeds[corner] = True
    seeds[(0, 0) + tuple(n - 1 for n in shape)] = True
    seeds[(0, 0, shape[0] // 2) + (0,) * (len(shape) - 1)] = True
    seeds[1, 1] = False
    return image, seeds


CASES_2D = [((19, 26), (1.0, 1.0)), ((17, 23), (0.6, 1.7))]
CASES_3D = [((6, 9, 8), (2.5, 0.8, 1.1))]


@pytest.mark.parametrize("lamb", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("shape,spacing", CASES_2D + CASES_3D)
def test_geodesic_equals_dijkstra(shape, spacing, channels, lamb):
    generator = torch.Generator().manual_seed(hash((shape, channels, lamb)) % 2**31)
    image, seeds = random_problem(shape, channels, maps=3, generator=generator)
    dist = geodesic_distance(image, seeds, spacing=spacing, lamb=lamb)
    assert dist.dtype == torch.float32 and dist.shape == seeds.shape
    for b, s in itertools.product(range(2), range(3)):
        assert_close_to(dist[b, s], dijkstra_oracle(image[b].numpy(), seeds[b, s].numpy(), spacing, lamb))


def test_map_without_seeds_is_inf_and_seeds_are_zero():
    generator = torch.Generator().manual_seed(0)
    image, seeds = random_problem((12, 15), 1, maps=2, generator=generator)
    dist = geodesic_distance(image, seeds)
    assert torch.isinf(dist[1, 1]).all() and (dist[1, 1] > 0).all()
    assert (dist[seeds] == 0).all()
    assert torch.isfinite(dist[0, 0]).all()
    edt = euclidean_distance(seeds)
    assert torch.isinf(edt[1, 1]).all()
    assert (edt[seeds] == 0).all()


def test_seed_in_a_corner_reaches_the_far_corner():
    image = torch.rand(1, 1, 31, 29, generator=torch.Generator().manual_seed(1))
    seeds = torch.zeros(1, 1, 31, 29, dtype=torch.bool)
    seeds[0, 0, 30, 28] = True
    for lamb in (0.0, 1.0):
        dist = geodesic_distance(image, seeds, lamb=lamb)
        assert_close_to(dist[0, 0], dijkstra_oracle(image[0].numpy(), seeds[0, 0].numpy(), (1.0, 1.0), lamb))


def test_nan_intensities_block_their_steps():
    image = torch.rand(1, 1, 11, 13, generator=torch.Generator().manual_seed(9))
    image[0, 0, 5, 2:11] = float("nan")
    seeds = torch.zeros(1, 1, 11, 13, dtype=torch.bool)
    seeds[0, 0, 0, 6] = True
    dist = geodesic_distance(image, seeds, lamb=0.5)
    assert torch.isinf(dist[0, 0, 5, 2:11]).all()
    assert_close_to(dist[0, 0], dijkstra_oracle(image[0].numpy(), seeds[0, 0].numpy(), (1.0, 1.0), 0.5))
    assert torch.equal(geodesic_distance(image, seeds, lamb=0.5, iterations=100), dist)


def test_chamfer_distance_of_lamb_zero():
    # lamb = 0 ignores the image: the 8-neighbour chamfer distance, max(|dy|, |dx|) + (sqrt(2) - 1) * min(...).
    seeds = torch.zeros(1, 1, 9, 12, dtype=torch.bool)
    seeds[0, 0, 4, 5] = True
    dist = geodesic_distance(torch.randn(1, 2, 9, 12), seeds, lamb=0.0)
    y, x = torch.meshgrid(torch.arange(9), torch.arange(12), indexing="ij")
    dy, dx = (y - 4).abs().double(), (x - 5).abs().double()
    expected = torch.maximum(dy, dx) + (math.sqrt(2) - 1) * torch.minimum(dy, dx)
    torch.testing.assert_close(dist[0, 0].double(), expected, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize(
    "shape,spacing", [((40, 53), None), ((40, 53), (0.3, 2.0)), ((11, 14, 17), (2.5, 0.7, 1.0))]
)
def test_euclidean_equals_scipy_edt(shape, spacing):
    generator = torch.Generator().manual_seed(2)
    _, seeds = random_problem(shape, 1, maps=3, generator=generator)
    dist = euclidean_distance(seeds, spacing=spacing)
    assert dist.dtype == torch.float32 and dist.shape == seeds.shape
    for b, s in itertools.product(range(2), range(3)):
        mask = seeds[b, s].numpy()
        if not mask.any():
            assert torch.isinf(dist[b, s]).all()
            continue
        assert_close_to(dist[b, s], ndi.distance_transform_edt(~mask, sampling=spacing))


def test_references_agree_with_the_kernels():
    generator = torch.Generator().manual_seed(3)
    image, seeds = random_problem((10, 13), 2, maps=2, generator=generator)
    expected = geodesic_distance_reference(image, seeds, spacing=(1.5, 1.0), lamb=0.5)
    torch.testing.assert_close(geodesic_distance(image, seeds, spacing=(1.5, 1.0), lamb=0.5).double(), expected,
                               rtol=RTOL, atol=1e-6)
    expected = euclidean_distance_reference(seeds, spacing=(1.5, 1.0))
    torch.testing.assert_close(euclidean_distance(seeds, spacing=(1.5, 1.0)).double(), expected, rtol=RTOL, atol=1e-6)


def test_same_bits_for_one_and_two_threads():
    # A single map of > 2^16 pixels is cut into slabs when two threads are available; many maps are not.
    generator = torch.Generator().manual_seed(4)
    cases = [
        (torch.rand(1, 1, 300, 240, generator=generator), torch.rand(1, 1, 300, 240, generator=generator) < 2e-4),
        (torch.rand(1, 2, 24, 60, 50, generator=generator), torch.rand(1, 1, 24, 60, 50, generator=generator) < 1e-4),
        (torch.rand(2, 1, 60, 70, generator=generator), torch.rand(2, 3, 60, 70, generator=generator) < 1e-3),
    ]
    # One seed in a corner: the far slab's distances arrive only across the slab boundary.
    cases[0][1][0, 0, 0, 0] = True
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(
                [
                    (geodesic_distance(image, seeds, lamb=0.8), geodesic_distance(image, seeds, iterations=3),
                     euclidean_distance(seeds))
                    for image, seeds in cases
                ]
            )
    finally:
        torch.set_num_threads(previous)
    for one, two in zip(*results):
        for a, b in zip(one, two):
            assert torch.equal(a, b)


def test_iterations_approximate_and_converge_to_the_exact_distances():
    generator = torch.Generator().manual_seed(5)
    image, seeds = random_problem((30, 34), 1, maps=2, generator=generator, density=0.003)
    exact = geodesic_distance(image, seeds)
    one = geodesic_distance(image, seeds, iterations=1)
    finite = torch.isfinite(exact)
    assert (one[finite] >= exact[finite]).all()  # an upper bound: the length of some path
    assert (one[finite] > exact[finite]).any()  # one round of passes is not enough on a noisy image
    assert torch.equal(geodesic_distance(image, seeds, iterations=1000), exact)


def test_input_dtypes_and_layouts():
    generator = torch.Generator().manual_seed(6)
    image, seeds = random_problem((9, 11), 2, maps=2, generator=generator)
    expected = geodesic_distance(image, seeds)
    assert torch.equal(geodesic_distance(image.double(), seeds), expected)
    assert geodesic_distance(image.half(), seeds).dtype == torch.float32
    transposed = image.transpose(2, 3).contiguous().transpose(2, 3)
    assert torch.equal(geodesic_distance(transposed, seeds.transpose(2, 3).contiguous().transpose(2, 3)), expected)
    empty = geodesic_distance(image, seeds[:, :0])
    assert empty.shape == (2, 0, 9, 11) and empty.dtype == torch.float32
    assert euclidean_distance(seeds[:, :0]).shape == (2, 0, 9, 11)


def test_not_differentiable():
    image = torch.rand(1, 1, 8, 8, requires_grad=True)
    seeds = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    seeds[0, 0, 0, 0] = True
    dist = geodesic_distance(image, seeds)
    assert not dist.requires_grad and dist.grad_fn is None


IMAGE = torch.rand(2, 1, 6, 7)
SEEDS = torch.zeros(2, 3, 6, 7, dtype=torch.bool)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(image=torch.rand(2, 6, 7)), r"geodesic_distance: image must have shape \(B, C, H, W\).*got shape \[2, 6, 7\]"),
        (dict(image=IMAGE.long()), r"image must be torch.float32.*got torch.int64"),
        (dict(image=torch.rand(2, 0, 6, 7)), r"image must have at least one channel"),
        (dict(seeds=SEEDS.float()), r"seeds must be a bool mask.*got dtype torch.float32"),
        (dict(seeds=SEEDS[0]), r"seeds must have shape \(B, S, H, W\).*got shape \[3, 6, 7\]"),
        (dict(seeds=SEEDS[:1]), r"seeds must have shape \(B, S, \*spatial\).*\[2, 3, 6, 7\]; got \[1, 3, 6, 7\]"),
        (dict(seeds=SEEDS[..., :5]), r"i\.e\. \[2, 3, 6, 7\]; got \[2, 3, 6, 5\]"),
        (dict(seeds=torch.zeros(2, 3, 4, 6, 7, dtype=torch.bool)), r"seeds must have shape \(B, S, \*spatial\)"),
        (dict(spacing=(1.0,)), r"spacing must hold one value per spatial dim \(2\); got \[1\]"),
        (dict(spacing=(1.0, 0.0)), r"spacing must hold finite values > 0; got \[1, 0\]"),
        (dict(lamb=1.5), r"lamb must be in \[0, 1\]; got 1.5"),
        (dict(iterations=0), r"iterations must be None \(exact\) or an int >= 1; got 0"),
    ],
)
def test_geodesic_errors(kwargs, match):
    arguments = dict(image=IMAGE, seeds=SEEDS, spacing=None, lamb=1.0, iterations=None)
    arguments.update(kwargs)
    with pytest.raises(RuntimeError, match=match):
        geodesic_distance(**arguments)
    meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in arguments.items()}
    with pytest.raises(RuntimeError, match=match):
        geodesic_distance(**meta)


@pytest.mark.parametrize(
    "seeds,spacing,match",
    [
        (SEEDS.to(torch.uint8), None, r"euclidean_distance: seeds must be a bool mask.*got dtype torch.uint8"),
        (SEEDS[0, 0], None, r"seeds must have shape \(B, S, H, W\) or \(B, S, D, H, W\); got shape \[6, 7\]"),
        (SEEDS, (1.0, 2.0, 3.0), r"spacing must hold one value per spatial dim \(2\); got \[1, 2, 3\]"),
        (SEEDS, (1.0, float("nan")), r"spacing must hold finite values > 0"),
    ],
)
def test_euclidean_errors(seeds, spacing, match):
    with pytest.raises(RuntimeError, match=match):
        euclidean_distance(seeds, spacing)
    with pytest.raises(RuntimeError, match=match):
        euclidean_distance(seeds.to("meta"), spacing)


def test_opcheck():
    image = torch.rand(2, 2, 5, 6, requires_grad=True)
    seeds = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(7)) < 0.2
    torch.library.opcheck(torch.ops.dsp_monai.geodesic_distance.default, (image, seeds, [1.0, 2.0], 0.5, None))
    torch.library.opcheck(torch.ops.dsp_monai.geodesic_distance.default, (image, seeds, None, 1.0, 2))
    torch.library.opcheck(torch.ops.dsp_monai.euclidean_distance.default, (seeds, [0.5, 1.0]))
    volume = torch.rand(1, 1, 3, 4, 5)
    torch.library.opcheck(torch.ops.dsp_monai.geodesic_distance.default, (volume, volume > 0.8, None, 1.0, None))
    torch.library.opcheck(torch.ops.dsp_monai.euclidean_distance.default, (volume > 0.8, None))


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(70, 90), (13, 40, 37)])
def test_cuda_matches_cpu(shape):
    generator = torch.Generator().manual_seed(8)
    image, seeds = random_problem(shape, 2, maps=3, generator=generator, density=0.002)
    spacing = (1.0,) * (len(shape) - 1) + (0.7,)
    for lamb, iterations in [(1.0, None), (0.5, None), (0.0, None), (1.0, 2)]:
        cpu = geodesic_distance(image, seeds, spacing, lamb, iterations)
        gpu = geodesic_distance(image.cuda(), seeds.cuda(), spacing, lamb, iterations)
        assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=1e-6)
    cpu = euclidean_distance(seeds, spacing)
    torch.testing.assert_close(euclidean_distance(seeds.cuda(), spacing).cpu(), cpu, rtol=1e-6, atol=1e-6)
    torch.library.opcheck(torch.ops.dsp_monai.geodesic_distance.default,
                          (image[:1, :, :8].cuda(), seeds[:1, :, :8].cuda(), None, 1.0, None))


@pytest.mark.cuda
@pytest.mark.parametrize("shape,batch,maps", [((512, 512), 8, 1), ((48, 128, 128), 1, 2)], ids=["8x512x512", "3d"])
def test_cuda_matches_cpu_at_benchmark_sizes(shape, batch, maps):
    generator = torch.Generator().manual_seed(9)
    image = torch.rand(batch, 1, *shape, generator=generator)
    seeds = torch.rand(batch, maps, *shape, generator=generator) < 0.0002
    seeds[(slice(None), slice(None)) + (0,) * len(shape)] = True
    cpu = geodesic_distance(image, seeds)
    gpu = geodesic_distance(image.cuda(), seeds.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(euclidean_distance(seeds.cuda()).cpu(), euclidean_distance(seeds), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.cuda
def test_cuda_non_contiguous_inputs():
    generator = torch.Generator().manual_seed(10)
    image, seeds = random_problem((40, 50), 2, maps=3, generator=generator, density=0.01)
    expected = geodesic_distance(image, seeds, None, 0.7, None)
    image_nc = image.cuda().transpose(2, 3).contiguous().transpose(2, 3)
    seeds_nc = torch.stack([seeds, seeds], -1).cuda()[..., 0]
    assert not (image_nc.is_contiguous() or seeds_nc.is_contiguous())
    torch.testing.assert_close(geodesic_distance(image_nc, seeds_nc, None, 0.7, None).cpu(), expected,
                               rtol=1e-6, atol=1e-6)
