"""Weak annotations of the datastore and clicks of requests (dsp_monai.label.annotations); no MONAI Label needed."""

import pytest

from dsp_monai.label.annotations import (
    AnnotationInfoError,
    add_points,
    class_index,
    clicks_to_points,
    validate_weak_annotations,
)

CLASSES = ["background", "mito", "er"]
SHAPE = (96, 128)  # rows, columns


def check(annotations):
    return validate_weak_annotations(annotations, CLASSES, SHAPE, "/studies/a.png", "image 'a'")


def test_clicks_are_x_y_and_become_row_col():
    assert clicks_to_points([[100, 25], [0, 95], [127.0, 0, 0]], "foreground", SHAPE) == [[25, 100], [95, 0], [0, 127]]
    assert clicks_to_points(None, "foreground", SHAPE) == []
    assert clicks_to_points([], "background", SHAPE) == []


@pytest.mark.parametrize(
    "clicks, message",
    [
        ([[128, 0]], r"entry 0 \[x=128, y=0\] lies outside the image of 128 columns x 96 rows"),
        ([[0, 96]], r"entry 0 \[x=0, y=96\] lies outside"),
        ([[-1, 3]], r"entry 0 \[x=-1, y=3\] lies outside"),
        ([[3, 4, 1]], r"entry 0 \[3, 4, 1\] has slice 1, but the image is 2D"),
        ([[3.5, 4]], r"entry 0 must be \[x, y\]"),
        ([[3]], r"entry 0 must be \[x, y\]"),
        ([[True, 4]], r"entry 0 must be \[x, y\]"),
        ("3,4", r"expected a list of \[x, y\] clicks"),
    ],
)
def test_bad_clicks(clicks, message):
    with pytest.raises(AnnotationInfoError, match=r"request field 'foreground': " + message):
        clicks_to_points(clicks, "foreground", SHAPE)


def test_class_index():
    assert class_index("er", CLASSES, "label") == 2
    assert class_index(1, CLASSES, "label") == 1
    assert class_index("0", CLASSES, "label") == 0
    with pytest.raises(AnnotationInfoError, match=r"request field 'label': 'golgi' is not one of the class names"):
        class_index("golgi", CLASSES, "label")
    with pytest.raises(AnnotationInfoError, match=r"nor an index in \[0, 3\)"):
        class_index(3, CLASSES, "label")


def test_valid_annotations_come_back_as_a_copy():
    annotations = {"tags": [0, 2], "boxes": [[10, 20, 40, 128]], "box_classes": [2], "boxes_exhaustive": False,
                   "points": [[39, 127]], "point_classes": [2]}
    checked = check(annotations)
    assert checked == annotations and checked is not annotations and checked["boxes"] is not annotations["boxes"]


@pytest.mark.parametrize(
    "annotations, message",
    [
        ([1, 2], r"image 'a': expected an object with keys among \['tags'"),
        ({"label": "mask.png"}, r"image 'a', key 'label': unknown key"),
        ({"point": [[3, 4]]}, r"image 'a', key 'point': unknown key"),
        ({"tags": [3]}, r"key 'tags': entry 0 is class id 3, outside \[0, 3\)"),
        ({"tags": [1, 1]}, r"key 'tags': class ids repeat"),
        ({"points": [[3, 4]], "point_classes": [1, 2]}, r"key 'point_classes': has 2 entries but 'points' has 1"),
        ({"points": [[3, 4]]}, r"key 'point_classes': missing; 'points' needs 'point_classes'"),
        ({"boxes": [[5, 5, 5, 9]], "box_classes": [1]}, r"key 'boxes': boxes\[0\] = \[5, 5, 5, 9\] is empty on axis 0"),
        ({"boxes_exhaustive": True}, r"key 'boxes_exhaustive': given without 'boxes'"),
        ({"points": [[96, 0]], "point_classes": [1]}, r"image 'a': image 0: points\[0\] = \(96, 0\) lies outside"),
        ({"boxes": [[0, 0, 10, 129]], "box_classes": [1]}, r"boxes\[0\] = \[0, 0, 10, 129\] lies outside the image"),
        ({"tags": [0, 2], "points": [[5, 5]], "point_classes": [1]}, r"class 1 is not among the image's tags \[0, 2\]"),
    ],
)
def test_bad_annotations_name_the_field(annotations, message):
    with pytest.raises(AnnotationInfoError, match=message):
        check(annotations)


def test_add_points_appends_new_pairs_only():
    stored = {"tags": [1], "points": [[3, 4]], "point_classes": [1]}
    out = add_points(stored, [[3, 4], [3, 4], [7, 8]], [1, 2, 0])
    assert out == {"tags": [1], "points": [[3, 4], [3, 4], [7, 8]], "point_classes": [1, 2, 0]}
    assert stored == {"tags": [1], "points": [[3, 4]], "point_classes": [1]}
    assert add_points(None, [[1, 2]], [2]) == {"points": [[1, 2]], "point_classes": [2]}
    assert add_points({"tags": [0]}, [], []) == {"tags": [0]}
