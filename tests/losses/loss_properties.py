"""Property-based check of dsp_loss against the loop reference of dsp_reference.py, shared by
tests/losses/test_fuzz_dsp_loss.py (a few examples) and benchmarks/fuzz_ops.py (many).

A case draws a batch of consistent annotation records (mixes of masks, padding, tags, exhaustive and partial boxes,
points; 2D or 3D, odd axes, a size-1 first axis for records without boxes), the class count, the temperature, the
dtype, a zero-norm embedding per image and the memory layout; the check compares the four terms, the total, log Z
and the gradients of every term.
"""

import math

import torch
from dsp_reference import KINDS_2D, KINDS_3D, TYPES, random_batch, reference_loss
from hypothesis import strategies as st

from dsp_monai.losses import dsp_loss

# Records without boxes stay consistent on any shape; with boxes, dsp_reference's generator needs room (it redraws
# until the record is consistent), so those records come from its curated lists and larger shapes.
KINDS_WITHOUT_BOXES = [{"mask", "pad"}, {"tags", "points"}, set(), {"mask", "tags", "points"}, {"tags", "pad"},
                       {"mask"}, {"points", "pad"}]
# Scores carry a float32 error of a few 1e-6 / temperature; terms are sums of a few of them.
COSINE_ERROR = {"float64": 1e-12, "float32": 4e-6}


@st.composite
def dsp_loss_cases(draw):
    dims = draw(st.integers(2, 3))
    thin = draw(st.booleans())  # a size-1 first axis
    if thin:
        spatial = [1, *draw(st.lists(st.integers(1, 4), min_size=dims - 2, max_size=dims - 2))]
        pool = KINDS_WITHOUT_BOXES
    else:
        spatial = draw(st.lists(st.integers(4, 7) if dims == 2 else st.integers(3, 4), min_size=dims - 1,
                                max_size=dims - 1))
        pool = (KINDS_2D if dims == 2 else KINDS_3D) + KINDS_WITHOUT_BOXES
    kinds = [sorted(k) for k in draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4))]
    return {
        "spatial": [*spatial, draw(st.integers(3, 7))],  # padding takes the last 2 indices of the last axis
        "kinds": kinds,
        "classes": draw(st.integers(2, 5)),
        # D >= 2: with D = 1 every cosine is exactly +-1, and the box term's maxima tie everywhere (a tie's gradient
        # may go to any of the tied pixels; the loop reference and the loss pick differently).
        "dim": draw(st.integers(2, 8)),
        "per_class": draw(st.integers(1, 3)),
        "temperature": draw(st.one_of(st.sampled_from([0.01, 10.0]), st.floats(0.01, 10.0))),
        "dtype": draw(st.sampled_from(["float64", "float32"])),
        "zero_embeddings": draw(st.booleans()),
        "layout": draw(st.sampled_from(["contiguous", "channels_last"])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def check_dsp_loss(case) -> None:
    spatial = tuple(case["spatial"])
    records = random_batch(case["seed"], spatial, case["classes"], case["kinds"])
    gen = torch.Generator().manual_seed(case["seed"])
    embeddings = torch.randn(len(records), case["dim"], *spatial, generator=gen, dtype=torch.float64)
    if case["zero_embeddings"]:  # one pixel per image (two zero pixels in a box's slice would tie at score 0)
        pixel = torch.randint(0, math.prod(spatial), (), generator=gen).item()
        embeddings.view(len(records), case["dim"], -1)[:, :, pixel] = 0.0
    prototypes = torch.randn(case["classes"], case["per_class"], case["dim"], generator=gen, dtype=torch.float64)
    dtype = torch.float64 if case["dtype"] == "float64" else torch.float32
    low = embeddings.to(dtype)
    if case["layout"] == "channels_last":
        order = [0, *range(2, low.dim()), 1]
        low = low.permute(order).contiguous().permute([order.index(i) for i in range(low.dim())])
    low = low.requires_grad_(True)
    low_prototypes = prototypes.to(dtype).requires_grad_(True)
    exact_embeddings = low.detach().double().requires_grad_(True)
    exact_prototypes = low_prototypes.detach().double().requires_grad_(True)
    tau = case["temperature"]
    expected, log_z, _, _ = reference_loss(exact_embeddings, exact_prototypes, tau, records)
    out = dsp_loss(low, low_prototypes, tau, records)

    error = COSINE_ERROR[case["dtype"]] / tau
    for name in (*TYPES, "total"):
        want, got = expected[name].item(), out[name].item()
        # A term sums, per class, log Z_c minus a mean of scores: each off by ~2 score errors.
        tol = 4 * case["classes"] * error + (1e-10 if case["dtype"] == "float64" else 1e-5) * (1 + abs(want))
        assert math.isfinite(got) and abs(got - want) <= tol, f"{name}: {got} vs {want} (tol {tol:.3g}) for {case}"
    assert torch.equal(torch.isinf(out["log_z"]), torch.isinf(log_z)), f"log_z -inf pattern differs for {case}"

    # At a zero-norm embedding the gradient is scaled by 1 / 1e-12 (the normalisation's floor), and so are its
    # rounding errors: those pixels are measured against the bound 4 C / (tau 1e-12) of a term's gradient there (each
    # class's log Z and positive mean weigh the scores by at most 1 in all, and |d s / d f| <= 2 / (tau |f|)); the
    # other pixels and the prototypes against the whole gradient.
    zero = exact_embeddings.detach().norm(dim=1, keepdim=True) == 0
    bound = 4 * case["classes"] / (tau * 1e-12)
    tol = 1e-8 if case["dtype"] == "float64" else 1e-4 + 8 * error
    for name in (*TYPES, "total"):
        if not expected[name].requires_grad:
            continue
        want = torch.autograd.grad(expected[name], (exact_embeddings, exact_prototypes), retain_graph=True,
                                   allow_unused=True)
        got = torch.autograd.grad(out[name], (low, low_prototypes), retain_graph=True, allow_unused=True)
        for label, g, w in zip(("embeddings", "prototypes"), got, want):
            g = torch.zeros_like(exact_embeddings if label == "embeddings" else exact_prototypes) if g is None else g
            w = torch.zeros_like(g, dtype=torch.float64) if w is None else w
            assert torch.isfinite(g).all(), f"{name}: {label} gradient not finite for {case}"
            difference = g.double() - w
            if label == "embeddings":
                at_zero = (difference * zero).norm(dim=1).max().item() / bound
                assert at_zero <= tol, f"{name}: gradient at a zero embedding off by {at_zero:.3g} of its bound, {case}"
                difference, w = difference * ~zero, w * ~zero
            relative = difference.norm().item() / (w.norm().item() + 1e-3 / tau)
            assert relative <= tol, f"{name}: {label} gradient relative error {relative:.3g} > {tol:.3g} for {case}"
