"""Weak labels derived from masks: tags, exclusive boxes, medoid points (2D and 3D), and the per-item modes."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from dsp_monai.annotations.from_masks import medoid_index
from dsp_monai.transforms.weak_labels import DeriveWeakLabels, DeriveWeakLabelsd


def brute_force_costs(coords):
    coords = np.asarray(coords, dtype=np.float64)
    return cdist(coords, coords).sum(1)


def c_shape(size=40, thickness=7):
    mask = np.zeros((size, size), dtype=bool)
    mask[5 : size - 5, 5 : 5 + thickness] = True
    mask[5 : 5 + thickness, 5 : size - 5] = True
    mask[size - 5 - thickness : size - 5, 5 : size - 5] = True
    return mask


def test_medoid_of_c_shape_is_inside_and_equals_brute_force():
    mask = c_shape()
    mask[30:35, 30:35] = False  # break the mirror symmetry so the medoid is unique
    coords = np.argwhere(mask)
    index = medoid_index(coords)
    costs = brute_force_costs(coords)
    assert index == int(np.argmin(costs))
    assert mask[tuple(coords[index])]
    centroid = np.rint(coords.mean(0)).astype(int)
    assert not mask[tuple(centroid)], "the test shape must have its centroid outside, else it proves nothing"


def test_medoid_ties_resolve_to_lowest_index():
    coords = np.argwhere(c_shape())  # mirror-symmetric: two tied medoids
    costs = brute_force_costs(coords)
    tied = np.flatnonzero(costs <= costs.min() * (1 + 1e-9))
    assert len(tied) == 2
    assert medoid_index(coords) == tied[0]


@pytest.mark.parametrize("seed", range(20))
def test_medoid_matches_brute_force_on_random_sets(seed):
    rng = np.random.default_rng(seed)
    dims = 2 + seed % 2
    coords = np.unique(rng.integers(0, 14, size=(rng.integers(70, 300), dims)), axis=0)
    costs = brute_force_costs(coords)
    expected = np.flatnonzero(costs <= costs.min() * (1 + 1e-9))[0]
    assert medoid_index(coords) == expected
    assert medoid_index(coords, brute_force_below=0) == expected


def test_medoid_with_spacing_matches_brute_force():
    rng = np.random.default_rng(3)
    coords = np.unique(rng.integers(0, 12, size=(200, 3)), axis=0)
    spacing = (2.5, 1.0, 1.0)
    costs = brute_force_costs(coords * np.array(spacing))
    assert medoid_index(coords, spacing=spacing) == np.flatnonzero(costs <= costs.min() * (1 + 1e-9))[0]


def test_medoid_rejects_bad_input():
    with pytest.raises(ValueError, match=r"non-empty \(n, d\)"):
        medoid_index(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="spacing must hold 2 positive values"):
        medoid_index([[0, 0], [1, 1]], spacing=(1.0, 0.0))


def test_boxes_are_exclusive_and_exact_2d():
    label = torch.zeros(1, 10, 12, dtype=torch.int64)
    label[0, 2:5, 3:7] = 1  # rows 2..4, cols 3..6
    label[0, 7, 9] = 2  # one pixel
    label[0, 8:10, 0:2] = 1  # second component of class 1
    out = DeriveWeakLabels()(label)
    boxes = {(int(c), tuple(b.tolist())) for c, b in zip(out["box_classes"], out["boxes"])}
    assert boxes == {(0, (0, 0, 10, 12)), (1, (2, 3, 5, 7)), (1, (8, 0, 10, 2)), (2, (7, 9, 8, 10))}
    assert out["boxes"].dtype == torch.int64 and out["boxes"].shape == (4, 4)
    assert out["tags"].tolist() == [0, 1, 2]
    assert out["boxes_exhaustive"] is True
    points = {(int(c), tuple(p.tolist())) for c, p in zip(out["point_classes"], out["points"])}
    assert (2, (7, 9)) in points
    for cls, point in points:
        assert label[0][point] == cls


def test_points_are_medoids_of_their_components():
    label = torch.zeros(1, 40, 40, dtype=torch.int64)
    mask = c_shape()
    mask[30:35, 30:35] = False
    label[0][torch.as_tensor(mask)] = 3
    out = DeriveWeakLabels(types=("points",))(label)
    assert set(out) == {"points", "point_classes"}
    point = out["points"][out["point_classes"] == 3][0].numpy()
    coords = np.argwhere(mask)
    assert tuple(point) == tuple(coords[np.argmin(brute_force_costs(coords))])


def test_connectivity_controls_components():
    label = torch.zeros(1, 4, 4, dtype=torch.int64)
    label[0, 0, 0] = label[0, 1, 1] = 1  # diagonal neighbours
    full = DeriveWeakLabels(types=("boxes",))(label)
    faces = DeriveWeakLabels(types=("boxes",), connectivity=1)(label)
    assert (full["box_classes"] == 1).sum() == 1
    assert (faces["box_classes"] == 1).sum() == 2
    with pytest.raises(ValueError, match=r"connectivity must be in 1\.\.2"):
        DeriveWeakLabels(connectivity=3)(label)


def test_ignore_and_excluded_classes():
    label = torch.zeros(1, 6, 6, dtype=torch.uint8)
    label[0, 1:3, 1:3] = 1
    label[0, 4:, 4:] = 255
    out = DeriveWeakLabels(exclude_classes=(0,))(label)
    assert out["tags"].tolist() == [0, 1]
    assert out["box_classes"].tolist() == [1] and out["point_classes"].tolist() == [1]
    assert out["boxes_exhaustive"] is False


def test_3d_boxes_and_points():
    label = torch.full((1, 6, 8, 7), 0, dtype=torch.int64)
    label[0, 1:4, 2:6, 3:5] = 2
    out = DeriveWeakLabels(types=("boxes", "points"))(label)
    index = out["box_classes"].tolist().index(2)
    assert out["boxes"][index].tolist() == [1, 2, 3, 4, 6, 5]
    point = out["points"][out["point_classes"] == 2][0]
    coords = np.argwhere(label[0].numpy() == 2)
    costs = brute_force_costs(coords)
    assert tuple(point.tolist()) == tuple(coords[np.flatnonzero(costs <= costs.min() * (1 + 1e-9))[0]])


def test_all_unknown_mask_gives_empty_annotations():
    out = DeriveWeakLabels()(torch.full((1, 5, 5), 255))
    assert out["tags"].shape == (0,) and out["boxes"].shape == (0, 4) and out["points"].shape == (0, 2)
    assert out["boxes_exhaustive"] is False


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"unknown type\(s\) \['scribbles'\]"):
        DeriveWeakLabels(types=("tags", "scribbles"))
    with pytest.raises(ValueError, match=r"channel-first with one channel"):
        DeriveWeakLabels()(torch.zeros(2, 5, 5))
    with pytest.raises(ValueError, match="integer class ids"):
        DeriveWeakLabels()(torch.full((1, 3, 3), 0.5))


def item_with_unknown():
    label = torch.zeros(1, 8, 8, dtype=torch.int64)
    label[0, 1:3, 1:4] = 1
    label[0, 6:, :] = 255
    return {"image": torch.rand(1, 8, 8), "label": label}


@pytest.mark.parametrize("kind", ["mask", "tags", "boxes", "points", "none"])
def test_annotation_type_keeps_exactly_that_type(kind):
    item = {**item_with_unknown(), "annotation_type": kind}
    out = DeriveWeakLabelsd("label")(item)
    for name, keys in {"tags": ["tags"], "boxes": ["boxes", "box_classes", "boxes_exhaustive"],
                       "points": ["points", "point_classes"]}.items():
        for key in keys:
            assert (out[key] is not None) == (name == kind), (kind, key)
    if kind == "mask":
        assert torch.equal(out["label"], item["label"])
    else:
        assert bool((out["label"] == 255).all()) and out["label"].dtype == item["label"].dtype
    assert torch.equal(item["label"], item_with_unknown()["label"]), "the input item must not be modified"
    if kind in ("tags", "boxes"):
        assert out["valid"].shape == (1, 8, 8) and not out["valid"][0, 6:].any() and out["valid"][0, :6].all()
        if kind == "boxes":
            assert out["boxes_exhaustive"] is True  # exhaustive on the valid region
    else:
        assert "valid" not in out


def test_unknown_policy_keep_and_full_mode():
    out = DeriveWeakLabelsd("label", annotation_type_key=None, unknown_policy="keep")(item_with_unknown())
    assert out["tags"].tolist() == [0, 1] and out["boxes_exhaustive"] is False and "valid" not in out
    assert not bool((out["label"] == 255).all()), "full mode keeps the mask"


def test_given_weak_annotations_are_kept():
    item = {**item_with_unknown(), "annotation_type": "boxes", "boxes": [[0, 0, 2, 2]], "box_classes": [4]}
    out = DeriveWeakLabelsd("label")(item)
    assert out["boxes"] == [[0, 0, 2, 2]] and out["box_classes"] == [4]


def test_item_errors_are_clear():
    derive = DeriveWeakLabelsd("label")
    with pytest.raises(KeyError, match="no 'annotation_type' key"):
        derive(item_with_unknown())
    with pytest.raises(ValueError, match="must be one of"):
        derive({**item_with_unknown(), "annotation_type": "scribble"})
    with pytest.raises(KeyError, match=r"cannot derive \['points'\]"):
        derive({"image": torch.zeros(1, 4, 4), "label": None, "annotation_type": "points"})
    with pytest.raises(ValueError, match="unknown_policy must be one of"):
        DeriveWeakLabelsd("label", unknown_policy="ignore")


def test_padding_does_not_make_boxes_non_exhaustive():
    from dsp_monai.transforms.geometry import AddValidMaskd, AnnotatedSpatialPadd

    label = torch.zeros(1, 8, 8, dtype=torch.int64)
    label[0, 2:4, 2:5] = 1
    padded = AnnotatedSpatialPadd(12)(AddValidMaskd("image")({"image": torch.rand(1, 8, 8), "label": label}))
    kept = DeriveWeakLabelsd("label", annotation_type_key=None, unknown_policy="keep")(padded)
    assert kept["boxes_exhaustive"] is True
    assert box_rows(kept) == [(0, 2, 2, 10, 10), (1, 4, 4, 6, 7)]
    boxes_only = DeriveWeakLabelsd("label")({**padded, "annotation_type": "boxes"})
    assert boxes_only["boxes_exhaustive"] is True and torch.equal(boxes_only["valid"], padded["valid"])
    no_valid = DeriveWeakLabelsd("label", annotation_type_key=None, unknown_policy="keep")(
        {k: v for k, v in padded.items() if k != "valid"})
    assert no_valid["boxes_exhaustive"] is False, "without valid, padding counts as unknown"


def box_rows(out):
    return sorted((int(c), *map(int, b)) for c, b in zip(out["box_classes"], out["boxes"]))
