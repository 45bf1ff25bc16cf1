"""Test-set accuracy of the methods over annotation compression rates (ACR) and seeds, through the bundle's CLI.

Every run is a subprocess of ``python -m monai.bundle run training`` and then ``... evaluating`` on
``bundle/configs/train.yaml`` + ``configs/methods/<method>.yaml`` + the profile's and the caller's config files, in
its own folder ``ROOT/<method>/acr<ACR>/seed<SEED>`` (logs ``train.log`` and ``evaluate.log`` there). The seed draws
the cross-sub-volume split and which training images keep their masks; every method sees the same split for a seed.
All methods train for the same number of iterations.

Resumable: a run whose ``test_metrics.json`` exists is skipped, a run that finished training is only evaluated, and
an interrupted training resumes from its last checkpoint (the bundle does that). Run the same command again to
continue.

    python benchmarks/bench_accuracy.py                                   # dsp and unet at ACR 1 and 32, seeds 0-2
    python benchmarks/bench_accuracy.py --methods unet fixmatch_plf dsp --acrs 1 8 32 --seeds 0 1 2
    python benchmarks/bench_accuracy.py --report-only                     # tables and plot from finished runs
    python benchmarks/bench_accuracy.py --gpu                             # on a GPU machine: the paper-size profile
    python benchmarks/bench_accuracy.py --ablation configs/sweeps/ablation.yaml --acrs 32 --seeds 0 1

On a CPU the study profile ``configs/sweeps/cpu_study.yaml`` (at most about 4 minutes per run on 2 cores) is added;
with ``--gpu`` it is not, and the bundle picks its GPU profile (the paper's U-Net and batch) by itself.

Writes the table of test mean Dice (mean and standard deviation over seeds, per method and ACR; paired differences
to DSP; per class) with the machine and the exact command to the ``accuracy-cpu`` / ``accuracy-gpu`` section of
benchmarks/RESULTS.md, and the Dice-versus-ACR plot to benchmarks/accuracy_vs_acr.png (``_gpu`` for the GPU
profile). ``--ablation FILE`` instead trains the variants of FILE (a YAML mapping ``name: {description, overrides}``,
overrides being bundle config ids applied to the DSP method) and reports their *validation* Dice, the quantity
settings are chosen by, in the section named after FILE's stem.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
METHOD_LABELS = {"unet": "U-Net (masks only)", "fixmatch_plf": "FixMatch + PLF", "dsp": "DSP",
                 "euclidean_branch": "Euclidean point branch", "geodesic_branch": "Geodesic point branch",
                 "pseudo_label": "Pseudo-label", "pseudo_label_plf": "Pseudo-label + PLF", "fixmatch": "FixMatch",
                 "cls_branch": "Classification branch", "box_projection": "Box projection", "con2r": "Con2R"}
METHOD_ORDER = ("unet", "fixmatch_plf", "dsp")
CPU_PROFILE = "configs/sweeps/cpu_study.yaml"


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------


def run_dir(root: Path, method: str, acr: int, seed: int) -> Path:
    """The folder of one run."""
    return root / method / f"acr{acr}" / f"seed{seed}"


def _yaml_value(value) -> str:
    return json.dumps(value)


def write_overrides(folder: Path, overrides: dict) -> Path | None:
    """Writes ``overrides`` (bundle config ids -> values) as a config overlay in ``folder``; None when empty."""
    if not overrides:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "overrides.yaml"
    path.write_text("".join(f"{key}: {_yaml_value(value)}\n" for key, value in overrides.items()))
    return path


def bundle_command(run_id: str, configs: list[str], acr: int, seed: int, folder: Path) -> list[str]:
    """The bundle CLI call of one run."""
    config_list = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    return [
        sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config_list,
        "--acr", str(acr), "--seed", str(seed), "--output_dir", str(folder), "--models_dir", str(folder / "models"),
    ]


def _read_json(path: Path):
    with open(path) as handle:
        return json.load(handle)


def _training_finished(folder: Path) -> bool:
    path = folder / "metrics.json"
    return path.exists() and bool(_read_json(path).get("finished"))


def _call(args: list[str], log: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(args)}\n")
        handle.flush()
        result = subprocess.run(args, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"command failed with exit code {result.returncode}; log: {log}\n{tail}")


def execute(folder: Path, configs: list[str], acr: int, seed: int, overrides: dict) -> dict:
    """Trains (or resumes) and test-evaluates one run unless its test_metrics.json exists; returns what it did."""
    test_path = folder / "test_metrics.json"
    if test_path.exists():
        return {"status": "skipped"}
    folder.mkdir(parents=True, exist_ok=True)
    extra = write_overrides(folder, overrides)
    configs = [*configs, *([str(extra)] if extra else [])]
    started = time.perf_counter()
    if not _training_finished(folder):
        _call(bundle_command("training", configs, acr, seed, folder), folder / "train.log")
    trained = time.perf_counter()
    _call(bundle_command("evaluating", [*configs, "bundle/configs/evaluate.yaml"], acr, seed, folder),
          folder / "evaluate.log")
    return {"status": "ran", "train_s": trained - started, "total_s": time.perf_counter() - started}


def load_result(folder: Path) -> dict | None:
    """Validation and test Dice of a finished run, or None."""
    if not (folder / "test_metrics.json").exists() or not (folder / "metrics.json").exists():
        return None
    metrics, test = _read_json(folder / "metrics.json"), _read_json(folder / "test_metrics.json")
    best = metrics.get("best_validation") or {}
    return {
        "test": test["dice"]["mean"],
        "test_per_class": test["dice"]["per_class"],
        "val": best.get("mean"),
        "val_epoch": best.get("epoch"),
        "iterations": metrics.get("iterations"),
        "seconds": metrics.get("seconds"),
    }


# ---------------------------------------------------------------------------------------------------------------
# Aggregation (pure functions of the results, tested in tests/benchmarks/test_bench_accuracy.py)
# ---------------------------------------------------------------------------------------------------------------


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values (NaN, NaN, 0 if none)."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return math.nan, math.nan, 0
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, len(values)


def format_mean_std(values, scale: float = 100.0) -> str:
    """``mean ± std (n)`` in percent points, or ``-`` when there is nothing."""
    mean, std, count = mean_std(values)
    if not count:
        return "-"
    return f"{scale * mean:.1f} ± {scale * std:.1f} ({count})"


def ordered_methods(methods) -> list[str]:
    """The methods in the order U-Net, FixMatch + PLF, DSP, then any others alphabetically."""
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(set(methods) - set(known))


def summary_table(results: dict, key: str = "test") -> str:
    """Markdown table: one row per method, one column per ACR, cells ``mean ± std (seeds)`` of ``key``, plus rows
    of the paired per-seed differences between DSP and each other method.

    Args:
        results: ``{(method, acr, seed): result dict of load_result}``.
        key: ``"test"`` or ``"val"``.
    """
    methods = ordered_methods({m for m, _, _ in results})
    acrs = sorted({a for _, a, _ in results})
    rows = []
    for method in methods:
        cells = [format_mean_std([r[key] for (m, a, _), r in results.items() if m == method and a == acr])
                 for acr in acrs]
        rows.append([METHOD_LABELS.get(method, method), *cells])
    if "dsp" in methods:
        for other in methods:
            if other == "dsp":
                continue
            cells = []
            for acr in acrs:
                seeds = sorted(s for m, a, s in results if m == "dsp" and a == acr and (other, acr, s) in results)
                cells.append(format_mean_std([results["dsp", acr, s][key] - results[other, acr, s][key]
                                              for s in seeds]))
            rows.append([f"DSP − {METHOD_LABELS.get(other, other)} (paired)", *cells])
    return common.table(["method", *[f"ACR {a}" for a in acrs]], rows)


def per_class_table(results: dict) -> str:
    """Markdown table of the test Dice per class (mean over the seeds where the class is in the test set)."""
    methods = ordered_methods({m for m, _, _ in results})
    acrs = sorted({a for _, a, _ in results})
    classes = []
    for result in results.values():
        classes += [c for c in result["test_per_class"] if c not in classes]
    rows = []
    for acr in acrs:
        for method in methods:
            runs = [r for (m, a, _), r in results.items() if m == method and a == acr]
            if not runs:
                continue
            cells = []
            for name in classes:
                mean, _, count = mean_std([r["test_per_class"].get(name) for r in runs])
                cells.append(f"{100 * mean:.1f}" if count else "n/a")
            mean, _, _ = mean_std([r["test"] for r in runs])
            rows.append([acr, METHOD_LABELS.get(method, method), *cells, f"**{100 * mean:.1f}**"])
    return common.table(["ACR", "method", *classes, "mean"], rows)


def seed_table(results: dict, key: str = "test") -> str:
    """Markdown table of every run's ``key`` Dice: rows method and ACR, one column per seed."""
    methods = ordered_methods({m for m, _, _ in results})
    acrs = sorted({a for _, a, _ in results})
    seeds = sorted({s for _, _, s in results})
    rows = []
    for acr in acrs:
        for method in methods:
            if not any((method, acr, s) in results for s in seeds):
                continue
            rows.append([acr, METHOD_LABELS.get(method, method),
                         *[f"{100 * results[method, acr, s][key]:.1f}" if (method, acr, s) in results else "-"
                           for s in seeds]])
    return common.table(["ACR", "method", *[f"seed {s}" for s in seeds]], rows)


def ablation_table(results: dict, variants: dict, reference: str | None = None) -> str:
    """Markdown table of the validation Dice of ablation variants: per seed, mean ± std, and the paired difference
    to ``reference`` (the first variant by default).

    Args:
        results: ``{(variant, acr, seed): result dict}``.
        variants: ``{name: {"description": str, "overrides": dict}}`` in display order.
        reference: the variant the differences are taken to.
    """
    names = [n for n in variants if any(v == n for v, _, _ in results)]
    if not names:
        return "(no finished runs)"
    reference = reference if reference in names else names[0]
    acrs = sorted({a for _, a, _ in results})
    seeds = sorted({s for _, _, s in results})
    rows = []
    for acr in acrs:
        for name in names:
            runs = {s: results[name, acr, s] for s in seeds if (name, acr, s) in results}
            if not runs:
                continue
            paired = [runs[s]["val"] - results[reference, acr, s]["val"] for s in runs
                      if (reference, acr, s) in results]
            overrides = variants[name].get("overrides") or {}
            setting = ", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "(reference)"
            rows.append([
                acr, name, variants[name].get("description", ""), setting,
                *[f"{100 * runs[s]['val']:.1f}" if s in runs else "-" for s in seeds],
                format_mean_std([r["val"] for r in runs.values()]),
                "-" if name == reference else format_mean_std(paired),
            ])
    return common.table(["ACR", "variant", "what", "overrides", *[f"val seed {s}" for s in seeds],
                         "val mean ± std (n)", f"Δ vs {reference} (paired)"], rows)


def plot(results: dict, path: Path, title: str) -> None:
    """Dice-versus-ACR plot: test mean Dice (mean over seeds, bars = std) per method on a log2 ACR axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"unet": ("tab:gray", "s"), "fixmatch_plf": ("tab:blue", "^"), "dsp": ("tab:red", "o")}
    figure, axis = plt.subplots(figsize=(5.2, 3.8), dpi=120)
    methods = ordered_methods({m for m, _, _ in results})
    for index, method in enumerate(methods):
        acrs = sorted({a for m, a, _ in results if m == method})
        stats = [mean_std([r["test"] for (m, a, _), r in results.items() if m == method and a == acr])
                 for acr in acrs]
        colour, marker = styles.get(method, (None, "d"))
        shift = 2.0 ** (0.06 * (index - (len(methods) - 1) / 2))  # side by side, so the error bars stay readable
        axis.errorbar([a * shift for a in acrs], [100 * s[0] for s in stats], yerr=[100 * s[1] for s in stats],
                      color=colour, marker=marker, capsize=3, linewidth=1.6, label=METHOD_LABELS.get(method, method))
    acrs = sorted({a for _, a, _ in results})
    axis.set_xscale("log", base=2)
    axis.set_xticks(acrs)
    axis.set_xticklabels([str(a) for a in acrs])
    axis.set_xlabel("annotation compression rate (ACR)")
    axis.set_ylabel("test mean Dice (%)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def load_variants(path: str) -> dict:
    """The ablation variants of a YAML file: ``{name: {"description": str, "overrides": {id: value}}}``."""
    import yaml

    with open(REPO / path if not os.path.isabs(path) else path) as handle:
        content = yaml.safe_load(handle)
    if not isinstance(content, dict) or not content:
        raise ValueError(f"{path}: expected a mapping of variant names to {{description, overrides}}")
    for name, variant in content.items():
        if not isinstance(variant, dict) or not isinstance(variant.get("overrides") or {}, dict):
            raise ValueError(f"{path}: variant {name!r} must be a mapping with an 'overrides' mapping")
    return content


def reproduce_command(argv=None) -> str:
    """The command that reproduces the tables: this one (``argv``, default ``sys.argv``) without the options that
    only choose where outputs go, skip training or annotate the report (``--root``, ``--note``, ``--report-only``,
    ``--no-write``)."""
    argv = list(sys.argv if argv is None else argv)
    kept, skip = [], False
    for word in argv[1:]:
        if skip:
            skip = False
        elif word in ("--root", "--note"):
            skip = True
        elif not word.startswith(("--root=", "--note=")) and word not in ("--report-only", "--no-write"):
            kept.append(shlex.quote(word))
    return " ".join(["python", os.path.relpath(argv[0], REPO), *kept])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["dsp", "unet"],
                        help="method files of configs/methods (default: dsp unet; also fixmatch_plf)")
    parser.add_argument("--acrs", nargs="+", type=int, default=[1, 32], help="ACRs (default: 1 32)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--config", action="append", default=[],
                        help="extra config file(s) after the method file (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="ID=VALUE",
                        help="bundle config override for every run, VALUE in YAML (repeatable)")
    parser.add_argument("--note", default="", help="free text written under the command in RESULTS.md")
    parser.add_argument("--root", default=None,
                        help="output root (default: runs/accuracy/<profile>, or runs/ablation/<profile>)")
    parser.add_argument("--gpu", action="store_true",
                        help="the paper-size profile of a GPU machine (needs CUDA; no CPU study overlay)")
    parser.add_argument("--ablation", default=None, metavar="FILE",
                        help="train the variants of FILE with the DSP method and report validation Dice")
    parser.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                        help="with --ablation: run only these variants of FILE (default: all)")
    parser.add_argument("--report-only", action="store_true", help="no training: tables and plot of finished runs")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave RESULTS.md and the plot")
    return parser.parse_args(argv)


def _overrides(pairs) -> dict:
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects ID=VALUE, got {pair!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def main(argv=None) -> int:
    args = parse_args(argv)
    profile = "gpu" if args.gpu else "cpu"
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--gpu needs a CUDA GPU; none is visible (leave --gpu out for the CPU study profile)")
    configs_extra = ([] if args.gpu else [CPU_PROFILE]) + list(args.config)
    shared = _overrides(args.set)
    kind = "ablation" if args.ablation else "accuracy"
    root = Path(args.root) if args.root else REPO / "runs" / kind / profile
    variants = load_variants(args.ablation) if args.ablation else None
    if variants and args.variants:
        unknown = sorted(set(args.variants) - set(variants))
        if unknown:
            raise SystemExit(f"--variants: {unknown} not in {args.ablation} (it has {list(variants)})")
        variants = {name: variant for name, variant in variants.items() if name in args.variants}

    plan = []  # (key, folder, configs, acr, seed, overrides)
    if variants:
        for acr in args.acrs:
            for seed in args.seeds:
                for name, variant in variants.items():
                    plan.append(((name, acr, seed), run_dir(root, name, acr, seed),
                                 ["bundle/configs/train.yaml", "configs/methods/dsp.yaml", *configs_extra],
                                 acr, seed, {**shared, **(variant.get("overrides") or {})}))
    else:
        for acr in args.acrs:
            for seed in args.seeds:
                for method in ordered_methods(args.methods):
                    method_file = REPO / "configs" / "methods" / f"{method}.yaml"
                    if not method_file.exists():
                        raise SystemExit(f"unknown method {method!r}: {method_file} does not exist")
                    plan.append(((method, acr, seed), run_dir(root, method, acr, seed),
                                 ["bundle/configs/train.yaml", f"configs/methods/{method}.yaml", *configs_extra],
                                 acr, seed, shared))

    results = {}
    started = time.perf_counter()
    for index, (key, folder, configs, acr, seed, overrides) in enumerate(plan, 1):
        label = f"[{index}/{len(plan)}] {key[0]} ACR {acr} seed {seed}"
        if not args.report_only:
            if not (folder / "test_metrics.json").exists():
                print(f"{label}: training in {folder} ...", flush=True)
            outcome = execute(folder, configs, acr, seed, overrides)
        result = load_result(folder)
        if result is None:
            print(f"{label}: no finished result", flush=True)
            continue
        results[key] = result
        timing = "" if args.report_only or outcome["status"] == "skipped" else f", {outcome['total_s']:.0f} s"
        print(f"{label}: val {100 * result['val']:.1f}, test {100 * result['test']:.1f} Dice "
              f"({'done before' if args.report_only or outcome['status'] == 'skipped' else 'ran'}{timing}; "
              f"elapsed {time.perf_counter() - started:.0f} s)", flush=True)

    if not results:
        print("nothing finished yet: no tables written")
        return 0
    header = (
        f"Machine: {common.machine()}. Profile: {profile} "
        f"({'bundle GPU sizes' if args.gpu else CPU_PROFILE}); configs after the method file: "
        f"{', '.join(configs_extra) or 'none'}"
        + (f"; overrides {shared}" if shared else "") + ".\n\n"
        f"Command (resumable; `--report-only` rebuilds the tables from finished runs): `{reproduce_command()}`\n\n"
        + (f"{args.note}\n\n" if args.note else "")
    )
    if variants:
        markdown = (
            f"## Ablation `{Path(args.ablation).stem}` (validation mean Dice, %)\n\n" + header
            + "Every variant is configs/methods/dsp.yaml with the listed bundle overrides (`lambda_dsp=0` makes it"
            " FixMatch + PLF); settings are chosen on the validation"
            " split (best validation mean Dice over the run), never on the test split. Δ is the per-seed difference"
            " to the reference, mean ± std over seeds.\n\n"
            + ablation_table(results, variants) + "\n"
        )
        print(markdown)
        if not args.no_write:
            common.write_section(Path(args.ablation).stem, markdown)
        return 0
    plot_path = REPO / "benchmarks" / ("accuracy_vs_acr.png" if profile == "cpu" else "accuracy_vs_acr_gpu.png")
    markdown = (
        f"## Accuracy versus annotation compression rate ({profile})\n\n" + header
        + "Test mean Dice (%) over the classes present in the test split, of the best-validation checkpoint; mean ±"
        " sample std over seeds (number of seeds). The seed draws the cross-sub-volume split and the images that keep"
        " masks, so each seed is a different experiment and the paired rows compare methods on the same one. All"
        " methods train for the same number of iterations. The U-Net learns from the masked images only; FixMatch +"
        " PLF also uses the weak annotations (tags, boxes, points) of the other images, through the filtering of its"
        " pseudo-labels; DSP uses them through the filtering and the DSP loss.\n\n"
        + summary_table(results, "test") + "\n\n"
        + f"![Dice versus ACR]({plot_path.name})\n\n"
        + "Per-seed test mean Dice (%):\n\n" + seed_table(results, "test") + "\n\n"
        + "Best validation mean Dice (%), the model-selection criterion:\n\n" + summary_table(results, "val") + "\n\n"
        + "Test Dice per class (%), mean over seeds:\n\n" + per_class_table(results) + "\n"
    )
    print(markdown)
    if not args.no_write:
        plot(results, plot_path, f"synthetic FIB-SEM, {profile} profile, mean ± std over seeds")
        common.write_section(f"accuracy-{profile}", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
