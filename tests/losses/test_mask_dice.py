"""The masks' term with class balancing (``MaskCrossEntropy(loss="ce_dice")``, the bundle's ``supervised_loss``):
its Dice and cross-entropy parts against an independent float64 computation that leaves the ignored pixels out."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dsp_monai.losses import SUPERVISED_LOSSES, MaskCrossEntropy

IGNORE = 255


def reference(logits: np.ndarray, labels: np.ndarray, smooth: float) -> tuple[float, float]:
    """(cross-entropy, Dice loss) in float64, by the definitions: softmax over classes; over the labelled pixels of
    the whole batch, CE = mean of -log p_label, Dice_c = (2 sum p_c [y = c] + s) / (sum p_c + sum [y = c] + s),
    Dice loss = 1 - mean over all classes."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    num_classes = logits.shape[1]
    batch, height, width = labels.shape
    losses, intersection = [], np.zeros(num_classes)
    predicted, present = np.zeros(num_classes), np.zeros(num_classes)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                label = labels[b, i, j]
                if label == IGNORE:
                    continue
                losses.append(-np.log(probs[b, label, i, j]))
                for c in range(num_classes):
                    predicted[c] += probs[b, c, i, j]
                    present[c] += label == c
                    intersection[c] += probs[b, c, i, j] * (label == c)
    dice = (2.0 * intersection + smooth) / (predicted + present + smooth)
    return float(np.mean(losses)), float(1.0 - dice.mean())


def _context(logits, labels):
    return SimpleNamespace(logits=lambda view: logits, labels=labels)


def _case(seed: int, shape=(3, 4, 7, 6), ignored=0.4):
    generator = torch.Generator().manual_seed(seed)
    batch, classes, height, width = shape
    logits = 3.0 * torch.randn(shape, generator=generator)
    labels = torch.randint(0, classes - 1, (batch, height, width), generator=generator)  # the last class absent
    labels[torch.rand(labels.shape, generator=generator) < ignored] = IGNORE
    return logits, labels


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("smooth", [1e-5, 0.5])
def test_ce_dice_parts_match_the_float64_definition_without_the_ignored_pixels(seed, smooth):
    logits, labels = _case(seed)
    expected_ce, expected_dice = reference(logits.numpy(), labels.numpy(), smooth)
    parts = MaskCrossEntropy(loss="ce_dice", dice_smooth=smooth)(_context(logits, labels))
    assert float(parts["ce"]) == pytest.approx(expected_ce, rel=1e-5, abs=1e-6)
    assert float(parts["dice"]) == pytest.approx(expected_dice, rel=1e-5, abs=1e-6)
    assert float(parts["total"]) == pytest.approx(expected_ce + expected_dice, rel=1e-5, abs=1e-6)


def test_the_ignored_pixels_change_nothing_and_get_no_gradient():
    logits, labels = _case(7)
    ignored = (labels == IGNORE).unsqueeze(1).expand_as(logits)
    assert ignored.any()
    term = MaskCrossEntropy(loss="ce_dice")
    changed = torch.where(ignored, 50.0 * torch.randn_like(logits), logits).requires_grad_(True)
    total = term(_context(changed, labels))["total"]
    assert float(total.detach()) == pytest.approx(float(term(_context(logits, labels))["total"]), rel=1e-6)
    total.backward()
    assert torch.count_nonzero(changed.grad[ignored]) == 0
    assert torch.count_nonzero(changed.grad[~ignored]) > 0


def test_ce_alone_is_the_default_and_equals_the_ce_part():
    logits, labels = _case(3)
    plain = MaskCrossEntropy()(_context(logits, labels))
    assert isinstance(plain, torch.Tensor)
    assert float(plain) == float(MaskCrossEntropy(loss="ce_dice")(_context(logits, labels))["ce"])


def test_a_batch_without_labelled_pixels_gives_a_constant_zero():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    value = MaskCrossEntropy(loss="ce_dice")(_context(logits, torch.full((2, 4, 4), IGNORE)))
    assert float(value) == 0.0 and not value.requires_grad


def test_unknown_loss_and_negative_smoothing_are_refused_by_name():
    assert SUPERVISED_LOSSES == ("ce", "ce_dice")
    with pytest.raises(ValueError, match=r"MaskCrossEntropy: loss \(the bundle's supervised_loss\) must be one of "
                                         r"\['ce', 'ce_dice'\]; got 'dice'"):
        MaskCrossEntropy(loss="dice")
    with pytest.raises(ValueError, match="MaskCrossEntropy: dice_smooth must be >= 0; got -1"):
        MaskCrossEntropy(loss="ce_dice", dice_smooth=-1)
