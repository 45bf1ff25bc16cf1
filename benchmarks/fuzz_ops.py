"""Fuzzing of the compiled operators and the DSP loss against their float64 references: thousands of random cases
drawn by hypothesis (the strategies and checks of tests/ops/op_properties.py and tests/losses/loss_properties.py,
which the test suite runs on a few examples), every case run to the end (no stop at the first failure, no shrinking),
failures counted per operator and the first ones of each printed in full.

    python benchmarks/fuzz_ops.py [--examples 2000] [--loss-examples 200] [--seed 0] [--only NAME ...]
                                  [--note TEXT] [--no-write]

Writes its section of benchmarks/RESULTS.md: cases tried and failures per operator, with the machine, the seed and
the command. The cases are a function of --seed (and of the hypothesis version).
"""

import argparse
import sys
import time
import traceback
from pathlib import Path

import common
import torch
from hypothesis import HealthCheck, Phase, given, seed, settings

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "ops"), str(ROOT / "tests" / "losses")]

from loss_properties import check_dsp_loss, dsp_loss_cases  # noqa: E402
from op_properties import OPERATORS  # noqa: E402

SHOWN_FAILURES = 3


def fuzz(name, strategy, check, examples, base_seed):
    """Runs ``check`` on ``examples`` cases of ``strategy``; returns (tried, failures, seconds, first messages)."""
    tally = {"tried": 0, "failed": 0, "messages": []}

    @seed(base_seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy())
    def run(case):
        tally["tried"] += 1
        try:
            check(case)
        except Exception as error:  # noqa: BLE001  (every failure of a case is counted and reported)
            tally["failed"] += 1
            if len(tally["messages"]) < SHOWN_FAILURES:
                text = "".join(traceback.format_exception_only(type(error), error)).strip()
                tally["messages"].append(text[:2000])

    start = time.perf_counter()
    run()
    return tally["tried"], tally["failed"], time.perf_counter() - start, tally["messages"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000, help="cases per operator")
    parser.add_argument("--loss-examples", type=int, default=200, help="cases of dsp_loss (its reference is slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=[*OPERATORS, "dsp_loss"], help="fuzz only these")
    parser.add_argument("--note", default="", help="a sentence added to the report")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/RESULTS.md alone")
    args = parser.parse_args()

    targets = {name: (strategy, check, args.examples) for name, (strategy, check) in OPERATORS.items()}
    targets["dsp_loss"] = (dsp_loss_cases, check_dsp_loss, args.loss_examples)
    rows, failures = [], {}
    for name, (strategy, check, examples) in targets.items():
        if args.only and name not in args.only:
            continue
        tried, failed, seconds, messages = fuzz(name, strategy, check, examples, args.seed)
        rows.append((f"`{name}`", tried, failed, f"{seconds:.0f}"))
        failures[name] = messages
        sys.stderr.write(f"{name}: {tried} cases, {failed} failures, {seconds:.0f} s\n")
        for message in messages:
            sys.stderr.write(f"  {message}\n")

    lines = [
        "## Fuzzing the operators and the DSP loss against float64 references (benchmarks/fuzz_ops.py)",
        "",
        f"Machine: {common.machine()}; {torch.get_num_threads()} threads. Seed {args.seed}.",
        "",
        f"Command: `{common.command()}`",
        "",
        "Random cases drawn by hypothesis over shapes (1-3 spatial dims for prototype_logsumexp, 2-3 for the distances "
        "and the loss; odd and size-1 axes), C = 1..63, K, D, dtypes (float64 / float32 / float16 / bfloat16), "
        "contiguous, channels-last, transposed and strided inputs, zero-norm embeddings and prototypes, temperatures "
        "1e-3..1e3 (loss: 0.01..10), absent, random, all-allowed and all-impossible masks, no / some / all pixels "
        "valid, constant, noisy, two-level and NaN-holed images at several intensity scales, sparse, dense, border "
        "and absent seeds, random spacings and lambda; the loss over random consistent batches of masks, padding, "
        "tags, exhaustive and partial boxes and points. Each case compares values and gradients with the float64 "
        "reference within the tolerance stated in tests/ops/op_properties.py and tests/losses/loss_properties.py.",
        "",
        common.table(["target", "cases tried", "failures", "seconds"], rows),
    ]
    for name, messages in failures.items():
        if messages:
            lines += ["", f"First failures of `{name}`:", ""] + [f"- `{m.splitlines()[-1][:400]}`" for m in messages]
    if args.note:
        lines += ["", args.note]
    text = "\n".join(lines)
    if not args.no_write:
        common.write_section("fuzz_ops", text)
    sys.stdout.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
