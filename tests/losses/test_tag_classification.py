"""The classification branch: its tag targets (from masks and tags), its BCE against a float64 loop reference, and
its network (branch sizes, export as a plain BasicUNet)."""

import logging
import math
from types import SimpleNamespace

import pytest
import torch
from monai.networks.nets import BasicUNet

from dsp_monai.annotations import collate_annotations
from dsp_monai.losses import TagBinaryCrossEntropy, tag_targets
from dsp_monai.networks import ClassificationBranchUNet

I = 255  # noqa: E741


def _case():
    """4 images of 2 x 2 pixels, 4 classes: a partial mask {0, 2}, tags {1, 3}, a box of class 2 (no tags), nothing."""
    records = [
        {"label": torch.tensor([[0, 2], [I, 0]])},
        {"tags": torch.tensor([3, 1])},
        {"boxes": torch.tensor([[0, 0, 1, 1]]), "box_classes": torch.tensor([2])},
        {},
    ]
    annotations = collate_annotations(records, 4, (2, 2))
    return annotations.label.clone(), annotations


def test_targets_are_the_mask_classes_and_the_tags():
    labels, annotations = _case()
    targets, known = tag_targets(labels, annotations, 4)
    assert targets.tolist() == [[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert known.tolist() == [True, True, False, False]


def test_bce_against_a_loop_reference_and_boxes_logged_once(caplog):
    labels, annotations = _case()
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    context = SimpleNamespace(outputs={"weak": {"tag_logits": logits.float()}}, labels=labels,
                              annotations=annotations)
    term = TagBinaryCrossEntropy()
    with caplog.at_level(logging.INFO, logger="dsp_monai.losses.online_pseudo_label"):
        value = term(context)
        term(context)
    targets = [[1, 0, 1, 0], [0, 1, 0, 1]]
    total = 0.0
    for b in range(2):
        for c in range(4):
            p = 1.0 / (1.0 + math.exp(-float(logits[b, c])))
            total -= targets[b][c] * math.log(p) + (1 - targets[b][c]) * math.log(1 - p)
    assert float(value) == pytest.approx(total / 8, rel=1e-5)
    assert [r.getMessage() for r in caplog.records] == ["TagBinaryCrossEntropy does not learn from boxes: it ignores them"]


def test_no_target_gives_a_constant_zero():
    annotations = collate_annotations([{}], 4, (2, 2))
    context = SimpleNamespace(outputs={"weak": {"tag_logits": torch.zeros(1, 4, requires_grad=True)}},
                              labels=annotations.label, annotations=annotations)
    value = TagBinaryCrossEntropy()(context)
    assert float(value) == 0.0 and not value.requires_grad


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_network_branch_reaches_the_branch_size_and_exports_a_basic_unet(spatial_dims):
    net = ClassificationBranchUNet(spatial_dims, 1, 3, features=(4, 4, 8, 8, 16, 4), branch_channels=2, hidden=8)
    images = torch.randn(2, 1, *([32] * spatial_dims))
    bottleneck = torch.randn(2, 16, *([1] * spatial_dims))
    before_flatten = net.branch[:-1](bottleneck)
    assert tuple(before_flatten.shape) == (2, 2, *([11] * spatial_dims))
    out = net(images, outputs=("logits", "tag_logits"))
    assert out["tag_logits"].shape == (2, 3) and out["logits"].shape == (2, 3, *([32] * spatial_dims))
    assert torch.allclose(out["logits"], net(images), atol=1e-6)
    plain = BasicUNet(spatial_dims, 1, 3, features=(4, 4, 8, 8, 16, 4))
    plain.load_state_dict(net.segmentation.state_dict())
    with pytest.raises(ValueError, match="has the outputs \\['logits', 'tag_logits'\\]; got \\['boxes'\\]"):
        net(images, outputs=("boxes",))
