"""Online pseudo-labels (pseudo_label, pseudo_label_plf, fixmatch): the labels, their filtering and threshold, and the
cross-entropy, against hand-computed labels and a float64 loop reference."""

import logging
import math
from types import SimpleNamespace

import pytest
import torch

from dsp_monai.annotations import collate_annotations
from dsp_monai.losses import OnlinePseudoLabelCrossEntropy

I = 255  # noqa: E741  (the ignore value)


def _case():
    """3 images of 1 x 3 pixels, 3 classes: a masked image, an image tagged {1, 2}, an unannotated image whose
    pixel 2 is padding."""
    source = torch.tensor(
        [
            [[[5.0, 0.0, 0.0]], [[0.0, 5.0, 0.0]], [[0.0, 0.0, 5.0]]],
            [[[9.0, 0.0, 3.0]], [[1.0, 5.0, 2.0]], [[2.0, 4.0, 8.0]]],
            [[[0.0, 4.0, 9.0]], [[0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]]],
        ]
    )
    label = torch.tensor([[0, I, I]])
    valid = torch.tensor([[True, True, False]])
    records = [{"label": label}, {"tags": torch.tensor([1, 2])}, {"valid": valid}]
    annotations = collate_annotations(records, 3, (1, 3))
    labels = annotations.label.clone()
    return source, labels, annotations


def _confidence(scores, classes):
    """Largest softmax probability over ``classes`` (a loop, float64)."""
    exps = [math.exp(float(scores[c])) for c in classes]
    return max(exps) / sum(exps)


def test_unfiltered_labels_are_the_argmax_over_every_class_on_images_without_masks():
    source, labels, annotations = _case()
    term = OnlinePseudoLabelCrossEntropy(filtered=False)
    expected = torch.tensor([[[I, I, I]], [[0, 1, 2]], [[2, 0, I]]])
    assert torch.equal(term.pseudo_labels(source, labels, annotations), expected)


def test_filtered_labels_keep_only_the_tagged_classes():
    source, labels, annotations = _case()
    term = OnlinePseudoLabelCrossEntropy(filtered=True)
    # image 1, pixel 0: class 0 scores 9 but the tags are {1, 2}; scores of 1 and 2 there are 1 and 2
    expected = torch.tensor([[[I, I, I]], [[2, 1, 2]], [[2, 0, I]]])
    assert torch.equal(term.pseudo_labels(source, labels, annotations), expected)


@pytest.mark.parametrize("filtered", [False, True])
def test_threshold_drops_pixels_below_the_confidence(filtered):
    source, labels, annotations = _case()
    threshold = 0.9
    term = OnlinePseudoLabelCrossEntropy(filtered=filtered, threshold=threshold)
    got = term.pseudo_labels(source, labels, annotations)
    classes = {1: [1, 2] if filtered else [0, 1, 2], 2: [0, 1, 2]}
    for image in (1, 2):
        for pixel in range(3):
            if image == 2 and pixel == 2:
                assert got[image, 0, pixel] == I
                continue
            scores = source[image, :, 0, pixel].double()
            keep = _confidence(scores, classes[image]) >= threshold
            best = max(classes[image], key=lambda c: float(scores[c]))
            assert int(got[image, 0, pixel]) == (best if keep else I), (image, pixel)
    # hand check of two of them: image 1 pixel 1 (scores 0, 5, 4) and, filtered, pixel 0 (1, 2 over {1, 2})
    assert got[1, 0, 1] == I and (got[1, 0, 0] == I) == filtered


def _loss_reference(target, pseudo):
    total, count = 0.0, 0
    for b in range(target.shape[0]):
        for x in range(target.shape[3]):
            k = int(pseudo[b, 0, x])
            if k == I:
                continue
            scores = [float(target[b, c, 0, x]) for c in range(target.shape[1])]
            log_z = math.log(sum(math.exp(s) for s in scores))
            total += log_z - scores[k]
            count += 1
    return total / count


@pytest.mark.parametrize("target_view", ["weak", "strong"])
def test_cross_entropy_of_the_target_view_against_the_source_pseudo_labels(target_view):
    source, labels, annotations = _case()
    strong = torch.randn(source.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    outputs = {"weak": source, "strong": strong.float()}
    context = SimpleNamespace(logits=lambda view: outputs[view], labels=labels, annotations=annotations)
    term = OnlinePseudoLabelCrossEntropy(filtered=False, source="weak", target=target_view)
    assert term.views == (("weak",) if target_view == "weak" else ("weak", "strong"))
    pseudo = torch.tensor([[[I, I, I]], [[0, 1, 2]], [[2, 0, I]]])
    expected = _loss_reference(source.double() if target_view == "weak" else strong, pseudo)
    assert float(term(context)) == pytest.approx(expected, rel=1e-5)


def test_no_pseudo_label_gives_a_constant_zero():
    source, labels, annotations = _case()
    only_masked = collate_annotations([{"label": torch.tensor([[0, I, I]])}], 3, (1, 3))
    context = SimpleNamespace(logits=lambda view: source[:1], labels=only_masked.label, annotations=only_masked)
    value = OnlinePseudoLabelCrossEntropy()(context)
    assert float(value) == 0.0 and not value.requires_grad


def test_unfiltered_term_logs_once_that_it_ignores_tags(caplog):
    source, labels, annotations = _case()
    term = OnlinePseudoLabelCrossEntropy(filtered=False)
    with caplog.at_level(logging.INFO, logger="dsp_monai.losses.online_pseudo_label"):
        term.pseudo_labels(source, labels, annotations)
        term.pseudo_labels(source, labels, annotations)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["OnlinePseudoLabelCrossEntropy does not learn from tags: it ignores them"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="threshold must be a number in"):
        OnlinePseudoLabelCrossEntropy(threshold=1.5)
    with pytest.raises(ValueError, match="target must be 'weak' or 'strong'; got 'teacher'"):
        OnlinePseudoLabelCrossEntropy(target="teacher")
