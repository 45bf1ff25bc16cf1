"""No-harm guard: do the shipped defaults of DSP beat learning from the masks alone, on data unlike the synthetic EM?

Trains the masks-only U-Net, FixMatch + PLF and DSP with the bundle's defaults (``configs/methods/<method>.yaml``,
nothing else but the benchmark profile and the dataset) on every dataset, through the bundle's CLI
(``python -m monai.bundle run training`` then ``evaluating``, as :mod:`bench_accuracy` does), for several seeds,
and writes the paired table (DSP minus each baseline on the same seed: same masked images, same weak labels) to the
``no-harm`` section of benchmarks/RESULTS.md. Target: DSP >= U-Net - 1 and >= FixMatch + PLF - 1 Dice points on
every dataset (mean of the paired seeds).

Datasets (:mod:`real_datasets`, built offline on first use; ``pip install --no-deps -r
benchmarks/requirements-real-data.txt`` for the real ones): ``nuclei`` (fluorescence, 2 classes), ``brain`` (MNI152
T1 slices, 4 classes), the synthetic variants ``blobs_few``, ``blobs_dominant``, ``blobs_alltags``,
``blobs_many`` -- all at ACR 8 with weak labels (tags, boxes, points in turn) derived from the masks by the
bundle's own transforms, profile ``configs/sweeps/no_harm.yaml`` (64 x 64 crops, 200 iterations) -- and
``synthetic``, the bundle's default synthetic FIB-SEM data at ACR 32 with the accuracy study's profile
``configs/sweeps/cpu_study.yaml``.

Resumable: a run whose ``test_metrics.json`` exists is skipped; run the same command again to continue.

    python benchmarks/bench_no_harm.py                                        # every dataset, seeds 0-2
    python benchmarks/bench_no_harm.py --datasets nuclei brain --seeds 0 --jobs 2
    python benchmarks/bench_no_harm.py --variant old_defaults --set lambda_dsp=1.0 --no-write   # a recipe variant
    python benchmarks/bench_no_harm.py --report-only
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_accuracy as acc  # noqa: E402
import common  # noqa: E402
import real_datasets  # noqa: E402

REPO = acc.REPO
DATASETS = {
    "nuclei": {"acr": 8, "profile": "configs/sweeps/no_harm.yaml",
               "what": "2D fluorescence nuclei (stardist), 2 classes"},
    "brain": {"acr": 8, "profile": "configs/sweeps/no_harm.yaml",
              "what": "MNI152 T1 axial slices (nilearn), 4 classes"},
    "blobs_few": {"acr": 8, "profile": "configs/sweeps/no_harm.yaml", "what": "synthetic blobs, 3 balanced classes"},
    "blobs_dominant": {"acr": 8, "profile": "configs/sweeps/no_harm.yaml",
                       "what": "synthetic blobs, 3 classes, background 97%"},
    "blobs_alltags": {"acr": 8, "profile": "configs/sweeps/no_harm.yaml",
                      "what": "synthetic blobs, 4 classes all in every image (uninformative tags)"},
    "blobs_many": {"acr": 8, "profile": "configs/sweeps/no_harm.yaml",
                   "what": "synthetic blobs, 3 classes, 25-40 small components per image"},
    "synthetic": {"acr": 32, "profile": acc.CPU_PROFILE, "what": "the bundle's synthetic FIB-SEM, 11 classes"},
}
DEFAULT_DATASETS = ("nuclei", "brain", "blobs_dominant", "synthetic")


def run_dir(root: Path, variant: str, dataset: str, method: str, seed: int) -> Path:
    return root / variant / dataset / method / f"seed{seed}"


def plan_runs(args, root: Path) -> list:
    overrides, dsp_overrides = acc._overrides(args.set), acc._overrides(args.set_dsp)
    plan = []
    for seed in args.seeds:
        for dataset in args.datasets:
            spec = DATASETS[dataset]
            extra = {} if dataset == "synthetic" else {
                "datalist": str(real_datasets.ensure_dataset(dataset, root / "data"))}
            for method in acc.ordered_methods(args.methods):
                configs = ["bundle/configs/train.yaml", f"configs/methods/{method}.yaml", spec["profile"]]
                method_overrides = {**extra, **overrides, **(dsp_overrides if method == "dsp" else {})}
                plan.append(((dataset, method, seed), run_dir(root, args.variant, dataset, method, seed), configs,
                             spec["acr"], seed, method_overrides))
    return plan


def paired_table(results: dict, datasets) -> str:
    """One row per dataset: each method's test Dice (mean ± std over seeds) and DSP's paired differences."""
    rows = []
    for dataset in datasets:
        cells, runs = [], {m: {s: r for (d, mm, s), r in results.items() if d == dataset and mm == m}
                           for m in acc.METHOD_ORDER}
        if not any(runs.values()):
            continue
        for method in acc.METHOD_ORDER:
            cells.append(acc.format_mean_std([r["test"] for r in runs[method].values()]))
        verdict = []
        for other in ("unet", "fixmatch_plf"):
            seeds = sorted(set(runs["dsp"]) & set(runs[other]))
            diffs = [runs["dsp"][s]["test"] - runs[other][s]["test"] for s in seeds]
            cells.append(acc.format_mean_std(diffs))
            mean, _, count = acc.mean_std(diffs)
            if count:
                verdict.append("yes" if 100 * mean >= -1.0 - 1e-9 else "no")  # -1.0 exactly, up to rounding
        met = "-" if len(verdict) < 2 else ("yes" if verdict == ["yes", "yes"] else "no")
        rows.append([dataset, DATASETS[dataset]["what"], DATASETS[dataset]["acr"], *cells, met])
    return common.table(["dataset", "what", "ACR", "U-Net (masks only)", "FixMatch + PLF", "DSP",
                         "DSP − U-Net (paired)", "DSP − FixMatch + PLF (paired)", "target met"], rows)


def seed_rows(results: dict, datasets, seeds) -> str:
    rows = []
    for dataset in datasets:
        for method in acc.METHOD_ORDER:
            if any((dataset, method, s) in results for s in seeds):
                rows.append([dataset, acc.METHOD_LABELS[method],
                             *[f"{100 * results[dataset, method, s]['test']:.1f}" if (dataset, method, s) in results
                               else "-" for s in seeds]])
    return common.table(["dataset", "method", *[f"seed {s}" for s in seeds]], rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=sorted(DATASETS))
    parser.add_argument("--methods", nargs="+", default=list(acc.METHOD_ORDER))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variant", default="defaults",
                        help="name of the recipe variant (its own run folder); 'defaults' = the shipped defaults")
    parser.add_argument("--set", action="append", default=[], metavar="ID=VALUE",
                        help="bundle config override for every run, VALUE in YAML (repeatable)")
    parser.add_argument("--set-dsp", action="append", default=[], metavar="ID=VALUE",
                        help="bundle config override for the DSP runs only (repeatable)")
    parser.add_argument("--root", default=str(REPO / "runs" / "no_harm"))
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (default 1)")
    parser.add_argument("--note", default="", help="free text written under the command in RESULTS.md")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave RESULTS.md alone")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    root = Path(args.root)
    plan = plan_runs(args, root)
    started = time.perf_counter()

    def one(entry):
        key, folder, configs, acr, seed, overrides = entry
        if not args.report_only:
            acc.execute(folder, configs, acr, seed, overrides)
        return key, acc.load_result(folder)

    results = {}
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for key, result in pool.map(one, plan):
            if result is None:
                print(f"{key}: no finished result", flush=True)
                continue
            results[key] = result
            print(f"{key}: val {100 * result['val']:.1f} (epoch {result['val_epoch']}), test "
                  f"{100 * result['test']:.1f} (elapsed {time.perf_counter() - started:.0f} s)", flush=True)
    if not results:
        print("nothing finished yet: no tables written")
        return 0
    datasets = [d for d in args.datasets if any(k[0] == d for k in results)]
    markdown = (
        "## No harm: DSP's shipped defaults versus the baselines on other data\n\n"
        f"Machine: {common.machine()} (shared with other work). Variant: `{args.variant}`"
        + (f", overrides {acc._overrides(args.set)}, DSP only {acc._overrides(args.set_dsp)}"
           if args.set or args.set_dsp else " (the shipped defaults)") + ".\n\n"
        f"Command (resumable): `{acc.reproduce_command()}`\n\n" + (f"{args.note}\n\n" if args.note else "")
        + "Test mean Dice (%) of the best-validation checkpoint, mean ± sample std over seeds (count); the paired"
        " columns are DSP minus the baseline on the same seed (same masked images, same weak labels), mean ± std."
        " Target: both paired means >= -1. Profiles: `configs/sweeps/no_harm.yaml` (64 x 64 crops, 200"
        " iterations) for the small datasets, `configs/sweeps/cpu_study.yaml` for `synthetic`; datasets from"
        " `benchmarks/real_datasets.py`.\n\n"
        + paired_table(results, datasets) + "\n\nPer seed (test mean Dice, %):\n\n"
        + seed_rows(results, datasets, sorted({k[2] for k in results})) + "\n"
    )
    print(markdown)
    if not args.no_write:
        common.write_section("no-harm", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
