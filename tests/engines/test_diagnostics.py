"""The trainer's LOSS_COMPLETED contract and the diagnostics handler, against hand-computed answers."""

import json
import math

import pytest
import torch
from monai.engines.utils import IterationEvents

from dsp_monai.data.collate import annotated_collate
from dsp_monai.engines import MethodTrainer
from dsp_monai.engines.diagnostics import LossDiagnostics, prototype_geometry, single_class_share
from dsp_monai.losses import DSPLoss, DSPTerm, LinearWarmup, MaskCrossEntropy, PseudoLabelCrossEntropy
from dsp_monai.networks import DSPBasicUNet


def test_prototype_geometry_by_hand():
    # class 0: two identical prototypes along x -> mean norm 1; class 1: x and y -> mean (0.5, 0.5), norm sqrt(0.5)
    prototypes = torch.tensor([[[2.0, 0.0], [3.0, 0.0]], [[1.0, 0.0], [0.0, 5.0]]])
    norms, cosines = prototype_geometry(prototypes)
    torch.testing.assert_close(norms, torch.tensor([1.0, math.sqrt(0.5)]))
    torch.testing.assert_close(cosines[0, 1], torch.tensor(math.sqrt(0.5)))


def test_single_class_share_counts_one_bit_sets_among_valid_pixels():
    allowed = torch.tensor([[1, 2, 3, 4], [0, 8, 12, 1]])
    assert single_class_share(allowed) == pytest.approx(5 / 8)
    valid = torch.tensor([[True, True, True, False], [False, True, True, True]])
    assert single_class_share(allowed, valid) == pytest.approx(4 / 6)


def _batch(size=32):
    generator = torch.Generator().manual_seed(0)
    items = []
    for kind in ("mask", "tags", "boxes", "points"):
        image = torch.rand(1, size, size, generator=generator)
        label = torch.full((1, size, size), 255, dtype=torch.int64)
        item = {"image": image, "image_strong": image.flip(-1).flip(-1) * 0.9, "annotation_type": kind}
        if kind == "mask":
            label[0, :, : size // 2] = 0
            label[0, :, size // 2:] = 1
        elif kind == "tags":
            item["tags"] = torch.tensor([0, 1])
        elif kind == "boxes":
            item["boxes"] = torch.tensor([[0, 0, size, size // 2], [0, size // 2, size, size]])
            item["box_classes"] = torch.tensor([0, 1])
        else:
            item["points"] = torch.tensor([[3, 3], [3, 12]])
            item["point_classes"] = torch.tensor([0, 1])
        item["label"] = label
        items.append(item)
    return annotated_collate(items)


def _trainer(tmp_path, **kwargs):
    torch.manual_seed(0)
    network = DSPBasicUNet(2, 1, num_classes=2, features=(4, 4, 8, 8, 16, 4), embedding_dim=8)
    dsp_loss, warmup = DSPLoss(lambda_box=0.5, class_reduction="mean"), LinearWarmup(4)
    loss_terms = {
        "ce": {"weight": 1.0, "term": MaskCrossEntropy()},
        "plf": {"weight": 0.7, "schedule": warmup, "term": PseudoLabelCrossEntropy()},
        "dsp_weak": {"weight": 0.3, "schedule": warmup, "term": DSPTerm(dsp_loss, "weak")},
        "dsp_strong": {"weight": 0.3, "schedule": warmup, "term": DSPTerm(dsp_loss, "strong")},
    }
    return MethodTrainer(
        loss_terms, num_classes=2, device=torch.device("cpu"), max_epochs=1,
        train_data_loader=[_batch(), _batch()], network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.0), **kwargs,
    )


def test_loss_completed_fires_before_backward_with_terms_that_sum_to_the_loss(tmp_path):
    trainer = _trainer(tmp_path)
    seen = []

    def check(engine):
        output = engine.state.output
        terms, weights = output["loss_terms"], output["loss_weights"]
        assert all(p.grad is None or not p.grad.any() for p in engine.network.parameters()), "after backward"
        total = sum(weights[name] * terms[name] for name in terms)
        torch.testing.assert_close(total, output["loss"], rtol=1e-6, atol=1e-6)
        seen.append((engine.state.iteration, dict(weights)))

    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, check)
    trainer.run()
    assert [s[0] for s in seen] == [1, 2]
    iteration, weights = seen[1]
    ramp = 2 / 4
    assert weights["ce"] == 1.0
    assert weights["plf"] == pytest.approx(ramp * 0.7)
    assert weights["dsp_weak"] == pytest.approx(ramp * 0.3)
    assert weights["dsp_strong"] == pytest.approx(ramp * 0.3)
    assert sorted(n for n in weights if n.startswith("dsp")) == ["dsp_strong", "dsp_weak"]


def test_diagnostics_handler_records_terms_gradients_and_geometry(tmp_path):
    trainer = _trainer(tmp_path)
    handler = LossDiagnostics(str(tmp_path), num_classes=2, interval=2)
    handler.attach(trainer)
    trainer.run()
    records = [json.loads(line) for line in (tmp_path / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [2]
    record = records[0]
    # CE has no path to the prototypes' gradient other than through the scores, so both norms are positive;
    # a zero-weight term would have no gradient entry at all
    assert record["ce/grad_backbone"] > 0 and record["ce/grad_prototypes"] > 0
    assert record["dsp_weak/weight"] == pytest.approx(0.5 * 0.3)
    # the norm of a sum is at most the sum of the norms
    parts = sum(v for k, v in record.items()
                if k.endswith("/grad_backbone") and not k.startswith(("total", "dsp_all")))
    assert 0 < record["total/grad_backbone"] <= parts + 1e-9
    # pinned: every pixel of the mask item and of the box item (two exhaustive boxes of classes 0 and 1 tile the
    # image), the 2 point pixels; the tagged image allows both classes everywhere: (1024 + 1024 + 2) / (4 * 1024)
    assert record["annotations/single_class_share"] == pytest.approx((1024 + 1024 + 2) / 4096)
    assert 0 < record["prototypes/norm_0"] <= 1


def test_diagnostics_interval_must_be_a_positive_integer(tmp_path):
    with pytest.raises(ValueError, match=r"LossDiagnostics: interval must be an integer >= 1; got 0"):
        LossDiagnostics(str(tmp_path), num_classes=2, interval=0)
