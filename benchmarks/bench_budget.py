"""The training budget of the CPU study: validation learning curves of the masks-only U-Net at ACR 1 (cross-entropy,
and cross-entropy + Dice), and the cost of an epoch of each method, through the bundle's CLI.

Every run is a subprocess of ``python -m monai.bundle run training`` on ``bundle/configs/train.yaml`` +
``configs/methods/<method>.yaml`` + the budget profile (``configs/sweeps/cpu_budget.yaml``) + an overlay with the
run's settings:

- curves: ``ROOT/long/<loss>/<method>/acr<ACR>/seed<SEED>``, ``--epochs`` epochs (a long run, its cosine learning
  rate schedule over all of them) validated after every epoch; the validation mean Dice per epoch is read back from
  the run's TensorBoard events;
- shorter runs (``--shorter EPOCHS ...``): ``ROOT/epochs<EPOCHS>/<loss>/...``, the same for fewer epochs, each with
  its own schedule, to check whether a shorter budget reaches the long run's plateau;
- cost (``--cost-methods``): ``ROOT/cost/<method>``, ``--cost-epochs`` epochs of the profile's iterations; the
  trainer's last epoch time (its iterations and one validation pass) gives the seconds per epoch and, times the
  profile's epochs, the time of one run at the budget.

Resumable: a finished run is skipped and an interrupted one resumes from its last checkpoint (the bundle does that);
run the same command again to continue.

    python benchmarks/bench_budget.py                                        # U-Net ACR 1 seed 0, ce and ce_dice
    python benchmarks/bench_budget.py --seeds 0 1 --shorter 30 --cost-methods unet fixmatch_plf dsp
    python benchmarks/bench_budget.py --no-long --shorter 30 60              # the shorter runs only
    python benchmarks/bench_budget.py --report-only

The plateau of a curve is the first epoch whose trailing ``--window``-epoch mean validation Dice is within
``--tolerance`` of the curve's highest trailing mean. Writes the tables with the machine, its load and the command
to the ``budget`` section of benchmarks/RESULTS.md and the curves to benchmarks/budget_learning_curve.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_accuracy  # noqa: E402
import common  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PROFILE = bench_accuracy.BUDGET_PROFILE
PLOT = "budget_learning_curve.png"
LOSS_LABELS = {"ce": "CE", "ce_dice": "CE + Dice"}


# ---------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------


def profile_settings(path: str) -> dict:
    """The profile's config ids (a flat YAML mapping), with ``max_epochs`` and ``iterations_per_epoch`` checked."""
    import yaml

    with open(REPO / path if not os.path.isabs(path) else path) as handle:
        content = yaml.safe_load(handle)
    for key in ("max_epochs", "iterations_per_epoch"):
        if not isinstance(content, dict) or not isinstance(content.get(key), int):
            raise ValueError(f"{path}: expected an integer '{key}' (the budget is max_epochs x iterations_per_epoch)")
    return content


def train(folder: Path, method: str, profile: str, acr: int, seed: int, overrides: dict) -> str:
    """Trains (or resumes) one run unless its metrics.json says it finished; returns ``"ran"`` or ``"skipped"``."""
    if bench_accuracy._training_finished(folder):
        return "skipped"
    folder.mkdir(parents=True, exist_ok=True)
    extra = bench_accuracy.write_overrides(folder, overrides)
    configs = ["bundle/configs/train.yaml", f"configs/methods/{method}.yaml", profile, *([str(extra)] if extra else [])]
    bench_accuracy._call(bench_accuracy.bundle_command("training", configs, acr, seed, folder), folder / "train.log")
    return "ran"


def validation_curve(folder: Path) -> dict:
    """``{epoch: validation mean Dice}`` from the TensorBoard events of a run folder (the last value of an epoch
    validated twice, as after an interrupted epoch)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not folder.is_dir():
        return {}
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    if "val_mean_dice" not in events.Tags()["scalars"]:
        return {}
    return {int(e.step): float(e.value) for e in events.Scalars("val_mean_dice")}


# ---------------------------------------------------------------------------------------------------------------
# Analysis (pure functions of the curves)
# ---------------------------------------------------------------------------------------------------------------


def trailing_mean(curve: dict, window: int) -> dict:
    """``{epoch: mean of the curve over the epochs (epoch - window, epoch]}`` for the epochs with a full window."""
    epochs = sorted(curve)
    return {e: sum(curve[x] for x in epochs[i - window + 1:i + 1]) / window
            for i, e in enumerate(epochs) if i + 1 >= window}


def plateau(curve: dict, window: int, tolerance: float) -> dict | None:
    """Where a curve levels off: the first epoch whose trailing mean is within ``tolerance`` of the highest trailing
    mean, with the best single validation; None for a curve shorter than the window."""
    smooth = trailing_mean(curve, window)
    if not smooth:
        return None
    top = max(smooth.values())
    first = min(e for e, v in smooth.items() if v >= top - tolerance)
    best_epoch = max(curve, key=lambda e: (curve[e], -e))
    return {"epoch": first, "smoothed": smooth[first], "top_smoothed": top, "best": curve[best_epoch],
            "best_epoch": best_epoch}


def curve_table(curves: dict, iterations_per_epoch: int) -> str:
    """Markdown table: one row per epoch, one column per curve (validation mean Dice, %)."""
    names = list(curves)
    epochs = sorted({e for c in curves.values() for e in c})
    rows = [[e, e * iterations_per_epoch, *[f"{100 * curves[n][e]:.1f}" if e in curves[n] else "-" for n in names]]
            for e in epochs]
    return common.table(["epoch", "iterations", *names], rows)


def plot(curves: dict, window: int, iterations_per_epoch: int, budget: int, path: Path, title: str,
         dashed=()) -> None:
    """The learning curves (thin: per epoch; thick: trailing mean; the names in ``dashed`` dashed) against
    iterations, the budget as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.0, 3.8), dpi=120)
    solid = [name for name in curves if name not in dashed]
    for name, curve in curves.items():
        # a dashed curve takes the colour of the solid one its name extends (its long run)
        owner = max((s for s in solid if name.startswith(s)), key=len, default=name)
        colour = f"C{solid.index(owner) if owner in solid else len(solid) + list(curves).index(name)}"
        epochs = sorted(curve)
        axis.plot([e * iterations_per_epoch for e in epochs], [100 * curve[e] for e in epochs], color=colour,
                  alpha=0.35, linewidth=0.9)
        smooth = trailing_mean(curve, window)
        axis.plot([e * iterations_per_epoch for e in smooth], [100 * v for v in smooth.values()], color=colour,
                  linewidth=1.8, linestyle="--" if name in dashed else "-", label=f"{name} ({window}-epoch mean)")
    axis.axvline(budget, color="black", linestyle=":", linewidth=1.0, label=f"budget: {budget} iterations")
    axis.set_xlabel("training iterations")
    axis.set_ylabel("validation mean Dice (%)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="unet", help="method file of configs/methods (default: unet)")
    parser.add_argument("--acr", type=int, default=1, help="ACR (default: 1)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    parser.add_argument("--losses", nargs="*", default=["ce", "ce_dice"], choices=list(LOSS_LABELS),
                        help="supervised losses of the curves (the bundle's supervised_loss; default: ce ce_dice; "
                             "none: no curves)")
    parser.add_argument("--epochs", type=int, default=80, help="epochs of the long runs (default: 80)")
    parser.add_argument("--profile", default=PROFILE, help=f"the budget profile (default: {PROFILE})")
    parser.add_argument("--long", action=argparse.BooleanOptionalAction, default=True,
                        help="train the long runs (default; --no-long: only report those there are)")
    parser.add_argument("--shorter", nargs="*", type=int, default=[], metavar="EPOCHS",
                        help="also train each curve's setting for these numbers of epochs, each with its own "
                             "schedule (default: none)")
    parser.add_argument("--cost-methods", nargs="*", default=[], metavar="METHOD",
                        help="methods whose epoch time to measure at the profile's sizes (default: none)")
    parser.add_argument("--cost-epochs", type=int, default=2, help="epochs of a cost run; the last is timed")
    parser.add_argument("--window", type=int, default=5, help="trailing-mean window of the plateau (epochs)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="plateau tolerance (Dice, default 0.01)")
    parser.add_argument("--root", default=None, help="output root (default: runs/budget)")
    parser.add_argument("--note", default="", help="free text written under the command in RESULTS.md")
    parser.add_argument("--report-only", action="store_true", help="no training: tables and plot of the runs")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave RESULTS.md and the plot")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = profile_settings(args.profile)
    per_epoch, budget_epochs = settings["iterations_per_epoch"], settings["max_epochs"]
    root = Path(args.root) if args.root else REPO / "runs" / "budget"
    load_before = os.getloadavg()
    started = time.perf_counter()

    plan = []  # (kind, name, folder, method, seed, overrides, epochs)
    for loss in args.losses:
        for seed in args.seeds:
            name = f"{LOSS_LABELS[loss]}, seed {seed}"
            tail = Path(loss) / args.method / f"acr{args.acr}" / f"seed{seed}"
            plan.append(("long", name, root / "long" / tail, args.method, seed,
                         {"supervised_loss": loss, "max_epochs": args.epochs}, args.epochs))
            for epochs in args.shorter:
                plan.append(("shorter", f"{name}, {epochs * per_epoch} it.", root / f"epochs{epochs}" / tail,
                             args.method, seed, {"supervised_loss": loss, "max_epochs": epochs}, epochs))
    for method in args.cost_methods:
        plan.append(("cost", method, root / "cost" / method, method, 0, {"max_epochs": args.cost_epochs},
                     args.cost_epochs))
    for kind, name, folder, method, seed, overrides, _ in plan:
        if not args.report_only and (kind != "long" or args.long):
            print(f"{kind} {method} {name}: {folder} ...", flush=True)
            status = train(folder, method, args.profile, args.acr, seed, overrides)
            print(f"  {status} (elapsed {time.perf_counter() - started:.0f} s)", flush=True)
    load_after = os.getloadavg()

    runs = [(kind, name, folder, epochs, validation_curve(folder))
            for kind, name, folder, _, _, _, epochs in plan if kind != "cost"]
    runs = [run for run in runs if run[4]]
    curves = {name: curve for _, name, _, _, curve in runs}
    rows = []
    for kind, name, folder, epochs, curve in runs:
        found = plateau(curve, args.window, args.tolerance)
        seconds = bench_accuracy.epoch_seconds(folder / "train.log")
        rows.append([
            name, f"{len(curve)} / {epochs}",
            "-" if found is None else f"{100 * found['best']:.1f} (epoch {found['best_epoch']})",
            "-" if found is None else f"{found['epoch']} ({found['epoch'] * per_epoch} it.)",
            "-" if found is None else f"{100 * found['smoothed']:.1f} / {100 * found['top_smoothed']:.1f}",
            f"{sum(seconds.values()) / 60:.1f}" if seconds else "-",
        ])
    summary = common.table(["run", "epochs done / planned", "best val Dice (%)", "plateau epoch",
                            f"{args.window}-epoch mean at plateau / highest (%)", "train minutes"], rows)
    costs = []
    for kind, name, folder, *_ in plan:
        if kind != "cost":
            continue
        seconds = bench_accuracy.epoch_seconds(folder / "train.log")
        if not seconds:
            costs.append([name, "-", "-", "-"])
            continue
        last = seconds[max(seconds)]
        costs.append([name, f"{last:.1f}", f"{last / per_epoch:.2f}", f"{budget_epochs * last / 60:.1f}"])
    load = (f"Load average (1/5/15 min): {' / '.join(f'{x:.2f}' for x in load_before)} before, "
            f"{' / '.join(f'{x:.2f}' for x in load_after)} after"
            + (" (report only: the load of the report, not of the runs)" if args.report_only else "") + ".")
    markdown = (
        "## Budget: learning curves of the masks-only U-Net (validation mean Dice, %)\n\n"
        f"Machine: {common.machine()}; processor: {common.processor()}; shared with other work: compare within one "
        f"table. {load}\n\n"
        f"Command (resumable; `--report-only` rebuilds the tables from the runs): `{common.command()}`\n\n"
        + (f"{args.note}\n\n" if args.note else "")
        + f"Profile `{args.profile}`: {settings}; budget = {budget_epochs} epochs x {per_epoch} iterations = "
        f"{budget_epochs * per_epoch} iterations. Curves: `{args.method}` at ACR {args.acr}, {args.epochs} epochs "
        f"(cosine learning-rate schedule over all of them), validated after every epoch. Plateau: the first epoch "
        f"whose {args.window}-epoch trailing mean is within {100 * args.tolerance:.0f} Dice points of the highest "
        "trailing mean.\n\n"
        + summary + "\n\n"
        + f"![learning curves]({PLOT})\n\n"
        + ("Cost of one epoch at the profile's sizes (its iterations, one validation pass, a checkpoint), the last of "
           f"{args.cost_epochs} epochs, and of a run of {budget_epochs} epochs at that rate:\n\n"
           + common.table(["method", "s / epoch", "s / iteration", "minutes / run"], costs) + "\n\n"
           if costs else "")
        + "Validation mean Dice (%) per epoch (runs named by their iterations are the shorter runs, each with its "
          "own schedule):\n\n" + curve_table(curves, per_epoch) + "\n"
    )
    print(markdown)
    if not curves:
        print("no validated epochs of a learning curve yet: RESULTS.md and the plot left as they are")
    elif not args.no_write:
        plot(curves, args.window, per_epoch, budget_epochs * per_epoch, REPO / "benchmarks" / PLOT,
             f"{args.method}, ACR {args.acr}, {args.profile}",
             dashed={name for kind, name, *_ in runs if kind == "shorter"})
        common.write_section("budget", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
