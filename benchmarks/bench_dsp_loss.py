"""Forward + backward of the complete DSP loss (collation + fused operator + positives) against a straightforward
vectorised PyTorch version of the same formula that materialises the similarities.

Batch (issue 3): B=8 images of 256x256, C=17 classes, D=64, K=5, 12 boxes and 12 points per image, tags on half
the images, full masks on 2. Annotations are derived from synthetic label maps (random overlapping rectangles over
a background class), so they are consistent: boxes are the visible extents of the rectangles (not exhaustive: the
background has none), points lie inside them, tags are the classes present.

    python benchmarks/bench_dsp_loss.py [--threads 2 1] [--repeats 21] [--baseline-repeats 3]

Prints a table and writes it, with the machine, the load and the command, to the ``bench_dsp_loss`` section of
benchmarks/RESULTS.md.
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from dsp_monai.annotations import collate_annotations  # noqa: E402
from dsp_monai.losses import dsp_loss  # noqa: E402
from dsp_monai.ops import pack_allowed, prototype_logsumexp, prototype_logsumexp_reference  # noqa: E402

TYPES = ("mask", "box", "point", "image")


def make_records(seed, batch, classes, shape, boxes, points, tagged, masked, side):
    """Consistent annotation records derived from random label maps (see the module docstring)."""
    rng = np.random.default_rng(seed)
    height, width = shape
    records = []
    for image in range(batch):
        while True:
            label = np.zeros(shape, dtype=np.int64)
            rects = []
            for _ in range(boxes):
                h, w = rng.integers(side[0], side[1] + 1, size=2)
                r0, c0 = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
                cls = int(rng.integers(1, classes))
                label[r0 : r0 + h, c0 : c0 + w] = cls
                rects.append((r0, c0, r0 + h, c0 + w, cls))
            visible = [np.argwhere(label[r0:r1, c0:c1] == cls) + (r0, c0) for r0, c0, r1, c1, cls in rects]
            if all(len(v) for v in visible):
                break
        box_rows = [[*v.min(0), *(v.max(0) + 1)] for v in visible]
        picks = rng.integers(0, boxes, size=points)
        point_rows = [visible[k][rng.integers(len(visible[k]))] for k in picks]
        record = {
            "boxes": torch.tensor(box_rows),
            "box_classes": torch.tensor([r[4] for r in rects]),
            "boxes_exhaustive": False,
            "points": torch.tensor(np.array(point_rows)),
            "point_classes": torch.tensor([rects[k][4] for k in picks]),
        }
        if image < tagged:
            record["tags"] = torch.from_numpy(np.unique(label))
        elif image < tagged + masked:
            record["label"] = torch.from_numpy(label)
        records.append(record)
    return records


def baseline_loss(embeddings, prototypes, temperature, records, ignore_index=255):
    """The same loss, written the straightforward vectorised way: dense (B, C, *spatial) masks, the materialising
    reference operator (the K similarities and a (C, B, C, pixels) weight tensor), dense box masks."""
    batch, classes = embeddings.shape[0], prototypes.shape[0]
    spatial = tuple(embeddings.shape[2:])
    device = embeddings.device
    possible = torch.ones(batch, classes, *spatial, dtype=torch.bool, device=device)
    grids = torch.meshgrid(*[torch.arange(s, device=device) for s in spatial], indexing="ij")
    box_masks, box_images, box_classes = [], [], []
    for b, record in enumerate(records):
        if record.get("label") is not None:
            label = record["label"].to(device)
            labelled = label != ignore_index
            one_hot = F.one_hot(label.clamp(0, classes - 1), classes).movedim(-1, 0).bool()
            possible[b] &= torch.where(labelled, one_hot, torch.ones_like(one_hot))
        if record.get("tags") is not None:
            tagged = torch.zeros(classes, dtype=torch.bool, device=device)
            tagged[record["tags"].to(device)] = True
            possible[b] &= tagged.view(classes, *([1] * len(spatial)))
        if record.get("boxes") is not None:
            rows = record["boxes"].to(device)
            ndim = len(spatial)
            inside = torch.ones(len(rows), *spatial, dtype=torch.bool, device=device)
            for axis in range(ndim):
                coord = grids[axis].unsqueeze(0)
                lo = rows[:, axis].view(-1, *([1] * ndim))
                hi = rows[:, ndim + axis].view(-1, *([1] * ndim))
                inside &= (coord >= lo) & (coord < hi)
            cls = record["box_classes"].to(device)
            covered = torch.zeros(classes, *spatial, dtype=torch.bool, device=device)
            covered.index_put_((cls,), inside, accumulate=True)
            boxed = torch.zeros(classes, dtype=torch.bool, device=device)
            boxed[cls] = True
            if record.get("boxes_exhaustive", True):
                boxed[:] = True
            possible[b] &= covered | ~boxed.view(classes, *([1] * ndim))
            box_masks.append(inside)
            box_images.append(torch.full_like(cls, b))
            box_classes.append(cls)
        if record.get("points") is not None:
            pts = record["points"].to(device)
            one_hot = F.one_hot(record["point_classes"].to(device), classes).bool()
            index = (torch.full((len(pts),), b, device=device), slice(None), *pts.unbind(1))
            possible[index] &= one_hot
    logits, log_z = prototype_logsumexp_reference(embeddings, prototypes, temperature, pack_allowed(possible))
    terms = {}
    labels = [r.get("label") for r in records]
    mask_images = [b for b, label in enumerate(labels) if label is not None]
    sums = torch.zeros(4, classes, dtype=log_z.dtype, device=device)
    counts = torch.zeros(4, classes, dtype=log_z.dtype, device=device)
    if mask_images:
        label = torch.stack([labels[b] for b in mask_images]).to(device)
        s = logits[mask_images]
        labelled = label != ignore_index
        picked = s.gather(1, label.clamp(0, classes - 1).unsqueeze(1)).squeeze(1)
        one_hot = F.one_hot(label.clamp(0, classes - 1), classes).movedim(-1, 1) & labelled.unsqueeze(1)
        sums[0] = (one_hot * picked.unsqueeze(1)).flatten(2).sum(-1).sum(0)
        counts[0] = one_hot.flatten(2).sum(-1).sum(0)
    if box_masks:
        inside = torch.cat(box_masks)
        images, cls = torch.cat(box_images), torch.cat(box_classes)
        scores = logits[images, cls].masked_fill(~inside, -math.inf)
        per_box, lines = 0, 0
        for axis in range(len(spatial)):
            others = tuple(1 + a for a in range(len(spatial)) if a != axis)
            line_max, line_ok = scores.amax(dim=others), inside.any(dim=others)
            per_box = per_box + torch.where(line_ok, line_max, torch.zeros_like(line_max)).sum(1)
            lines = lines + line_ok.sum(1)
        sums[1] = torch.zeros(classes, dtype=log_z.dtype, device=device).index_add(0, cls, per_box)
        counts[1] = torch.zeros(classes, dtype=log_z.dtype, device=device).index_add(0, cls, lines.to(log_z.dtype))
    for b, record in enumerate(records):
        if record.get("points") is not None:
            pts, cls = record["points"].to(device), record["point_classes"].to(device)
            sums[2] = sums[2].index_add(0, cls, logits[(b, cls, *pts.unbind(1))])
            counts[2] = counts[2].index_add(0, cls, torch.ones_like(cls, dtype=log_z.dtype))
        if record.get("tags") is not None:
            cls = torch.unique(record["tags"].to(device))
            log_mean = torch.logsumexp(logits[b, cls].flatten(1), 1) - math.log(logits[b, 0].numel())
            sums[3] = sums[3].index_add(0, cls, log_mean)
            counts[3] = counts[3].index_add(0, cls, torch.ones_like(cls, dtype=log_z.dtype))
    per_type = torch.where(counts > 0, log_z - sums / counts.clamp(min=1), torch.zeros_like(sums)).sum(1)
    terms = {name: per_type[i] for i, name in enumerate(TYPES)}
    terms["total"] = per_type.sum()
    return terms


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=(2, 1), help="CPU thread counts to time")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--baseline-repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=17)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--prototypes", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--boxes", type=int, default=12)
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--box-side", type=int, nargs=2, default=(16, 64), help="rectangle side range in pixels")
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    load_before = ", ".join(f"{value:.2f}" for value in os.getloadavg())

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    shape = tuple(args.size)
    tagged, masked = args.batch // 2, min(2, args.batch - args.batch // 2)
    records = make_records(
        args.seed, args.batch, args.classes, shape, args.boxes, args.points, tagged, masked, args.box_side
    )
    generator = torch.Generator().manual_seed(args.seed)
    embeddings = torch.randn(args.batch, args.dim, *shape, generator=generator).to(device).requires_grad_()
    prototypes = torch.randn(args.classes, args.prototypes, args.dim, generator=generator).to(device).requires_grad_()
    tau = args.temperature

    def ours():
        batch = collate_annotations(records, args.classes, shape, device=device)
        out = dsp_loss(embeddings, prototypes, tau, batch)
        out["total"].backward()
        return out

    def collate_only():
        collate_annotations(records, args.classes, shape, device=device)

    batch = collate_annotations(records, args.classes, shape, device=device)

    def loss_only():
        dsp_loss(embeddings, prototypes, tau, batch)["total"].backward()

    def operator_only():
        logits, log_z = prototype_logsumexp(embeddings, prototypes, tau, batch.allowed)
        (log_z.sum() + logits[:, :, 0, 0].sum()).backward()

    def baseline():
        terms = baseline_loss(embeddings, prototypes, tau, records)
        terms["total"].backward()
        return terms

    def timed(fn, repeats):
        fn()
        sync()
        times = []
        for _ in range(repeats):
            embeddings.grad = prototypes.grad = None
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times), min(times)

    got = ours()
    want = baseline()
    for name in (*TYPES, "total"):
        a, b = float(got[name].detach()), float(want[name].detach())
        if not abs(a - b) <= 1e-3 * max(1.0, abs(b)):
            raise SystemExit(f"ours and the baseline disagree on {name}: {a} vs {b}")

    rows, speedups = [], []
    cases = {
        "ours: complete loss (collation + operator + positives), fwd+bwd": (ours, args.repeats),
        "ours: collation only": (collate_only, args.repeats),
        "ours: loss on a collated batch, fwd+bwd": (loss_only, args.repeats),
        "ours: operator alone (log Z + 1 logit pixel), fwd+bwd": (operator_only, args.repeats),
        "baseline: straightforward vectorised PyTorch, fwd+bwd": (baseline, args.baseline_repeats),
    }
    for threads in args.threads:
        torch.set_num_threads(threads)
        results = {name: timed(fn, repeats) for name, (fn, repeats) in cases.items()}
        complete = results["ours: complete loss (collation + operator + positives), fwd+bwd"][0]
        for name, (median, best) in results.items():
            rows.append((name, threads, f"{median * 1e3:.1f}", f"{best * 1e3:.1f}", f"{median / complete:.2f}"))
        baseline_time = results["baseline: straightforward vectorised PyTorch, fwd+bwd"][0]
        speedups.append(f"{baseline_time / complete:.1f}x on {threads} thread(s)")
    setting = (
        f"B={args.batch}, C={args.classes}, D={args.dim}, K={args.prototypes}, {shape[0]}x{shape[1]}, "
        f"{args.boxes} boxes and {args.points} points per image, tags on {tagged} images, masks on {masked}, "
        f"float32, device {device}"
    )
    text = common.table(("what", "threads", "median ms", "best ms", "x ours"), rows)
    values = ", ".join(f"{name} {float(got[name].detach()):.4f}" for name in (*TYPES, "total"))
    summary = (
        f"Ours is {', '.join(speedups)} faster than the baseline; both give the same loss ({values}). The "
        "authors' published module takes 10-31 s for this batch on these machines (issue 3)."
    )
    print(setting)
    print(text)
    print(summary)
    if not args.no_write:
        common.write_section(
            "bench_dsp_loss",
            "## DSP loss: forward + backward (benchmarks/bench_dsp_loss.py)\n\n"
            f"Machine: {common.machine()}; load average before the run {load_before}\n\n"
            f"Command: `{common.command()}`\n\n"
            f"Setting: {setting}; medians over {args.repeats} repeats ({args.baseline_repeats} for the baseline)."
            f"\n\n{text}\n\n{summary}\n",
        )

if __name__ == "__main__":
    main()
