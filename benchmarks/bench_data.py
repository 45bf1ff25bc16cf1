"""Training-pipeline throughput: samples per second through the bundle's training transforms (load from zarr,
valid mask, flips / quarter turns, crop, weak labels of each item's annotation type, weak / strong views) and the
collation, on the default synthetic dataset at ACR 8 with all weak types.

    python benchmarks/bench_data.py [--workers 0 2] [--batches 20] [--no-write]

Two settings: a plain Dataset (every transform each time) and a CacheDataset (deterministic prefix cached, as the
bundle uses it). Prints a table and rewrites its section of benchmarks/RESULTS.md.
"""

import argparse
import sys
import tempfile
import time

import torch
from monai.data import CacheDataset, DataLoader, Dataset

import common
from dsp_monai.data.collate import annotated_collate
from dsp_monai.data.experiment import prepare_experiment
from dsp_monai.data.samplers import StratifiedAnnotationSampler
from dsp_monai.data.synthetic import ensure_default_dataset
from dsp_monai.engines.data import training_transforms

SECTION = "bench_data"


def throughput(dataset, items, workers, batches, batch_size=8, seed=0):
    sampler = StratifiedAnnotationSampler(items, seed=seed, num_samples=batches * batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=annotated_collate, persistent_workers=False)
    start = time.perf_counter()
    count = 0
    for batch in loader:
        count += batch["image"].shape[0]
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    parser.add_argument("--batches", type=int, default=20, help="batches of 8 per measurement")
    parser.add_argument("--data-root", default=None, help="where the default dataset is (generated if absent)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/RESULTS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = args.data_root or tempfile.mkdtemp(prefix="dsp_bench_data_")
    datalist = ensure_default_dataset(root)
    experiment = prepare_experiment(datalist, tempfile.mkdtemp(prefix="dsp_bench_split_"), acr=8)
    items = experiment["training"]
    transform = training_transforms(experiment["class_names"], (128, 128))
    rows = []
    cached = CacheDataset(items, transform, progress=False)
    for label, dataset in (("Dataset (no cache)", Dataset(items, transform)), ("CacheDataset", cached)):
        for workers in args.workers:
            rate = throughput(dataset, items, workers, args.batches)
            rows.append([label, workers, f"{rate:.1f}"])
            sys.stdout.write(f"{label:20s} workers={workers}: {rate:.1f} samples/s\n")
    text = common.table(["dataset", "workers", "samples / s"], rows)
    sys.stdout.write(text + "\n")
    if not args.no_write:
        common.write_section(SECTION, (
            "## Training data pipeline throughput\n\n"
            f"Machine: {common.machine()}. Command: `{common.command()}`.\n"
            "Default synthetic data (128 x 128 slices from zarr), ACR 8 with tags, boxes and points, batches of 8 from the\n"
            "stratified sampler through `dsp_monai.engines.data.training_transforms` and `annotated_collate`; one torch\n"
            "thread per process. A training step of the CPU configuration takes ~0.5-0.7 s per batch of 8.\n\n"
            + text + "\n"
        ))


if __name__ == "__main__":
    main()
