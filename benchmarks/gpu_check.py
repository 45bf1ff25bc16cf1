"""Pieces of the one-command GPU verification (benchmarks/gpu_check.sh): the environment description, the GPU
timings of the distance-map operators, and the assembly of the single Markdown report.

    python benchmarks/gpu_check.py environment
    python benchmarks/gpu_check.py geodesic [--repeats 10]
    python benchmarks/gpu_check.py report WORK_DIR REPORT_FILE
    python benchmarks/gpu_check.py record REPORT_FILE [--title TEXT]   (the report as a section of RESULTS.md)

Imports torch, numpy and dsp_monai.ops only (never MONAI: the GPU machines do not have it).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

GEODESIC_CASES = [
    # (name, images B, maps per image S, spatial shape)
    ("8 x 512x512 (B=8, S=1)", 8, 1, (512, 512)),
    ("8 maps of 512x512 (B=2, S=4)", 2, 4, (512, 512)),
    ("3D 64x256x256 (B=1, S=1)", 1, 1, (64, 256, 256)),
]
SEEDS_PER_MAP = 20


def environment() -> str:
    lines = [f"- Machine: {common.machine()}", f"- Processor: {common.processor()}",
             f"- Python {platform.python_version()}, torch {torch.__version__}, CUDA runtime {torch.version.cuda}"]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f"- GPU: {props.name}, compute capability {props.major}.{props.minor}, "
                     f"{props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} visible")
    else:
        lines.append("- GPU: none visible to torch (dry run: the CUDA build, tests and benchmarks are skipped)")
    nvcc = shutil.which("nvcc")
    if nvcc:
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
        lines.append(f"- nvcc: {version[-1] if version else 'no version output'}")
    else:
        lines.append("- nvcc: not on PATH")
    try:
        import monai  # noqa: F401
    except ImportError as error:
        lines.append(f"- MONAI: not importable ({error})")
    else:
        lines.append("- MONAI: IMPORTABLE (the check is meant to run without it)")
    compiler = os.environ.get("CXX", "c++")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()
    except OSError as error:
        version = [f"not runnable ({error})"]
    lines.append(f"- C++ compiler (CXX or c++): {compiler}: {version[0] if version else 'no version output'}")
    lines.append(f"- libstdc++ loaded with torch: {', '.join(_loaded_libraries('libstdc++')) or 'not found'}")
    lines.append(f"- dsp_monai._C: {_extension_description()}")
    return "\n".join(lines)


def _loaded_libraries(name):
    """Paths of the shared libraries of this process whose file name starts with ``name`` (from /proc/self/maps)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    paths = {line.split()[-1] for line in maps.read_text().splitlines() if "/" in line}
    return sorted(path for path in paths if Path(path).name.startswith(name))


def _extension_description():
    """The build report of dsp_monai._C, read in a child process so that a crash of the extension (seen once on the
    GPU machine) is reported as such instead of ending the environment description."""
    code = ("import json; from dsp_monai.ops._library import build_info; print(json.dumps(build_info()))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if child.returncode < 0:
        return f"importing it or reading its build report CRASHED (signal {-child.returncode})"
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["no error output"])[-1]
        return f"could not be loaded ({last})"
    info = json.loads(child.stdout)
    return (f"CUDA kernels {'yes, arch ' + ';'.join(info['cuda_archs']) if info['cuda'] else 'no'}, "
            f"OpenMP {'yes' if info['openmp'] else 'no'}")


def geodesic(repeats: int) -> str:
    if not torch.cuda.is_available():
        return "Skipped: no GPU visible to torch on this machine."
    from dsp_monai.ops import euclidean_distance, geodesic_distance

    generator = torch.Generator().manual_seed(0)
    rows = []
    for name, batch, maps, shape in GEODESIC_CASES:
        image = torch.rand(batch, 1, *shape, generator=generator)
        pixels = int(torch.tensor(shape).prod())
        seeds = torch.zeros(batch, maps, pixels, dtype=torch.bool)
        for b in range(batch):
            for s in range(maps):
                seeds[b, s, torch.randperm(pixels, generator=generator)[:SEEDS_PER_MAP]] = True
        seeds = seeds.view(batch, maps, *shape)
        image_gpu, seeds_gpu = image.cuda(), seeds.cuda()
        start = time.perf_counter()
        geodesic_ms = common.cuda_median_ms(lambda: geodesic_distance(image_gpu, seeds_gpu), repeats)
        euclidean_ms = common.cuda_median_ms(lambda: euclidean_distance(seeds_gpu), repeats)
        # one CPU run of the same maps: the speed-up, and a last agreement check at this size
        cpu_start = time.perf_counter()
        cpu = geodesic_distance(image, seeds)
        cpu_ms = (time.perf_counter() - cpu_start) * 1e3
        error = (geodesic_distance(image_gpu, seeds_gpu).cpu() - cpu).abs().max().item()
        rows.append([name, f"{geodesic_ms:.2f}", f"{euclidean_ms:.2f}", f"{cpu_ms:.0f}", f"{cpu_ms / geodesic_ms:.0f}x",
                     f"{error:.1e}"])
        sys.stderr.write(f"{name}: {time.perf_counter() - start:.1f} s\n")
    return (f"Exact (iterations=None), lamb = 1, {SEEDS_PER_MAP} random seeds per map, uniform-noise image; CUDA "
            f"times are medians of {repeats} runs (CUDA events); the CPU time is one run on "
            f"{torch.get_num_threads()} threads.\n\n"
            + common.table(["case", "geodesic ms", "euclidean ms", "geodesic CPU ms", "GPU speed-up",
                            "max |GPU - CPU|"], rows))


def report(work: Path, output: Path) -> None:
    """Assembles WORK/stages.tsv (name, status, seconds, log), WORK/environment.md and the benchmark sections
    (WORK/*.section.md, in stage order) into one Markdown file."""
    stages = [line.split("\t") for line in (work / "stages.tsv").read_text().splitlines() if line.strip()]
    total = sum(float(s[2]) for s in stages)
    failed = [s[0] for s in stages if s[1] not in ("ok", "skipped")]
    verdict = "all stages passed" if not failed else "FAILED: " + ", ".join(failed)
    parts = [
        "# GPU verification report (benchmarks/gpu_check.sh)",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {verdict}; total {total:.0f} s (budget 480 s).",
        "",
        (work / "environment.md").read_text().strip() if (work / "environment.md").exists() else "",
        "",
        "## Stages",
        "",
        common.table(["stage", "status", "seconds", "log"], [[s[0], s[1], s[2], f"`{Path(s[3]).name}`"]
                                                           for s in stages]),
    ]
    for name, status, _, log in stages:
        section = work / f"{name}.section.md"
        parts += ["", f"## {name}", ""]
        if section.exists():
            parts.append(section.read_text().strip())
        log_text = Path(log).read_text(errors="replace").strip().splitlines() if Path(log).exists() else []
        if status not in ("ok", "skipped") or not section.exists():
            tail = "\n".join(log_text[-40:])
            parts += ["", f"Last lines of the log ({status}):", "", "```", tail, "```"]
    output.write_text("\n".join(parts).rstrip() + "\n")


def record(report_file: Path, title: str) -> None:
    """Writes a report as the ``gpu_check`` section of benchmarks/RESULTS.md, its headings one level down."""
    lines = report_file.read_text().splitlines()
    body = ["#" + line if line.startswith("#") else line for line in lines[1:]]
    common.write_section("gpu_check", f"## {title}\n" + "\n".join(body))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("environment")
    geo = sub.add_parser("geodesic")
    geo.add_argument("--repeats", type=int, default=10)
    rep = sub.add_parser("report")
    rep.add_argument("work", type=Path)
    rep.add_argument("output", type=Path)
    rec = sub.add_parser("record")
    rec.add_argument("report", type=Path)
    rec.add_argument("--title", default="GPU verification (make gpu-check)")
    args = parser.parse_args()
    if args.command == "environment":
        sys.stdout.write(environment() + "\n")
    elif args.command == "geodesic":
        sys.stdout.write(geodesic(args.repeats) + "\n")
    elif args.command == "report":
        report(args.work, args.output)
    else:
        record(args.report, args.title)


if __name__ == "__main__":
    main()
