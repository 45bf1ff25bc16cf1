"""Interactive refinement of the MONAI Label app: Dice before and after 1, 3 and 5 simulated clicks per class on the
synthetic test images, and the time one refinement takes on CPU (128 x 128 test images and 256 x 256 ones).

A DSP model is trained first through the bundle CLI on the default synthetic dataset (``--max-epochs``, at the
bundle's CPU sizes; skipped when ``WORKDIR/models/model.pt`` exists or ``--checkpoint`` is given). Then, for each
test image of its split: the prediction of the trained network; in each round, one click per class present in the
image's mask, at the medoid of the largest connected region of that class that the current prediction misses; the
head is refined from the trained network with every click so far (dsp_monai.label.refine, with the app's default
steps, step size, time limit and anchor), and the refined prediction is the next round's. Dice per class over the annotated
pixels, averaged over the classes present, then over images. The medoid minimises the summed distance to the
region's pixels over at most ``MEDOID_CANDIDATES`` candidate pixels (all pixels of smaller regions).

    python benchmarks/bench_label_refine.py [--max-epochs 10] [--images 24] [--checkpoint model.pt]

Writes the ``label-refine`` section of benchmarks/RESULTS.md. Does not need MONAI Label.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from scipy import ndimage
from scipy.spatial.distance import cdist

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from dsp_monai.label.refine import anchor_mask, backbone_features, refine_head  # noqa: E402
from dsp_monai.label.settings import DEFAULT_CONF, BundleView  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ROUNDS = (1, 3, 5)
MEDOID_CANDIDATES = 256
IGNORE = 255


def train(workdir: Path, max_epochs: int) -> Path:
    """Trains DSP on the default synthetic dataset in ``workdir`` (unless done) and returns model.pt."""
    model = workdir / "models" / "model.pt"
    if model.is_file():
        return model
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
               str(REPO / "bundle" / "configs" / "train.yaml"), "--dataset_dir", str(workdir / "data"),
               "--output_dir", str(workdir / "train"), "--models_dir", str(workdir / "models"),
               "--max_epochs", str(max_epochs), "--val_interval", "1"]
    with open(workdir / "train.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    return model


def medoid(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """The pixel of ``region`` (bool) with the smallest summed distance to the region's pixels (over at most
    MEDOID_CANDIDATES candidates)."""
    pixels = np.argwhere(region)
    candidates = pixels if len(pixels) <= MEDOID_CANDIDATES else pixels[
        rng.choice(len(pixels), MEDOID_CANDIDATES, replace=False)]
    best = candidates[np.argmin(cdist(candidates, pixels).sum(axis=1))]
    return int(best[0]), int(best[1])


def clicks_for(prediction: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> list[tuple[list[int], int]]:
    """One click per class present in ``mask``: the medoid of its largest region the prediction misses."""
    clicks = []
    for cls in np.unique(mask[mask != IGNORE]).tolist():
        missed = (mask == cls) & (prediction != cls)
        components, count = ndimage.label(missed)
        if count == 0:
            continue
        sizes = ndimage.sum_labels(missed, components, index=np.arange(1, count + 1))
        clicks.append((list(medoid(components == 1 + int(np.argmax(sizes)), rng)), int(cls)))
    return clicks


def mean_dice(prediction: np.ndarray, mask: np.ndarray, num_classes: int) -> float:
    """Dice per class over annotated pixels (MONAI compute_dice), mean over the classes present in the mask."""
    valid = torch.as_tensor(mask != IGNORE)
    pred = one_hot(torch.as_tensor(prediction, dtype=torch.int64)[None, None], num_classes) * valid
    target = one_hot(torch.as_tensor(np.where(mask == IGNORE, 0, mask), dtype=torch.int64)[None, None],
                     num_classes) * valid
    dice = compute_dice(pred, target, include_background=True, ignore_empty=True)
    return float(torch.nanmean(dice))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=str(REPO / "runs" / "bench_label_refine"),
                        help="data, training run and model (default runs/bench_label_refine)")
    parser.add_argument("--checkpoint", default=None, help="a trained model.pt of the bundle's CPU sizes instead")
    parser.add_argument("--max-epochs", type=int, default=10, help="epochs of the model's training (default 10)")
    parser.add_argument("--images", type=int, default=24, help="test images used (default 24)")
    parser.add_argument("--timing-repeats", type=int, default=5, help="256 x 256 refinements timed (default 5)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="refinement time limit in seconds instead of the app's (its own RESULTS.md section)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)

    workdir = Path(args.workdir)
    started = time.time()
    model = Path(args.checkpoint) if args.checkpoint else train(workdir, args.max_epochs)
    split = json.loads((workdir / "train" / "split.json").read_text())
    class_names = split["class_names"]
    view = BundleView(str(REPO / "bundle"), class_names, {})
    network = view.network()
    state = torch.load(model, map_location="cpu")
    network.load_state_dict(state.get("model", state))
    network.eval()
    preprocessing, inferer, loss = view.preprocessing(), view.inferer(), view.dsp_loss()
    steps, lr, limit = (int(DEFAULT_CONF["refine_steps"]), float(DEFAULT_CONF["refine_learning_rate"]),
                        float(DEFAULT_CONF["refine_time_limit"]))
    radius, confidence = float(DEFAULT_CONF["refine_radius"]), float(DEFAULT_CONF["refine_confidence"])
    if args.time_limit is not None:
        limit = args.time_limit
    section = "label-refine" if args.time_limit is None else f"label-refine-limit{args.time_limit:g}"
    rng = np.random.default_rng(0)

    dice = {0: [], **{r: [] for r in ROUNDS}}
    seconds, taken = [], []
    items = split["test"][: args.images]
    shape = None
    for item in items:
        sample = preprocessing({"image": item["image"], "label": item["label"]})
        image = sample["image"].as_tensor()[None]
        mask = sample["label"].as_tensor()[0].numpy().astype(np.int64)
        shape = list(mask.shape)
        features = backbone_features(network, image, inferer)
        base = network.head(features)
        prediction = base[0].argmax(0).numpy()
        dice[0].append(mean_dice(prediction, mask, len(class_names)))
        points, classes = [], []
        for round_index in range(1, max(ROUNDS) + 1):
            for point, cls in clicks_for(prediction, mask, rng):
                points.append(point)
                classes.append(cls)
            if points:
                anchor = anchor_mask(base, points, radius, confidence)
                with torch.enable_grad():
                    logits, info = refine_head(network, features, points, classes, loss, steps, lr, limit,
                                               anchor=anchor)
                prediction = logits[0].argmax(0).numpy()
                seconds.append(info["seconds"])
                taken.append(info["steps"])
            if round_index in ROUNDS:
                dice[round_index].append(mean_dice(prediction, mask, len(class_names)))

    # time on 256 x 256: a test image upsampled x2, 10 clicks of the first image's classes
    item = items[0]
    sample = preprocessing({"image": item["image"], "label": item["label"]})
    big = F.interpolate(sample["image"].as_tensor()[None], scale_factor=2, mode="bilinear")
    big_mask = np.kron(sample["label"].as_tensor()[0].numpy().astype(np.int64), np.ones((2, 2), np.int64))
    features = backbone_features(network, big, inferer)
    big_base = network.head(features)
    clicks = (clicks_for(big_base[0].argmax(0).numpy(), big_mask, rng) * 10)[:10]
    big_anchor = anchor_mask(big_base, [p for p, _ in clicks], radius, confidence)
    big_seconds, big_steps = [], []
    for _ in range(args.timing_repeats):
        with torch.enable_grad():
            _, info = refine_head(network, features, [p for p, _ in clicks], [c for _, c in clicks], loss, steps, lr,
                                  limit, anchor=big_anchor)
        big_seconds.append(info["seconds"])
        big_steps.append(info["steps"])

    def row(name, values):
        return [name, f"{100 * statistics.mean(values):.1f}", f"{100 * (statistics.mean(values) - statistics.mean(dice[0])):+.1f}"]

    rows = [row("trained network (no click)", dice[0])] + [row(f"after {r} click(s) per class", dice[r]) for r in ROUNDS]
    load = os.getloadavg()[0]
    text = "\n".join([
        "## MONAI Label app: interactive refinement (benchmarks/bench_label_refine.py)"
        + ("" if args.time_limit is None else f", time limit {args.time_limit:g} s"),
        "",
        f"Machine: {common.machine()}; load average (1 min) at the end: {load:.2f} (the cores are shared with other "
        "work). Command: `" + common.command() + "`.",
        "",
        ("" if args.time_limit is None else "The app's time limit is replaced by --time-limit, to show what the "
         "steps achieve when the machine's load does not cut them short. ")
        + f"Model: DSP trained through the bundle CLI on the default synthetic dataset ({args.max_epochs} epochs at the "
        f"bundle's CPU sizes; {model.name if args.checkpoint else 'runs/bench_label_refine/models/model.pt'}). "
        f"{len(items)} test images of {shape[0]} x {shape[1]} from its split. Refinement settings: the app's defaults "
        f"(refine_steps {steps}, refine_learning_rate {lr}, time limit {limit:g} s, refine_radius {radius}, "
        f"refine_confidence {confidence}). Clicks accumulate over "
        "rounds; each refinement starts from the trained head with all clicks so far.",
        "",
        common.table(["", "mean Dice (%)", "change"], rows),
        "",
        f"Refinement time at {shape[0]} x {shape[1]} (1 to {max(ROUNDS)} clicks per class): median "
        f"{statistics.median(seconds):.3f} s, max {max(seconds):.3f} s, steps taken median "
        f"{statistics.median(taken):.0f} of {steps}.",
        f"Refinement time at 256 x 256 (10 clicks; image upsampled x2): median {statistics.median(big_seconds):.3f} s, "
        f"max {max(big_seconds):.3f} s over {args.timing_repeats} runs, steps taken median "
        f"{statistics.median(big_steps):.0f} of {steps} (the time limit stops earlier steps when the machine is "
        "loaded).",
        f"Total benchmark time {time.time() - started:.0f} s.",
    ])
    print(text)
    if not args.no_write:
        common.write_section(section, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
