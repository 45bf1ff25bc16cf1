"""Plots of training diagnostics (``diagnostics.jsonl`` of :class:`dsp_monai.engines.diagnostics.LossDiagnostics`)
and validation curves of finished runs, for docs/diagnosis.md.

    python benchmarks/plot_diagnostics.py --runs "defaults=runs/no_harm/before/brain/dsp/seed0" \
        "new=runs/no_harm/defaults/brain/dsp/seed0" --out docs/diagnosis_brain.png --title "brain, seed 0"

Each ``--runs`` entry is ``LABEL=FOLDER``. Panels: validation mean Dice per epoch (from the folder's TensorBoard
events, so runs without diagnostics can be shown too); the gradient norm on the backbone of the mask CE and of
all DSP terms together, and the DSP share of the total loss gradient (runs with a DSP term and diagnostics only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def validation_curve(folder: Path) -> list[tuple[int, float]]:
    """(epoch, validation mean Dice) pairs from the TensorBoard events of a run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if "val_mean_dice" in accumulator.Tags().get("scalars", []):
            for event in accumulator.Scalars("val_mean_dice"):
                points[event.step] = event.value
    return sorted(points.items())


def diagnostics(folder: Path) -> list[dict]:
    path = folder / "diagnostics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="LABEL=FOLDER")
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=110)
    for index, entry in enumerate(args.runs):
        label, _, folder = entry.partition("=")
        folder = Path(folder)
        colour = f"C{index}"  # one colour per run in every panel
        curve = validation_curve(folder)
        if curve:
            axes[0].plot([e for e, _ in curve], [100 * v for _, v in curve], marker="o", ms=3, color=colour,
                         label=label)
        records = [r for r in diagnostics(folder) if r.get("kind") == "train" and r.get("dsp_all/grad_backbone")]
        if records:
            steps = [r["iteration"] for r in records]
            axes[1].plot(steps, [r.get("dsp_all/grad_backbone", 0.0) for r in records], color=colour,
                         label=f"{label}: DSP")
            axes[1].plot(steps, [r.get("ce/grad_backbone", 0.0) for r in records], ls="--", color=colour,
                         label=f"{label}: mask CE")
            axes[2].plot(steps, [r.get("dsp_all/grad_backbone", 0.0) / max(r.get("total/grad_backbone", 0.0), 1e-12)
                                 for r in records], color=colour, label=label)
    axes[0].set(xlabel="epoch", ylabel="validation mean Dice (%)", title="validation")
    axes[1].set(xlabel="iteration", ylabel="gradient norm on the backbone", yscale="log",
                title="weighted term gradients")
    axes[2].set(xlabel="iteration", ylabel="|grad DSP| / |grad total|", title="DSP share of the update")
    for axis in axes:
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    if args.title:
        figure.suptitle(args.title, fontsize=10)
    figure.tight_layout()
    figure.savefig(args.out)
    plt.close(figure)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
