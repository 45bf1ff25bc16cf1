"""dsp_loss / DSPLoss against the independent loop implementation of method.md (dsp_reference.py)."""

import math

import pytest
import torch
from dsp_reference import KINDS_2D, KINDS_3D, TYPES, random_batch, reference_loss

from dsp_monai.annotations import collate_annotations
from dsp_monai.losses import DSPLoss, dsp_loss

CLASSES, DIM, PROTOTYPES = 4, 6, 3

CASES = [
    pytest.param(seed, (5, 7), KINDS_2D, 0.5, id=f"2d-seed{seed}") for seed in range(3)
] + [
    pytest.param(10, (6, 4), KINDS_2D, 0.05, id="2d-tall-tau0.05"),
    pytest.param(20, (3, 4, 5), KINDS_3D, 0.5, id="3d-seed20"),
    pytest.param(21, (4, 3, 3), KINDS_3D, 0.2, id="3d-seed21"),
]


def _inputs(seed, spatial, batch, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, DIM, *spatial, generator=generator, dtype=dtype).requires_grad_()
    prototypes = torch.randn(CLASSES, PROTOTYPES, DIM, generator=generator, dtype=dtype).requires_grad_()
    return embeddings, prototypes


def _stack_scores(s, spatial):
    batch, classes = len(s), len(s[0])
    out = torch.zeros(batch, classes, *spatial, dtype=torch.float64)
    for b in range(batch):
        for c in range(classes):
            for pixel, value in s[b][c].items():
                out[(b, c, *pixel)] = value.detach()
    return out


@pytest.mark.parametrize("seed, spatial, kinds, temperature", CASES)
def test_terms_log_z_and_logits_match_the_reference(seed, spatial, kinds, temperature):
    records = random_batch(seed, spatial, CLASSES, kinds)
    embeddings, prototypes = _inputs(seed, spatial, len(records))
    expected, log_z, scores, counts = reference_loss(embeddings, prototypes, temperature, records)
    out = dsp_loss(embeddings, prototypes, temperature, records)
    for name in (*TYPES, "total"):
        assert out[name].dtype == torch.float64
        torch.testing.assert_close(out[name], expected[name], rtol=1e-10, atol=1e-10, msg=name)
    torch.testing.assert_close(out["log_z"], log_z, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["logits"], _stack_scores(scores, spatial), rtol=1e-10, atol=1e-10)
    assert collate_annotations(records, CLASSES, spatial).counts.tolist() == counts
    assert all(sum(row) > 0 for row in counts), "every annotation type must have positives in the test batch"


@pytest.mark.parametrize("seed, spatial, kinds, temperature", CASES[:1] + CASES[3:5])
def test_gradients_of_every_term_match_autograd_through_the_reference(seed, spatial, kinds, temperature):
    records = random_batch(seed, spatial, CLASSES, kinds)
    embeddings, prototypes = _inputs(seed, spatial, len(records))
    expected = reference_loss(embeddings, prototypes, temperature, records)[0]
    out = dsp_loss(embeddings, prototypes, temperature, records)
    for name in (*TYPES, "total"):
        want = torch.autograd.grad(expected[name], (embeddings, prototypes), retain_graph=True)
        got = torch.autograd.grad(out[name], (embeddings, prototypes), retain_graph=True)
        torch.testing.assert_close(got[0], want[0], rtol=1e-9, atol=1e-11, msg=f"{name}: embeddings")
        torch.testing.assert_close(got[1], want[1], rtol=1e-9, atol=1e-11, msg=f"{name}: prototypes")


def test_batch_dict_and_collated_batch_give_the_same_loss_as_records():
    records = random_batch(3, (5, 7), CLASSES, KINDS_2D)
    embeddings, prototypes = _inputs(3, (5, 7), len(records))
    keys = ("tags", "boxes", "box_classes", "points", "point_classes", "boxes_exhaustive")
    batch = {key: [record.get(key) for record in records] for key in keys}
    batch["label"] = torch.stack(
        [record.get("label", torch.full((5, 7), 255)).float().unsqueeze(0) for record in records]
    )
    batch["valid"] = torch.stack([record.get("valid", torch.ones(5, 7, dtype=torch.bool))[None] for record in records])
    batch["image"] = torch.zeros(len(records), 1, 5, 7)
    collated = collate_annotations(records, CLASSES, (5, 7))
    reference = dsp_loss(embeddings, prototypes, 0.5, records)
    for annotations in (batch, collated):
        out = dsp_loss(embeddings, prototypes, 0.5, annotations)
        for name in (*TYPES, "total"):
            torch.testing.assert_close(out[name], reference[name], rtol=0, atol=0)


def test_unannotated_batch_gives_zero_loss_and_zero_finite_gradients():
    embeddings, prototypes = _inputs(0, (6, 5), 2)
    out = dsp_loss(embeddings, prototypes, 0.05, [None, {}])
    assert all(out[name].item() == 0.0 for name in (*TYPES, "total"))
    out["total"].backward()
    assert torch.count_nonzero(embeddings.grad) == 0 and torch.count_nonzero(prototypes.grad) == 0


def test_dominant_class_at_low_temperature_stays_finite_and_matches_the_reference():
    spatial = (4, 5)
    records = [{"label": torch.zeros(spatial, dtype=torch.int64)}, {"tags": torch.tensor([0])}]
    embeddings, prototypes = _inputs(5, spatial, 2)
    with torch.no_grad():
        embeddings[:] = prototypes[0, 0].view(1, -1, 1, 1) + 1e-3 * embeddings
    temperature = 0.01
    expected = reference_loss(embeddings, prototypes, temperature, records)[0]
    out = dsp_loss(embeddings, prototypes, temperature, records)
    for name in (*TYPES, "total"):
        assert math.isfinite(out[name].item())
        torch.testing.assert_close(out[name], expected[name], rtol=1e-10, atol=1e-9)


def test_an_image_entirely_padding_takes_no_part_even_when_tagged():
    spatial = (4, 5)
    records = [
        {"tags": torch.tensor([1, 2]), "valid": torch.zeros(spatial, dtype=torch.bool)},
        {"tags": torch.tensor([0, 2]), "label": torch.full(spatial, 255).index_fill_(0, torch.tensor([1]), 2)},
    ]
    embeddings, prototypes = _inputs(8, spatial, 2)
    expected, log_z, _, counts = reference_loss(embeddings, prototypes, 0.5, records)
    out = dsp_loss(embeddings, prototypes, 0.5, records)
    assert counts[3] == [1, 0, 1, 0]
    for name in (*TYPES, "total"):
        torch.testing.assert_close(out[name], expected[name], rtol=1e-10, atol=1e-10)
    out["total"].backward()
    assert torch.count_nonzero(embeddings.grad[0]) == 0 and torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_reduced_precision_embeddings_agree_with_float64(dtype, tolerance):
    records = random_batch(4, (6, 7), CLASSES, KINDS_2D)
    embeddings, prototypes = _inputs(4, (6, 7), len(records))
    exact = dsp_loss(embeddings, prototypes, 0.5, records)
    low_embeddings = embeddings.detach().to(dtype).requires_grad_()
    low_prototypes = prototypes.detach().float().requires_grad_()
    out = dsp_loss(low_embeddings, low_prototypes, 0.5, records)
    assert out["total"].dtype == torch.float32 and out["logits"].dtype == dtype
    out["total"].backward()
    assert torch.isfinite(low_embeddings.grad.float()).all() and torch.isfinite(low_prototypes.grad).all()
    for name in (*TYPES, "total"):
        assert abs(out[name].item() - exact[name].item()) <= tolerance * max(1.0, abs(exact[name].item())), name


def test_loss_module_weights_the_terms_and_leaves_them_unweighted():
    records = random_batch(6, (5, 7), CLASSES, KINDS_2D)
    embeddings, prototypes = _inputs(6, (5, 7), len(records))
    loss_fn = DSPLoss(lambda_mask=0.5, lambda_box=2.0, lambda_point=0.0, lambda_image=1.5)
    out = loss_fn(embeddings, prototypes, 0.5, records)
    plain = dsp_loss(embeddings, prototypes, 0.5, records)
    for name in TYPES:
        torch.testing.assert_close(out[name], plain[name])
    expected = 0.5 * plain["mask"] + 2.0 * plain["box"] + 1.5 * plain["image"]
    torch.testing.assert_close(out["total"], expected)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"lambda_box": -1.0}, ValueError, r"lambda_box must be a finite number >= 0; got -1.0"),
        ({"lambda_mask": float("nan")}, ValueError, r"lambda_mask must be a finite number >= 0; got nan"),
        ({"lambda_image": "1"}, ValueError, r"lambda_image must be a finite number >= 0; got '1'"),
        ({"ignore_index": 2.5}, ValueError, r"ignore_index must be an integer; got 2.5"),
        ({"distributed": "yes"}, TypeError, r"distributed must be True, False or a torch.distributed.ProcessGroup"),
    ],
)
def test_loss_module_rejects_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        DSPLoss(**kwargs)


def test_mismatched_annotations_and_inputs_are_errors():
    embeddings, prototypes = _inputs(0, (5, 7), 2)
    with pytest.raises(ValueError, match=r"embeddings must have shape \(B, D, \*spatial\); got shape \[2, 6\]"):
        dsp_loss(embeddings[:, :, 0, 0], prototypes, 0.5, [None, None])
    with pytest.raises(ValueError, match=r"prototypes must have shape \(C, K, D\); got shape \[4, 6\]"):
        dsp_loss(embeddings, prototypes[:, 0], 0.5, [None, None])
    with pytest.raises(ValueError, match=r"expected \(batch size, .*\) = \(2, .*got \(3, "):
        dsp_loss(embeddings, prototypes, 0.5, [None, None, None])
    collated = collate_annotations([None, None], CLASSES, (5, 6))
    with pytest.raises(ValueError, match=r"= \(2, \(5, 7\), 4, 255, .*got \(2, \(5, 6\), 4, 255"):
        dsp_loss(embeddings, prototypes, 0.5, collated)
    with pytest.raises(RuntimeError, match="torch.distributed is not initialised"):
        dsp_loss(embeddings, prototypes, 0.5, [None, None], distributed=True)
