"""DSPLoss(class_reduction="mean"): each type's S.8 term divided by its number of contributing classes, against the
independent loop implementation (dsp_reference.py)."""

import pytest
import torch
from dsp_reference import KINDS_2D, TYPES, random_batch, reference_loss

from dsp_monai.losses import DSPLoss, dsp_loss

CLASSES, DIM, PROTOTYPES = 4, 6, 3


def _inputs(seed, spatial, batch):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, DIM, *spatial, generator=generator, dtype=torch.float64).requires_grad_()
    prototypes = torch.randn(CLASSES, PROTOTYPES, DIM, generator=generator, dtype=torch.float64).requires_grad_()
    return embeddings, prototypes


@pytest.mark.parametrize("seed, temperature", [(0, 0.5), (1, 0.5), (10, 0.05)])
def test_class_mean_terms_and_gradients_match_the_reference(seed, temperature):
    records = random_batch(seed, (5, 7), CLASSES, KINDS_2D)
    embeddings, prototypes = _inputs(seed, (5, 7), len(records))
    expected = reference_loss(embeddings, prototypes, temperature, records, class_mean=True)[0]
    summed = reference_loss(embeddings, prototypes, temperature, records)[0]
    out = dsp_loss(embeddings, prototypes, temperature, records, class_reduction="mean")
    for name in (*TYPES, "total"):
        torch.testing.assert_close(out[name], expected[name], rtol=1e-10, atol=1e-10, msg=name)
        want = torch.autograd.grad(expected[name], (embeddings, prototypes), retain_graph=True)
        got = torch.autograd.grad(out[name], (embeddings, prototypes), retain_graph=True)
        torch.testing.assert_close(got[0], want[0], rtol=1e-9, atol=1e-11, msg=f"{name}: embeddings")
        torch.testing.assert_close(got[1], want[1], rtol=1e-9, atol=1e-11, msg=f"{name}: prototypes")
    # the batch must exercise the division: some type with more than one contributing class
    assert any(abs(float(summed[n].detach()) - float(expected[n].detach())) > 1e-6 for n in TYPES)


def test_class_mean_of_a_single_class_equals_the_sum_and_empty_types_stay_zero():
    embeddings, prototypes = _inputs(3, (4, 4), 1)
    records = [{"points": torch.tensor([[1, 2], [3, 0]]), "point_classes": torch.tensor([2, 2])}]
    mean = dsp_loss(embeddings, prototypes, 0.5, records, class_reduction="mean")
    plain = dsp_loss(embeddings, prototypes, 0.5, records)
    torch.testing.assert_close(mean["point"], plain["point"], rtol=0, atol=0)
    for name in ("mask", "box", "image"):
        assert float(mean[name]) == 0.0


def test_loss_module_passes_the_reduction_and_rejects_unknown_ones():
    records = random_batch(6, (5, 7), CLASSES, KINDS_2D)
    embeddings, prototypes = _inputs(6, (5, 7), len(records))
    out = DSPLoss(lambda_box=2.0, class_reduction="mean")(embeddings, prototypes, 0.5, records)
    plain = dsp_loss(embeddings, prototypes, 0.5, records, class_reduction="mean")
    torch.testing.assert_close(out["total"], plain["mask"] + 2.0 * plain["box"] + plain["point"] + plain["image"])
    with pytest.raises(ValueError, match=r"class_reduction must be one of \('sum', 'mean'\); got 'max'"):
        DSPLoss(class_reduction="max")
    with pytest.raises(ValueError, match=r"class_reduction must be one of \('sum', 'mean'\); got None"):
        dsp_loss(embeddings, prototypes, 0.5, records, class_reduction=None)
