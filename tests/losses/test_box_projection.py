"""Box projection (BoxInst): the projection Dice and the pairwise term with its neighbour weights, against float64
loop references written from the definitions, and a hand-counted case of the weights."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from dsp_monai.annotations import collate_annotations
from dsp_monai.losses import BoxPairwiseLoss, BoxProjectionLoss, box_masks, neighbour_weights

I = 255  # noqa: E741


def _softmax(scores):
    exps = [math.exp(s) for s in scores]
    return [e / sum(exps) for e in exps]


def _case(seed=0):
    """2 images of 4 x 5 pixels, 3 classes. Image 0: two boxes of class 1 and one of class 2; image 1: a box of class
    0, its last column padding."""
    valid = torch.ones(4, 5, dtype=torch.bool)
    valid[:, 4] = False
    records = [
        {"boxes": torch.tensor([[0, 1, 2, 3], [3, 3, 4, 5], [1, 0, 4, 2]]), "box_classes": torch.tensor([1, 1, 2])},
        {"boxes": torch.tensor([[1, 1, 3, 5]]), "box_classes": torch.tensor([0]), "valid": valid},
    ]
    annotations = collate_annotations(records, 3, (4, 5))
    logits = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return logits, annotations


def _boxes_reference():
    """(image, class) -> the set of box pixels, from the records above (ends exclusive, valid pixels only)."""
    boxes = {(0, 1): [(0, 1, 2, 3), (3, 3, 4, 5)], (0, 2): [(1, 0, 4, 2)], (1, 0): [(1, 1, 3, 4)]}
    return {key: {(r, c) for (r0, c0, r1, c1) in value for r in range(r0, r1) for c in range(c0, c1)}
            for key, value in boxes.items()}


def test_box_masks_are_the_union_of_each_class_boxes():
    _, annotations = _case()
    masks = box_masks(annotations)
    for (b, c), pixels in _boxes_reference().items():
        expected = torch.zeros(4, 5, dtype=torch.bool)
        for r, col in pixels:
            expected[r, col] = True
        assert torch.equal(masks[b, c], expected), (b, c)
    assert int(masks.sum()) == sum(len(p) for p in _boxes_reference().values())


def test_projection_dice_against_a_loop_reference():
    logits, annotations = _case()
    valid = [[[True] * 5] * 4, [[True] * 4 + [False]] * 4]
    eps = 1e-5
    losses = []
    for (b, c), pixels in _boxes_reference().items():
        prob = [[_softmax([float(logits[b, k, r, col]) for k in range(3)])[c] if valid[b][r][col] else 0.0
                 for col in range(5)] for r in range(4)]
        mask = [[1.0 if (r, col) in pixels else 0.0 for col in range(5)] for r in range(4)]
        loss = 0.0
        for axis in (0, 1):
            n = 4 if axis == 0 else 5
            line = (lambda t, i: max(t[i])) if axis == 0 else (lambda t, i: max(row[i] for row in t))
            p = [line(prob, i) for i in range(n)]
            m = [line(mask, i) for i in range(n)]
            dice = 2 * sum(x * y for x, y in zip(p, m)) / (sum(x * x for x in p) + sum(y * y for y in m) + eps)
            loss += 1 - dice
        losses.append(loss)
    context = SimpleNamespace(logits=lambda view: logits.float(), annotations=annotations)
    assert float(BoxProjectionLoss(eps=eps)(context)) == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_projection_is_zero_when_the_prediction_is_the_box():
    annotations = collate_annotations([{"boxes": torch.tensor([[1, 1, 3, 4]]), "box_classes": torch.tensor([1])}],
                                      2, (4, 5))
    inside = box_masks(annotations)[0, 1]
    logits = torch.where(inside, 40.0, -40.0).view(1, 1, 4, 5)
    logits = torch.cat([-logits, logits], dim=1)
    context = SimpleNamespace(logits=lambda view: logits, annotations=annotations)
    assert float(BoxProjectionLoss(eps=0.0)(context)) == pytest.approx(0.0, abs=1e-6)


def test_neighbour_weights_hand_counted():
    # a 1 x 1 x 5 x 5 image, a box covering pixel (2, 2) only, dilation 2: its 8 neighbours at distance 2 are all
    # inside; intensity 0 everywhere except (0, 0) = 1, which fails the similarity exp(-50) < 0.3
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 0, 0] = 1.0
    inside = torch.zeros(1, 5, 5, dtype=torch.bool)
    inside[0, 2, 2] = True
    valid = torch.ones(1, 5, 5, dtype=torch.bool)
    weights = neighbour_weights(image, inside, valid, dilation=2, similarity_scale=50.0, threshold=0.3)
    assert weights.shape == (8, 1, 5, 5)
    assert weights.sum() == 7 and weights[0, 0, 2, 2] == 0  # offset (-2, -2) reaches (0, 0)
    assert torch.equal(weights.sum(0)[0].nonzero(), torch.tensor([[2, 2]]))
    valid[0, 4, 4] = False  # the neighbour (4, 4) of offset (2, 2) becomes padding
    assert neighbour_weights(image, inside, valid, 2, 50.0, 0.3).sum() == 6


def test_pairwise_loss_against_a_loop_reference():
    logits, annotations = _case(seed=3)
    image = torch.rand(2, 1, 4, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    image[0, 0, 1:3, :] = 0.5  # some similar pairs for sure
    scale, threshold, dilation = 5.0, 0.3, 1
    inside = box_masks(annotations).any(1)
    valid = annotations.valid
    total, count = 0.0, 0
    for b in range(2):
        for r, c in itertools.product(range(4), range(5)):
            if not (inside[b, r, c] and valid[b, r, c]):
                continue
            for dr, dc in itertools.product((-1, 0, 1), repeat=2):
                rr, cc = r + dr * dilation, c + dc * dilation
                if (dr, dc) == (0, 0) or not (0 <= rr < 4 and 0 <= cc < 5) or not valid[b, rr, cc]:
                    continue
                if math.exp(-scale * abs(float(image[b, 0, r, c] - image[b, 0, rr, cc]))) < threshold:
                    continue
                p = _softmax([float(logits[b, k, r, c]) for k in range(3)])
                q = _softmax([float(logits[b, k, rr, cc]) for k in range(3)])
                total -= math.log(sum(x * y for x, y in zip(p, q)))
                count += 1
    assert count > 0
    context = SimpleNamespace(logits=lambda view: logits.float(), annotations=annotations,
                              views={"weak": image.float()})
    term = BoxPairwiseLoss(dilation=dilation, similarity_scale=scale, threshold=threshold)
    assert float(term(context)) == pytest.approx(total / count, rel=1e-5)


def test_no_box_gives_a_constant_zero_and_bad_arguments_are_named():
    annotations = collate_annotations([{"tags": torch.tensor([1])}], 2, (4, 5))
    logits = torch.zeros(1, 2, 4, 5, requires_grad=True)
    context = SimpleNamespace(logits=lambda view: logits, annotations=annotations, views={"weak": torch.zeros(1, 1, 4, 5)})
    for term in (BoxProjectionLoss(), BoxPairwiseLoss()):
        value = term(context)
        assert float(value) == 0.0 and not value.requires_grad
    with pytest.raises(ValueError, match="threshold must be a number in \\[0.0, 1.0\\]; got 2"):
        BoxPairwiseLoss(threshold=2)
    with pytest.raises(ValueError, match="dilation must be an integer >= 1; got 0"):
        BoxPairwiseLoss(dilation=0)
