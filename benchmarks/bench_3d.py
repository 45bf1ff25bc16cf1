"""Volumes: DSP against the masks-only U-Net in 3D on the synthetic FIB-SEM volumes, and the memory of a 3D step.

Trains and test-evaluates ``configs/methods/{dsp,unet}.yaml`` with the 3D override ``bundle/configs/train_3d.yaml``
at its CPU profile (3D BasicUNet features 4-64, 16 x 48 x 48 patches, batch 2, 200 iterations) on the bundle's
default synthetic data read as volumes (16 crops of 20 x 128 x 128 voxels; at ACR 8 one training volume keeps its
mask, the others carry tags, boxes or points), through the bundle's CLI as :mod:`bench_accuracy` does, for several
seeds; reports the test mean Dice over whole volumes and the wall time per training iteration.

Memory: the peak resident memory of one training step (forward and backward of the DSP network on the weak and the
strong view of a batch, cross-entropy, AdamW step) at the CPU profile, measured in a fresh process; and, for both
profiles, an estimate from the model's sizes: parameters x 4 (weights, gradients, two AdamW moments) plus the
outputs of every leaf module of one forward pass (what autograd keeps for backward), computed on PyTorch's ``meta``
device, so the GPU profile (96^3 patches) is estimated without a GPU. The estimate at the CPU profile, next to the
measurement, says how far to trust it.

Resumable: a run whose ``test_metrics.json`` exists is skipped; run the same command again to continue.

    python benchmarks/bench_3d.py                       # dsp and unet, ACR 8, seeds 0-2
    python benchmarks/bench_3d.py --seeds 0 --no-write
    python benchmarks/bench_3d.py --report-only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_accuracy as acc  # noqa: E402
import common  # noqa: E402

REPO = acc.REPO
TRAIN = "bundle/configs/train.yaml"
TRAIN_3D = "bundle/configs/train_3d.yaml"


def configs_of(method: str) -> list[str]:
    return [TRAIN, f"configs/methods/{method}.yaml", TRAIN_3D]


def profile_sizes(profile: str) -> dict:
    """The sizes of a profile of train_3d.yaml (``cpu`` or ``gpu``), read with MONAI's config parser."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(REPO / TRAIN), str(REPO / TRAIN_3D)])
    return dict(parser.get("sizes")[profile])


def _network(sizes: dict, num_classes: int, device: str):
    from dsp_monai.networks import DSPBasicUNet

    return DSPBasicUNet(spatial_dims=3, in_channels=1, num_classes=num_classes, features=sizes["features"],
                        embedding_dim=sizes["embedding_dim"], num_prototypes=5, temperature=0.05).to(device)


def estimate_bytes(sizes: dict, num_classes: int = 11, views: int = 2, bytes_per_value: int = 4) -> dict:
    """Parameters x 4 and the leaf-module outputs of one forward pass on ``views`` x batch patches (meta device)."""
    import torch

    network = _network(sizes, num_classes, "meta")
    outputs = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel()))
             for m in network.modules() if not list(m.children())]
    batch = views * sizes["batch_size"]
    network(torch.empty(batch, 1, *sizes["roi_size"], device="meta"))
    for hook in hooks:
        hook.remove()
    parameters = sum(p.numel() for p in network.parameters())
    return {"parameters": parameters, "state_bytes": 4 * parameters * 4,
            "activation_bytes": sum(outputs) * bytes_per_value, "batch": batch}


def measure_step() -> None:
    """In a fresh process: one DSP-network training step at the CPU profile; prints the peak RSS increase."""
    import torch

    torch.manual_seed(0)
    sizes = profile_sizes("cpu")
    network = _network(sizes, 11, "cpu")
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    batch = 2 * sizes["batch_size"]
    images = torch.rand(batch, 1, *sizes["roi_size"])
    labels = torch.randint(0, 11, (batch, *sizes["roi_size"]))

    def step():
        optimizer.zero_grad()
        logits = network(images)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()

    step()  # allocator and optimizer state warm
    started = time.perf_counter()
    peak = common.peak_rss_increase(step)
    print(json.dumps({"peak_bytes": peak, "step_s": time.perf_counter() - started}))


def memory_table() -> str:
    measured = json.loads(common.run_isolated(["--measure-step"]).strip().splitlines()[-1])
    rows = []
    for profile in ("cpu", "gpu"):
        sizes = profile_sizes(profile)
        fp32 = estimate_bytes(sizes)
        amp = estimate_bytes(sizes, bytes_per_value=2)
        gib = 2**30
        rows.append([
            profile, "x".join(map(str, sizes["roi_size"])), f"2 x {sizes['batch_size']}",
            str(sizes["features"]), f"{fp32['parameters'] / 1e6:.2f} M",
            f"{(fp32['state_bytes'] + fp32['activation_bytes']) / gib:.2f}",
            f"{(amp['state_bytes'] + amp['activation_bytes']) / gib:.2f}",
            f"{measured['peak_bytes'] / gib:.2f} ({measured['step_s']:.1f} s)" if profile == "cpu" else "no GPU here",
        ])
    return common.table(["profile", "patch", "views x batch", "features", "parameters",
                         "estimate fp32 (GiB)", "estimate, 16-bit activations (GiB)",
                         "measured CPU peak (GiB, step time)"],
                        rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["dsp", "unet"])
    parser.add_argument("--acr", type=int, default=8)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--root", default=str(REPO / "runs" / "volumes"), help="output root of the runs")
    parser.add_argument("--note", default="", help="free text written under the command in RESULTS.md")
    parser.add_argument("--report-only", action="store_true", help="no training: tables of finished runs")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave RESULTS.md alone")
    parser.add_argument("--measure-step", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_dir(root: Path, method: str, acr: int, seed: int) -> Path:
    """The folder of one 3D run."""
    return root / method / f"acr{acr}" / f"seed{seed}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.measure_step:
        measure_step()
        return 0
    root = Path(args.root)
    results = {}
    for seed in args.seeds:
        for method in args.methods:
            folder = run_dir(root, method, args.acr, seed)
            if not args.report_only:
                acc.execute(folder, configs_of(method), args.acr, seed, {})
            result = acc.load_result(folder)
            if result is None:
                print(f"{method} seed {seed}: no finished result", flush=True)
                continue
            epochs = acc.epoch_seconds(folder / "train.log")
            result["per_iteration"] = sum(epochs.values()) / result["iterations"] if epochs else None
            results[(method, args.acr, seed)] = result
            print(f"{method} seed {seed}: test {100 * result['test']:.1f}, {result['iterations']} iterations in "
                  f"{result['seconds']:.0f} s", flush=True)
    rows = []
    for method in args.methods:
        done = [r for (m, _, _), r in results.items() if m == method]
        if not done:
            continue
        per_iteration = [r["per_iteration"] for r in done if r["per_iteration"] is not None]
        rows.append([method, acc.format_mean_std([r["test"] for r in done]),
                     " / ".join(f"{100 * r['test']:.1f}" for r in done),
                     f"{sum(per_iteration) / len(per_iteration):.2f}" if per_iteration else "n/a"])
    markdown = (
        "## Volumes: DSP and the U-Net in 3D (train_3d.yaml)\n\n"
        f"Machine: {common.processor()}, {common.machine()}; load average at the end {common.load_average()} "
        "(shared with other work: compare the methods, not absolute times).\n\n"
        f"Command (resumable): `{acc.reproduce_command()}`\n\n" + (f"{args.note}\n\n" if args.note else "")
        + f"Synthetic FIB-SEM volumes (16 crops of 20 x 128 x 128 voxels, 10.48 x 8 x 8 nm), ACR {args.acr} over "
        "volumes, train_3d.yaml's CPU profile (200 iterations of batch 2, 16 x 48 x 48 patches). Test mean Dice (%) "
        "over whole volumes (sliding window) of the best-validation model, mean ± sample std (count); wall seconds "
        "per iteration (mean over seeds) are the epochs' times in train.log divided by the iterations, so they "
        "include data loading and validation.\n\n"
        + common.table(["method", "test mean Dice (%)", "per seed", "s / iteration"], rows)
        + "\n\nMemory of one 3D training step (DSP network, weak + strong view):\n\n" + memory_table() + "\n"
    )
    print(markdown)
    if not args.no_write:
        common.write_section("volumes-3d", markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
