"""Geometric transforms move masks, boxes, points and tags consistently: derive-then-transform equals
transform-then-derive for flips, 90-degree rotations and padding (exactly), and for crops (exactly for objects the
crop does not cut; as the documented containment otherwise)."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from dsp_monai.transforms.geometry import (
    AddValidMaskd,
    AnnotatedFlipd,
    AnnotatedRandFlipd,
    AnnotatedRandRotate90d,
    AnnotatedRandSpatialCropd,
    AnnotatedRandZoomd,
    AnnotatedRotate90d,
    AnnotatedSpatialCropd,
    AnnotatedSpatialPadd,
    AnnotatedZoomd,
)
from dsp_monai.transforms.weak_labels import DeriveWeakLabels

DERIVE = DeriveWeakLabels()
SHAPES = {2: (30, 38), 3: (10, 14, 12)}


def random_label(shape, seed, classes=4, sigma=1.5, share=0.12):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, dtype=np.int64)
    for cls in range(1, classes):
        field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
        label[field > np.quantile(field, 1 - share)] = cls
    return torch.as_tensor(label)[None]


def annotated_item(ndim, seed=0):
    label = random_label(SHAPES[ndim], seed)
    item = {"image": torch.rand(1, *SHAPES[ndim], generator=torch.Generator().manual_seed(seed)), "label": label}
    item = AddValidMaskd("image")(item)
    item.update(DERIVE(label))
    return item


def box_set(boxes, classes):
    return sorted((int(c), *map(int, b)) for c, b in zip(classes, boxes))


def components(label):
    """(class, component id) per pixel, with the full structure the deriver uses."""
    mask = label[0].numpy()
    out = {}
    for cls in np.unique(mask[mask != 255]):
        out[int(cls)] = ndimage.label(mask == cls, ndimage.generate_binary_structure(mask.ndim, mask.ndim))[0]
    return out


def assert_points_are_medoids(points, classes, label):
    """One point per component of the mask, each a medoid of its component (ties allowed)."""
    comps = components(label)
    seen = []
    for point, cls in zip(points.tolist(), classes.tolist()):
        comp = comps[cls][tuple(point)]
        assert comp > 0, f"point {point} of class {cls} is not on its class"
        coords = np.argwhere(comps[cls] == comp).astype(float)
        costs = cdist(coords, coords).sum(1)
        own = costs[np.flatnonzero((coords == point).all(1))[0]]
        assert own <= costs.min() * (1 + 1e-9), f"point {point} is not a medoid of its component"
        seen.append((cls, comp))
    expected = sorted((cls, comp) for cls, lab in comps.items() for comp in range(1, lab.max() + 1))
    assert sorted(seen) == expected


def assert_commutes(item, transform):
    moved = transform(item)
    derived = DERIVE(moved["label"])
    assert box_set(moved["boxes"], moved["box_classes"]) == box_set(derived["boxes"], derived["box_classes"])
    assert moved["tags"].tolist() == derived["tags"].tolist()
    assert_points_are_medoids(moved["points"], moved["point_classes"], moved["label"])
    return moved


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("axes", [(0,), (1,), (0, 1), (-1,)])
def test_flip_commutes(ndim, axes):
    item = annotated_item(ndim, seed=1)
    moved = assert_commutes(item, AnnotatedFlipd(spatial_axes=axes))
    expected = torch.flip(item["image"], [a % ndim + 1 for a in axes])
    assert torch.equal(torch.as_tensor(moved["image"]), expected)


@pytest.mark.parametrize("ndim,k,axes", [(2, 1, (0, 1)), (2, 2, (0, 1)), (2, 3, (0, 1)), (2, 1, (1, 0)),
                                         (3, 1, (0, 1)), (3, 3, (0, 2)), (3, 1, (1, 2))])
def test_rot90_commutes(ndim, k, axes):
    item = annotated_item(ndim, seed=2)
    moved = assert_commutes(item, AnnotatedRotate90d(k=k, spatial_axes=axes))
    expected = torch.rot90(item["image"], k, [a + 1 for a in axes])
    assert torch.equal(torch.as_tensor(moved["image"]), expected)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("method", ["symmetric", "end"])
def test_pad_commutes_and_marks_padding(ndim, method):
    item = annotated_item(ndim, seed=3)
    size = [s + 5 for s in SHAPES[ndim]]
    moved = assert_commutes(item, AnnotatedSpatialPadd(spatial_size=size, method=method, image_pad_value=-1.0))
    before = [2 if method == "symmetric" else 0] * ndim
    inner = (slice(None),) + tuple(slice(b, b + s) for b, s in zip(before, SHAPES[ndim]))
    valid = torch.as_tensor(moved["valid"])
    assert valid.dtype == torch.bool and int(valid.sum()) == int(np.prod(SHAPES[ndim]))
    assert bool(valid[inner].all())
    assert bool((torch.as_tensor(moved["label"])[~valid] == 255).all())
    assert bool((torch.as_tensor(moved["image"])[~valid] == -1.0).all())
    assert torch.equal(torch.as_tensor(moved["image"])[inner], item["image"])


def test_crop_of_uncut_objects_commutes_exactly():
    label = torch.full((1, 20, 24), 255, dtype=torch.int64)
    label[0, 3:7, 4:9] = 1
    label[0, 10:12, 14:20] = 2
    label[0, 15:19, 1:3] = 1  # outside the crop below
    item = {"image": torch.rand(1, 20, 24), "label": label, **DERIVE(label)}
    moved = AnnotatedSpatialCropd(roi_start=(2, 3), roi_end=(13, 22))(item)
    derived = DERIVE(moved["label"])
    assert box_set(moved["boxes"], moved["box_classes"]) == box_set(derived["boxes"], derived["box_classes"])
    assert box_set(moved["boxes"], moved["box_classes"]) == [(1, 1, 1, 5, 6), (2, 8, 11, 10, 17)]
    assert_points_are_medoids(moved["points"], moved["point_classes"], moved["label"])


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("seed", range(3))
def test_crop_keeps_annotations_truthful(ndim, seed):
    item = annotated_item(ndim, seed=10 + seed)
    crop = AnnotatedRandSpatialCropd(roi_size=[s * 2 // 3 for s in SHAPES[ndim]])
    crop.set_random_state(seed)
    moved = crop(item)
    label = moved["label"][0]
    assert tuple(label.shape) == tuple(s * 2 // 3 for s in SHAPES[ndim])
    derived = DERIVE(moved["label"])
    # tags recomputed from the complete mask
    assert moved["tags"].tolist() == derived["tags"].tolist()
    # every pixel of a class lies in a clipped box of that class, and each box of the crop is inside the image
    cropped = box_set(moved["boxes"], moved["box_classes"])
    for cls, *box in box_set(derived["boxes"], derived["box_classes"]):
        assert any(c == cls and all(o[i] <= box[i] and box[i + ndim] <= o[i + ndim] for i in range(ndim))
                   for c, *o in cropped), f"component box {box} of class {cls} not covered"
    for _, *box in cropped:
        assert all(0 <= box[i] < box[i + ndim] <= label.shape[i] for i in range(ndim))
    # surviving points lie on their class
    for point, cls in zip(moved["points"].tolist(), moved["point_classes"].tolist()):
        assert label[tuple(point)] == cls
    assert len(moved["points"]) <= len(item["points"])


def weak_item():
    label = torch.zeros(1, 10, 10, dtype=torch.int64)
    label[0, :3, :3] = 1
    tags = torch.tensor([0, 1])
    return {"image": torch.rand(1, 10, 10), "label": torch.full_like(label, 255), "tags": tags}, label


def test_crop_tags_policies():
    item, mask = weak_item()
    crop = dict(roi_start=(5, 5), roi_end=(10, 10))
    assert AnnotatedSpatialCropd(**crop)(item)["tags"] is None
    assert AnnotatedSpatialCropd(**crop, tags_on_crop="keep")(item)["tags"].tolist() == [0, 1]
    assert AnnotatedSpatialCropd(roi_start=(0, 0), roi_end=(10, 10))(item)["tags"].tolist() == [0, 1]
    with_mask = {**item, "label": mask}
    assert AnnotatedSpatialCropd(**crop)(with_mask)["tags"].tolist() == [0]
    with pytest.raises(ValueError, match="tags_on_crop must be one of"):
        AnnotatedSpatialCropd(**crop, tags_on_crop="recompute")


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("factor", [1.0 + 2 / 3, 2.0, 1.3])
def test_zoom_in_commutes_for_boxes_and_keeps_points_inside(ndim, factor):
    item = annotated_item(ndim, seed=5)
    moved = AnnotatedZoomd(zoom=factor)(item)
    assert tuple(moved["label"].shape[1:]) == tuple(int(np.floor(s * factor)) for s in SHAPES[ndim])
    assert moved["label"].dtype == item["label"].dtype and moved["valid"].dtype == torch.bool
    derived = DERIVE(moved["label"])
    assert box_set(moved["boxes"], moved["box_classes"]) == box_set(derived["boxes"], derived["box_classes"])
    label = moved["label"][0]
    assert len(moved["points"]) == len(item["points"])
    for point, cls in zip(moved["points"].tolist(), moved["point_classes"].tolist()):
        assert label[tuple(point)] == cls


@pytest.mark.parametrize("factor", [0.5, 0.6, 0.77])
def test_zoom_out_boxes_cover_their_class_and_points_stay_on_class(factor):
    item = annotated_item(2, seed=6)
    moved = AnnotatedZoomd(zoom=factor)(item)
    label = moved["label"][0].numpy()
    boxes, classes = moved["boxes"].tolist(), moved["box_classes"].tolist()
    for cls in np.unique(label):
        inside = np.zeros(label.shape, dtype=bool)
        for box in (b for b, c in zip(boxes, classes) if c == cls):
            inside[box[0] : box[2], box[1] : box[3]] = True
        assert inside[label == cls].all(), f"a pixel of class {cls} lies outside every box of its class"
    for point, cls in zip(moved["points"].tolist(), moved["point_classes"].tolist()):
        assert label[tuple(point)] == cls


def test_zoom_keep_size_and_random_zoom():
    item = annotated_item(2, seed=7)
    for factor in (0.8, 1.25):
        out = AnnotatedZoomd(zoom=factor, keep_size=True)(item)
        assert tuple(out["image"].shape) == (1, *SHAPES[2]) and tuple(out["valid"].shape) == (1, *SHAPES[2])
    assert not bool(AnnotatedZoomd(zoom=0.8, keep_size=True)(item)["valid"].all())
    rand = AnnotatedRandZoomd(prob=1.0, min_zoom=0.7, max_zoom=1.4)
    rand.set_random_state(0)
    out = rand(item)
    assert tuple(out["label"].shape) == (1, *SHAPES[2])
    with pytest.raises(ValueError, match="min_zoom <= max_zoom"):
        AnnotatedRandZoomd(min_zoom=1.2, max_zoom=1.1)


def test_random_transforms_are_deterministic_per_seed():
    item = annotated_item(2, seed=8)
    for make in (lambda: AnnotatedRandFlipd(prob=0.5), lambda: AnnotatedRandRotate90d(prob=0.7),
                 lambda: AnnotatedRandSpatialCropd(roi_size=16)):
        first, second = make(), make()
        first.set_random_state(11)
        second.set_random_state(11)
        for _ in range(3):
            a, b = first(item), second(item)
            assert torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))
            assert torch.equal(a["boxes"], b["boxes"])


def test_rand_flip_with_certainty_flips_every_axis():
    item = annotated_item(3, seed=9)
    out = AnnotatedRandFlipd(prob=1.0)(item)
    assert torch.equal(torch.as_tensor(out["image"]), torch.flip(item["image"], [1, 2, 3]))


def test_missing_annotations_stay_missing_and_input_is_not_modified():
    item = {"image": torch.rand(1, 8, 8), "label": torch.zeros(1, 8, 8, dtype=torch.int64), "boxes": None}
    before = item["image"].clone()
    out = AnnotatedRotate90d(k=1)(item)
    assert out["boxes"] is None and "points" not in out
    assert torch.equal(item["image"], before)


def test_list_annotations_from_a_datalist_are_accepted():
    item = {"image": torch.rand(1, 8, 10), "points": [[1, 2], [7, 9]], "point_classes": [3, 4]}
    out = AnnotatedFlipd(spatial_axes=(1,))(item)
    assert out["points"].tolist() == [[1, 7], [7, 0]] and out["point_classes"].tolist() == [3, 4]


def test_geometry_errors_are_clear():
    with pytest.raises(ValueError, match="differ in spatial shape"):
        AnnotatedFlipd()({"image": torch.zeros(1, 4, 4), "label": torch.zeros(1, 4, 5)})
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\)"):
        AnnotatedFlipd()({"image": torch.zeros(1, 4, 4), "boxes": torch.zeros(2, 6)})
    with pytest.raises(ValueError, match="boxes holds 1 entries but box_classes holds 2"):
        AnnotatedFlipd()({"image": torch.zeros(1, 4, 4), "boxes": [[0, 0, 1, 1]], "box_classes": [1, 2]})
    with pytest.raises(KeyError, match="found none of its dense keys"):
        AnnotatedFlipd()({"boxes": [[0, 0, 1, 1]]})
    with pytest.raises(ValueError, match="method must be one of"):
        AnnotatedSpatialPadd(8, method="reflect")
    with pytest.raises(ValueError, match="empty shape"):
        AnnotatedZoomd(zoom=0.1)({"image": torch.zeros(1, 4, 4)})


def test_boxes_and_points_follow_the_one_coordinate_policy():
    """Whole-number floats (as MONAI produces) move like integers; a fractional coordinate is an error, not rounded
    (the policy of dsp_monai.annotations.vocabulary, shared with the datalist and the loss's record)."""
    item = {"image": torch.rand(1, 6, 8), "boxes": torch.tensor([[1.0, 2.0, 3.0, 5.0]]),
            "box_classes": torch.tensor([1]), "points": torch.tensor([[0.0, 7.0]]), "point_classes": torch.tensor([2])}
    moved = AnnotatedFlipd(spatial_axes=1)(item)
    assert moved["boxes"].tolist() == [[1, 3, 3, 6]] and moved["boxes"].dtype == torch.int64
    assert moved["points"].tolist() == [[0, 0]]
    with pytest.raises(ValueError, match=r"boxes must hold whole numbers; got 2.5 at index \(0, 1\)"):
        AnnotatedFlipd(spatial_axes=1)({**item, "boxes": torch.tensor([[1.0, 2.5, 3.0, 5.0]])})
    with pytest.raises(ValueError, match=r"points must hold whole numbers; got 0.25 at index \(0, 0\)"):
        AnnotatedFlipd(spatial_axes=1)({**item, "points": torch.tensor([[0.25, 7.0]])})
