"""Every validation error of the annotation records, pinned by its message (image index and offending entry)."""

import pytest
import torch

from dsp_monai.annotations import collate_annotations

SHAPE = (4, 6)
CLASSES = 3


def _t(*values):
    return torch.tensor(values)


def _label(**pixels):
    label = torch.full(SHAPE, 255)
    for key, value in pixels.items():
        row, column = (int(v) for v in key[1:].split("_"))
        label[row, column] = value
    return label


def _padding(columns=slice(4, None)):
    valid = torch.ones(SHAPE, dtype=torch.bool)
    valid[:, columns] = False
    return valid


def _collate(record, image=1):
    """Puts ``record`` at position ``image`` of a batch of unannotated images and collates it."""
    records = [None] * image + [record] + [{}]
    return collate_annotations(records, CLASSES, SHAPE)


ERRORS = [
    # shapes and types
    ({"label": torch.zeros(4, 5, dtype=torch.int64)}, ValueError,
     r"^image 1: label must have the spatial shape \[4, 6\] \(or \[1, \*spatial\]\); got shape \[4, 5\]"),
    ({"label": torch.zeros(2, 4, 6, dtype=torch.int64)}, ValueError, r"^image 1: label must have the spatial shape"),
    ({"label": torch.zeros(SHAPE, dtype=torch.bool)}, TypeError,
     r"^image 1: label must hold integers; got dtype torch.bool"),
    ({"label": torch.full(SHAPE, 0.5)}, ValueError,
     r"^image 1: label must hold whole numbers; got 0.5 at index \(0, 0\)"),
    ({"valid": torch.ones(1, 4, 7, dtype=torch.bool)}, ValueError,
     r"^image 1: valid must have the spatial shape \[4, 6\] \(or \[1, \*spatial\]\); got shape \[1, 4, 7\]"),
    ({"valid": torch.full(SHAPE, 2)}, ValueError,
     r"^image 1: valid must be a bool mask \(or hold only 0 and 1\); got 2 at pixel \(0, 0\)"),
    ({"tags": torch.tensor([[0, 1]])}, ValueError, r"^image 1: tags must be a 1-D tensor; got shape \[1, 2\]"),
    ({"tags": "cat"}, TypeError, r"^image 1: tags must be a tensor, an array or a nested list of numbers; got str"),
    ({"boxes": torch.zeros(1, 3, dtype=torch.int64), "box_classes": _t(0)}, ValueError,
     r"^image 1: boxes must have shape \(N, 4\); got shape \[1, 3\]"),
    ({"boxes": _t([0, 0, 1, 1])}, ValueError, r"^image 1: boxes given without box_classes; give both or neither"),
    ({"box_classes": _t(0)}, ValueError, r"^image 1: box_classes given without boxes; give both or neither"),
    ({"boxes": _t([0, 0, 1, 1]), "box_classes": _t(0, 1)}, ValueError,
     r"^image 1: box_classes must have one entry per row of boxes: expected 1, got 2"),
    ({"boxes": torch.tensor([[0.0, 0.0, 1.5, 1.0]]), "box_classes": _t(0)}, ValueError,
     r"^image 1: boxes must hold whole numbers; got 1.5 at index \(0, 2\)"),
    ({"points": _t([0, 0, 0]), "point_classes": _t(0)}, ValueError,
     r"^image 1: points must have shape \(N, 2\); got shape \[1, 3\]"),
    ({"points": _t([0, 0])}, ValueError, r"^image 1: points given without point_classes; give both or neither"),
    ({"points": _t([0, 0], [1, 1]), "point_classes": _t(0)}, ValueError,
     r"^image 1: point_classes must have one entry per row of points: expected 2, got 1"),
    ({"boxes": _t([0, 0, 1, 1]), "box_classes": _t(0), "boxes_exhaustive": "yes"}, TypeError,
     r"^image 1: boxes_exhaustive must be a bool \(or None for the default True\); got 'yes'"),
    # values
    ({"label": _label(r1_2=3)}, ValueError,
     r"^image 1: label holds 3 at pixel \(1, 2\); expected class ids in \[0, 3\) or the ignore value 255"),
    ({"label": _label(r3_5=-1)}, ValueError, r"^image 1: label holds -1 at pixel \(3, 5\)"),
    ({"tags": _t(0, 3)}, ValueError, r"^image 1: tags\[1\] = 3 is not a class id; expected an integer in \[0, 3\)"),
    ({"tags": _t(-1)}, ValueError, r"^image 1: tags\[0\] = -1 is not a class id"),
    ({"boxes": _t([0, 0, 1, 1], [0, 0, 2, 2]), "box_classes": _t(0, 5)}, ValueError,
     r"^image 1: box_classes\[1\] = 5 is not a class id; expected an integer in \[0, 3\)"),
    ({"points": _t([0, 0]), "point_classes": _t(-2)}, ValueError,
     r"^image 1: point_classes\[0\] = -2 is not a class id"),
    ({"boxes": _t([0, 0, 2, 2], [1, 3, 1, 5]), "box_classes": _t(0, 1)}, ValueError,
     r"^image 1: boxes\[1\] = \[1, 3, 1, 5\] is empty on axis 0 \(start = end = 1\); expected "
     r"\[start\.\.\., end\.\.\.\]"),
    ({"boxes": _t([2, 4, 3, 1]), "box_classes": _t(0)}, ValueError,
     r"^image 1: boxes\[0\] = \[2, 4, 3, 1\] is inverted on axis 1 \(start 4 > end 1\)"),
    ({"boxes": _t([0, 0, 5, 2]), "box_classes": _t(0)}, ValueError,
     r"^image 1: boxes\[0\] = \[0, 0, 5, 2\] lies outside the image of shape \[4, 6\] on axis 0; expected .* <= size"),
    ({"boxes": _t([0, -1, 2, 2]), "box_classes": _t(0)}, ValueError,
     r"^image 1: boxes\[0\] = \[0, -1, 2, 2\] lies outside the image of shape \[4, 6\] on axis 1"),
    ({"points": _t([0, 0], [3, 6]), "point_classes": _t(0, 0)}, ValueError,
     r"^image 1: points\[1\] = \(3, 6\) lies outside the image of shape \[4, 6\]; expected 0 <= coordinate < size"),
    ({"points": _t([-1, 2]), "point_classes": _t(0)}, ValueError, r"^image 1: points\[0\] = \(-1, 2\) lies outside"),
    # contradictions
    ({"points": _t([1, 5]), "point_classes": _t(0), "valid": _padding()}, ValueError,
     r"^image 1: points\[0\] = \(1, 5\) of class 0 lies in padding \(valid is False there\)"),
    ({"tags": _t(0, 1), "points": _t([1, 1], [2, 2]), "point_classes": _t(1, 2)}, ValueError,
     r"^image 1: points\[1\] = \(2, 2\) has class 2, which is impossible there: class 2 is not among the image's "
     r"tags \[0, 1\]"),
    ({"label": _label(r2_3=1), "points": _t([2, 3]), "point_classes": _t(0)}, ValueError,
     r"^image 1: points\[0\] = \(2, 3\) has class 0, which is impossible there: the label there is 1"),
    ({"boxes": _t([0, 0, 2, 2]), "box_classes": _t(1), "boxes_exhaustive": False, "points": _t([3, 3]),
      "point_classes": _t(1)}, ValueError,
     r"^image 1: points\[0\] = \(3, 3\) has class 1, which is impossible there: it lies outside every box of class 1"),
    ({"boxes": _t([0, 0, 2, 2]), "box_classes": _t(1), "points": _t([3, 3]), "point_classes": _t(2)}, ValueError,
     r"^image 1: points\[0\] = \(3, 3\) has class 2, .*: the image's boxes are exhaustive and none has class 2"),
    ({"points": _t([1, 1], [0, 0], [1, 1]), "point_classes": _t(0, 0, 2)}, ValueError,
     r"^image 1: points\[\d\] = \(1, 1\) has class \d, which is impossible there: points\[\d\] at the same pixel has "
     r"class \d"),
    ({"tags": _t(0), "label": _label(r0_4=2)}, ValueError,
     r"^image 1: label 2 at pixel \(0, 4\) contradicts the other annotations: class 2 is not among the image's "
     r"tags \[0\]"),
    ({"boxes": _t([0, 0, 2, 2]), "box_classes": _t(1), "boxes_exhaustive": False, "label": _label(r3_0=1)},
     ValueError, r"^image 1: label 1 at pixel \(3, 0\) contradicts the other annotations: it lies outside every box"),
    ({"tags": _t(0, 2), "boxes": _t([0, 0, 2, 2]), "box_classes": _t(1), "boxes_exhaustive": False}, ValueError,
     r"^image 1: boxes\[0\] = \[0, 0, 2, 2\] of class 1 holds no pixel where class 1 is possible: class 1 is not "
     r"among the image's tags \[0, 2\]"),
    ({"boxes": _t([0, 0, 1, 2]), "box_classes": _t(1), "boxes_exhaustive": False, "label": _label(r0_0=0, r0_1=2)},
     ValueError, r"^image 1: boxes\[0\] = \[0, 0, 1, 2\] of class 1 holds no pixel where class 1 is possible: every "
     r"valid pixel inside it is labelled with another class"),
    ({"tags": _t(1, 2), "boxes": _t([0, 0, 2, 2]), "box_classes": _t(1)}, ValueError,
     r"^image 1: tags\[1\] = 2 names a class that is possible nowhere in the image: the image's boxes are "
     r"exhaustive and none has class 2"),
    ({"tags": _t(0, 2), "label": torch.zeros(SHAPE, dtype=torch.int64)}, ValueError,
     r"^image 1: tags\[1\] = 2 names a class that is possible nowhere in the image: every valid pixel is "
     r"labelled with another class"),
    ({"boxes": _t([0, 0, 2, 6], [1, 4, 3, 6]), "box_classes": _t(1, 2), "valid": _padding()}, ValueError,
     r"^image 1: boxes\[1\] = \[1, 4, 3, 6\] lies entirely in padding \(valid is False on every pixel inside it\)"),
]


@pytest.mark.parametrize("record, error, match", ERRORS)
def test_invalid_records_are_rejected_with_a_message_naming_image_and_entry(record, error, match):
    with pytest.raises(error, match=match):
        _collate(record)


def test_the_image_index_is_that_of_the_offending_image():
    good = {"tags": _t(0)}
    with pytest.raises(ValueError, match=r"^image 3: tags\[0\] = 7 is not a class id"):
        collate_annotations([good, good, None, {"tags": _t(7)}], CLASSES, SHAPE)


def test_three_dimensional_boxes_and_points_are_checked_per_axis():
    with pytest.raises(ValueError, match=r"^image 0: boxes\[0\] = \[0, 2, 0, 2, 1, 3\] is inverted on axis 1"):
        collate_annotations([{"boxes": _t([0, 2, 0, 2, 1, 3]), "box_classes": _t(0)}], 2, (2, 3, 4))
    outside = r"^image 0: points\[0\] = \(1, 2, 4\) lies outside the image of shape \[2, 3, 4\]"
    with pytest.raises(ValueError, match=outside):
        collate_annotations([{"points": _t([1, 2, 4]), "point_classes": _t(0)}], 2, (2, 3, 4))


@pytest.mark.parametrize(
    "annotations, error, match",
    [
        ([], ValueError, r"annotations describe no image; expected at least one record"),
        ("records", TypeError, r"annotations must be a list of per-image dicts or a batch dict .*; got str"),
        ([None, 3], TypeError, r"^image 1: an annotation record must be a dict \(or None\); got int"),
        ({"tags": [None, None], "label": torch.zeros(3, 1, 4, 6)}, ValueError,
         r"the batch dict's entries disagree on the batch size: \{'label': 3, 'tags': 2\}"),
        ({"filename": ["a"]}, ValueError, r"the batch dict holds none of the annotation keys"),
        ({"tags": 5}, TypeError, r"batch key 'tags' must be a batch-first tensor or a per-image list; got int"),
    ],
)
def test_malformed_batches_are_rejected(annotations, error, match):
    with pytest.raises(error, match=match):
        collate_annotations(annotations, CLASSES, SHAPE)


@pytest.mark.parametrize(
    "num_classes, spatial_shape, ignore_index, match",
    [
        (0, SHAPE, 255, r"num_classes must be an integer in \[1, 63\]; got 0"),
        (64, SHAPE, 255, r"num_classes must be an integer in \[1, 63\]; got 64"),
        (3, (4, 0), 255, r"spatial_shape must hold at least one positive size; got \[4, 0\]"),
        (3, SHAPE, 2, r"ignore_index must be an integer outside the class ids \[0, 3\); got 2"),
        (3, SHAPE, 2.0, r"ignore_index must be an integer outside the class ids \[0, 3\); got 2.0"),
    ],
)
def test_bad_collation_arguments_are_rejected(num_classes, spatial_shape, ignore_index, match):
    with pytest.raises(ValueError, match=match):
        collate_annotations([None], num_classes, spatial_shape, ignore_index)
