"""Property-based checks of the compiled operators against their float64 references, shared by the fuzz tests
(tests/ops/test_fuzz_ops.py, a few examples) and benchmarks/fuzz_ops.py (thousands).

Each operator has a hypothesis strategy drawing a case (a dict of plain values: shapes, dtype, memory layout, masks,
temperature, image kind, seeds, ...), a builder turning the case into tensors, and a check that runs the operator
and its float64 reference and raises AssertionError (with the case in the message) when they disagree beyond the
tolerance stated for that case. The tolerances follow the operators' documented accuracy: float64 agrees to ~1e-10;
float32 scores carry an absolute error of a few 1e-6 / temperature; float16 / bfloat16 logits carry their output
rounding (2^-10 / 2^-8 relative to 1 / temperature); distances are float32 sums (relative 1e-5).
"""

import math

import torch
from hypothesis import strategies as st

from dsp_monai.ops import (
    euclidean_distance,
    euclidean_distance_reference,
    geodesic_distance,
    geodesic_distance_reference,
    pack_allowed,
    prototype_logsumexp,
    prototype_logsumexp_reference,
)

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Output rounding of the reduced-precision logits (relative to the score range 1 / temperature).
LOGIT_ROUNDING = {"float64": 0.0, "float32": 0.0, "float16": 2.0**-10, "bfloat16": 2.0**-8}
# Absolute error of a float32 mean cosine (scores: this / temperature).
COSINE_ERROR = {"float64": 1e-12, "float32": 4e-6, "float16": 4e-6, "bfloat16": 4e-6}


def _log_uniform(low, high):
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: 10.0**e)


def _layout(tensor: torch.Tensor, layout: str, channel_dim: int = 1) -> torch.Tensor:
    """The same values in another memory layout: ``contiguous``, ``channels_last`` (channel dim innermost),
    ``transposed`` (a transposed view of a tensor stored the other way) or ``strided`` (every other element of a
    twice longer last axis)."""
    if layout == "channels_last":
        order = [0, *range(channel_dim + 1, tensor.dim()), channel_dim]
        inverse = [order.index(i) for i in range(tensor.dim())]
        return tensor.permute(order).contiguous().permute(inverse)
    if layout == "transposed" and tensor.dim() >= 2:
        return tensor.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "strided":
        wide = torch.zeros(*tensor.shape[:-1], 2 * tensor.shape[-1], dtype=tensor.dtype)
        wide[..., ::2] = tensor
        return wide[..., ::2]
    return tensor.contiguous()


# --------------------------------------------------------------------------------------------------- logsumexp


@st.composite
def logsumexp_cases(draw):
    dims = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    # float16 gradients, of order 1 / (temperature |f|), must fit its range (65504): no tiny temperatures or norms.
    half = dtype == "float16"
    return {
        "spatial": draw(st.lists(st.integers(1, {1: 13, 2: 7, 3: 5}[dims]), min_size=dims, max_size=dims)),
        "batch": draw(st.integers(1, 3)),
        "dim": draw(st.integers(1, 40)),
        "classes": draw(st.one_of(st.integers(1, 63), st.sampled_from([1, 2, 62, 63]))),
        "per_class": draw(st.integers(1, 5)),
        "dtype": dtype,
        "prototype_dtype": draw(st.sampled_from(["same", "float32"])) if dtype in ("float16", "bfloat16") else "same",
        "layout": draw(st.sampled_from(["contiguous", "channels_last", "transposed", "strided"])),
        "temperature": draw(st.one_of(st.sampled_from([1e-2 if half else 1e-3, 1e3]),
                                      _log_uniform(1e-2 if half else 1e-3, 1e3))),
        "scale": draw(st.sampled_from([1.0, 1e3] if half else [1.0, 1e-3, 1e3])),
        "allowed": draw(st.sampled_from(["none", "random", "all", "empty"])),
        "valid": draw(st.sampled_from(["none", "random", "all", "none_valid"])),
        "zero_embeddings": draw(st.booleans()),
        "zero_prototypes": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def logsumexp_inputs(case):
    gen = torch.Generator().manual_seed(case["seed"])
    batch, classes, spatial = case["batch"], case["classes"], tuple(case["spatial"])
    dtype = DTYPES[case["dtype"]]
    embeddings = torch.randn(batch, case["dim"], *spatial, generator=gen, dtype=torch.float64) * case["scale"]
    prototypes = torch.randn(classes, case["per_class"], case["dim"], generator=gen, dtype=torch.float64)
    if case["zero_embeddings"]:
        embeddings = embeddings * (torch.rand(batch, 1, *spatial, generator=gen) < 0.7)
    if case["zero_prototypes"]:
        prototypes = prototypes * (torch.rand(classes, case["per_class"], 1, generator=gen) < 0.7)
    allowed = {
        "none": None,
        "random": pack_allowed(torch.rand(batch, classes, *spatial, generator=gen) < 0.5),
        "all": pack_allowed(torch.ones(batch, classes, *spatial, dtype=torch.bool)),
        "empty": torch.zeros(batch, *spatial, dtype=torch.int64),
    }[case["allowed"]]
    valid = {
        "none": None,
        "random": torch.rand(batch, *spatial, generator=gen) < 0.7,
        "all": torch.ones(batch, *spatial, dtype=torch.bool),
        "none_valid": torch.zeros(batch, *spatial, dtype=torch.bool),
    }[case["valid"]]
    prototype_dtype = dtype if case["prototype_dtype"] == "same" else torch.float32
    embeddings = _layout(embeddings.to(dtype), case["layout"])
    prototype_layout = "contiguous" if case["layout"] == "contiguous" else "transposed"
    prototypes = _layout(prototypes.to(prototype_dtype), prototype_layout)
    if allowed is not None:
        allowed = _layout(allowed, "strided" if case["layout"] == "strided" else "contiguous")
    return embeddings, prototypes, allowed, valid


def _worst_vector_error(got: torch.Tensor, expected: torch.Tensor, dim: int, floors: torch.Tensor) -> float:
    """max over vectors (along ``dim``) of |got - expected| / (|expected| + floor): relative where a gradient vector
    is large, and measured against ``floor`` (its size before its terms cancel) where it nearly cancels."""
    difference = (got.double() - expected).norm(dim=dim)
    return (difference / (expected.norm(dim=dim) + floors)).max().item() if difference.numel() else 0.0


def check_logsumexp(case) -> None:
    """prototype_logsumexp's logits, log_z and both gradients against the float64 reference."""
    embeddings, prototypes, allowed, valid = logsumexp_inputs(case)
    tau, name = case["temperature"], case["dtype"]
    e = embeddings.detach().requires_grad_(True)
    p = prototypes.detach().requires_grad_(True)
    logits, log_z = prototype_logsumexp(e, p, tau, allowed, valid)
    e64 = embeddings.detach().double().requires_grad_(True)
    p64 = prototypes.detach().double().requires_grad_(True)
    ref_logits, ref_log_z = prototype_logsumexp_reference(e64, p64, tau, allowed, valid)

    assert logits.dtype == embeddings.dtype and logits.shape == ref_logits.shape, (case, logits.dtype, logits.shape)
    score_error = COSINE_ERROR[name] / tau
    logit_tol = score_error + LOGIT_ROUNDING[name] / tau
    worst = (logits.double() - ref_logits).abs().max().item() if logits.numel() else 0.0
    assert worst <= logit_tol, f"logits off by {worst:.3g} > {logit_tol:.3g} for {case}"
    assert torch.equal(torch.isinf(log_z), torch.isinf(ref_log_z)), f"log_z -inf pattern differs for {case}"
    finite = torch.isfinite(ref_log_z)
    assert torch.isfinite(log_z[finite]).all(), f"log_z not finite where the reference is, for {case}"
    log_z_tol = 2 * score_error + (1e-12 if name == "float64" else 1e-5) * (1 + ref_log_z[finite].abs().max().item()
                                                                            if finite.any() else 1)
    worst = (log_z[finite].double() - ref_log_z[finite]).abs().max().item() if finite.any() else 0.0
    assert worst <= log_z_tol, f"log_z off by {worst:.3g} > {log_z_tol:.3g} for {case}"

    gen = torch.Generator().manual_seed(case["seed"] + 1)
    w_logits = torch.randn(ref_logits.shape, generator=gen, dtype=torch.float64)
    w_log_z = torch.randn(ref_log_z.shape, generator=gen, dtype=torch.float64)
    objective = (logits.double() * w_logits).sum() + (log_z[finite].double() * w_log_z[finite]).sum()
    ref_objective = (ref_logits * w_logits).sum() + (ref_log_z[finite] * w_log_z[finite]).sum()
    grads = torch.autograd.grad(objective, (e, p))
    ref_grads = torch.autograd.grad(ref_objective, (e64, p64))
    if name == "float16":
        # d normalize(x) / dx is 1 / 1e-12 at x = 0: beyond float16's range, as for any float16 normalisation; those
        # entries are left out.
        nonzero_e = embeddings.double().norm(dim=1, keepdim=True).expand_as(embeddings) > 0
        nonzero_p = prototypes.double().norm(dim=2, keepdim=True).expand_as(prototypes) > 0
        if prototypes.dtype != torch.float16:
            nonzero_p = torch.ones_like(nonzero_p)
        grads = tuple(torch.where(keep, g, 0) for keep, g in zip((nonzero_e, nonzero_p), grads))
        ref_grads = tuple(torch.where(keep, g, 0) for keep, g in zip((nonzero_e, nonzero_p), ref_grads))
    # Reduced-precision logits round their incoming gradient too (and the embeddings' gradient is rounded once more).
    tol = (1e-8 if name == "float64" else 1e-4) + 4 * score_error + 8 * LOGIT_ROUNDING[name]
    # |d s_c / d f| <= 2 / (tau max(|f|, 1e-12)) and |d s_c / d P_ck| <= 2 / (tau K max(|P_ck|, 1e-12)); each log Z_c
    # weighs the scores by at most 1 in all: bounds of each gradient vector before its terms cancel, the scale of
    # its rounding errors.
    lz = w_log_z.abs().sum().item()
    f_norms = embeddings.double().norm(dim=1).clamp(min=1e-12)
    p_norms = prototypes.double().norm(dim=2).clamp(min=1e-12)
    floors = (2 * (w_logits.abs().sum(1) + lz) / (tau * f_norms),
              2 * (w_logits.abs().transpose(0, 1).reshape(case["classes"], -1).sum(1, keepdim=True) + lz)
              / (tau * case["per_class"] * p_norms))
    for label, got, expected, source, dim, floor in (
            ("embeddings", grads[0], ref_grads[0], embeddings, 1, floors[0]),
            ("prototypes", grads[1], ref_grads[1], prototypes, 2, floors[1])):
        assert got.dtype == source.dtype, (label, got.dtype, case)
        assert torch.isfinite(got).all(), f"{label} gradient not finite for {case}"
        # float16 gradients below its normal range (6.1e-5) keep an absolute precision of 2^-24 only.
        if got.dtype == torch.float16:
            floor = floor + 2.0**-24 * math.sqrt(got.shape[dim]) / tol
        error = _worst_vector_error(got, expected, dim, floor)
        assert error <= tol, f"{label} gradient relative error {error:.3g} > {tol:.3g} for {case}"


# --------------------------------------------------------------------------------------------------- distances


@st.composite
def seed_cases(draw):
    """Seed maps: 2D or 3D, odd and size-1 axes, random density, seeds on the border, empty and full maps."""
    dims = draw(st.integers(2, 3))
    return {
        "spatial": draw(st.lists(st.integers(1, 11 if dims == 2 else 5), min_size=dims, max_size=dims)),
        "batch": draw(st.integers(1, 2)),
        "maps": draw(st.integers(1, 3)),
        "seeds": draw(st.sampled_from(["sparse", "dense", "border", "none_in_one", "all"])),
        "seed_layout": draw(st.sampled_from(["contiguous", "transposed", "strided"])),
        "spacing": draw(st.one_of(st.none(), st.lists(st.floats(0.2, 5.0), min_size=dims, max_size=dims))),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@st.composite
def geodesic_cases(draw):
    case = draw(seed_cases())
    case.update({
        "channels": draw(st.integers(1, 3)),
        "dtype": draw(st.sampled_from(sorted(DTYPES))),
        "image_layout": draw(st.sampled_from(["contiguous", "channels_last", "transposed", "strided"])),
        "image": draw(st.sampled_from(["noisy", "constant", "steps", "nan_pixels"])),
        "intensity_scale": draw(st.sampled_from([1.0, 255.0, 1e-3, 1e3])),
        "lamb": draw(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))),
    })
    return case


def seeds_of(case, gen):
    batch, maps, spatial = case["batch"], case["maps"], tuple(case["spatial"])
    kind = case["seeds"]
    density = {"sparse": 0.05, "dense": 0.5, "border": 0.0, "none_in_one": 0.1, "all": 1.1}[kind]
    seeds = torch.rand(batch, maps, *spatial, generator=gen) < density
    if kind == "border":
        seeds[(slice(None), slice(None)) + (0,) * len(spatial)] = True
        seeds[(slice(None), slice(None)) + tuple(n - 1 for n in spatial)] = True
        seeds[(slice(None), slice(None), spatial[0] // 2) + tuple(n - 1 for n in spatial[1:])] = True
    if kind == "none_in_one":
        seeds[-1, -1] = False
    return _layout(seeds, case["seed_layout"])


def geodesic_inputs(case):
    gen = torch.Generator().manual_seed(case["seed"])
    seeds = seeds_of(case, gen)
    shape = (case["batch"], case["channels"], *case["spatial"])
    kind = case["image"]
    if kind == "constant":
        image = torch.full(shape, 0.37, dtype=torch.float64)
    elif kind == "steps":
        image = (torch.rand(shape, generator=gen, dtype=torch.float64) < 0.5).double()
    else:
        image = torch.rand(shape, generator=gen, dtype=torch.float64)
    if kind == "nan_pixels":
        image[torch.rand(shape, generator=gen) < 0.1] = float("nan")
    image = _layout((image * case["intensity_scale"]).to(DTYPES[case["dtype"]]), case["image_layout"])
    return image, seeds


def _assert_distances(dist, expected, case, what):
    assert dist.dtype == torch.float32 and dist.shape == expected.shape, (what, dist.dtype, dist.shape, case)
    assert not dist.requires_grad
    assert torch.equal(torch.isinf(dist), torch.isinf(expected)), f"{what}: +inf pattern differs for {case}"
    finite = torch.isfinite(expected)
    if finite.any():
        scale = expected[finite].abs().max().item()
        worst = (dist[finite].double() - expected[finite]).abs().max().item()
        tol = 1e-5 * (1.0 + scale)
        assert worst <= tol, f"{what} off by {worst:.3g} > {tol:.3g} for {case}"


def check_geodesic(case) -> None:
    """geodesic_distance (exact mode) against the float64 Bellman-Ford reference."""
    image, seeds = geodesic_inputs(case)
    dist = geodesic_distance(image, seeds, spacing=case["spacing"], lamb=case["lamb"])
    expected = geodesic_distance_reference(image, seeds, spacing=case["spacing"], lamb=case["lamb"])
    _assert_distances(dist, expected, case, "geodesic_distance")


def check_euclidean(case) -> None:
    """euclidean_distance against the float64 brute-force reference."""
    seeds = seeds_of(case, torch.Generator().manual_seed(case["seed"]))
    dist = euclidean_distance(seeds, spacing=case["spacing"])
    expected = euclidean_distance_reference(seeds, spacing=case["spacing"])
    _assert_distances(dist, expected, case, "euclidean_distance")


OPERATORS = {
    "prototype_logsumexp": (logsumexp_cases, check_logsumexp),
    "geodesic_distance": (geodesic_cases, check_geodesic),
    "euclidean_distance": (seed_cases, check_euclidean),
}
