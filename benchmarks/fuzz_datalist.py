"""Datalist fuzzing at scale: many random malformed datalists (the strategies of tests/data/datalist_strategies.py)
through the datalist's validator and the experiment preparation. Every example must end in an experiment or in a
DatalistError (or subclass); anything else is a failure, printed with its input.

    python benchmarks/fuzz_datalist.py [--examples 2000] [--seed 0] [--no-write]

Prints the counts of each outcome and rewrites its section of benchmarks/RESULTS.md.
"""

import argparse
import collections
import os
import sys
import tempfile
import traceback
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings

import common

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data"))
from datalist_strategies import documents, write_images  # noqa: E402

from dsp_monai.data.datalist import DatalistError, read_datalist  # noqa: E402
from dsp_monai.data.experiment import prepare_experiment  # noqa: E402

SECTION = "fuzz_datalist"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="random datalists to try")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/RESULTS.md alone")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="dsp_fuzz_datalist_"))
    write_images(folder)
    outcomes = collections.Counter()
    failures = []

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(document=documents)
    def run(document):
        path = folder / f"datalist_{sum(outcomes.values())}.json"
        path.write_bytes(document)
        try:
            read_datalist(path, check_contents=True)
            prepare_experiment(str(path), str(folder / f"run_{path.stem}"), acr=0, spatial_dims=2,
                               intensity_range=[0, 255])
            outcomes["experiment prepared"] += 1
        except DatalistError as error:
            outcomes[f"{type(error).__name__}"] += 1
        except Exception:  # the failure this script looks for
            outcomes["other exception (failure)"] += 1
            failures.append((document[:300], traceback.format_exc(limit=3)))

    run()
    rows = sorted(outcomes.items(), key=lambda row: -row[1])
    if not failures:
        rows.append(["other exception (failure)", 0])
    text = common.table(["outcome", "examples"], rows)
    sys.stdout.write(text + "\n")
    for document, trace in failures[:5]:
        sys.stdout.write(f"\nFAILED on {document!r}:\n{trace}\n")
    if not args.no_write:
        common.write_section(SECTION, (
            "## Datalist fuzzing (benchmarks/fuzz_datalist.py)\n\n"
            f"Machine: {common.machine()}. Command: `{common.command()}`.\n"
            f"{sum(outcomes.values())} random datalists (a valid one with random damage, arbitrary JSON, random\n"
            "bytes; garbage of every JSON type, huge numbers, unicode and surrogate paths) through `read_datalist` with its\n"
            "content checks and `prepare_experiment`. Each must end in an experiment or a `DatalistError`\n"
            "(`ExperimentError` is its subclass for a datalist that does not fit the configuration). The machine is\n"
            "shared with other work.\n\n"
            + text + "\n"
        ))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
