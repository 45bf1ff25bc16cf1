"""The point-distance branch: its targets against scipy's Euclidean distance transform and an independent Dijkstra
(float64) on the same grid, and its L1 / L2 term by hand."""

import heapq
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage

from dsp_monai.annotations import collate_annotations
from dsp_monai.losses import PointDistanceLoss, point_distance_targets

SHAPE = (9, 11)
RECORDS = [
    {"points": torch.tensor([[1, 2], [7, 9]]), "point_classes": torch.tensor([2, 2])},
    {"points": torch.tensor([[4, 0], [0, 10]]), "point_classes": torch.tensor([0, 1])},
    None,
]


def dijkstra(image: np.ndarray, seeds: np.ndarray, lamb: float) -> np.ndarray:
    """Shortest 8-connected paths from the seeds, step cost (1 - lamb) |p - q| + lamb |I(p) - I(q)|, in float64."""
    rows, cols = image.shape
    dist = np.full(image.shape, np.inf)
    heap = [(0.0, r, c) for r, c in zip(*np.nonzero(seeds))]
    for _, r, c in heap:
        dist[r, c] = 0.0
    heapq.heapify(heap)
    while heap:
        d, r, c = heapq.heappop(heap)
        if d > dist[r, c]:
            continue
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                q = (r + dr, c + dc)
                if (dr, dc) == (0, 0) or not (0 <= q[0] < rows and 0 <= q[1] < cols):
                    continue
                step = (1 - lamb) * math.hypot(dr, dc) + lamb * abs(image[q] - image[r, c])
                if d + step < dist[q]:
                    dist[q] = d + step
                    heapq.heappush(heap, (d + step, *q))
    return dist


def seeds_of(records, num_classes):
    seeds = np.zeros((len(records), num_classes, *SHAPE), bool)
    for b, record in enumerate(records):
        for (r, c), k in zip((record or {}).get("points", []), (record or {}).get("point_classes", [])):
            seeds[b, int(k), int(r), int(c)] = True
    return seeds


def test_euclidean_targets_equal_scipys_distance_transform_per_class_map():
    annotations = collate_annotations(RECORDS, 3, SHAPE)
    targets, has_points = point_distance_targets(annotations, metric="euclidean")
    seeds = seeds_of(RECORDS, 3)
    assert has_points.tolist() == [[False, False, True], [True, True, False], [False, False, False]]
    for b, c in zip(*np.nonzero(seeds.any(axis=(2, 3)))):
        expected = ndimage.distance_transform_edt(~seeds[b, c])
        np.testing.assert_allclose(targets[b, c].numpy(), expected, rtol=1e-6, atol=1e-6)
    assert torch.isinf(targets[~has_points]).all()


@pytest.mark.parametrize("lamb", [1.0, 0.6])
def test_geodesic_targets_equal_an_independent_dijkstra_on_the_image(lamb):
    annotations = collate_annotations(RECORDS, 3, SHAPE)
    image = torch.rand(3, 1, *SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    targets, has_points = point_distance_targets(annotations, image=image, metric="geodesic", lamb=lamb)
    seeds = seeds_of(RECORDS, 3)
    for b, c in zip(*np.nonzero(seeds.any(axis=(2, 3)))):
        expected = dijkstra(image[b, 0].numpy(), seeds[b, c], lamb)
        np.testing.assert_allclose(targets[b, c].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_targets_are_normalised_after_truncation():
    annotations = collate_annotations(RECORDS[:1], 3, SHAPE)
    raw, _ = point_distance_targets(annotations)
    targets, _ = point_distance_targets(annotations, sigma=2.0, truncation=3.0)
    torch.testing.assert_close(targets, torch.exp(-raw.clamp_max(3.0) / 2.0))
    assert float(targets[0, 2, 1, 2]) == 1.0 and float(targets[0, 0].max()) == pytest.approx(math.exp(-1.5))


def context_for(records, prediction, image=None, valid=None):
    annotations = collate_annotations(
        [dict(r or {}, **({"valid": valid[b]} if valid is not None else {})) for b, r in enumerate(records)],
        prediction.shape[1], prediction.shape[2:],
    )
    views = {"weak": image if image is not None else torch.zeros(len(records), 1, *prediction.shape[2:])}
    return SimpleNamespace(annotations=annotations, views=views, outputs={"weak": {"point_distance": prediction}})


@pytest.mark.parametrize("reduction", ["l1", "l2"])
def test_l1_and_l2_terms_by_hand(reduction):
    """One image with a class-1 point at (0, 0) on a 1x3 strip (3 classes): only map 1 counts, and the padded last
    pixel does not; targets exp(-d / 2) at d = 0, 1."""
    records = [{"points": torch.tensor([[0, 0]]), "point_classes": torch.tensor([1])}]
    prediction = torch.tensor([[[[9.0, 9.0, 9.0]], [[0.5, 0.0, 7.0]], [[9.0, 9.0, 9.0]]]])
    valid = [torch.tensor([[[True, True, False]]])]
    value = PointDistanceLoss(sigma=2.0, reduction=reduction)(context_for(records, prediction, valid=valid))
    differences = [0.5 - 1.0, 0.0 - math.exp(-0.5)]
    expected = sum(abs(d) if reduction == "l1" else d * d for d in differences) / 2
    assert float(value) == pytest.approx(expected, rel=1e-6)


def test_batch_without_points_gives_a_constant_zero():
    prediction = torch.randn(2, 3, *SHAPE, requires_grad=True)
    value = PointDistanceLoss()(context_for([None, {"tags": torch.tensor([1])}], prediction))
    assert float(value) == 0.0 and not value.requires_grad


def test_gradient_flows_to_the_prediction_of_maps_with_points_only():
    prediction = torch.zeros(3, 3, *SHAPE, requires_grad=True)
    PointDistanceLoss(sigma=3.0, reduction="l2")(context_for(RECORDS, prediction)).backward()
    touched = prediction.grad.abs().flatten(2).sum(2) > 0
    assert touched.tolist() == [[False, False, True], [True, True, False], [False, False, False]]


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"metric": "manhattan"}, r"metric must be one of \('euclidean', 'geodesic'\); got 'manhattan'"),
        ({"reduction": "huber"}, r"reduction must be one of \('l1', 'l2'\); got 'huber'"),
        ({"sigma": 0.0}, r"sigma must be null or a finite number > 0; got 0.0"),
        ({"lamb": 1.5}, r"lamb must be in \[0, 1\]; got 1.5"),
    ],
)
def test_bad_options_are_named(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        PointDistanceLoss(**kwargs)


def test_prediction_of_the_wrong_shape_is_named():
    context = context_for(RECORDS, torch.zeros(3, 3, *SHAPE))
    context.outputs["weak"]["point_distance"] = torch.zeros(3, 2, *SHAPE)
    pattern = r"output 'point_distance' must have shape \(B, C, \*spatial\) = \[3, 3, 9, 11\]; got \[3, 2, 9, 11\]"
    with pytest.raises(ValueError, match=pattern):
        PointDistanceLoss()(context)
