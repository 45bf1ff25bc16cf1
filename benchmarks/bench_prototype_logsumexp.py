"""Fused prototype_logsumexp against a straightforward PyTorch version of the same function.

Forward and forward+backward time (median of repeats) and the peak extra memory of one forward+backward beyond
the inputs and their gradients. CPU: B=2, D=64, C=11, K=5, 256x256, float32, on 1 and 2 threads. GPU (when one is
visible): B=8, 512x512, float32 and bfloat16. Prints a table and rewrites its section of benchmarks/RESULTS.md.

    python benchmarks/bench_prototype_logsumexp.py [--repeats N] [--no-write]
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import common
from dsp_monai.ops import pack_allowed, prototype_logsumexp, unpack_allowed

SECTION = "bench_prototype_logsumexp"


def straightforward(embeddings, prototypes, temperature, allowed, valid):
    """The same function written the obvious way: all K similarities, then masked sums over classes."""
    classes = prototypes.shape[0]
    unit_f = F.normalize(embeddings, dim=1).flatten(2)
    unit_p = F.normalize(prototypes, dim=-1)
    scores = torch.einsum("bdn,ckd->bckn", unit_f, unit_p).mean(2) / temperature  # (B, C, N)
    exps = torch.exp(scores - 1.0 / temperature)
    possible = unpack_allowed(allowed, classes).flatten(2)
    counted = valid.flatten(1).unsqueeze(1)
    total = exps.sum(1, keepdim=True)
    terms = (total - exps) + (~possible) * exps
    log_z = torch.log((terms * counted).sum(dim=(0, 2))) + 1.0 / temperature
    return scores.view(embeddings.shape[0], classes, *embeddings.shape[2:]), log_z


IMPLEMENTATIONS = {"fused": prototype_logsumexp, "straightforward": straightforward}


def make_inputs(batch, size, device, dtype, dim=64, classes=11, per_class=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, dim, size, size, generator=gen).to(device, dtype).requires_grad_(True)
    prototypes = torch.randn(classes, per_class, dim, generator=gen).to(device, torch.float32).requires_grad_(True)
    if dtype == torch.float32:
        prototypes = prototypes.detach().requires_grad_(True)
    possible = torch.rand(batch, classes, size, size, generator=gen) < 0.3
    allowed = pack_allowed(possible).to(device)
    valid = (torch.rand(batch, size, size, generator=gen) < 0.95).to(device)
    return embeddings, prototypes, allowed, valid


def step(impl, inputs, backward):
    embeddings, prototypes, allowed, valid = inputs
    logits, log_z = IMPLEMENTATIONS[impl](embeddings, prototypes, 0.05, allowed, valid)
    if backward:
        loss = logits.float().square().mean() + log_z.sum()
        return torch.autograd.grad(loss, (embeddings, prototypes))
    return logits, log_z


def grad_bytes(inputs):
    return sum(t.numel() * t.element_size() for t in inputs[:2])


def measure_memory_cpu(impl, threads, batch, size):
    torch.set_num_threads(threads)
    inputs = make_inputs(batch, size, "cpu", torch.float32)
    step(impl, inputs, True)  # warm-up: allocator and thread pools
    extra = common.peak_rss_increase(lambda: step(impl, inputs, True))
    return max(extra - grad_bytes(inputs), 0)


def measure_memory_cuda(impl, inputs):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    grads = step(impl, inputs, True)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base - grad_bytes(inputs)
    del grads
    return max(extra, 0)


def mib(n):
    return f"{n / 2**20:.1f}"


def interleaved_times(inputs, repeats):
    """Median seconds of every (implementation, backward) variant, the variants timed in turn within each repeat
    so that a change of load on the shared cores affects all of them alike."""
    variants = [(impl, backward) for impl in IMPLEMENTATIONS for backward in (False, True)]
    for impl, backward in variants:
        step(impl, inputs, backward)
    times = {variant: [] for variant in variants}
    for _ in range(repeats):
        for impl, backward in variants:
            start = time.perf_counter()
            step(impl, inputs, backward)
            times[impl, backward].append(time.perf_counter() - start)
    return {variant: statistics.median(values) for variant, values in times.items()}


def run(args):
    load_before = os.getloadavg()[0]
    rows = []
    cpu_shape = dict(batch=2, size=256)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        inputs = make_inputs(cpu_shape["batch"], cpu_shape["size"], "cpu", torch.float32)
        times = interleaved_times(inputs, args.repeats)
        result = {}
        for impl in IMPLEMENTATIONS:
            memory = json.loads(
                common.run_isolated(["--memory", impl, str(threads), str(cpu_shape["batch"]), str(cpu_shape["size"])])
            )
            result[impl] = (times[impl, False], times[impl, True], memory)
        rows.append(("cpu", f"{threads} thread" + "s" * (threads > 1), "float32", "B=2 256x256", result))
    if torch.cuda.is_available():
        sync = torch.cuda.synchronize
        for dtype in (torch.float32, torch.bfloat16):
            inputs = make_inputs(8, 512, "cuda", dtype)
            result = {}
            for impl in IMPLEMENTATIONS:
                forward = common.median_time(lambda: step(impl, inputs, False), args.repeats * 5, 3, sync)
                both = common.median_time(lambda: step(impl, inputs, True), args.repeats * 5, 3, sync)
                result[impl] = (forward, both, measure_memory_cuda(impl, inputs))
            rows.append(("cuda", torch.cuda.get_device_name(), str(dtype).replace("torch.", ""), "B=8 512x512",
                         result))

    headers = ["device", "threads / GPU", "dtype", "size", "fused fwd ms", "fused fwd+bwd ms", "fused extra MiB",
               "plain fwd ms", "plain fwd+bwd ms", "plain extra MiB", "fwd+bwd speed-up", "memory ratio"]
    body = []
    for device, where, dtype, size, r in rows:
        (ff, fb, fm), (pf, pb, pm) = r["fused"], r["straightforward"]
        body.append([device, where, dtype, size, f"{ff * 1e3:.2f}", f"{fb * 1e3:.2f}", mib(fm), f"{pf * 1e3:.2f}",
                     f"{pb * 1e3:.2f}", mib(pm), f"{pb / fb:.1f}x", f"{fm / pm:.3f}" if pm else "-"])
    text = common.table(headers, body)
    sys.stdout.write(text + "\n")
    if not args.no_write:
        markdown = (
            "## prototype_logsumexp: fused operator vs straightforward PyTorch\n\n"
            f"Machine: {common.machine()}. Command: `{common.command()}`. Load average (1 min) before the run: "
            f"{load_before:.2f} (the cores are shared).\n"
            "D=64, C=11, K=5, temperature 0.05, random `allowed` (30% of classes possible) and `valid` (95%).\n"
            f"Times are medians of {args.repeats} repeats, the fused and plain variants timed in turn within each "
            "repeat on CPU;\nextra memory is the peak beyond the inputs and their gradients during one\n"
            "forward+backward (CPU: peak resident memory in a fresh process; GPU: the caching allocator's peak).\n"
            "Targets: CPU fwd+bwd >= 5x faster with <= 1/4 of the extra memory; GPU within 2x of the ~0.6 ms\n"
            "memory-traffic floor (fp32, H100) and >= 10x faster.\n\n" + text + "\n"
        )
        common.write_section(SECTION, markdown)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per figure (median reported)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/RESULTS.md alone")
    parser.add_argument("--memory", nargs=4, metavar=("IMPL", "THREADS", "BATCH", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        impl, threads, batch, size = args.memory
        sys.stdout.write(json.dumps(measure_memory_cpu(impl, int(threads), int(batch), int(size))))
        return
    run(args)


if __name__ == "__main__":
    main()
