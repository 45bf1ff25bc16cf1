"""Benchmark of the exact distance-map operators (targets in docs/ops.md).

Geodesic: exact (iterations=None), lamb = 1, 20 random seeds per map on a uniform-noise image (the hardest case
for sweeping methods: shortest paths wind), at 512x512, 1024x1024, 64x256x256 and B*S = 8 maps of 512x512, with
one thread and with two. Euclidean: ours against scipy.ndimage.distance_transform_edt on the same seeds. Every
time is the median of several repeats after a warm-up, the variants of a case (1 thread, 2 threads, scipy) timed
in turn within each repeat; speed-ups are ratios of times taken in the same run.
With a visible GPU, the CUDA kernels are timed too (CUDA events, after synchronisation).

Usage:
    python benchmarks/bench_geodesic.py [--repeats 7] [--note TEXT] [--no-write]
"""

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

import numpy as np
import scipy.ndimage as ndi
import torch

import common
from dsp_monai.ops import euclidean_distance, geodesic_distance

SEEDS_PER_MAP = 20
# (name, batch B, maps per image S, spatial shape, one-thread target in ms or None)
CASES = [
    ("512x512", 1, 1, (512, 512), 30.0),
    ("1024x1024", 1, 1, (1024, 1024), 150.0),
    ("64x256x256", 1, 1, (64, 256, 256), 2500.0),
    ("8 maps of 512x512 (B=2, S=4)", 2, 4, (512, 512), None),
]
# FastGeodis 1.0.5 CPU, raster scan, its default 2 iterations (approximate), one thread, this machine (ops.md §2).
FASTGEODIS_ANCHORS_MS = {"512x512": "30", "1024x1024": "136", "64x256x256": "2400-3500"}
# scipy EDT on this machine as recorded in ops.md §2, for comparison with the times measured here.
SCIPY_ANCHORS_MS = {"512x512": "5.2", "1024x1024": "39", "64x256x256": "360-570"}


def make_problem(batch, per_image, shape, generator):
    image = torch.rand(batch, 1, *shape, generator=generator)
    seeds = torch.zeros(batch, per_image, int(np.prod(shape)), dtype=torch.bool)
    for b in range(batch):
        for s in range(per_image):
            seeds[b, s, torch.randperm(seeds.shape[-1], generator=generator)[:SEEDS_PER_MAP]] = True
    return image, seeds.reshape(batch, per_image, *shape)


def interleaved_medians_ms(variants, repeats):
    """Median wall time and median process CPU time (ms) of each variant (name -> (threads, function)), timed in
    turn within each repeat so that a change of load on the shared cores affects all variants alike. Each variant
    runs once first as a warm-up. With one thread, the CPU time is what the call costs when it has a core to
    itself; the wall time also counts the waits while another process holds the core."""
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for repeat in range(repeats + 1):
        for name, (threads, function) in variants.items():
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                function()
                elapsed_wall, elapsed_cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
            finally:
                torch.set_num_threads(previous)
            if repeat > 0:
                wall[name].append(elapsed_wall)
                cpu[name].append(elapsed_cpu)
    return (
        {name: 1e3 * statistics.median(values) for name, values in wall.items()},
        {name: 1e3 * statistics.median(values) for name, values in cpu.items()},
    )


def run(repeats):
    generator = torch.Generator().manual_seed(0)
    geodesic_rows, euclidean_rows, cuda_rows = [], [], []
    for name, batch, per_image, shape, target in CASES:
        image, seeds = make_problem(batch, per_image, shape, generator)
        reps = max(3, repeats // 2) if len(shape) == 3 else repeats
        geodesic, geodesic_cpu = interleaved_medians_ms(
            {threads: (threads, lambda: geodesic_distance(image, seeds)) for threads in (1, 2)}, reps
        )
        geodesic_rows.append((name, geodesic[1], geodesic_cpu[1], geodesic[2], target))
        print(f"geodesic  {name:30s} 1 thread {geodesic[1]:9.1f} ms (CPU {geodesic_cpu[1]:9.1f} ms)   "
              f"2 threads {geodesic[2]:9.1f} ms", flush=True)

        maps = seeds.reshape(-1, *shape).numpy()
        euclidean, euclidean_cpu = interleaved_medians_ms(
            {
                "scipy": (1, lambda: [ndi.distance_transform_edt(~m) for m in maps]),
                1: (1, lambda: euclidean_distance(seeds)),
                2: (2, lambda: euclidean_distance(seeds)),
            },
            reps,
        )
        euclidean_rows.append((name, euclidean["scipy"], euclidean_cpu["scipy"], euclidean[1], euclidean_cpu[1],
                               euclidean[2]))
        print(f"euclidean {name:30s} scipy {euclidean['scipy']:9.1f} ms   ours 1 thread {euclidean[1]:9.1f} ms   "
              f"2 threads {euclidean[2]:9.1f} ms", flush=True)

        if torch.cuda.is_available():
            image_gpu, seeds_gpu = image.cuda(), seeds.cuda()
            geodesic_gpu = common.cuda_median_ms(lambda: geodesic_distance(image_gpu, seeds_gpu), repeats)
            euclidean_gpu = common.cuda_median_ms(lambda: euclidean_distance(seeds_gpu), repeats)
            cuda_rows.append((name, geodesic_gpu, euclidean_gpu))
            print(f"cuda      {name:30s} geodesic {geodesic_gpu:8.2f} ms   euclidean {euclidean_gpu:8.2f} ms")
    return geodesic_rows, euclidean_rows, cuda_rows


def markdown(geodesic_rows, euclidean_rows, cuda_rows, command, load_before, load_after, repeats, note):
    lines = [
        "## Distance-map operators: geodesic_distance and euclidean_distance",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {common.processor()}, os.cpu_count() = {os.cpu_count()}, {platform.platform()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
        + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU")
        + ".",
        f"Load average (1 min) before / after the run: {load_before:.2f} / {load_after:.2f} (the cores are shared).",
        "",
        *([note, ""] if note else []),
        f"Inputs: uniform-noise image (1 channel), {SEEDS_PER_MAP} random seeds per map, lamb = 1, exact "
        f"(iterations=None). Times are medians of {repeats} repeats ({max(3, repeats // 2)} in 3D) after a "
        "warm-up, the variants of a row timed in turn within each repeat; speed-ups are ratios within this run.",
        "",
        "### Geodesic (exact)",
        "",
        "| case | 1 thread, wall (ms) | 1 thread, CPU time (ms) | 2 threads, wall (ms) | speed-up 2 vs 1 (wall) | "
        "target | FastGeodis, 2 iterations, approximate (ms, ops.md) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, one, one_cpu, two, target in geodesic_rows:
        if target is None:
            target_text = f">= 1.6x speed-up ({'met' if one / two >= 1.6 else 'missed'})"
        else:
            target_text = (f"<= {target:g} ms, 1 thread (wall {'met' if one <= target else 'missed'}, "
                           f"CPU time {'met' if one_cpu <= target else 'missed'})")
        lines.append(f"| {name} | {one:.1f} | {one_cpu:.1f} | {two:.1f} | {one / two:.2f}x | {target_text} | "
                     f"{FASTGEODIS_ANCHORS_MS.get(name, '-')} |")
    lines += [
        "",
        "### Euclidean (exact EDT)",
        "",
        "| case | scipy distance_transform_edt, wall / CPU (ms) | ours, 1 thread, wall / CPU (ms) | "
        "ours, 2 threads, wall (ms) | scipy / ours (1 thread, wall) | scipy in ops.md (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, scipy_ms, scipy_cpu, one, one_cpu, two in euclidean_rows:
        lines.append(f"| {name} | {scipy_ms:.1f} / {scipy_cpu:.1f} | {one:.1f} / {one_cpu:.1f} | {two:.1f} | "
                     f"{scipy_ms / one:.2f}x | {SCIPY_ANCHORS_MS.get(name, '-')} |")
    if cuda_rows:
        lines += ["", "### CUDA", "", "| case | geodesic (ms) | euclidean (ms) |", "|---|---|---|"]
        for name, geodesic_ms, euclidean_ms in cuda_rows:
            lines.append(f"| {name} | {geodesic_ms:.2f} | {euclidean_ms:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (median reported)")
    parser.add_argument("--note", default="", help="free text written under the machine description")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/RESULTS.md alone")
    args = parser.parse_args(argv)
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + [shlex.quote(a) for a in sys.argv[1:]])
    load_before = os.getloadavg()[0]
    rows = run(args.repeats)
    load_after = os.getloadavg()[0]
    text = markdown(*rows, command, load_before, load_after, args.repeats, args.note)
    if not args.no_write:
        common.write_section("bench_geodesic", text)
    sys.stdout.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
