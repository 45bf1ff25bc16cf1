"""Shared pieces of the benchmark scripts: machine description, timing, peak memory, and RESULTS.md sections.

Each benchmark owns one section of benchmarks/RESULTS.md, delimited by HTML comments, and rewrites only that
section (and only the rows of the device it ran on), so results from different machines and sittings coexist.
"""

import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\n"
    "Each section is written by the script it names (`python benchmarks/<script>.py`); the machine and the exact\n"
    "command are given with every table. CPU figures come from shared 2-core machines: compare ratios measured in\n"
    "the same run, not absolute times across runs.\n"
)


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, value = (part.strip() for part in line.split(":", 1))
                fields.setdefault(key, value)
    except OSError:
        pass
    return fields


def machine() -> str:
    """One line naming the CPU (and GPU, when used), the core count and the torch build."""
    cpu = _cpuinfo().get("model name", platform.processor() or platform.machine())
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def command() -> str:
    """The command line that ran this script, relative to the repository root."""
    return "python " + " ".join([os.path.relpath(sys.argv[0], RESULTS.parent.parent),
                                 *(shlex.quote(arg) for arg in sys.argv[1:])])


def median_time(fn, repeats: int, warmup: int = 1, sync=None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cuda_median_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` on the current CUDA stream (CUDA events) over ``repeats`` runs after one."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_rss_increase(fn) -> int:
    """Bytes by which the process's peak resident memory exceeds its resident memory before ``fn()``.

    Resets the kernel's high-water mark (``/proc/self/clear_refs``), so it counts every allocation ``fn`` makes,
    tensors and kernel scratch alike. Run it in a process that does nothing else.
    """
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) * 1024


def run_isolated(args) -> str:
    """Runs this script again in a fresh process with ``args`` and returns its standard output.

    glibc's malloc is told to serve every block of 64 KiB or more with its own mapping and to return it on free,
    so that the resident-memory high-water mark follows the live allocations (by default it keeps freed blocks).
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, sys.argv[0], *args], check=True, capture_output=True, text=True, env=env)
    return out.stdout


def write_section(name: str, markdown: str) -> None:
    """Replaces the section ``name`` of RESULTS.md with ``markdown`` (appending it when new)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def table(headers, rows) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def processor() -> str:
    """The processor's model name, family/model numbers and vector extensions (from /proc/cpuinfo), and the CPU
    capability torch dispatches to, e.g. ``AMD EPYC (family 25, model 17); vector: avx2 fma avx512f ...; torch
    capability AVX512``."""
    fields = _cpuinfo()
    name = fields.get("model name", platform.processor() or platform.machine())
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    flags = fields.get("flags", "").split()
    vector = [f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c")]
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{name}; vector extensions: {' '.join(vector) or 'none listed'}; torch CPU capability {capability}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``1.52 / 1.20 / 0.80``."""
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())
