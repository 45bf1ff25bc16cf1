"""Fused prototype_logsumexp against what a user without it would write: the straightforward PyTorch version of
the same function, the same with the K prototypes collapsed to their mean, and ``torch.compile`` of both.

Forward and forward+backward time (median of repeats, every variant timed in turn within each repeat) and the
peak extra memory of one forward+backward beyond the inputs and their gradients. CPU: B=2, D=64, C=11, K=5,
256x256, float32, on 1 and 2 threads, every CPU path of the fused kernel (AVX-512 / AVX2 / baseline, forced in
turn). GPU (when one is visible): B=8, 512x512, float32 and bfloat16, against the memory-traffic floor (the bytes
a fused forward+backward must move, at the device's measured copy rate). The compiled variants are compiled and
warmed before timing (``torch._dynamo`` is reset between thread counts, so each is compiled for its own).
Prints a table and rewrites its section of benchmarks/RESULTS.md (or writes a Markdown file with ``--output``).

    python benchmarks/bench_prototype_logsumexp.py [--repeats N] [--device cpu|cuda|all] [--no-compile]
        [--note TEXT] [--no-write | --output FILE]
"""

import argparse
import ctypes
import json
import statistics
import sys
import time

from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from dsp_monai.ops import pack_allowed, prototype_logsumexp, unpack_allowed  # noqa: E402
from dsp_monai.ops.prototype_logsumexp import cpu_paths, set_cpu_path  # noqa: E402

SECTION = "bench_prototype_logsumexp"


def straightforward(embeddings, prototypes, temperature, allowed, valid):
    """The same function written the obvious way: all K similarities, then masked sums over classes."""
    classes = prototypes.shape[0]
    unit_f = F.normalize(embeddings, dim=1).flatten(2)
    unit_p = F.normalize(prototypes, dim=-1)
    scores = torch.einsum("bdn,ckd->bckn", unit_f, unit_p.to(unit_f.dtype)).mean(2) / temperature  # (B, C, N)
    exps = torch.exp(scores - 1.0 / temperature)
    possible = unpack_allowed(allowed, classes).flatten(2)
    counted = valid.flatten(1).unsqueeze(1)
    total = exps.sum(1, keepdim=True)
    terms = (total - exps) + (~possible) * exps
    log_z = torch.log((terms * counted).sum(dim=(0, 2))) + 1.0 / temperature
    return scores.view(embeddings.shape[0], classes, *embeddings.shape[2:]), log_z


def collapsed(embeddings, prototypes, temperature, allowed, valid):
    """The straightforward version with the mean of K cosines collapsed to one vector per class (ops.md §1):
    K times fewer multiply-adds, the same tensors otherwise."""
    classes = prototypes.shape[0]
    unit_f = F.normalize(embeddings, dim=1).flatten(2)
    mean_p = F.normalize(prototypes, dim=-1).mean(1)
    scores = torch.einsum("bdn,cd->bcn", unit_f, mean_p.to(unit_f.dtype)) / temperature  # (B, C, N)
    exps = torch.exp(scores - 1.0 / temperature)
    possible = unpack_allowed(allowed, classes).flatten(2)
    counted = valid.flatten(1).unsqueeze(1)
    total = exps.sum(1, keepdim=True)
    terms = (total - exps) + (~possible) * exps
    log_z = torch.log((terms * counted).sum(dim=(0, 2))) + 1.0 / temperature
    return scores.view(embeddings.shape[0], classes, *embeddings.shape[2:]), log_z


IMPLEMENTATIONS = {"fused": prototype_logsumexp, "straightforward": straightforward, "collapsed": collapsed}
LABELS = {
    "fused": "fused `prototype_logsumexp`",
    "straightforward": "straightforward PyTorch",
    "collapsed": "straightforward, K prototypes collapsed to their mean",
    "compiled straightforward": "`torch.compile` of straightforward",
    "compiled collapsed": "`torch.compile` of collapsed",
}


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


def step(fn, inputs, backward):
    embeddings, prototypes, allowed, valid = inputs
    logits, log_z = fn(embeddings, prototypes, 0.05, allowed, valid)
    if backward:
        loss = logits.float().square().mean() + log_z.sum()
        return torch.autograd.grad(loss, (embeddings, prototypes))
    return logits, log_z


def variants(compile_too, paths):
    """(name, function) of every variant; the fused operator once per forced CPU path when ``paths`` is given."""
    out = []
    for path in paths or [None]:
        name = "fused" if path is None else f"fused, {path}"

        def fused(*args, _path=path):
            if _path is not None:
                set_cpu_path(_path)
            return prototype_logsumexp(*args)

        out.append((name, fused))
    out += [("straightforward", straightforward), ("collapsed", collapsed)]
    if compile_too:
        out += [("compiled straightforward", torch.compile(straightforward)),
                ("compiled collapsed", torch.compile(collapsed))]
    return out


def grad_bytes(inputs):
    return sum(t.numel() * t.element_size() for t in inputs[:2])


def measure_memory_cpu(impl, threads, batch, size):
    torch.set_num_threads(threads)
    inputs = make_inputs(batch, size, "cpu", torch.float32)
    fn = IMPLEMENTATIONS[impl]
    step(fn, inputs, True)  # warm-up: allocator and thread pools
    extra = common.peak_rss_increase(lambda: step(fn, inputs, True))
    return max(extra - grad_bytes(inputs), 0)


def measure_memory_cuda(fn, inputs):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    grads = step(fn, inputs, True)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base - grad_bytes(inputs)
    del grads
    return max(extra, 0)


def mib(n):
    return f"{n / 2**20:.1f}"


def interleaved_times(named, inputs, repeats, sync=None):
    """Median seconds of every (variant, backward) pair, the pairs timed in turn within each repeat so that a
    change of load on the shared cores affects all of them alike. Two warm-up calls each (compilation)."""
    pairs = [(name, fn, backward) for name, fn in named for backward in (False, True)]
    failed = {}
    for _ in range(2):
        for name, fn, backward in pairs:
            if name in failed:
                continue
            try:
                step(fn, inputs, backward)
            except Exception as error:  # a compiler missing on this machine: report it, time the rest
                failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
    pairs = [pair for pair in pairs if pair[0] not in failed]
    times = {(name, backward): [] for name, _, backward in pairs}
    cpu = {(name, backward): [] for name, _, backward in pairs}
    for _ in range(repeats):
        for name, fn, backward in pairs:
            if sync:
                sync()
            start, start_cpu = time.perf_counter(), time.thread_time()
            step(fn, inputs, backward)
            if sync:
                sync()
            times[name, backward].append(time.perf_counter() - start)
            cpu[name, backward].append(time.thread_time() - start_cpu)
    medians = {key: statistics.median(values) for key, values in times.items()}
    medians.update({("cpu", *key): statistics.median(values) for key, values in cpu.items()})
    for name, message in failed.items():
        medians[name, False] = medians[name, True] = message
    return medians


def fused_bytes(inputs, logits_dtype):
    """Bytes a fused forward+backward must move at least: read the embeddings twice (forward, backward), write
    the logits, read their gradient, write the embeddings' gradient, read `allowed` and `valid` twice."""
    embeddings, _, allowed, valid = inputs
    classes = inputs[1].shape[0]
    emb = embeddings.numel() * embeddings.element_size()
    pixels = valid.numel()
    logits = pixels * classes * torch.empty((), dtype=logits_dtype).element_size()
    masks = 2 * (allowed.numel() * allowed.element_size() + valid.numel() * valid.element_size())
    return 3 * emb + 2 * logits + masks


def copy_rate_cuda():
    """Bytes per second of a large device-to-device copy (read + write), the practical memory-traffic ceiling."""
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    seconds = common.median_time(lambda: dst.copy_(src), 20, 3, torch.cuda.synchronize)
    return 2 * src.numel() / seconds


def advise_huge_pages(tensor):
    """madvise(MADV_HUGEPAGE) on the 2 MiB-aligned interior of a tensor's memory, as the CPU kernels do for their
    outputs (Linux only; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    huge = 2 << 20
    begin = tensor.data_ptr()
    first, last = (begin + huge - 1) // huge * huge, (begin + tensor.nbytes) // huge * huge
    if last > first:
        ctypes.CDLL(None).madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), 14)  # MADV_HUGEPAGE


def cpu_floor(inputs):
    """Lower bound of one fused forward+backward on this core, from rates measured now (1 thread, thread CPU time):
    the four tile products (2 C D N multiply-adds each: scores in the forward; scores again, d fhat and d P in the
    backward) at the rate of a large float32 matrix product, against the memory traffic (read f twice, write the
    logits and read their gradient, write d f into fresh memory as the op must) at the rates of a reduction over f
    and of an elementwise op writing fresh memory. Returns (floor seconds, description)."""
    embeddings, prototypes, allowed, valid = (t.detach() for t in inputs)
    batch, dim = embeddings.shape[:2]
    pixels, classes = valid.numel(), prototypes.shape[0]

    def cpu_median(fn, repeats=9):
        fn()
        times = []
        for _ in range(repeats):
            start = time.thread_time()
            fn()
            times.append(time.thread_time() - start)
        return statistics.median(times)

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    fma_rate = 2 * 1024**3 / cpu_median(lambda: a @ b, 5)
    flops = 4 * 2 * classes * dim * pixels
    def fresh_write():  # like the op: fresh memory, huge pages asked for (Linux), written once
        out = torch.empty_like(embeddings)
        advise_huge_pages(out)
        torch.mul(embeddings, 2, out=out)

    read_f = cpu_median(lambda: embeddings.sum())
    read_write_fresh = cpu_median(fresh_write)
    f_bytes = embeddings.numel() * embeddings.element_size()
    small_bytes = 2 * pixels * classes * 4 + 2 * (allowed.numel() * 8 + valid.numel())
    memory = 2 * read_f + (read_write_fresh - read_f) + small_bytes * read_f / f_bytes
    floor = max(flops / fma_rate, memory)
    logits, log_z = torch.ops.dsp_monai.prototype_logsumexp(embeddings, prototypes, 0.05, allowed, valid)
    grad_logits, grad_log_z = torch.randn_like(logits), torch.randn_like(log_z)

    def op_pair():
        torch.ops.dsp_monai.prototype_logsumexp(embeddings, prototypes, 0.05, allowed, valid)
        torch.ops.dsp_monai.prototype_logsumexp_backward(grad_logits, grad_log_z, embeddings, prototypes, 0.05,
                                                         allowed, valid, log_z)

    pair = cpu_median(op_pair)
    text = (f"Floor on this core (rates measured in this run, 1 thread): the four tile products, {flops / 1e6:.0f} "
            f"MFLOP at the float32 matrix-product rate {fma_rate / 1e9:.0f} GFLOP/s = {flops / fma_rate * 1e3:.1f} "
            f"ms; the memory traffic (f read twice, {f_bytes / 1e6:.1f} MB each: {read_f * 1e3:.1f} ms per read; "
            f"d f written to fresh memory with huge pages, as the op does: {(read_write_fresh - read_f) * 1e3:.1f} ms; logits, their gradient and "
            f"the masks, {small_bytes / 1e6:.1f} MB) = {memory * 1e3:.1f} ms. With perfect overlap the op pair "
            f"cannot take less than {floor * 1e3:.1f} ms; the forward and backward ops alone (no loss, no autograd) "
            f"take {pair * 1e3:.1f} ms of CPU time here, {pair / floor:.1f}x that floor")
    return floor, text


def ratio(a, b):
    return f"{a / b:.1f}x"


def cpu_tables(args):
    """One table per thread count: every variant's times, its ratio to the fused op, and extra memory."""
    sections = []
    paths = cpu_paths()
    for threads in args.threads:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
        load_before = common.load_average()
        inputs = make_inputs(2, 256, "cpu", torch.float32)
        named = variants(not args.no_compile, paths[::-1])
        times = interleaved_times(named, inputs, args.repeats)
        set_cpu_path("auto")
        memory = {}
        for impl in IMPLEMENTATIONS:
            memory[impl] = json.loads(common.run_isolated(["--memory", impl, str(threads), "2", "256"]))
        best = f"fused, {paths[-1]}"
        rows = []
        for name, _ in named:
            forward, both = times[name, False], times[name, True]
            base = name.split(",")[0]
            label = LABELS.get(base, base) + (f" ({name.split(', ')[1]} path)" if "," in name else "")
            if isinstance(both, str):
                rows.append([label, "failed", both, "-", "-"] + ["-"] * (threads == 1) * 2)
                continue
            row = [label, f"{forward * 1e3:.2f}", f"{both * 1e3:.2f}", ratio(both, times[best, True])]
            if threads == 1:
                cpu_both = times["cpu", name, True]
                row += [f"{cpu_both * 1e3:.2f}", ratio(cpu_both, times["cpu", best, True])]
            rows.append(row + [mib(memory[base]) if base in memory else "-"])
        headers = ["variant", "fwd ms", "fwd+bwd ms", f"fwd+bwd / fused ({paths[-1]})"]
        if threads == 1:
            headers += ["fwd+bwd CPU ms", "CPU / fused"]
        text = common.table(headers + ["extra MiB"], rows)
        title = f"CPU, {threads} thread" + "s" * (threads > 1) + ", float32, B=2 256x256"
        note = f"Load average (1/5/15 min): {load_before} before, {common.load_average()} after."
        if threads == 1:
            set_cpu_path("auto")
            floor, floor_text = cpu_floor(inputs)
            fused_cpu = times["cpu", best, True]
            note += (f"\n{floor_text}; the fused fwd+bwd of the table (with the loss's own elementwise ops and "
                     f"autograd) takes {fused_cpu * 1e3:.1f} ms.")
        sections.append((title, note, text))
        sys.stdout.write(f"{title}\n{note}\n{text}\n")
    return sections


def cuda_tables(args):
    sections = []
    if not torch.cuda.is_available():
        sys.stdout.write("CUDA: skipped, no GPU visible\n")
        return [("CUDA", "Skipped: no GPU visible to torch on this machine.", "")]
    rate = copy_rate_cuda()
    for dtype in (torch.float32, torch.bfloat16):
        inputs = make_inputs(8, 512, "cuda", dtype)
        named = variants(not args.no_compile, None)
        times = interleaved_times(named, inputs, args.repeats * 3, torch.cuda.synchronize)
        floor = fused_bytes(inputs, dtype) / rate
        rows = []
        for name, fn in named:
            forward, both = times[name, False], times[name, True]
            if isinstance(both, str):
                rows.append([LABELS[name], "failed", both, "-", "-", "-"])
                continue
            rows.append([LABELS[name], f"{forward * 1e3:.3f}", f"{both * 1e3:.3f}", ratio(both, times["fused", True]),
                         f"{both / floor:.1f}x", mib(measure_memory_cuda(fn, inputs))])
        text = common.table(["variant", "fwd ms", "fwd+bwd ms", "fwd+bwd / fused", "fwd+bwd / floor", "extra MiB"],
                            rows)
        title = f"CUDA {torch.cuda.get_device_name()}, {str(dtype).replace('torch.', '')}, B=8 512x512"
        note = (f"Memory-traffic floor of a fused forward+backward: {fused_bytes(inputs, dtype) / 1e9:.2f} GB at the "
                f"measured copy rate {rate / 1e12:.2f} TB/s = {floor * 1e3:.3f} ms.")
        sections.append((title, note, text))
        sys.stdout.write(f"{title}\n{note}\n{text}\n")
    return sections


def run(args):
    sections = []
    if args.device in ("cpu", "all"):
        sections += cpu_tables(args)
    if args.device in ("cuda", "all"):
        sections += cuda_tables(args)
    body = "\n\n".join(f"### {title}\n\n{note}\n\n{text}".rstrip() for title, note, text in sections)
    markdown = (
        "## prototype_logsumexp: fused operator vs straightforward and compiled PyTorch\n\n"
        f"Machine: {common.machine()}.\nProcessor: {common.processor()}.\nCommand: `{common.command()}`. "
        "The cores are shared with other work: compare ratios within one table.\n"
        "D=64, C=11, K=5, temperature 0.05, random `allowed` (30% of classes possible) and `valid` (95%); the loss\n"
        "is `logits.square().mean() + log_z.sum()`. Times are medians of repeats, all variants timed in turn\n"
        "within each repeat; `torch.compile` variants are compiled and warmed first. On 1 thread the table also gives\n"
        "the CPU time of the calling thread (time.thread_time), which waits for no other process: on loaded shared\n"
        "cores it is the steadier figure. Extra memory is the peak beyond\n"
        "the inputs and their gradients during one forward+backward (CPU: peak resident memory in a fresh\n"
        "process, eager variants only; GPU: the caching allocator's peak).\n"
        "Targets (issue 16): CPU fwd+bwd >= 10x straightforward and >= 3x compiled collapsed on 1 thread,\n"
        ">= 2.5x on 2 threads; GPU within 2x of the memory-traffic floor.\n\n"
        + (args.note + "\n\n" if args.note else "") + body + "\n"
    )
    if args.output:
        Path(args.output).write_text(markdown)
    elif not args.no_write:
        common.write_section(SECTION, markdown)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per figure (median reported)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variants")
    parser.add_argument("--note", default="", help="free text written above the tables")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/RESULTS.md alone")
    parser.add_argument("--output", help="write the Markdown section to this file instead of RESULTS.md")
    parser.add_argument("--memory", nargs=4, metavar=("IMPL", "THREADS", "BATCH", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        impl, threads, batch, size = args.memory
        sys.stdout.write(json.dumps(measure_memory_cpu(impl, int(threads), int(batch), int(size))))
        return
    run(args)


if __name__ == "__main__":
    main()
