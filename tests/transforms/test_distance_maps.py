"""PointDistanceMapsd / PointDistanceMaps / points_from_mask against known answers, and in a training batch."""

import math

import pytest
import numpy as np
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose

from dsp_monai.transforms.distance_maps import PointDistanceMaps, PointDistanceMapsd, points_from_mask


def grid(shape):
    return torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")


def test_euclidean_maps_known_answer_with_spacing():
    maps, has_points = PointDistanceMaps(num_classes=3, spacing=(2.0, 0.5))(
        torch.tensor([[3.0, 4.0], [6.2, 0.9]]), torch.tensor([1, 1]), spatial_shape=(8, 9)
    )
    assert maps.shape == (3, 8, 9) and maps.dtype == torch.float32
    assert has_points.tolist() == [False, True, False]
    y, x = grid((8, 9))
    to_first = torch.sqrt((2.0 * (y - 3)) ** 2 + (0.5 * (x - 4)) ** 2)
    to_second = torch.sqrt((2.0 * (y - 6)) ** 2 + (0.5 * (x - 1)) ** 2)  # (6.2, 0.9) rounds to pixel (6, 1)
    torch.testing.assert_close(maps[1].double(), torch.minimum(to_first, to_second), rtol=1e-6, atol=1e-6)
    assert torch.isinf(maps[0]).all() and torch.isinf(maps[2]).all()


def test_normalisations_and_fill():
    points, classes = torch.tensor([[2, 2, 2]]), torch.tensor([0])
    z, y, x = grid((5, 6, 7))
    distance = torch.sqrt((z - 2) ** 2 + (y - 2) ** 2 + (x - 2) ** 2)
    shape = (5, 6, 7)

    maps, _ = PointDistanceMaps(2, sigma=3.0)(points, classes, spatial_shape=shape)
    torch.testing.assert_close(maps[0].double(), torch.exp(-distance / 3.0), rtol=1e-6, atol=1e-7)
    assert (maps[1] == 0).all()  # no points: exp(-inf)

    maps, _ = PointDistanceMaps(2, truncation=2.5)(points, classes, spatial_shape=shape)
    torch.testing.assert_close(maps[0].double(), distance.clamp_max(2.5), rtol=1e-6, atol=1e-7)
    assert (maps[1] == 2.5).all()

    maps, _ = PointDistanceMaps(2, truncation=2.5, sigma=3.0)(points, classes, spatial_shape=shape)
    torch.testing.assert_close(maps[0].double(), torch.exp(-distance.clamp_max(2.5) / 3.0), rtol=1e-6, atol=1e-7)
    assert torch.allclose(maps[1], torch.tensor(math.exp(-2.5 / 3.0), dtype=torch.float32))

    maps, has_points = PointDistanceMaps(2, sigma=3.0, fill=-1.0)(points, classes, spatial_shape=shape)
    assert (maps[1] == -1.0).all() and has_points.tolist() == [True, False]


def test_geodesic_maps_on_a_two_region_image():
    # Left half 0, right half 1: with lamb = 1 crossing the edge costs 1 once, moving inside a region costs 0.
    image = torch.zeros(1, 10, 12)
    image[:, :, 6:] = 1.0
    transform = PointDistanceMaps(2, metric="geodesic", lamb=1.0)
    maps, has_points = transform(torch.tensor([[4, 1], [9, 11]]), torch.tensor([0, 1]), image=image)
    expected_left_seed = (image[0] > 0.5).float()
    torch.testing.assert_close(maps[0], expected_left_seed)
    torch.testing.assert_close(maps[1], 1.0 - expected_left_seed)
    assert has_points.tolist() == [True, True]
    # lamb = 0 ignores the image: the chamfer distance.
    maps, _ = PointDistanceMaps(1, metric="geodesic", lamb=0.0)(torch.tensor([[4, 1]]), torch.tensor([0]), image=image)
    y, x = grid((10, 12))
    dy, dx = (y - 4).abs(), (x - 1).abs()
    chamfer = torch.maximum(dy, dx) + (math.sqrt(2) - 1) * torch.minimum(dy, dx)
    torch.testing.assert_close(maps[0].double(), chamfer, rtol=1e-6, atol=1e-6)


def _brute_force_medoid(pixels):
    """The pixel with the smallest summed Euclidean distance to the others, float64 over all pairs (first on ties)."""
    coords = np.asarray(pixels, dtype=np.float64)
    costs = np.sqrt(((coords[:, None] - coords[None]) ** 2).sum(-1)).sum(1)
    return [int(v) for v in coords[int(np.flatnonzero(costs <= costs.min() * (1 + 1e-12))[0])]]


def test_points_from_mask_places_one_point_per_component_at_its_medoid():
    mask = torch.zeros(12, 14, dtype=torch.int64)
    mask[1:6, 1:6] = 1  # square: its centre (3, 3) is the medoid
    mask[8:11, 9:14] = 1  # 3 x 5 rectangle touching the border: the medoid is its centre (9, 11)
    mask[0:3, 10:13] = 2
    mask[3, 12] = 2  # an appendix below the 3 x 3 square of class 2: its medoid stays at the centre (1, 11)
    points, classes = points_from_mask(mask[None], num_classes=3, classes=[1, 2])
    assert classes.tolist() == [1, 1, 2]
    class2 = (mask == 2).nonzero().tolist()
    assert points.long().tolist() == [[3, 3], [9, 11], _brute_force_medoid(class2)]
    assert _brute_force_medoid(class2) == [1, 11]
    points, classes = points_from_mask(mask, num_classes=3)
    assert classes.tolist().count(0) == 1  # the background is one component


def test_points_from_mask_and_derived_weak_labels_follow_the_same_rule():
    rng = np.random.default_rng(4)
    mask = torch.from_numpy(rng.integers(0, 3, size=(16, 16)))
    from dsp_monai.transforms.weak_labels import DeriveWeakLabels

    derived = DeriveWeakLabels(types=("points",))(mask[None])
    points, classes = points_from_mask(mask, num_classes=3)
    assert points.long().tolist() == derived["points"].tolist()
    assert classes.tolist() == derived["point_classes"].tolist()


def test_dictionary_transform_from_mask_writes_points_and_targets():
    volume = torch.zeros(1, 6, 7, 8)
    label = torch.zeros(1, 6, 7, 8, dtype=torch.int64)
    label[0, 1:4, 1:4, 1:4] = 2
    transform = PointDistanceMapsd("points", num_classes=3, mask_key="label", mask_classes=[1, 2], truncation=4.0)
    out = transform({"image": volume, "label": label})
    assert out["points"].tolist() == [[2.0, 2.0, 2.0]] and out["point_classes"].tolist() == [2]
    assert out["point_distance_valid"].tolist() == [False, False, True]
    assert out["point_distance"].shape == (3, 6, 7, 8)
    assert out["point_distance"][2, 2, 2, 2] == 0 and (out["point_distance"][:2] == 4.0).all()


def test_metatensor_image_gives_its_affine_and_missing_keys():
    affine = torch.diag(torch.tensor([2.0, 3.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.rand(1, 8, 8), affine=affine)
    transform = PointDistanceMapsd("points", num_classes=2, metric="geodesic", sigma=2.0)
    out = transform({"image": image, "points": torch.tensor([[1, 1]]), "point_classes": torch.tensor([1])})
    assert isinstance(out["point_distance"], MetaTensor)
    torch.testing.assert_close(out["point_distance"].affine, affine)
    with pytest.raises(KeyError, match="key 'points' is missing"):
        transform({"image": image})
    lenient = PointDistanceMapsd("points", num_classes=2, allow_missing_keys=True)
    assert "point_distance" not in lenient({"image": image})


@pytest.mark.parametrize(
    "kwargs,call,match",
    [
        (dict(metric="chebyshev"), None, r"metric must be one of \('euclidean', 'geodesic'\); got 'chebyshev'"),
        (dict(sigma=0.0), None, r"sigma must be None or > 0; got 0.0"),
        (dict(), dict(points=torch.tensor([[1, 2, 3]])), r"points must have shape \(N, 2\).*got shape \[1, 3\]"),
        (dict(), dict(points=torch.tensor([[1, 8]])), r"points must lie inside the image of spatial shape \[8, 8\]"),
        (dict(), dict(point_classes=torch.tensor([2])), r"point_classes must be in \[0, 2\); got values from 2 to 2"),
        (dict(), dict(point_classes=torch.tensor([0, 1])), r"point_classes must hold one class per point \(1\); got 2"),
        (dict(metric="geodesic"), dict(image=None), r"geodesic distance maps need the image"),
    ],
)
def test_errors(kwargs, call, match):
    arguments = dict(points=torch.tensor([[1, 2]]), point_classes=torch.tensor([1]), image=None,
                     spatial_shape=(8, 8))
    arguments.update(call or {})
    with pytest.raises(ValueError, match=match):
        PointDistanceMaps(2, **kwargs)(**arguments)


def test_feeds_a_training_batch():
    generator = torch.Generator().manual_seed(0)
    items = []
    for i in range(4):
        count = i % 3  # 0, 1 or 2 points: some classes have none
        items.append({
            "image": torch.rand(1, 24, 20, generator=generator),
            "points": torch.tensor([[3 + 5 * k, 2 + 7 * k] for k in range(count)], dtype=torch.float32),
            "point_classes": torch.tensor([k % 3 for k in range(count)], dtype=torch.int64),
        })
    transform = Compose([PointDistanceMapsd("points", num_classes=3, metric="geodesic", lamb=0.9, sigma=5.0)])
    loader = DataLoader(Dataset(items, transform), batch_size=2, num_workers=0,
                        collate_fn=lambda batch: {k: torch.stack([b[k] for b in batch]) for k in
                                                  ("image", "point_distance", "point_distance_valid")})
    head = torch.nn.Conv2d(1, 3, 3, padding=1)
    for batch in loader:
        assert batch["point_distance"].shape == (2, 3, 24, 20) and batch["point_distance_valid"].shape == (2, 3)
        assert torch.isfinite(batch["point_distance"]).all()
        prediction = torch.sigmoid(head(batch["image"]))
        weight = batch["point_distance_valid"][:, :, None, None].float()
        loss = ((prediction - batch["point_distance"]).abs() * weight).sum() / weight.sum().clamp_min(1.0)
        loss.backward()
        assert torch.isfinite(loss)
    assert head.weight.grad is not None
