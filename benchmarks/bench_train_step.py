"""Where the time of one training iteration goes: the default DSP configuration of bundle/configs/train.yaml.

The bundle config is parsed with MONAI's ConfigParser (the CPU profile without a GPU, the GPU profile with one),
the trainer, network, loss, optimizer and data loader are built from it as `make run` builds them, and the
trainer's own iteration (``DSPTrainer._iteration``) runs on batches from the configured data loader. Nothing in the
trainer is changed: the components are timed from outside, with wrappers around the functions the iteration calls
(annotation collation, the fused operator, the positive sums and their backward, pseudo-label filtering), module
hooks (network forward, DSP loss forward, the start of the network's backward), autograd hooks on the operator's
inputs and outputs (the operator's backward), optimizer step hooks, and a wrapper around ``Tensor.backward``. On a
GPU every boundary synchronises the device first.

Per iteration (median over the timed iterations, ms, and share of the whole step):
data loading (next batch from the loader), annotation collation, network forward, DSP loss forward (operator /
positive sums / the rest), pseudo-label filtering, backward of the loss head (operator / positive sums / the
rest: cross-entropies) and of the network, optimizer step, and the remainder of the iteration (transfers,
zero_grad, cross-entropy forwards). Peak memory: the growth of the process's resident memory over one step (CPU)
or the caching allocator's peak (GPU).

    python benchmarks/bench_train_step.py [--iterations 12] [--warmup 3] [--no-write | --output FILE]

Writes the ``bench_train_step-<profile>`` section of benchmarks/RESULTS.md.
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "bundle" / "configs" / "train.yaml"
SECTION = "bench_train_step"
PARTS = [
    ("data", "data loading (next batch)"),
    ("collation", "annotation collation"),
    ("network_forward", "network forward"),
    ("dsp_operator_forward", "DSP loss: fused operator forward"),
    ("dsp_positives_forward", "DSP loss: positive sums forward"),
    ("dsp_rest_forward", "DSP loss: the rest of its forward (annotation checks, final terms)"),
    ("plf", "pseudo-label filtering (PLF)"),
    ("dsp_operator_backward", "DSP loss: fused operator backward"),
    ("dsp_positives_backward", "DSP loss: positive sums backward"),
    ("head_backward_rest", "backward of the rest of the loss head (cross-entropies, slicing)"),
    ("network_backward", "network backward"),
    ("optimizer", "optimizer step"),
    ("other", "rest of the iteration (transfers, zero_grad, cross-entropy forwards)"),
]
DSP_PARTS = ("collation", "dsp_operator_forward", "dsp_positives_forward", "dsp_rest_forward", "dsp_operator_backward",
             "dsp_positives_backward")


class Clock:
    """Accumulates named durations of the current iteration; on a GPU each reading synchronises first."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.totals = defaultdict(float)
        self.marks = {}

    def now(self):
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def add(self, name, seconds):
        self.totals[name] += seconds


@contextmanager
def patched(obj, name, wrapper):
    original = getattr(obj, name)
    setattr(obj, name, wrapper(original))
    try:
        yield original
    finally:
        setattr(obj, name, original)


def timed(clock, name):
    def wrap(fn):
        def inner(*args, **kwargs):
            start = clock.now()
            out = fn(*args, **kwargs)
            clock.add(name, clock.now() - start)
            return out

        return inner

    return wrap


def operator_wrapper(clock):
    """Times the fused operator's forward, and its backward through autograd hooks: from the moment the last of
    its outputs' gradients is complete to the moment its embeddings' gradient is produced."""

    def wrap(fn):
        def inner(embeddings, *args, **kwargs):
            start = clock.now()
            logits, log_z = fn(embeddings, *args, **kwargs)
            clock.add("dsp_operator_forward", clock.now() - start)
            if embeddings.requires_grad:
                state = {"ready": None}

                def output_ready(grad):
                    t = clock.now()
                    state["ready"] = t if state["ready"] is None else max(state["ready"], t)

                def input_ready(grad):
                    if state["ready"] is not None:
                        clock.add("dsp_operator_backward", clock.now() - state["ready"])

                logits.register_hook(output_ready)
                log_z.register_hook(output_ready)
                embeddings.register_hook(input_ready)
            return logits, log_z

        return inner

    return wrap


def build(overrides):
    """The trainer of the bundle config (handlers left out: the iteration is called directly)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    for key, value in overrides.items():
        parser[key] = value
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    return parser, trainer


def step_parts(trainer, batches, clock, iteration):
    """Runs one iteration of the trainer, timing its parts; returns {part: seconds}."""
    import dsp_monai.engines.trainer as trainer_module
    import dsp_monai.losses.dsp as dsp_module

    clock.totals.clear()
    network = trainer.network
    marks = {}

    def backward_wrapper(original):
        def inner(tensor, *args, **kwargs):
            marks["backward_start"] = clock.now()
            original(tensor, *args, **kwargs)
            marks["backward_end"] = clock.now()

        return inner

    def network_backward_starts(module, grad_output):
        marks["network_backward_start"] = clock.now()

    hooks = [
        network.register_forward_pre_hook(lambda m, a, k: marks.__setitem__("fwd", clock.now()), with_kwargs=True),
        network.register_forward_hook(lambda m, a, o: clock.add("network_forward", clock.now() - marks["fwd"])),
        network.register_full_backward_pre_hook(network_backward_starts),
        trainer.dsp_loss.register_forward_pre_hook(lambda m, a: marks.__setitem__("dsp", clock.now())),
        trainer.dsp_loss.register_forward_hook(lambda m, a, o: clock.add("dsp_total_forward", clock.now() - marks["dsp"])),
        trainer.optimizer.register_step_pre_hook(lambda o, a, k: marks.__setitem__("opt", clock.now())),
        trainer.optimizer.register_step_post_hook(lambda o, a, k: clock.add("optimizer", clock.now() - marks["opt"])),
    ]
    start = clock.now()
    batch = next(batches)
    data_end = clock.now()
    try:
        with patched(trainer_module, "collate_annotations", timed(clock, "collation")), \
                patched(trainer_module, "filter_pseudo_labels", timed(clock, "plf")), \
                patched(dsp_module, "prototype_logsumexp", operator_wrapper(clock)), \
                patched(dsp_module, "positive_sums", timed(clock, "dsp_positives_forward")), \
                patched(dsp_module._PositiveSums, "backward", timed(clock, "dsp_positives_backward")), \
                patched(torch.Tensor, "backward", backward_wrapper):
            trainer.state.iteration = iteration
            trainer._iteration(trainer, batch)
        end = clock.now()
    finally:
        for hook in hooks:
            hook.remove()
    t = dict(clock.totals)
    parts = {name: t.get(name, 0.0) for name, _ in PARTS}
    parts["data"] = data_end - start
    parts["dsp_rest_forward"] = (t.get("dsp_total_forward", 0.0) - t.get("dsp_operator_forward", 0.0)
                                 - t.get("dsp_positives_forward", 0.0))
    head = marks["network_backward_start"] - marks["backward_start"]
    parts["head_backward_rest"] = head - t.get("dsp_operator_backward", 0.0) - t.get("dsp_positives_backward", 0.0)
    parts["network_backward"] = marks["backward_end"] - marks["network_backward_start"]
    parts["total"] = end - start
    parts["other"] = parts["total"] - sum(parts[name] for name, _ in PARTS if name != "other")
    return parts


def endless(loader):
    while True:
        yield from loader


def peak_memory(trainer, batches, clock, iteration):
    if clock.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step_parts(trainer, batches, clock, iteration)
        return torch.cuda.max_memory_allocated() - base
    return common.peak_rss_increase(lambda: step_parts(trainer, batches, clock, iteration))


def run(args):
    load_before = common.load_average()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"output_dir": tmp, "train#handlers": []}
        if args.dataset_dir:
            overrides["dataset_dir"] = args.dataset_dir
        parser, trainer = build(overrides)
        profile = parser.get_parsed_content("profile")
        device = parser.get_parsed_content("device")
        batch_size = parser.get_parsed_content("batch_size")
        roi = parser.get_parsed_content("roi_size")
        threads = torch.get_num_threads()
        clock = Clock(device)
        batches = endless(trainer.data_loader)
        iteration = int(parser.get_parsed_content("warmup_iterations")) + 1  # full loss weights
        for _ in range(args.warmup):
            step_parts(trainer, batches, clock, iteration)
        samples = [step_parts(trainer, batches, clock, iteration) for _ in range(args.iterations)]
        if args.top_ops:
            with torch.profiler.profile() as prof:
                step_parts(trainer, batches, clock, iteration)
            sys.stdout.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top_ops) + "\n")
        memory = peak_memory(trainer, batches, clock, iteration)
    medians = {name: statistics.median(s[name] for s in samples) for name in [*dict(PARTS), "total"]}
    total = medians["total"]
    rows = [[label, f"{medians[name] * 1e3:.1f}", f"{100 * medians[name] / total:.1f}%"] for name, label in PARTS]
    dsp = sum(medians[name] for name in DSP_PARTS)
    rows.append(["**DSP loss (collation + operator + positives, forward and backward)**", f"{dsp * 1e3:.1f}",
                 f"{100 * dsp / total:.1f}%"])
    rows.append(["**whole iteration**", f"{total * 1e3:.1f}", "100%"])
    text = common.table(["part", "median ms", "share"], rows)
    unit = "GPU caching allocator peak" if clock.cuda else "growth of resident memory over one step"
    summary = (f"Profile `{profile}` on {device} ({threads} torch threads): batch {batch_size}, ROI {roi}, "
               f"{args.iterations} timed iterations after {args.warmup} warm-up ones. Peak memory ({unit}): "
               f"{memory / 2**20:.0f} MiB. The DSP loss (collation, operator, positives; the target is <= 10% of "
               f"a CPU step) takes {100 * dsp / total:.1f}% of the step.")
    sys.stdout.write(summary + "\n" + text + "\n")
    markdown = (
        f"## Training step profile ({profile} profile)\n\n"
        f"Machine: {common.machine()}.\nProcessor: {common.processor()}.\nCommand: `{common.command()}`. "
        f"Load average (1/5/15 min): {load_before} before, {common.load_average()} after (shared cores).\n\n"
        "The default DSP configuration of bundle/configs/train.yaml, built with MONAI's ConfigParser; the trainer's\n"
        "own iteration, its parts timed from outside (see the script's docstring). Medians per part do not add up\n"
        "exactly to the median iteration.\n\n" + summary + "\n\n" + text + "\n"
    )
    if args.output:
        Path(args.output).write_text(markdown)
    elif not args.no_write:
        common.write_section(f"{SECTION}-{profile}", markdown)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=12, help="timed iterations (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--dataset-dir", help="override the bundle's dataset_dir (where the default data lives)")
    parser.add_argument("--top-ops", type=int, default=0,
                        help="also print the N operators with the most self CPU time in one profiled iteration")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/RESULTS.md alone")
    parser.add_argument("--output", help="write the Markdown section to this file instead of RESULTS.md")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
