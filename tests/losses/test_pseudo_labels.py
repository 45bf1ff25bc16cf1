"""Pseudo-label filtering (method.md §5) on hand-built cases with known answers."""

import math

import pytest
import torch

from dsp_monai.annotations import collate_annotations
from dsp_monai.losses import PseudoLabelFilter, filter_pseudo_labels

I = 255  # noqa: E741  (the ignore value, short so the expected maps read as pictures)


def _logits(*classes):
    """(1, C, H, W) logits from C nested lists."""
    return torch.tensor(classes, dtype=torch.float32).unsqueeze(0)


def _case():
    logits = torch.cat(
        [
            # image 0, tags {1, 2}: class 0 scores highest everywhere but is impossible
            _logits([[9, 9, 9], [9, 9, 9]], [[1, 5, 2], [0, 0, 7]], [[2, 4, 3], [1, -1, 6]]),
            # image 1, a labelled pixel (0, 0) = 0 and a point (1, 2) of class 2; class 1 scores highest everywhere
            _logits([[0, 0, 0], [0, 0, 0]], [[5, 5, 5], [5, 5, 5]], [[1, 1, 1], [1, 1, 1]]),
            # image 2, exhaustive boxes: class 0 on column 0, class 2 on row 0 columns 1-2; pixel (1, 0) padding
            _logits([[0, 8, 8], [0, 8, 8]], [[9, 9, 9], [9, 9, 9]], [[1, 0, 0], [1, 0, 0]]),
            # image 3, a non-exhaustive box of class 1 at (0, 0): class 1 is impossible elsewhere
            _logits([[0, 1, 2], [3, 4, 5]], [[9, 9, 9], [9, 9, 9]], [[5, 4, 3], [2, 1, 0]]),
        ]
    )
    label = torch.full((2, 3), I)
    label[0, 0] = 0
    valid = torch.ones(2, 3, dtype=torch.bool)
    valid[1, 0] = False
    records = [
        {"tags": torch.tensor([1, 2])},
        {"label": label, "points": torch.tensor([[1, 2]]), "point_classes": torch.tensor([2])},
        {"boxes": torch.tensor([[0, 0, 2, 1], [0, 1, 1, 3]]), "box_classes": torch.tensor([0, 2]), "valid": valid},
        {"boxes": torch.tensor([[0, 0, 1, 1]]), "box_classes": torch.tensor([1]), "boxes_exhaustive": False},
    ]
    expected = torch.tensor(
        [
            [[2, 1, 2], [2, 1, 1]],
            [[0, 1, 1], [1, 1, 2]],
            [[0, 2, 2], [I, I, I]],
            [[1, 2, 2], [0, 0, 0]],
        ]
    )
    return logits, records, expected


def test_argmax_over_possible_classes_labels_and_ignored_pixels():
    logits, records, expected = _case()
    assert torch.equal(filter_pseudo_labels(logits, records), expected)
    collated = collate_annotations(records, 3, (2, 3))
    assert torch.equal(PseudoLabelFilter()(logits, collated), expected)


def test_threshold_uses_the_softmax_over_the_possible_classes():
    logits = _logits([[0, 2, 0]], [[0, 0, 5]])  # confidences 0.5, 0.881, 0.9933
    assert torch.equal(filter_pseudo_labels(logits, [None], threshold=0.9), torch.tensor([[[I, I, 1]]]))
    assert torch.equal(filter_pseudo_labels(logits, [None], threshold=0.5), torch.tensor([[[0, 0, 1]]]))
    assert torch.equal(filter_pseudo_labels(logits, [None], threshold=0.0), torch.tensor([[[0, 0, 1]]]))
    # one possible class: confidence 1, kept at any threshold
    tagged = [{"tags": torch.tensor([1])}]
    assert torch.equal(filter_pseudo_labels(logits, tagged, threshold=1.0), torch.tensor([[[1, 1, 1]]]))
    # renormalised over {0, 1} of three classes: softmax(2, 0) = 0.881 passes 0.85, but over all three it would not
    three = torch.cat([logits, _logits([[0, 2, 0]])], dim=1)
    tags = [{"tags": torch.tensor([0, 1])}]
    assert torch.equal(filter_pseudo_labels(three, tags, threshold=0.85), torch.tensor([[[I, 0, 1]]]))


def test_three_dimensional_input_and_a_custom_ignore_value():
    logits = torch.zeros(1, 2, 2, 1, 2)
    logits[0, 1] = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])
    label = torch.full((2, 1, 2), -1)
    label[1, 0, 1] = 0
    valid = torch.ones(1, 2, 1, 2, dtype=torch.bool)
    valid[0, 0, 0, 0] = False
    records = [{"label": label, "valid": valid}]
    expected = torch.tensor([[[[-1, 1]], [[1, 0]]]])
    assert torch.equal(filter_pseudo_labels(logits, records, ignore_index=-1), expected)


def test_no_gradient_flows_and_the_input_is_untouched():
    logits, records, expected = _case()
    logits.requires_grad_()
    before = logits.detach().clone()
    pseudo = filter_pseudo_labels(logits, records)
    assert not pseudo.requires_grad and pseudo.dtype == torch.int64
    assert torch.equal(logits.detach(), before)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, math.nan, True, "0.5"])
def test_bad_thresholds_are_rejected(threshold):
    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\]; got"):
        PseudoLabelFilter(threshold=threshold)
    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\]; got"):
        filter_pseudo_labels(torch.zeros(1, 2, 3, 3), [None], threshold=threshold)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"logits must have shape \(B, C, \*spatial\); got shape \[2, 3\]"):
        filter_pseudo_labels(torch.zeros(2, 3), [None, None])
    with pytest.raises(ValueError, match=r"ignore_index must be an integer; got 'x'"):
        PseudoLabelFilter(ignore_index="x")
    collated = collate_annotations([None], 2, (3, 3))
    with pytest.raises(ValueError, match=r"the annotations do not match the prediction"):
        filter_pseudo_labels(torch.zeros(1, 3, 3, 3), collated)
