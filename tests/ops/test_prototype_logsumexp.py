"""prototype_logsumexp against its float64 reference, gradients, registrations, dtypes, devices and bad input."""

import pytest
import torch

from dsp_monai.ops import pack_allowed, prototype_logsumexp, prototype_logsumexp_reference, unpack_allowed
from dsp_monai.ops.prototype_logsumexp import cpu_paths, set_cpu_path

OP = torch.ops.dsp_monai.prototype_logsumexp.default
CPU_PATHS = cpu_paths()


@pytest.fixture(params=CPU_PATHS)
def cpu_path(request):
    """Runs the test once per CPU kernel build this processor supports (AVX-512 forced on, then off, ...)."""
    previous = set_cpu_path(request.param)
    yield request.param
    set_cpu_path(previous)


def make_inputs(spatial, classes, per_class, allowed_mode="random", valid_mode="random", batch=2, dim=6,
                dtype=torch.float64, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, dim, *spatial, generator=gen, dtype=torch.float64)
    prototypes = torch.randn(classes, per_class, dim, generator=gen, dtype=torch.float64)
    allowed = None
    if allowed_mode == "random":
        allowed = pack_allowed(torch.rand(batch, classes, *spatial, generator=gen) < 0.5)
    elif allowed_mode == "empty":
        allowed = torch.zeros(batch, *spatial, dtype=torch.int64)
    valid = None
    if valid_mode == "random":
        valid = torch.rand(batch, *spatial, generator=gen) < 0.7
    elif valid_mode == "none_valid":
        valid = torch.zeros(batch, *spatial, dtype=torch.bool)
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return (embeddings.to(device, dtype), prototypes.to(device, dtype), move(allowed), move(valid))


def loss_of(logits, log_z, weights_logits, weights_log_z):
    """A scalar touching both outputs; -inf entries of log_z (nothing contributes) are left out."""
    finite = torch.isfinite(log_z)
    return (logits * weights_logits).sum() + (log_z[finite] * weights_log_z[finite]).sum()


@pytest.mark.parametrize("spatial", [(11,), (9, 13), (3, 5, 4)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("classes,per_class", [(1, 1), (1, 3), (63, 1), (63, 4), (5, 3)])
@pytest.mark.parametrize("allowed_mode", ["none", "random", "empty"])
@pytest.mark.parametrize("valid_mode", ["none", "random", "none_valid"])
def test_matches_reference_float64(spatial, classes, per_class, allowed_mode, valid_mode, cpu_path):
    emb, protos, allowed, valid = make_inputs(spatial, classes, per_class, allowed_mode, valid_mode)
    emb.requires_grad_(True)
    protos.requires_grad_(True)
    logits, log_z = prototype_logsumexp(emb, protos, 0.1, allowed, valid)
    ref_logits, ref_log_z = prototype_logsumexp_reference(emb, protos, 0.1, allowed, valid)
    assert logits.dtype == torch.float64 and log_z.dtype == torch.float64
    torch.testing.assert_close(logits, ref_logits, rtol=1e-12, atol=1e-12)
    assert torch.equal(torch.isinf(log_z), torch.isinf(ref_log_z))
    torch.testing.assert_close(log_z, ref_log_z, rtol=1e-12, atol=1e-12)

    gen = torch.Generator().manual_seed(1)
    w_logits = torch.randn(logits.shape, generator=gen, dtype=torch.float64)
    w_log_z = torch.randn(log_z.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(loss_of(logits, log_z, w_logits, w_log_z), (emb, protos))
    ref_grads = torch.autograd.grad(loss_of(ref_logits, ref_log_z, w_logits, w_log_z), (emb, protos))
    for got, expected in zip(grads, ref_grads):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_log_z_has_known_value_on_a_hand_built_case():
    # One image, two pixels, two classes, prototypes along the axes, tau = 1: s = f_hat.
    emb = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)  # pixel 0 -> class 0, pixel 1 -> class 1
    protos = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)
    allowed = torch.tensor([[0b01, 0b11]])  # pixel 0: only class 0 possible; pixel 1: both possible
    logits, log_z = prototype_logsumexp(emb, protos, 1.0, allowed)
    e = torch.e
    # Z_0 = e_1(0) + e_1(1) = 1 + e; Z_1 = e_0(0) + e_1(0) [1 impossible at 0] + e_0(1) = e + 1 + 1.
    torch.testing.assert_close(log_z, torch.log(torch.tensor([1 + e, e + 2.0], dtype=torch.float64)))
    torch.testing.assert_close(logits, torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64))


def test_dominant_class_does_not_cancel_in_float32():
    """Z_c excludes a class that dominates by e^38: 'total minus e_c' would lose every digit, the op must not."""
    dim, classes = 8, 3
    protos = torch.eye(classes, dim).unsqueeze(1)
    emb = torch.zeros(1, dim, 64)
    emb[0, 0] = 1.0  # every pixel points at class 0 exactly: s_0 = 20, s_1 = s_2 = 0 at tau = 0.05 ...
    emb[0, 1, :32] = 1e-3  # ... with a tiny spread, so the classes 1 and 2 terms differ per pixel
    logits, log_z = prototype_logsumexp(emb, protos, 0.05)
    _, ref = prototype_logsumexp_reference(emb.double(), protos.double(), 0.05)
    torch.testing.assert_close(log_z.double(), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.01, 0.003])
def test_small_temperature_stays_finite_and_exact(temperature):
    """Scores near -1/tau everywhere: a fixed exp(s - 1/tau) shift would underflow to zero in float32."""
    emb, protos, allowed, valid = make_inputs((6, 7), 4, 2, dtype=torch.float32, seed=3)
    emb = -protos.mean(1)[0].view(1, -1, 1, 1).expand_as(emb).contiguous() + 0.05 * emb
    _, log_z = prototype_logsumexp(emb, protos, temperature, allowed, valid)
    _, ref = prototype_logsumexp_reference(emb.double(), protos.double(), temperature, allowed, valid)
    assert torch.isfinite(log_z).all()
    torch.testing.assert_close(log_z.double(), ref, rtol=1e-5, atol=1e-3)


def test_gradcheck_both_inputs_through_both_outputs():
    emb, protos, allowed, valid = make_inputs((4, 5), 3, 2, dim=4, seed=5)
    emb.requires_grad_(True)
    protos.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda e, p: prototype_logsumexp(e, p, 0.5, allowed, valid), (emb, protos), eps=1e-6, atol=1e-7
    )
    assert torch.autograd.gradcheck(lambda e, p: prototype_logsumexp(e, p, 0.5)[1], (emb, protos))


def test_zero_embedding_gives_finite_values_and_gradients():
    emb, protos, allowed, valid = make_inputs((3, 4), 3, 2, seed=2)
    emb[:, :, 1, 1] = 0.0
    emb.requires_grad_(True)
    protos.requires_grad_(True)
    logits, log_z = prototype_logsumexp(emb, protos, 0.2, allowed, valid)
    ref_logits, ref_log_z = prototype_logsumexp_reference(emb, protos, 0.2, allowed, valid)
    torch.testing.assert_close(logits, ref_logits)
    grads = torch.autograd.grad(logits.sum() + log_z[torch.isfinite(log_z)].sum(), (emb, protos))
    ref_grads = torch.autograd.grad(ref_logits.sum() + ref_log_z[torch.isfinite(ref_log_z)].sum(), (emb, protos))
    for got, expected in zip(grads, ref_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected)


def test_empty_spatial_extent():
    emb = torch.randn(2, 4, 0)
    protos = torch.randn(3, 2, 4)
    logits, log_z = prototype_logsumexp(emb, protos, 0.1)
    assert logits.shape == (2, 3, 0)
    assert torch.equal(log_z, torch.full((3,), float("-inf")))


def test_identical_for_one_and_two_threads(cpu_path):
    emb, protos, allowed, valid = make_inputs((96, 80), 11, 5, batch=2, dim=16, dtype=torch.float32, seed=4)
    emb.requires_grad_(True)
    protos.requires_grad_(True)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            logits, log_z = prototype_logsumexp(emb, protos, 0.05, allowed, valid)
            grads = torch.autograd.grad(logits.square().mean() + log_z.sum(), (emb, protos))
            results.append((logits, log_z, *grads))
    finally:
        torch.set_num_threads(previous)
    for one, two in zip(*results):
        assert torch.equal(one, two)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("spatial,dim,classes", [((131, 67), 64, 11), ((7, 300), 37, 63), ((2, 3, 41), 13, 25)],
                         ids=["tiles_and_tail", "many_classes", "3d_odd_dims"])
def test_every_cpu_path_against_float64_reference_and_thread_counts(dtype, spatial, dim, classes, cpu_path):
    """Sizes that exercise every micro-kernel edge (pixel tails, row groups, channel remainders) on each CPU path:
    the result matches the float64 reference and is bit-identical on 1, 2 and 3 threads."""
    emb, protos, allowed, valid = make_inputs(spatial, classes, 3, batch=2, dim=dim, dtype=dtype, seed=21)
    if dtype == torch.bfloat16:
        protos = protos.float()
    gen = torch.Generator().manual_seed(22)
    logits_shape = (2, classes, *spatial)
    w_logits = torch.randn(logits_shape, generator=gen, dtype=torch.float64)
    w_log_z = torch.randn(classes, generator=gen, dtype=torch.float64)
    previous = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            e = emb.clone().requires_grad_(True)
            p = protos.clone().requires_grad_(True)
            logits, log_z = prototype_logsumexp(e, p, 0.07, allowed, valid)
            grads = torch.autograd.grad(loss_of(logits.double(), log_z.double(), w_logits, w_log_z), (e, p))
            runs.append((logits, log_z, *grads))
    finally:
        torch.set_num_threads(previous)
    for first, other in zip(runs[0], runs[1]):
        assert torch.equal(first, other)
    for first, other in zip(runs[0], runs[2]):
        assert torch.equal(first, other)
    e = emb.double().requires_grad_(True)
    p = protos.double().requires_grad_(True)
    ref_logits, ref_log_z = prototype_logsumexp_reference(e, p, 0.07, allowed, valid)
    ref_grads = torch.autograd.grad(loss_of(ref_logits, ref_log_z, w_logits, w_log_z), (e, p))
    logits, log_z, grad_e, grad_p = runs[0]
    tol = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2}[dtype]
    scale = 1 / 0.07
    torch.testing.assert_close(logits.double(), ref_logits, rtol=0, atol=tol * scale)
    assert torch.equal(torch.isinf(log_z), torch.isinf(ref_log_z))
    torch.testing.assert_close(log_z.double(), ref_log_z, rtol=tol, atol=tol)
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(grad_e, ref_grads[0]) < 8 * tol
    assert rel(grad_p, ref_grads[1]) < 8 * tol


def test_cpu_paths_agree_with_each_other():
    """Every path computes the same function: float32 results of all paths within float rounding of each other."""
    emb, protos, allowed, valid = make_inputs((64, 72), 11, 5, batch=2, dim=64, dtype=torch.float32, seed=23)
    results = {}
    previous = set_cpu_path("auto")
    try:
        for path in CPU_PATHS:
            set_cpu_path(path)
            e = emb.clone().requires_grad_(True)
            p = protos.clone().requires_grad_(True)
            logits, log_z = prototype_logsumexp(e, p, 0.05, allowed, valid)
            results[path] = (logits, log_z, *torch.autograd.grad(logits.square().mean() + log_z.sum(), (e, p)))
    finally:
        set_cpu_path(previous)
    first = results[CPU_PATHS[0]]
    for path in CPU_PATHS[1:]:
        for a, b in zip(first, results[path]):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_cpu_path_selection_errors():
    with pytest.raises(RuntimeError, match=r"names an unknown CPU path 'sse9'; expected one of auto, baseline, avx2, "
                                           r"avx512"):
        set_cpu_path("sse9")
    assert set_cpu_path("auto") in CPU_PATHS
    assert torch.ops.dsp_monai._prototype_logsumexp_cpu_path("") == CPU_PATHS[-1]
    assert CPU_PATHS[0] == "baseline"


@pytest.mark.parametrize(
    "dtype,logit_tol",
    [(torch.bfloat16, 2.0**-8), (torch.float16, 2.0**-10)],
    ids=["bf16", "fp16"],
)
@pytest.mark.parametrize("prototype_dtype", ["same", "float32"])
def test_reduced_precision_within_documented_tolerance(dtype, logit_tol, prototype_dtype):
    """Half inputs accumulate in float32: logits carry only their output rounding, log_z float32 accuracy."""
    emb, protos, allowed, valid = make_inputs((16, 12), 7, 3, dim=32, dtype=dtype, seed=6)
    if prototype_dtype == "float32":
        protos = protos.float()
    emb.requires_grad_(True)
    protos.requires_grad_(True)
    temperature = 0.05
    logits, log_z = prototype_logsumexp(emb, protos, temperature, allowed, valid)
    assert logits.dtype == dtype and log_z.dtype == torch.float32
    ref_logits, ref_log_z = prototype_logsumexp_reference(
        emb.detach().double(), protos.detach().double(), temperature, allowed, valid
    )
    scale = 1.0 / temperature
    assert (logits.double() - ref_logits).abs().max() <= logit_tol * scale
    torch.testing.assert_close(log_z.double(), ref_log_z, rtol=1e-5, atol=1e-5)
    grad_e, grad_p = torch.autograd.grad(log_z.sum(), (emb, protos))
    ref_e, ref_p = torch.autograd.grad(
        prototype_logsumexp_reference(emb.double(), protos.double(), temperature, allowed, valid)[1].sum(),
        (emb, protos),
    )
    assert grad_e.dtype == dtype and grad_p.dtype == protos.dtype
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(grad_e, ref_e) < 8 * logit_tol
    assert rel(grad_p, ref_p) < 1e-4 if protos.dtype == torch.float32 else rel(grad_p, ref_p) < 8 * logit_tol


@pytest.mark.parametrize("masks", [False, True])
def test_opcheck(masks):
    emb, protos, allowed, valid = make_inputs((5, 6), 4, 2, dtype=torch.float32, seed=7)
    if not masks:
        allowed = valid = None
    emb.requires_grad_(True)
    protos.requires_grad_(True)
    torch.library.opcheck(OP, (emb, protos, 0.1, allowed, valid))


def test_backward_op_opcheck():
    emb, protos, allowed, valid = make_inputs((5, 6), 4, 2, dtype=torch.float32, seed=8)
    logits, log_z = OP(emb, protos, 0.1, allowed, valid)
    args = (torch.randn_like(logits), torch.randn_like(log_z), emb, protos, 0.1, allowed, valid, log_z)
    torch.library.opcheck(torch.ops.dsp_monai.prototype_logsumexp_backward.default, args)


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    emb, protos, allowed, valid = make_inputs((8, 8), 5, 2, dtype=torch.float32, seed=9)

    def objective(e, p):
        logits, log_z = prototype_logsumexp(e, p, 0.1, allowed, valid)
        return logits.logsumexp(1).mean() + log_z.sum()

    compiled = torch.compile(objective, fullgraph=True)
    results = []
    for fn in (objective, compiled):
        e = emb.clone().requires_grad_(True)
        p = protos.clone().requires_grad_(True)
        value = fn(e, p)
        results.append((value, *torch.autograd.grad(value, (e, p))))
    for eager, comp in zip(*results):
        torch.testing.assert_close(comp, eager)


def test_meta_tensors_give_shapes():
    emb = torch.empty(2, 8, 5, 6, 7, device="meta")
    protos = torch.empty(3, 4, 8, device="meta")
    logits, log_z = prototype_logsumexp(emb, protos, 0.1)
    assert logits.shape == (2, 3, 5, 6, 7) and logits.device.type == "meta"
    assert log_z.shape == (3,) and log_z.dtype == torch.float32


def test_no_double_backward():
    emb, protos, allowed, valid = make_inputs((4, 4), 3, 2, seed=10)
    emb.requires_grad_(True)
    _, log_z = prototype_logsumexp(emb, protos, 0.1, allowed, valid)
    (grad,) = torch.autograd.grad(log_z.sum(), emb, create_graph=True)
    with pytest.raises(RuntimeError, match="prototype_logsumexp: double backward .* is not supported"):
        torch.autograd.grad(grad.sum(), emb)


def _bad_inputs():
    """(id, argument builder, message pattern). The builder gets a device and returns (emb, protos, tau, a, v)."""

    def base(device, **changes):
        args = dict(
            emb=torch.zeros(2, 8, 5, 6, device=device),
            protos=torch.zeros(3, 2, 8, device=device),
            tau=0.1,
            allowed=torch.zeros(2, 5, 6, dtype=torch.int64, device=device),
            valid=torch.ones(2, 5, 6, dtype=torch.bool, device=device),
        )
        args.update({k: (v(device) if callable(v) else v) for k, v in changes.items()})
        return args["emb"], args["protos"], args["tau"], args["allowed"], args["valid"]

    return [
        ("emb_rank", lambda d: base(d, emb=lambda d: torch.zeros(2, 8, device=d)),
         r"embeddings must have shape \(B, D, \*spatial\) with at least one spatial dim; got shape \[2, 8\]"),
        ("emb_dtype", lambda d: base(d, emb=lambda d: torch.zeros(2, 8, 5, 6, dtype=torch.int64, device=d)),
         r"embeddings must be torch.float16, torch.bfloat16, torch.float32 or torch.float64; got torch.int64"),
        ("proto_rank", lambda d: base(d, protos=lambda d: torch.zeros(3, 8, device=d)),
         r"prototypes must have shape \(C, K, D\); got shape \[3, 8\]"),
        ("proto_empty", lambda d: base(d, protos=lambda d: torch.zeros(3, 0, 8, device=d)),
         r"prototypes must hold at least one class and one prototype per class; got shape \[3, 0, 8\]"),
        ("too_many_classes", lambda d: base(d, protos=lambda d: torch.zeros(64, 1, 8, device=d)),
         r"prototypes has C=64 classes but at most 63 are supported"),
        ("dim_mismatch", lambda d: base(d, protos=lambda d: torch.zeros(3, 2, 7, device=d)),
         r"prototypes has D=7 but embeddings has D=8 channels \(dim 1\)"),
        ("proto_dtype", lambda d: base(d, protos=lambda d: torch.zeros(3, 2, 8, dtype=torch.float64, device=d)),
         r"prototypes must have dtype torch.float32 \(that of embeddings\); got torch.float64"),
        ("tau_zero", lambda d: base(d, tau=0.0), r"temperature must be a finite number > 0; got 0"),
        ("tau_negative", lambda d: base(d, tau=-1.0), r"temperature must be a finite number > 0; got -1"),
        ("tau_nan", lambda d: base(d, tau=float("nan")), r"temperature must be a finite number > 0; got nan"),
        ("allowed_dtype", lambda d: base(d, allowed=lambda d: torch.zeros(2, 5, 6, dtype=torch.bool, device=d)),
         r"allowed must be an int64 bit mask \(bit c set = class c possible\); got dtype torch.bool"),
        ("allowed_shape", lambda d: base(d, allowed=lambda d: torch.zeros(2, 1, 5, 6, dtype=torch.int64, device=d)),
         r"allowed must have shape \(B, \*spatial\) = \[2, 5, 6\] to match embeddings; got \[2, 1, 5, 6\]"),
        ("valid_dtype", lambda d: base(d, valid=lambda d: torch.ones(2, 5, 6, dtype=torch.uint8, device=d)),
         r"valid must be a bool mask \(False = padding\); got dtype torch.uint8"),
        ("valid_shape", lambda d: base(d, valid=lambda d: torch.ones(2, 6, 5, dtype=torch.bool, device=d)),
         r"valid must have shape \(B, \*spatial\) = \[2, 5, 6\] to match embeddings; got \[2, 6, 5\]"),
    ]


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("case,build,pattern", _bad_inputs(), ids=[c[0] for c in _bad_inputs()])
def test_bad_input_names_argument_expectation_and_value(device, case, build, pattern):
    with pytest.raises(RuntimeError, match=r"prototype_logsumexp: " + pattern):
        prototype_logsumexp(*build(device))


def test_device_mismatch_is_reported():
    emb = torch.zeros(2, 8, 5, 6)
    with pytest.raises(RuntimeError, match=r"prototypes must be on the device of embeddings \(cpu\); got meta"):
        prototype_logsumexp(emb, torch.zeros(3, 2, 8, device="meta"), 0.1)
    with pytest.raises(RuntimeError, match=r"valid must be on the device of embeddings \(meta\); got cpu"):
        prototype_logsumexp(emb.to("meta"), torch.zeros(3, 2, 8, device="meta"), 0.1, None,
                            torch.ones(2, 5, 6, dtype=torch.bool))


def test_pack_and_unpack_are_inverse():
    possible = torch.rand(3, 63, 4, 5, generator=torch.Generator().manual_seed(11)) < 0.5
    packed = pack_allowed(possible)
    assert packed.shape == (3, 4, 5) and packed.dtype == torch.int64
    assert torch.equal(unpack_allowed(packed, 63), possible)
    expected = sum(int(possible[1, c, 2, 3]) << c for c in range(63))
    assert int(packed[1, 2, 3]) == expected - (1 << 64 if expected >= 1 << 63 else 0)


def test_pack_and_unpack_errors():
    with pytest.raises(TypeError, match="pack_allowed: possible must be a bool tensor; got dtype torch.float32"):
        pack_allowed(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="at most 63 classes fit an int64 bit mask; got C=64"):
        pack_allowed(torch.zeros(1, 64, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"num_classes must be in \[1, 63\]; got 0"):
        unpack_allowed(torch.zeros(1, 3, dtype=torch.int64), 0)
    with pytest.raises(TypeError, match="allowed must be an int64 bit mask; got dtype torch.int32"):
        unpack_allowed(torch.zeros(1, 3, dtype=torch.int32), 2)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("classes", [1, 11, 63])
def test_cuda_matches_cpu(dtype, classes):
    emb, protos, allowed, valid = make_inputs((37, 45), classes, 3, batch=3, dim=24, dtype=dtype, seed=12)
    results = {}
    for device in ("cpu", "cuda"):
        e = emb.to(device).requires_grad_(True)
        p = protos.to(device).requires_grad_(True)
        a = allowed.to(device)
        v = valid.to(device)
        logits, log_z = prototype_logsumexp(e, p, 0.05, a, v)
        w = torch.linspace(-1, 1, logits.numel(), device=device, dtype=torch.float32).view_as(logits)
        finite = torch.isfinite(log_z)
        grads = torch.autograd.grad((logits.float() * w).sum() + log_z[finite].sum(), (e, p))
        results[device] = [t.detach().cpu() for t in (logits, log_z, *grads)]
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}[dtype]
    for cpu, cuda in zip(results["cpu"], results["cuda"]):
        assert torch.equal(torch.isinf(cpu), torch.isinf(cuda))
        torch.testing.assert_close(cuda.double(), cpu.double(), rtol=tol, atol=tol)


@pytest.mark.cuda
def test_cuda_is_deterministic_and_matches_reference_3d():
    emb, protos, allowed, valid = make_inputs((9, 17, 21), 17, 5, batch=2, dim=64, dtype=torch.float32, seed=13,
                                              device="cuda")
    emb.requires_grad_(True)
    protos.requires_grad_(True)
    runs = []
    for _ in range(2):
        logits, log_z = prototype_logsumexp(emb, protos, 0.05, allowed, valid)
        runs.append((logits, log_z, *torch.autograd.grad(logits.square().mean() + log_z.sum(), (emb, protos))))
    for first, second in zip(*runs):
        assert torch.equal(first, second)
    ref_logits, ref_log_z = prototype_logsumexp_reference(emb.double(), protos.double(), 0.05, allowed, valid)
    torch.testing.assert_close(runs[0][1].double(), ref_log_z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(runs[0][0].double(), ref_logits, rtol=1e-5, atol=1e-4)


@pytest.mark.cuda
def test_cuda_uses_the_current_stream():
    emb, protos, allowed, valid = make_inputs((64, 64), 11, 5, batch=4, dim=64, dtype=torch.float32, seed=14,
                                              device="cuda")
    expected = prototype_logsumexp(emb, protos, 0.05, allowed, valid)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = prototype_logsumexp(emb, protos, 0.05, allowed, valid)
    torch.cuda.current_stream().wait_stream(stream)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


def test_cpu_path_environment_variable():
    """DSP_MONAI_CPU_PATH picks the path of a new process; an unknown name is reported when the kernel first runs."""
    import os
    import subprocess
    import sys

    code = (
        "import torch, dsp_monai.ops as ops\n"
        "e = torch.randn(1, 4, 5); p = torch.randn(2, 1, 4)\n"
        "ops.prototype_logsumexp(e, p, 0.1)\n"
        "print(torch.ops.dsp_monai._prototype_logsumexp_cpu_path(''))\n"
    )
    env = dict(os.environ, DSP_MONAI_CPU_PATH="baseline")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "baseline"
    env["DSP_MONAI_CPU_PATH"] = "avx9"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "prototype_logsumexp: DSP_MONAI_CPU_PATH names an unknown CPU path 'avx9'" in done.stderr


def _non_contiguous(emb, protos, allowed, valid):
    """The same values through strided views: embeddings channels-last, prototypes from a transposed buffer, the
    masks from a wider buffer sliced back."""
    emb_nc = emb.to(memory_format=torch.channels_last) if emb.dim() == 4 else emb.transpose(1, 2).contiguous()
    emb_nc = emb_nc if emb.dim() == 4 else emb_nc.transpose(1, 2)
    protos_nc = protos.transpose(0, 2).contiguous().transpose(0, 2)
    allowed_nc = torch.stack([allowed, allowed], -1)[..., 0]
    valid_nc = torch.stack([valid, valid], -1)[..., 1]
    assert not (emb_nc.is_contiguous() or protos_nc.is_contiguous() or allowed_nc.is_contiguous())
    return emb_nc, protos_nc, allowed_nc, valid_nc


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_non_contiguous_inputs_give_the_contiguous_result(device):
    emb, protos, allowed, valid = make_inputs((20, 33), 11, 3, batch=2, dim=16, dtype=torch.float32, seed=24,
                                              device=device)
    results = []
    for args in ((emb, protos, allowed, valid), _non_contiguous(emb, protos, allowed, valid)):
        e = args[0].detach().requires_grad_(True)
        p = args[1].detach().requires_grad_(True)
        logits, log_z = prototype_logsumexp(e, p, 0.05, args[2], args[3])
        grads = torch.autograd.grad(logits.square().mean() + log_z.sum(), (e, p))
        results.append((logits, log_z, *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_matches_cpu_at_benchmark_size(dtype):
    """The benchmark's GPU size (B=8, D=64, C=11, K=5, 512x512): CUDA against the CPU kernel, both outputs and
    both gradients."""
    emb, protos, allowed, valid = make_inputs((512, 512), 11, 5, batch=8, dim=64, dtype=dtype, seed=25)
    if dtype != torch.float32:
        protos = protos.float()
    results = {}
    for device in ("cpu", "cuda"):
        e = emb.to(device).requires_grad_(True)
        p = protos.to(device).requires_grad_(True)
        logits, log_z = prototype_logsumexp(e, p, 0.05, allowed.to(device), valid.to(device))
        grads = torch.autograd.grad(logits.float().square().mean() + log_z.sum(), (e, p))
        results[device] = [t.detach().cpu().double() for t in (logits, log_z, *grads)]
    tol = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}[dtype]
    (cl, cz, ce, cp), (gl, gz, ge, gp) = results["cpu"], results["cuda"]
    torch.testing.assert_close(gl, cl, rtol=tol, atol=tol * 20)
    torch.testing.assert_close(gz, cz, rtol=1e-5, atol=1e-5)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(ge, ce) < 4 * tol and rel(gp, cp) < 4 * tol


@pytest.mark.cuda
def test_cuda_3d_volume_matches_cpu():
    emb, protos, allowed, valid = make_inputs((24, 96, 80), 17, 5, batch=2, dim=32, dtype=torch.float32, seed=26)
    results = {}
    for device in ("cpu", "cuda"):
        e = emb.to(device).requires_grad_(True)
        p = protos.to(device).requires_grad_(True)
        logits, log_z = prototype_logsumexp(e, p, 0.05, allowed.to(device), valid.to(device))
        grads = torch.autograd.grad(logits.square().mean() + log_z.sum(), (e, p))
        results[device] = [t.detach().cpu() for t in (logits, log_z, *grads)]
    for cpu, cuda in zip(results["cpu"], results["cuda"]):
        torch.testing.assert_close(cuda, cpu, rtol=1e-4, atol=1e-4)
